//! Following stdin and stdout when a process moves them, and closes.
//!
//! Stdio servers often keep the wire away from fds 0 and 1 so that stray
//! prints cannot corrupt it (the Python SDK since 2.0 dups stdin/stdout to
//! private descriptors and points 0 and 1 at /dev/null and stderr). The
//! process map keeps, per process, which descriptors are copies of its
//! stdin ("in") and stdout ("out"): dup, dup2, dup3 and fcntl(F_DUPFD*)
//! copy membership from the old descriptor to the new one (their return
//! value), and close removes it. These syscalls are rare, so following
//! them costs nothing measurable.

use mcptap_common::{ProcState, counter, fds, proc_state};

use crate::{
    config,
    maps::{count, watch_process},
    regs::Args,
    sockets,
};

const F_DUPFD: u64 = 0;
const F_DUPFD_CLOEXEC: u64 = 1030;

/// Exit of dup, dup2 and dup3: the old fd is the first argument, the new
/// one the return value.
#[inline(always)]
pub fn on_dup(p: Option<*mut ProcState>, tgid: u32, regs: &impl Args, ret: i64) {
    if ret >= 0 {
        copy_membership(p, tgid, regs.arg0(), ret as u64);
    }
}

#[inline(always)]
pub fn on_fcntl(p: Option<*mut ProcState>, tgid: u32, regs: &impl Args, ret: i64) {
    let cmd = regs.arg1();
    if ret >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) {
        copy_membership(p, tgid, regs.arg0(), ret as u64);
    }
}

/// close(fd) of a watched process: the descriptor is no longer stdio, nor
/// a watched socket.
#[inline(always)]
pub fn on_close(p: *mut ProcState, pid_tgid: u64, regs: &impl Args, ret: i64) {
    if ret != 0 {
        return;
    }
    let fd = regs.arg0();
    if fd < fds::MAX {
        unsafe {
            (*p).in_fds &= !(1u64 << fd);
            (*p).out_fds &= !(1u64 << fd);
        }
    }
    sockets::on_close(p, pid_tgid, fd);
}

/// close_range(first, last, flags): stdio copies in the range are gone
/// (watched sockets in it age out of their LRU map).
#[inline(always)]
pub fn on_close_range(p: *mut ProcState, regs: &impl Args, ret: i64) {
    const CLOSE_RANGE_CLOEXEC: u64 = 1 << 2;
    if ret != 0 || regs.arg2() & CLOSE_RANGE_CLOEXEC != 0 {
        return;
    }
    let (first, last) = (regs.arg0(), regs.arg1());
    if first >= fds::MAX {
        return;
    }
    let upto = if last >= fds::MAX - 1 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    };
    let mask = upto & !((1u64 << first) - 1);
    unsafe {
        (*p).in_fds &= !mask;
        (*p).out_fds &= !mask;
    }
}

/// `new_fd` now refers to what `old_fd` refers to.
#[inline(always)]
fn copy_membership(p: Option<*mut ProcState>, tgid: u32, old_fd: u64, new_fd: u64) {
    if new_fd == old_fd {
        return;
    }
    let p = match p {
        Some(p) if unsafe { (*p).state } & proc_state::EXCLUDED != 0 => return,
        Some(p) => p,
        None => {
            // A plain process matters only when it copies its stdio.
            // Replacing fd 0 or 1 (dup2 onto them) is how a parent sets up
            // a child's stdio before exec: fd 0 stays "stdin" whatever it
            // points to, so that changes nothing.
            if old_fd > 1 || !config::discovery() || tgid == config::agent_tgid() {
                return;
            }
            match watch_process(tgid, proc_state::CANDIDATE) {
                Some(p) => p,
                None => return,
            }
        }
    };
    if new_fd >= fds::MAX {
        count(counter::FD_BEYOND_BITMAP, 1);
        return;
    }
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
