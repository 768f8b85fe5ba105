//! Following stdin and stdout when a process moves them.
//!
//! Stdio servers often keep the wire away from fds 0 and 1 so that stray
//! prints cannot corrupt it (the Python SDK since 2.0 dups stdin/stdout to
//! private descriptors and points 0 and 1 at /dev/null and stderr). The
//! process map keeps, per process, which descriptors are copies of its
//! stdin ("in") and stdout ("out"): dup, dup2, dup3 and fcntl(F_DUPFD*)
//! copy membership from the old descriptor to the new one (their return
//! value), and close removes it. These syscalls are rare, so following
//! them costs nothing measurable; close costs one map lookup.

use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use mcptap_common::{ProcState, counter, fds, proc_state};

use crate::{
    args::syscall_args,
    config,
    maps::{PROCS, count},
    syscalls::{ENTER_ARG0, EXIT_RET, ctx_u64},
};

const F_DUPFD: u64 = 0;
const F_DUPFD_CLOEXEC: u64 = 1030;

/// Exit of dup, dup2 and dup3: the old fd is the first argument, the new
/// one the return value.
#[tracepoint]
pub fn exit_dup(ctx: TracePointContext) -> u32 {
    let ret = ctx_u64(&ctx, EXIT_RET) as i64;
    if ret >= 0 {
        if let Some([old_fd, _, _]) = syscall_args() {
            copy_membership(old_fd, ret as u64);
        }
    }
    0
}

#[tracepoint]
pub fn exit_fcntl(ctx: TracePointContext) -> u32 {
    let ret = ctx_u64(&ctx, EXIT_RET) as i64;
    if ret >= 0 {
        if let Some([fd, cmd, _]) = syscall_args() {
            if cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC {
                copy_membership(fd, ret as u64);
            }
        }
    }
    0
}

#[tracepoint]
pub fn enter_close(ctx: TracePointContext) -> u32 {
    let fd = ctx_u64(&ctx, ENTER_ARG0);
    if fd >= fds::MAX {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if let Some(p) = PROCS.get_ptr_mut(&tgid) {
        unsafe {
            (*p).in_fds &= !(1u64 << fd);
            (*p).out_fds &= !(1u64 << fd);
        }
    }
    0
}

/// `new_fd` now refers to what `old_fd` refers to.
#[inline(always)]
fn copy_membership(old_fd: u64, new_fd: u64) {
    if new_fd == old_fd {
        return;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    match unsafe { PROCS.get(&tgid) } {
        Some(p) if p.state & proc_state::EXCLUDED != 0 => return,
        Some(_) => {}
        None => {
            // A plain process matters only when it copies its stdio.
            // Replacing fd 0 or 1 (dup2 onto them) is how a parent sets up
            // a child's stdio before exec: fd 0 stays "stdin" whatever it
            // points to, so that changes nothing.
            if old_fd > 1 || !config::discovery() || tgid == config::agent_tgid() {
                return;
            }
            if PROCS
                .insert(&tgid, &ProcState::with_state(proc_state::CANDIDATE), BPF_NOEXIST as u64)
                .is_err()
            {
                count(counter::PROCS_FULL, 1);
                return;
            }
        }
    }
    if new_fd >= fds::MAX {
        count(counter::FD_BEYOND_BITMAP, 1);
        return;
    }
    let Some(p) = PROCS.get_ptr_mut(&tgid) else { return };
    let bit = 1u64 << new_fd;
    unsafe {
        if fds::has((*p).in_fds, old_fd) {
            (*p).in_fds |= bit;
        } else {
            (*p).in_fds &= !bit;
        }
        if fds::has((*p).out_fds, old_fd) {
            (*p).out_fds |= bit;
        } else {
            (*p).out_fds &= !bit;
        }
    }
}
