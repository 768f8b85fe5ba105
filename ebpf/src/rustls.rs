//! rustls (Rust programs with symbols): uprobes found and checked by the
//! agent (`agent/src/capture/tls/rustls.rs`).
//!
//! - Writes: `<ConnectionCommon<T> as PlaintextSink>::write` and
//!   `write_vectored`, called through a trait object (never inlined): the
//!   connection in RDI, the bytes in RSI/RDX (a slice, or an `IoSlice`
//!   array and its length, laid out as `struct iovec`). They return
//!   `io::Result<usize>` in RAX (0: Ok) and RDX (how many bytes rustls
//!   took: it may take fewer than it was given), read by a uretprobe
//!   (Rust stacks do not move).
//! - Reads: `CommonState::take_received_plaintext(&mut self, Payload)`,
//!   where each decrypted record's plaintext enters rustls' receive
//!   buffer (the functions that hand it to the program are inlined). The
//!   `Payload` is passed by reference; its bytes' pointer and length are
//!   at +8 and +16 (both variants: the agent checks the function reads
//!   them so before attaching).
//!
//! - The end: the drop glue of `ConnectionCommon`.
//!
//! The session is the connection's socket ([`fd_session`]), not its
//! address: a server's connection is built inside the handshake's future,
//! where the first request (sent with the client's Finished) is
//! decrypted, then moved into the stream hyper reads from. Records are
//! decrypted right after they are received, on the same thread: a read
//! carries the socket this thread last read from, and tells which socket
//! the connection at that address runs on (`RUSTLS_CONN_FD`). A write on a
//! connection not seen reading yet (a client's first request, a server's
//! first response after the move) waits for the thread's next TLS socket
//! write, which is that connection's ciphertext, sent before the call
//! that wrote the plaintext returns (`on_socket_write`).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use mcptap_common::{SslKey, counter, fd_session, op};

use crate::{emit, maps::count, tls};

/// A write between its entry and its return.
#[repr(C)]
#[derive(Clone, Copy)]
struct RustlsWrite {
    conn: u64,
    buf: u64,
    /// The `IoSlice` count of a vectored write; 0 for a slice.
    iov_cnt: u64,
    /// 1: worth sending only if its socket's session turns out to be one
    /// discovery already sniffed (see `write_enter`).
    deferred: u64,
}

#[map]
static RUSTLS_WRITES: LruHashMap<u64, RustlsWrite> = LruHashMap::with_max_entries(16384, 0);

/// The socket of a connection at an address, from its reads (and from the
/// socket write that follows its first writes). Key: tgid and address.
#[map]
static RUSTLS_CONN_FD: LruHashMap<SslKey, i32> = LruHashMap::with_max_entries(16384, 0);

/// A write whose connection's socket is not known yet, by thread: sent
/// with the thread's next TLS socket write.
#[repr(C)]
#[derive(Clone, Copy)]
struct PendingWrite {
    call: RustlsWrite,
    len: u64,
    ts_ns: u64,
}

#[map]
static RUSTLS_PENDING: LruHashMap<u64, PendingWrite> = LruHashMap::with_max_entries(16384, 0);

/// How long a pending write waits for its socket write (it happens before
/// the call that wrote the plaintext returns to the program; the buffer
/// is the caller's, valid until then).
const PENDING_NS: u64 = 100_000_000;

#[inline(always)]
fn conn_key(pid_tgid: u64, conn: u64) -> SslKey {
    SslKey {
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        ssl: conn,
    }
}

/// The socket of the connection at `conn`, when known.
#[inline(always)]
fn conn_fd(pid_tgid: u64, conn: u64) -> Option<i32> {
    unsafe { RUSTLS_CONN_FD.get(conn_key(pid_tgid, conn)) }.copied()
}

/// The session key of the connection at `conn`: its socket once known.
/// Kernels without bpf_loop key by address throughout (see
/// `rustls_write_exit`).
#[inline(always)]
fn session_of(pid_tgid: u64, conn: u64) -> u64 {
    if !crate::HAS_BPF_LOOP {
        return conn;
    }
    conn_fd(pid_tgid, conn).map_or(conn, fd_session)
}

#[inline(always)]
fn write_enter(ctx: &ProbeContext, vectored: bool) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(p) = tls::interest((pid_tgid >> 32) as u32) else {
        return 0;
    };
    let (Some(conn), Some(buf), Some(n)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1), ctx.arg::<u64>(2)) else {
        return 0;
    };
    let iov_cnt = if vectored { n } else { 0 };
    if n == 0 {
        return 0;
    }
    let known = conn_fd(pid_tgid, conn).is_some();
    let session = session_of(pid_tgid, conn);
    let worth = tls::worth_its_return_iov(pid_tgid, p, session, buf, iov_cnt, op::WRITE);
    // A connection whose socket is not known yet (a server's first answer
    // after the handshake moved it) has no session to look up: whether
    // discovery sniffed its request is known only once its socket is
    // (`on_socket_write`). Without this, a server's first answer on each
    // connection was dropped whenever it went out before the agent marked
    // the process tracked (about one run in two, measured).
    if !worth && (known || !crate::HAS_BPF_LOOP) {
        return 0;
    }
    let deferred = u64::from(!worth);
    let _ = RUSTLS_WRITES.insert(
        pid_tgid,
        RustlsWrite {
            conn,
            buf,
            iov_cnt,
            deferred,
        },
        0,
    );
    0
}

