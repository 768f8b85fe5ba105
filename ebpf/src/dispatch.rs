//! The syscall hook: one program on the raw `sys_exit` tracepoint (typed
//! by BTF), dispatching on the syscall number.
//!
//! Why one raw tracepoint rather than a tracepoint per syscall: with any
//! syscall tracepoint enabled every task takes the kernel's slow syscall
//! path; the per-syscall tracepoints then add a perf record build per
//! call (~100 ns each, measured), while the raw one calls the program with
//! the saved registers and the return value directly (~30 ns). Nothing
//! cheaper exists without kprobes, and fentry/fexit are refused on the
//! kernels mcptap targets (docs/toolchain.md). For most processes the
//! program is two array reads and a return.

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::btf_tracepoint, programs::BtfTracePointContext};
use mcptap_common::{op, proc_state};

use crate::{
    config, fds,
    maps::{PROCS, is_watched},
    regs::Regs,
    sockets, stdio, sysnr,
};

#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: BtfTracePointContext) -> i32 {
    let regs = Regs::of(&ctx);
    let ret: i64 = ctx.arg(1);
    let nr = regs.nr();
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;

    if !is_watched(tgid) {
        unwatched(nr, &regs, ret, pid_tgid, tgid);
        return 0;
    }
    let Some(p) = PROCS.get_ptr_mut(&tgid) else {
        // The agent's bit outlived the entry (the process exited): only
        // discovery applies.
        unwatched(nr, &regs, ret, pid_tgid, tgid);
        return 0;
    };
    if unsafe { (*p).state } & proc_state::EXCLUDED != 0 {
        return 0;
    }
    match nr {
        sysnr::READ => io(p, pid_tgid, &regs, ret, op::READ, false),
        sysnr::READV => io(p, pid_tgid, &regs, ret, op::READ, true),
        sysnr::WRITE => io(p, pid_tgid, &regs, ret, op::WRITE, false),
        sysnr::WRITEV => io(p, pid_tgid, &regs, ret, op::WRITE, true),
        sysnr::RECVFROM => socket_io(p, pid_tgid, &regs, ret, op::READ, regs.arg1(), 0),
        sysnr::SENDTO => socket_io(p, pid_tgid, &regs, ret, op::WRITE, regs.arg1(), 0),
        sysnr::RECVMSG => msg_io(p, pid_tgid, &regs, ret, op::READ),
        sysnr::SENDMSG => msg_io(p, pid_tgid, &regs, ret, op::WRITE),
        sysnr::ACCEPT | sysnr::ACCEPT4 => sockets::on_accept(Some(p), tgid, &regs, ret),
        sysnr::CONNECT => sockets::on_connect(Some(p), tgid, &regs, ret),
        sysnr::DUP | sysnr::DUP2 | sysnr::DUP3 => fds::on_dup(Some(p), tgid, &regs, ret),
        sysnr::FCNTL => fds::on_fcntl(Some(p), tgid, &regs, ret),
        sysnr::CLOSE => fds::on_close(p, pid_tgid, &regs, ret),
        sysnr::CLOSE_RANGE => fds::on_close_range(p, &regs, ret),
        _ => {}
    }
    0
}

/// A process the kernel knows nothing about: only what could make it
/// worth watching (discovery, or a connection to a selected port).
#[inline(always)]
fn unwatched(nr: u64, regs: &Regs, ret: i64, pid_tgid: u64, tgid: u32) {
    if !config::discovery() {
        if nr == sysnr::CONNECT && config::has_port_rules() {
            sockets::on_connect(None, tgid, regs, ret);
        }
        return;
    }
    if tgid == config::agent_tgid() {
        return;
    }
    match nr {
        sysnr::READ if ret > 0 => stdio::sniff_unwatched(pid_tgid, regs.arg0(), regs.arg1(), 0, ret as u64),
        sysnr::READV if ret > 0 => stdio::sniff_unwatched(pid_tgid, regs.arg0(), regs.arg1(), regs.arg2(), ret as u64),
        sysnr::ACCEPT | sysnr::ACCEPT4 => sockets::on_accept(None, tgid, regs, ret),
        sysnr::CONNECT => sockets::on_connect(None, tgid, regs, ret),
        sysnr::DUP | sysnr::DUP2 | sysnr::DUP3 => fds::on_dup(None, tgid, regs, ret),
        sysnr::FCNTL => fds::on_fcntl(None, tgid, regs, ret),
        _ => {}
    }
}

/// read/readv/write/writev: stdio first, then sockets.
#[inline(always)]
fn io(p: *mut mcptap_common::ProcState, pid_tgid: u64, regs: &Regs, ret: i64, io: u8, vectored: bool) {
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
fn socket_io(p: *mut mcptap_common::ProcState, pid_tgid: u64, regs: &Regs, ret: i64, io: u8, buf: u64, iov_cnt: u64) {
    if ret <= 0 {
        return;
    }
    sockets::on_io(p, pid_tgid, regs.arg0(), io, buf, iov_cnt, ret as u64);
}

#[inline(always)]
fn msg_io(p: *mut mcptap_common::ProcState, pid_tgid: u64, regs: &Regs, ret: i64, io: u8) {
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

/// An empty program on the same hook, for `cargo xtask bench`: what any
/// program on the raw `sys_exit` tracepoint costs every syscall of every
/// process (the kernel's slow syscall path and the dispatch), measured
/// beside mcptap's own cost. Never attached by `mcptap run`.
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit_floor(_ctx: BtfTracePointContext) -> i32 {
    0
}
