//! Go's crypto/tls: uprobes on `crypto/tls.(*Conn).Read` (entry: remember
//! the buffer; each `ret` instruction: copy what moved), `Write` (entry:
//! copy what it is given) and `Close` (entry: the session ends), found
//! and placed by the agent (`agent/src/capture/golang.rs`: `.gopclntab`,
//! disassembly).
//!
//! Go's register ABI (1.17+, amd64): the receiver `*tls.Conn` in RAX, the
//! slice `b` in RBX (pointer) and RCX (length); `n` comes back in RAX. The
//! running goroutine is in R14, and calls are keyed by it, not by thread:
//! a goroutine blocked in Read may resume on another thread. Returns are
//! probed at each `ret` rather than with a uretprobe, which rewrites the
//! return address on the stack (Go moves goroutine stacks: that corrupts
//! them).
//!
//! The socket comes from the connection itself: `tls.Conn.conn` (a
//! `net.Conn` interface; its data word points at the `net.TCPConn`, whose
//! first word is the `*netFD`, whose `poll.FD` holds `Sysfd` after a 16-byte
//! mutex), so Go sessions carry their addresses like OpenSSL's.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};
use mcptap_common::op;

use crate::{emit, tls};

/// A goroutine's call in flight.
#[repr(C)]
#[derive(Clone, Copy)]
struct GoCall {
    conn: u64,
    buf: u64,
    op: u8,
    _pad: [u8; 7],
}

/// The goroutine (process, `g` pointer) a call runs on.
#[repr(C)]
#[derive(Clone, Copy)]
struct Goroutine {
    tgid: u32,
    _pad: u32,
    g: u64,
}

#[map]
static GO_CALLS: LruHashMap<Goroutine, GoCall> = LruHashMap::with_max_entries(16384, 0);

/// The registers the Go ABI uses here: (RAX, RBX, RCX, R14).
#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
fn go_regs(ctx: &ProbeContext) -> (u64, u64, u64, u64) {
    // A uprobe's context is the saved `struct pt_regs`: plain loads.
    let r = unsafe { &*ctx.regs };
    (r.rax, r.rbx, r.rcx, r.r14)
}

/// Only x86_64 Go executables are probed (the agent never attaches these
/// programs elsewhere).
#[cfg(not(bpf_target_arch = "x86_64"))]
#[inline(always)]
fn go_regs(_ctx: &ProbeContext) -> (u64, u64, u64, u64) {
    (0, 0, 0, 0)
}

#[inline(always)]
fn enter(ctx: &ProbeContext, io: u8) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(p) = tls::interest((pid_tgid >> 32) as u32) else {
        return 0;
    };
    let (conn, buf, _len, g) = go_regs(ctx);
    if !tls::worth_its_return(pid_tgid, p, conn, buf, io) {
        return 0;
    }
    let key = Goroutine {
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        g,
    };
    let call = GoCall {
        conn,
        buf,
        op: io,
        _pad: [0; 7],
    };
    let _ = GO_CALLS.insert(key, call, 0);
    0
}

/// The descriptor of a `*tls.Conn`'s socket, or -1 (not a TCP connection,
/// or unreadable).
#[inline(always)]
fn socket_fd(conn: u64) -> i32 {
    // tls.Conn.conn.data (the interface's second word) → *net.TCPConn.
    let Ok(tcp) = (unsafe { bpf_probe_read_user((conn + 8) as *const u64) }) else {
        return -1;
    };
    // TCPConn{conn{fd *netFD}} → netFD{pfd poll.FD{fdmu [16]byte, Sysfd int}}.
    let Ok(netfd) = (unsafe { bpf_probe_read_user(tcp as *const u64) }) else {
        return -1;
    };
    match unsafe { bpf_probe_read_user((netfd + 16) as *const i64) } {
        Ok(fd) if (0..=i32::MAX as i64).contains(&fd) => fd as i32,
        _ => -1,
    }
}

#[uprobe]
pub fn go_tls_read_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, op::READ)
}


/// A write's bytes are all there at entry, and are sent from there: its
/// request must reach the agent before the response another goroutine
/// reads (at a `ret`) on another thread. `Write` returns only when it
/// wrote everything (or the connection failed).
#[uprobe]
pub fn go_tls_write_enter(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(p) = tls::interest((pid_tgid >> 32) as u32) else {
        return 0;
    };
    let (conn, buf, len, _) = go_regs(&ctx);
    if len == 0 || !tls::worth_its_return(pid_tgid, p, conn, buf, op::WRITE) {
        return 0;
    }
    tls::plaintext(pid_tgid, conn, buf, len, op::WRITE, socket_fd(conn));
    emit::flush();
    0
}

/// At each `ret` of Read: RAX holds `n`.
#[uprobe]
pub fn go_tls_ret(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (n, _, _, g) = go_regs(&ctx);
    let key = Goroutine {
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        g,
    };
    let Some(call) = (unsafe { GO_CALLS.get(key) }).copied() else {
        return 0;
    };
    let _ = GO_CALLS.remove(key);
    let n = n as i64;
    if n <= 0 {
        return 0;
    }
    let fd = socket_fd(call.conn);
    tls::plaintext(pid_tgid, call.conn, call.buf, n as u64, call.op, fd);
    emit::flush();
    0
}

/// `crypto/tls.(*Conn).Close`: the session ends (the next `*tls.Conn` may
/// be allocated at the same address).
#[uprobe]
pub fn go_tls_close(ctx: ProbeContext) -> u32 {
    let (conn, _, _, _) = go_regs(&ctx);
    tls::session_ended(bpf_get_current_pid_tgid(), conn);
    0
}
