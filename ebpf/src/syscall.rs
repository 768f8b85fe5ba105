//! What a syscall did, read at its exit: the handler both syscall hook
//! families share (`tracepoint`: one raw `sys_exit` program dispatching on
//! the syscall number; `fexit`: one program per syscall, where the number
//! is a constant and the match below folds away). Same records either way.
//!
//! For most processes this is one or two array loads and a return
//! (`maps::glance`).

use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use mcptap_common::{ProcState, op, proc_state, watch};

use crate::{
    config, effects, fds, interp,
    maps::{Glance, PROCS, glance, kernel_byte_value},
    regs::Args,
    sockets, stdio, sysnr,
};

/// Handles the exit of syscall `nr` with return value `ret`. Returns true
/// when it may have queued bytes: the caller then `emit::flush`es.
///
/// `EFFECTS`: whether this program records side effects (`effects`). The
/// compat object's raw tracepoint leaves them out: its one program carries
/// every syscall and is close to the 5.10 verifier's complexity limit
/// (Linux 5.10 to 5.16 record effects through the fexit family, which
/// distribution kernels allow).
#[inline(always)]
pub fn on_exit<const EFFECTS: bool>(nr: u64, regs: &impl Args, ret: i64) -> bool {
    // The raw tracepoint sees every syscall: most are of no interest
    // whoever makes them (for fexit programs `nr` is a constant and this
    // folds away).
    if !sysnr::is_handled(nr) {
        return false;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;

    let seen = glance(tgid);
    if EFFECTS && sysnr::is_effect(nr) && (seen == Glance::Watched || seen == Glance::Child) {
        effects::on_exit(nr, seen, tgid, regs, ret);
    }
    // An interpreter's open that may name an MCP SDK (not in the compat
    // raw tracepoint: see above). A watched process's mark is in its entry
    // (one hash lookup per open of a watched process).
    if EFFECTS && ret >= 0 && sysnr::is_open(nr) && config::sdk_opens() {
        if seen == Glance::Interpreter {
            interp::on_open(nr, tgid, regs, None);
        } else if seen == Glance::Watched {
            // Watched through the agent's bitmap, its byte unchanged; or
            // through the kernel's entry, which took the mark.
            if kernel_byte_value(tgid) == Some(watch::byte::INTERPRETER) {
                interp::on_open(nr, tgid, regs, None);
            } else if let Some(p) = PROCS.get_ptr_mut(tgid)
                && unsafe { (*p).state } & proc_state::INTERPRETER != 0
            {
                interp::on_open(nr, tgid, regs, Some(p));
            }
        }
    }
    if sysnr::is_effect(nr) && nr != sysnr::CONNECT {
        return false;
    }
    if seen != Glance::Watched {
        if EFFECTS && seen == Glance::Child {
            effects::on_io_or_close(nr, seen, tgid, 0, regs, ret);
        }
        return unwatched(seen, nr, regs, ret, pid_tgid, tgid);
    }
    let Some(p) = PROCS.get_ptr_mut(tgid) else {
        // The agent's bit outlived the entry (the process exited): only
        // discovery applies.
        return unwatched(Glance::Unknown, nr, regs, ret, pid_tgid, tgid);
    };
    let state = unsafe { (*p).state };
    // Only a server and the processes it started have naming sockets:
    // other watched processes (clients, candidates) skip the lookup.
    if EFFECTS && state & (proc_state::SERVES | proc_state::CHILD) != 0 {
        effects::on_io_or_close(nr, seen, tgid, state, regs, ret);
    }
    if state & proc_state::EXCLUDED != 0 {
        return false;
    }
    match nr {
        sysnr::READ => io(p, pid_tgid, regs, ret, op::READ, false),
        sysnr::READV => io(p, pid_tgid, regs, ret, op::READ, true),
        sysnr::WRITE => io(p, pid_tgid, regs, ret, op::WRITE, false),
        sysnr::WRITEV => io(p, pid_tgid, regs, ret, op::WRITE, true),
        sysnr::RECVFROM => socket_io(p, pid_tgid, regs, ret, op::READ, regs.arg1(), 0),
        sysnr::SENDTO => socket_io(p, pid_tgid, regs, ret, op::WRITE, regs.arg1(), 0),
        sysnr::RECVMSG => msg_io(p, pid_tgid, regs, ret, op::READ),
        sysnr::SENDMSG => msg_io(p, pid_tgid, regs, ret, op::WRITE),
        sysnr::ACCEPT | sysnr::ACCEPT4 => sockets::on_accept(Some(p), tgid, regs, ret),
        sysnr::CONNECT => sockets::on_connect(Some(p), tgid, regs, ret),
        sysnr::DUP | sysnr::DUP2 | sysnr::DUP3 => fds::on_dup(Some(p), tgid, regs, ret),
        sysnr::FCNTL => fds::on_fcntl(Some(p), tgid, regs, ret),
        sysnr::CLOSE => fds::on_close(p, pid_tgid, regs, ret),
        sysnr::CLOSE_RANGE => fds::on_close_range(p, regs, ret),
        _ => {}
    }
    true
}

/// A process the kernel knows nothing about: only what could make it
/// worth watching (discovery, or a connection to a selected port).
#[inline(always)]
fn unwatched(seen: Glance, nr: u64, regs: &impl Args, ret: i64, pid_tgid: u64, tgid: u32) -> bool {
    if !config::discovery() {
        if nr == sysnr::CONNECT && config::has_port_rules() {
            sockets::on_connect(None, tgid, regs, ret);
        }
        return false;
    }
    if tgid == config::agent_tgid() {
        return false;
    }
    match nr {
        sysnr::READ | sysnr::READV
            if ret > 0
                && matches!(seen, Glance::Unknown | Glance::Child | Glance::Interpreter)
                && regs.arg0() == 0 =>
        {
            let iov_cnt = if nr == sysnr::READV { regs.arg2() } else { 0 };
            return stdio::sniff_unwatched(pid_tgid, regs.arg1(), iov_cnt, ret as u64);
        }
        sysnr::ACCEPT | sysnr::ACCEPT4 => sockets::on_accept(None, tgid, regs, ret),
        sysnr::CONNECT => sockets::on_connect(None, tgid, regs, ret),
        sysnr::DUP | sysnr::DUP2 | sysnr::DUP3 => fds::on_dup(None, tgid, regs, ret),
        sysnr::FCNTL => fds::on_fcntl(None, tgid, regs, ret),
        _ => {}
    }
    false
}

/// read/readv/write/writev: stdio first, then sockets.
#[inline(always)]
fn io(p: *mut ProcState, pid_tgid: u64, regs: &impl Args, ret: i64, io: u8, vectored: bool) {
    if ret <= 0 {
        return;
    }
    let (fd, buf) = (regs.arg0(), regs.arg1());
    let iov_cnt = if vectored { regs.arg2() } else { 0 };
    if !stdio::on_io(p, pid_tgid, fd, io, buf, iov_cnt, ret as u64) {
        sockets::on_io(p, pid_tgid, fd, io, buf, iov_cnt, ret as u64);
    }
}

#[inline(always)]
fn socket_io(p: *mut ProcState, pid_tgid: u64, regs: &impl Args, ret: i64, io: u8, buf: u64, iov_cnt: u64) {
    if ret <= 0 {
        return;
    }
    sockets::on_io(p, pid_tgid, regs.arg0(), io, buf, iov_cnt, ret as u64);
}

#[inline(always)]
fn msg_io(p: *mut ProcState, pid_tgid: u64, regs: &impl Args, ret: i64, io: u8) {
    if ret <= 0 {
        return;
    }
    let Some((iov, iov_cnt)) = sockets::msghdr_iov(regs.arg1()) else {
        return;
    };
    if iov_cnt == 0 {
        return;
    }
    sockets::on_io(p, pid_tgid, regs.arg0(), io, iov, iov_cnt, ret as u64);
}
