//! TLS plaintext: uprobes on OpenSSL's `SSL_read`, `SSL_read_ex`,
//! `SSL_write`, `SSL_write_ex` (entry: remember the buffer; return: copy
//! what moved) and `SSL_free` (the session ended). The agent attaches them
//! to every libssl it finds and to executables that link OpenSSL
//! statically and export these symbols (Node), once per file; the filter
//! by process is here.
//!
//! Which connection a session runs on: OpenSSL knows the socket only when
//! it owns it (`SSL_set_fd`); asyncio, Node and most event loops feed it
//! ciphertext through memory buffers instead. What every case shares is
//! the thread: the ciphertext of a read is received on the same thread
//! just before `SSL_read` decrypts it, and a socket-owning `SSL_write`
//! sends inside the call. So each chunk carries the TLS socket this thread
//! last read from (`SSL_read`) or wrote to during the call (`SSL_write`),
//! and the agent ties the session to that connection.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use mcptap_common::{
    ProcState, SslKey, TlsCloseRecord, channel, chunk_flags, counter, op, proc_state, record, ssl_flags,
};

use crate::{
    config,
    emit::{self, first4},
    maps::{PROCS, SSLS, count, is_watched, send},
    sockets::THREAD_SOCK,
};

/// Arguments of an SSL call between its entry and its return.
#[repr(C)]
#[derive(Clone, Copy)]
struct SslCall {
    ssl: u64,
    buf: u64,
    /// `size_t *` where the `_ex` variants store the byte count; 0 for the
    /// plain variants, which return it.
    ex_len: u64,
    ts_ns: u64,
    op: u8,
    _pad: [u8; 7],
}

/// Calls in flight, by thread.
#[map]
static SSL_CALLS: LruHashMap<u64, SslCall> = LruHashMap::with_max_entries(16384, 0);

/// The process's entry when it is worth looking at: tracked, or a
/// discovery candidate. `Some(None)`: unknown to the kernel but discovery
/// may sniff it.
#[inline(always)]
pub fn interest(tgid: u32) -> Option<Option<*mut ProcState>> {
    if tgid == config::agent_tgid() {
        return None;
    }
    if !is_watched(tgid) {
        return config::discovery().then_some(None);
    }
    let p = PROCS.get_ptr_mut(tgid)?;
    let state = unsafe { (*p).state };
    if state & proc_state::EXCLUDED != 0 {
        return None;
    }
    if state & proc_state::TRACKED == 0 && !config::discovery() {
        return None;
    }
    Some(Some(p))
}

#[inline(always)]
fn enter(ctx: &ProbeContext, io: u8, ex: bool) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(p) = interest((pid_tgid >> 32) as u32) else {
        return 0;
    };
    let (Some(ssl), Some(buf)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    if !worth_its_return(pid_tgid, p, ssl, buf, io) {
        return 0;
    }
    let ex_len = if ex { ctx.arg::<u64>(3).unwrap_or(0) } else { 0 };
    let call = SslCall {
        ssl,
        buf,
        ex_len,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        op: io,
        _pad: [0; 7],
    };
    let _ = SSL_CALLS.insert(pid_tgid, call, 0);
    0
}

#[inline(always)]
fn exit(ctx: &RetProbeContext, ex: bool) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(call) = (unsafe { SSL_CALLS.get(pid_tgid) }).copied() else {
        // Only counted for processes we care about: the entry is skipped
        // on purpose for everyone else.
        if interest((pid_tgid >> 32) as u32).is_some_and(|p| p.is_some()) {
            count(counter::TLS_UNPAIRED, 1);
        }
        return 0;
    };
    let _ = SSL_CALLS.remove(pid_tgid);
    // All four return a C `int`: only the low 32 bits of the register are
    // the value (-1 on failure must not read as 4 GiB).
    let ret = ctx.ret::<i32>() as i64;
    let len = if ex {
        if ret != 1 || call.ex_len == 0 {
            return 0;
        }
        match unsafe { bpf_probe_read_user(call.ex_len as *const u64) } {
            Ok(n) => n,
            Err(_) => return 0,
        }
    } else if ret > 0 {
        ret as u64
    } else {
        return 0;
    };
    if len == 0 {
        return 0;
    }
    let fd = socket_of_call(pid_tgid, &call);
    plaintext(pid_tgid, call.ssl, call.buf, len, call.op, fd);
    0
}