/// Whether a deferred write on `fd` is worth sending: its process is
/// tracked, or discovery sniffed the session of its socket.
#[inline(always)]
fn deferred_worth(pid_tgid: u64, fd: i32) -> bool {
    let tgid = (pid_tgid >> 32) as u32;
    match tls::interest(tgid) {
        None => false,
        Some(p) => {
            p.is_some_and(|p| unsafe { (*p).state } & mcptap_common::proc_state::TRACKED != 0)
                || tls::is_sniffed(tgid, fd_session(fd))
        }
    }
}

#[uprobe]
pub fn rustls_write_enter(ctx: ProbeContext) -> u32 {
    write_enter(&ctx, false)
}

#[uprobe]
pub fn rustls_writev_enter(ctx: ProbeContext) -> u32 {
    write_enter(&ctx, true)
}

/// `io::Result<usize>`: RAX 0 (Ok) and RDX the count.
#[uretprobe]
pub fn rustls_write_exit(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(call) = (unsafe { RUSTLS_WRITES.get(pid_tgid) }).copied() else {
        return 0;
    };
    let _ = RUSTLS_WRITES.remove(pid_tgid);
    let (tag, n) = result_regs(&ctx);
    if tag != 0 || n == 0 {
        return 0;
    }
    if let Some(fd) = conn_fd(pid_tgid, call.conn) {
        if call.deferred != 0 && !deferred_worth(pid_tgid, fd) {
            return 0;
        }
        tls::plaintext_iov(pid_tgid, fd_session(fd), call.buf, call.iov_cnt, n, op::WRITE, fd);
        emit::flush();
        return 0;
    }
    if !crate::HAS_BPF_LOOP {
        // Kernels without bpf_loop do not hold writes for their socket
        // write (see `sockets::note_thread_sock`): sent now, keyed by the
        // connection's address. A server's first answer on a connection
        // moved after its handshake then misses its request.
        tls::plaintext_iov(pid_tgid, call.conn, call.buf, call.iov_cnt, n, op::WRITE, -1);
        emit::flush();
        return 0;
    }
    // The socket is not known yet: its ciphertext goes out next, on this
    // thread. A write still waiting here never saw its socket write: its
    // buffer may hold something else by now, it is counted as lost.
    if unsafe { RUSTLS_PENDING.get(pid_tgid) }.is_some() {
        count(counter::COPY_FAILED, 1);
    }
    let pending = PendingWrite {
        call,
        len: n,
        ts_ns: unsafe { bpf_ktime_get_ns() },
    };
    let _ = RUSTLS_PENDING.insert(pid_tgid, pending, 0);
    0
}

/// A TLS socket write of a probed process (see `sockets::on_io`): the
/// ciphertext of this thread's pending write, if any.
#[inline(always)]
pub fn on_socket_write(pid_tgid: u64, fd: i32) {
    let Some(w) = (unsafe { RUSTLS_PENDING.get(pid_tgid) }).copied() else {
        return;
    };
    let _ = RUSTLS_PENDING.remove(pid_tgid);
    if unsafe { bpf_ktime_get_ns() }.saturating_sub(w.ts_ns) > PENDING_NS {
        // Late: the caller's buffer may hold something else by now.
        count(counter::COPY_FAILED, 1);
        return;
    }
    let _ = RUSTLS_CONN_FD.insert(conn_key(pid_tgid, w.call.conn), fd, 0);
    if w.call.deferred != 0 && !deferred_worth(pid_tgid, fd) {
        return;
    }
    tls::plaintext_iov(pid_tgid, fd_session(fd), w.call.buf, w.call.iov_cnt, w.len, op::WRITE, fd);
    emit::flush();
}

#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
fn result_regs(ctx: &RetProbeContext) -> (u64, u64) {
    // A uretprobe's context is the saved `struct pt_regs`: plain loads.
    let r = unsafe { &*ctx.regs };
    (r.rax, r.rdx)
}

/// Only x86_64 executables are probed (the agent attaches nothing
/// elsewhere).
#[cfg(not(bpf_target_arch = "x86_64"))]
#[inline(always)]
fn result_regs(_ctx: &RetProbeContext) -> (u64, u64) {
    (1, 0)
}

/// `CommonState::take_received_plaintext(&mut self, bytes: Payload)`.
#[uprobe]
pub fn rustls_read(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (Some(conn), Some(payload)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    let Ok(bytes) = (unsafe { bpf_probe_read_user((payload + 8) as *const [u64; 2]) }) else {
        return 0;
    };
    let (buf, len) = (bytes[0], bytes[1]);
    if len == 0 {
        return 0;
    }
    let fd = tls::thread_read_socket(pid_tgid);
    let session = if fd >= 0 && crate::HAS_BPF_LOOP {
        let _ = RUSTLS_CONN_FD.insert(conn_key(pid_tgid, conn), fd, 0);
        fd_session(fd)
    } else {
        session_of(pid_tgid, conn)
    };
    tls::plaintext(pid_tgid, session, buf, len, op::READ, fd);
    emit::flush();
    0
}

/// The drop glue of a `ConnectionCommon`: the session ends (the next
/// connection may be allocated at the same address).
#[uprobe]
pub fn rustls_close(ctx: ProbeContext) -> u32 {
    let Some(conn) = ctx.arg::<u64>(0) else { return 0 };
    let pid_tgid = bpf_get_current_pid_tgid();
    let session = session_of(pid_tgid, conn);
    let _ = RUSTLS_CONN_FD.remove(conn_key(pid_tgid, conn));
    tls::session_ended(pid_tgid, session);
    0
}
