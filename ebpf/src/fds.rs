//! Following stdin and stdout when a process moves them.
//!
//! Stdio servers often keep the wire away from fds 0 and 1 so that stray
//! prints cannot corrupt it (the Python SDK since 2.0 dups stdin/stdout to
//! private descriptors and points 0 and 1 at /dev/null and stderr). The
//! process map keeps, per process, which descriptors are copies of its
//! stdin ("in") and stdout ("out"): dup, dup2, dup3 and fcntl(F_DUPFD*)
//! copy membership from the old descriptor to the new one, and close
//! removes it. These syscalls are rare, so following them costs nothing
//! measurable; close costs one map lookup.

use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::bpf_get_current_pid_tgid, macros::tracepoint,
    programs::TracePointContext,
};
use mcptap_common::{ProcState, counter, fds, proc_state};

use crate::{
    config,
    maps::{INFLIGHT, InflightCall, NEW_FD_FROM_RET, OP_DUP, PROCS, count},
    syscalls::{ARG0, ARG1, RET, arg},
};

const F_DUPFD: u64 = 0;
const F_DUPFD_CLOEXEC: u64 = 1030;

#[tracepoint]
pub fn enter_dup(ctx: TracePointContext) -> u32 {
    stash_dup(arg(&ctx, ARG0), NEW_FD_FROM_RET);
    0
}

/// dup2 and dup3: the caller names the new descriptor.
#[tracepoint]
pub fn enter_dup2(ctx: TracePointContext) -> u32 {
    stash_dup(arg(&ctx, ARG0), arg(&ctx, ARG1));
    0
}

#[tracepoint]
pub fn enter_fcntl(ctx: TracePointContext) -> u32 {
    let cmd = arg(&ctx, ARG1);
    if cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC {
        stash_dup(arg(&ctx, ARG0), NEW_FD_FROM_RET);
    }
    0
}

/// Shared by the exits of dup, dup2, dup3 and fcntl.
#[tracepoint]
pub fn exit_dup(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(call) = (unsafe { INFLIGHT.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = INFLIGHT.remove(&pid_tgid);
    let ret = arg(&ctx, RET) as i64;
    if call.op != OP_DUP || ret < 0 {
        return 0;
    }
    let new_fd = if call.buf == NEW_FD_FROM_RET {
        ret as u64
    } else {
        call.buf
    };
    copy_membership(pid_tgid, call.fd as u64, new_fd);
    0
}

#[tracepoint]
pub fn enter_close(ctx: TracePointContext) -> u32 {
    let fd = arg(&ctx, ARG0);
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if fd >= fds::MAX {
        return 0;
    }
    if let Some(p) = PROCS.get_ptr_mut(&tgid) {
        unsafe {
            (*p).in_fds &= !(1u64 << fd);
            (*p).out_fds &= !(1u64 << fd);
        }
    }
    0
}

#[inline(always)]
fn stash_dup(old_fd: u64, new_fd: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let interesting = match unsafe { PROCS.get(&tgid) } {
        Some(p) => p.state & proc_state::EXCLUDED == 0,
        // A plain process matters only when it copies its stdio. Replacing
        // fd 0 or 1 (dup2 onto them) is how a parent sets up a child's
        // stdio before exec: fd 0 stays "stdin" whatever it points to.
        None => config::discovery() && old_fd <= 1,
    };
    if interesting {
        let call = InflightCall {
            buf: new_fd,
            iov_cnt: 0,
            fd: old_fd as i32,
            op: OP_DUP,
            flags: 0,
            _pad: [0; 2],
        };
        let _ = INFLIGHT.insert(&pid_tgid, &call, 0);
    }
}

/// `new_fd` now refers to what `old_fd` refers to.
#[inline(always)]
fn copy_membership(pid_tgid: u64, old_fd: u64, new_fd: u64) {
    let tgid = (pid_tgid >> 32) as u32;
    if new_fd == old_fd {
        return;
    }
    if new_fd >= fds::MAX {
        count(counter::FD_BEYOND_BITMAP, 1);
        return;
    }
    if unsafe { PROCS.get(&tgid) }.is_none() {
        if tgid == config::agent_tgid() || old_fd > 1 {
            return;
        }
        // First move of a plain process's stdio: it becomes a candidate with
        // the default descriptors, then the move applies.
        let candidate = ProcState::with_state(proc_state::CANDIDATE);
        if PROCS.insert(&tgid, &candidate, BPF_NOEXIST as u64).is_err() {
            count(counter::PROCS_FULL, 1);
            return;
        }
    }
    let Some(p) = PROCS.get_ptr_mut(&tgid) else {
        return;
    };
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