/// At a TLS call's entry: whether its return is worth looking at. A
/// tracked process's always is; an untracked process's write only when it
/// starts a request or continues a session being sniffed (its bytes are
/// already there to look at), its reads always (what they bring is only
/// known at return).
#[inline(always)]
pub fn worth_its_return(pid_tgid: u64, p: Option<*mut ProcState>, session: u64, buf: u64, io: u8) -> bool {
    worth_its_return_iov(pid_tgid, p, session, buf, 0, io)
}

/// Whether discovery sniffed session `session` of process `tgid` (its
/// first bytes looked like an MCP exchange's).
#[inline(always)]
pub fn is_sniffed(tgid: u32, session: u64) -> bool {
    let key = SslKey {
        tgid,
        _pad: 0,
        ssl: session,
    };
    unsafe { SSLS.get(key) }.is_some()
}

/// As [`worth_its_return`], for a buffer that may be an iovec array
/// (`iov_cnt` > 0).
#[inline(always)]
pub fn worth_its_return_iov(
    pid_tgid: u64,
    p: Option<*mut ProcState>,
    session: u64,
    buf: u64,
    iov_cnt: u64,
    io: u8,
) -> bool {
    let tracked = p.is_some_and(|p| unsafe { (*p).state } & proc_state::TRACKED != 0);
    if tracked || io != op::WRITE {
        return true;
    }
    let key = SslKey {
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        ssl: session,
    };
    let sniffed = unsafe { SSLS.get(key) }.is_some();
    sniffed || first4(buf, iov_cnt, 4).is_some_and(|b| &b == b"POST" || &b == b"GET ")
}

/// `len` plaintext bytes a TLS library moved for session `session` (an
/// `SSL*`, a Go `*tls.Conn`...), on socket `fd` when known (-1): sent for a
/// tracked process, sniffed for an untracked one. Whatever the library,
/// the same records.
#[inline(always)]
pub fn plaintext(pid_tgid: u64, session: u64, buf: u64, len: u64, io: u8, fd: i32) {
    plaintext_iov(pid_tgid, session, buf, 0, len, io, fd)
}

/// As [`plaintext`], from an iovec array when `iov_cnt` > 0 (`len` bytes
/// across its buffers).
#[inline(always)]
pub fn plaintext_iov(pid_tgid: u64, session: u64, buf: u64, iov_cnt: u64, len: u64, io: u8, fd: i32) {
    let tgid = (pid_tgid >> 32) as u32;
    let Some(p) = interest(tgid) else { return };
    let key = SslKey {
        tgid,
        _pad: 0,
        ssl: session,
    };
    // Sessions the agent let go (not MCP) are skipped, tracked or not.
    let flags = unsafe { SSLS.get(key) }.copied().unwrap_or(0);
    if flags & ssl_flags::IGNORE != 0 {
        return;
    }
    let tracked = p.is_some_and(|p| unsafe { (*p).state } & proc_state::TRACKED != 0);
    if tracked {
        send_chunk(pid_tgid, session, io, (buf, iov_cnt), fd, 0, len, p);
        return;
    }
    // Discovery: a session of an untracked process.
    if flags & ssl_flags::CAPTURE != 0 {
        send_chunk(pid_tgid, session, io, (buf, iov_cnt), fd, chunk_flags::DISCOVERY, len, None);
        return;
    }
    let Some(b) = first4(buf, iov_cnt, len) else {
        // A lone byte that may start the next request (Go's read-ahead):
        // judged with the next read.
        if io == op::READ && emit::may_lead_request(buf, iov_cnt, len) {
            let _ = TLS_LEAD_BYTE.insert(key, buf, 0);
        }
        return;
    };
    let mut lead = None;
    let mut request = &b == b"POST" || &b == b"GET ";
    if !request
        && io == op::READ
        && let Some(&at) = unsafe { TLS_LEAD_BYTE.get(key) }
    {
        let _ = TLS_LEAD_BYTE.remove(key);
        request = emit::lead_starts_request(at, b);
        lead = request.then_some(at);
    }
    if !request {
        return;
    }
    let _ = SSLS.insert(key, ssl_flags::CAPTURE, 0);
    count(counter::TLS_SNIFFS, 1);
    if let Some(at) = lead {
        send_chunk(pid_tgid, session, io, (at, 0), fd, chunk_flags::DISCOVERY, 1, None);
    }
    send_chunk(pid_tgid, session, io, (buf, iov_cnt), fd, chunk_flags::DISCOVERY, len, None);
}

/// Where a lone byte that may start a request was read to, per session of
/// an untracked process (see `emit::lead_starts_request`).
#[map]
static TLS_LEAD_BYTE: LruHashMap<SslKey, u64> = LruHashMap::with_max_entries(4096, 0);

/// How long before a decrypting `SSL_read` its ciphertext may have been
/// received for the two to be tied.
const READ_WINDOW_NS: u64 = 5_000_000_000;

/// The socket this thread last received TLS records on, when it did so
/// lately: what a library that decrypts right after receiving (rustls)
/// was decrypting, or -1.
#[inline(always)]
pub fn thread_read_socket(pid_tgid: u64) -> i32 {
    let Some(t) = (unsafe { THREAD_SOCK.get(pid_tgid) }) else {
        return -1;
    };
    if unsafe { bpf_ktime_get_ns() }.saturating_sub(t.read_ts) < READ_WINDOW_NS {
        t.read_fd
    } else {
        -1
    }
}

/// The TLS socket this call's ciphertext moved on, or -1.
#[inline(always)]
fn socket_of_call(pid_tgid: u64, call: &SslCall) -> i32 {
    let Some(t) = (unsafe { THREAD_SOCK.get(pid_tgid) }) else {
        return -1;
    };
    if call.op == op::READ {
        if call.ts_ns.saturating_sub(t.read_ts) < READ_WINDOW_NS {
            t.read_fd
        } else {
            -1
        }
    } else if t.write_ts >= call.ts_ns {
        t.write_fd
    } else {
        -1
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn send_chunk(
    pid_tgid: u64,
    session: u64,
    io: u8,
    (buf, iov_cnt): (u64, u64),
    fd: i32,
    flags: u8,
    len: u64,
    p: Option<*mut ProcState>,
) {
    let chunk = emit::Call {
        channel: channel::TLS,
        pid_tgid,
        fd,
        op: io,
        flags,
        ssl: session,
    };
    emit::queue(chunk, buf, iov_cnt, len, p);
}

#[uprobe]
pub fn ssl_read_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, op::READ, false)
}

#[uprobe]
pub fn ssl_read_ex_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, op::READ, true)
}

#[uprobe]
pub fn ssl_write_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, op::WRITE, false)
}

#[uprobe]
pub fn ssl_write_ex_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, op::WRITE, true)
}

#[uretprobe]
pub fn ssl_rw_exit(ctx: RetProbeContext) -> u32 {
    exit(&ctx, false);
    emit::flush();
    0
}

#[uretprobe]
pub fn ssl_rw_ex_exit(ctx: RetProbeContext) -> u32 {
    exit(&ctx, true);
    emit::flush();
    0
}

/// `SSL_free(ssl)`: the session is over.
#[uprobe]
pub fn ssl_free(ctx: ProbeContext) -> u32 {
    let Some(ssl) = ctx.arg::<u64>(0) else { return 0 };
    session_ended(bpf_get_current_pid_tgid(), ssl);
    0
}

/// A TLS session ended (`SSL_free`, Go's `(*Conn).Close`): the agent
/// closes it, when it knew it. Sessions are named by an address the
/// library reuses for the next one.
#[inline(always)]
pub fn session_ended(pid_tgid: u64, session: u64) {
    let tgid = (pid_tgid >> 32) as u32;
    let Some(p) = interest(tgid) else { return };
    let key = SslKey {
        tgid,
        _pad: 0,
        ssl: session,
    };
    let known = unsafe { SSLS.get(key) }.copied();
    if known.is_some() {
        let _ = SSLS.remove(key);
    }
    let sniffed = known.is_some_and(|f| f & ssl_flags::CAPTURE != 0);
    let tracked = p.is_some_and(|p| unsafe { (*p).state } & proc_state::TRACKED != 0);
    if tracked || sniffed {
        send(TlsCloseRecord {
            kind: record::TLS_CLOSE,
            tgid,
            ts_ns: unsafe { bpf_ktime_get_ns() },
            ssl: session,
        });
    }
}
