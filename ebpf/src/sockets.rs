//! TCP capture: the bytes tracked processes move on their internet
//! sockets, and discovery of MCP over HTTP on untracked ones.
//!
//! A socket enters the socket map when a watched process accepts or
//! connects it (or when the agent seeds it from /proc at start). Its first
//! bytes classify it once: HTTP/1.x (captured), a TLS record (its plaintext
//! comes from the `tls` uprobes; the socket only says which connection a
//! TLS session runs on), or anything else (a database, DNS...: never
//! captured). So a tracked MCP server that also talks to Postgres costs
//! one map lookup per Postgres read, and no copy.
//!
//! Discovery: with discovery on, every process that accepts or connects
//! becomes a network candidate. An HTTP request it serves (a read starting
//! `POST` or `GET `) or sends (a write starting so) is captured, with the
//! rest of that connection, until the agent decides (GETs matter: a legacy
//! SSE session starts with one); the agent then confirms the process (MCP)
//! or lets the connection go (see `agent/src/capture/selection.rs` for the
//! per-process budget that bounds what a busy non-MCP process costs).

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user},
    macros::map,
    maps::LruHashMap,
};
use mcptap_common::{
    ProcState, ProcessRecord, SEEDED_PATIENCE, SockState, SocketRecord, channel, chunk_flags, comm_rule, counter, op,
    proc_state, record, sock_flags, sock_key, sock_role,
};

use crate::{
    config,
    emit::{self, first4},
    maps::{PORT_RULES, SOCKS, count, send, send_now, watch_process},
    regs::Args,
};

/// The socket each thread last moved TLS ciphertext on: how a TLS session
/// (an `SSL*`) is tied to its connection (see `tls`). Written here, read
/// there.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ThreadSock {
    pub read_fd: i32,
    pub write_fd: i32,
    pub read_ts: u64,
    pub write_ts: u64,
}

#[map]
pub static THREAD_SOCK: LruHashMap<u64, ThreadSock> = LruHashMap::with_max_entries(16384, 0);

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const EINPROGRESS: i64 = -115;

/// The peer's address from a user `struct sockaddr *`. The address is two
/// words, not 16 bytes: byte arrays get copied with an out-of-line memmove,
/// which the verifier refuses (it returns a stack pointer).
#[derive(Clone, Copy, Default)]
#[repr(C)]
pub struct Peer {
    pub addr: [u64; 2],
    pub family: u16,
    pub port: u16,
}

/// An internet address family (the only peers mcptap reports).
#[inline(always)]
pub fn is_inet(family: u16) -> bool {
    family == AF_INET || family == AF_INET6
}

#[inline(always)]
pub fn read_sockaddr(ptr: u64) -> Option<Peer> {
    if ptr == 0 {
        return None;
    }
    // sockaddr_in: family, port (big endian), 4-byte address;
    // sockaddr_in6: family, port, flowinfo, 16-byte address.
    let head = unsafe { bpf_probe_read_user(ptr as *const u64) }.ok()?;
    let family = head as u16; // little endian: the first two bytes
    let port = u16::from_be((head >> 16) as u16);
    let addr = match family {
        AF_INET => [head >> 32, 0],
        AF_INET6 => unsafe { bpf_probe_read_user((ptr + 8) as *const [u64; 2]) }.ok()?,
        _ => [0, 0],
    };
    Some(Peer { addr, family, port })
}

/// accept/accept4 returned `ret` (the new descriptor).
#[inline(always)]
pub fn on_accept(p: Option<*mut ProcState>, tgid: u32, regs: &impl Args, ret: i64) {
    if ret < 0 || !config::capture_sockets() {
        return;
    }
    // accept(fd, addr, addrlen): the peer's address, when the caller asked.
    let peer = read_sockaddr(regs.arg1());
    if let Some(peer) = peer
        && peer.family != AF_INET && peer.family != AF_INET6 {
            return; // a Unix socket: not an HTTP transport mcptap follows
        }
    opened(
        p,
        tgid,
        ret as u32,
        sock_role::SERVER,
        regs.arg0() as i32,
        peer.unwrap_or_default(),
    );
}

/// connect returned `ret` (0, or EINPROGRESS for a non-blocking socket).
#[inline(always)]
pub fn on_connect(mut p: Option<*mut ProcState>, tgid: u32, regs: &impl Args, ret: i64) {
    if (ret != 0 && ret != EINPROGRESS) || !config::capture_sockets() {
        return;
    }
    let Some(peer) = read_sockaddr(regs.arg1()) else { return };
    if peer.family != AF_INET && peer.family != AF_INET6 {
        return;
    }
    if config::has_port_rules()
        && let Some(&rule) = unsafe { PORT_RULES.get(peer.port) }
            && rule == comm_rule::SELECT {
                let excluded = p.is_some_and(|p| unsafe { (*p).state } & proc_state::EXCLUDED != 0);
                if !excluded {
                    p = watch_process(tgid, proc_state::SELECTED);
                }
            }
    opened(p, tgid, regs.arg0() as u32, sock_role::CLIENT, -1, peer);
}

#[inline(always)]
fn opened(p: Option<*mut ProcState>, tgid: u32, fd: u32, role: u8, listen_fd: i32, peer: Peer) {
    let state = p.map_or(0, |p| unsafe { (*p).state });
    if state & proc_state::EXCLUDED != 0 || tgid == config::agent_tgid() {
        return;
    }
    let tracked = state & proc_state::TRACKED != 0;
    if !tracked {
        if !config::discovery() {
            return;
        }
        if watch_process(tgid, proc_state::NET_CANDIDATE).is_none() {
            return;
        }
    }
    let flags = if role == sock_role::SERVER {
        sock_flags::SERVER
    } else {
        sock_flags::CLIENT
    };
    let value = SockState { flags, unclassified: 0 };
    if SOCKS.insert(sock_key(tgid, fd), value, 0).is_err() {
        count(counter::SOCKS_FULL, 1);
        return;
    }
    // A process probed for HTTPS discovery (before its first TLS byte:
    // its first request is on this very connection) is told about too.
    if tracked || state & proc_state::TLS_PROBED != 0 {
        // Wake the agent now: it reads the connection's addresses while
        // the connection surely exists (a short one is gone after the
        // usual drain interval). Connections are rare next to messages.
        send_now(SocketRecord {
            kind: record::SOCKET_OPEN,
            tgid,
            ts_ns: unsafe { bpf_ktime_get_ns() },
            fd: fd as i32,
            family: peer.family,
            port: peer.port,
            role,
            _pad: [0; 3],
            listen_fd,
            addr: unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(peer.addr) },
        });
    }
}

/// What a connection's first bytes say it carries.
#[inline(always)]
fn classify(b: [u8; 4]) -> u32 {
    if b[0] == 0x16 && b[1] == 0x03 {
        return sock_flags::TLS;
    }
    match &b {
        b"GET " | b"POST" | b"PUT " | b"HEAD" | b"DELE" | b"OPTI" | b"PATC" | b"HTTP" | b"PRI " => sock_flags::HTTP,
        _ => 0,
    }
}

/// A read or write on descriptor `fd` of a watched process that is not
/// one of its stdio descriptors.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn on_io(p: *mut ProcState, pid_tgid: u64, fd: u64, io: u8, buf: u64, iov_cnt: u64, ret: u64) {
    if !config::capture_sockets() || fd > u32::MAX as u64 {
        return;
    }
    let tgid = (pid_tgid >> 32) as u32;
    let Some(s) = SOCKS.get_ptr_mut(sock_key(tgid, fd as u32)) else {
        return;
    };
    let mut flags = unsafe { (*s).flags };
    if flags & (sock_flags::OTHER | sock_flags::IGNORE) != 0 {
        return;
    }
    if flags & sock_flags::CLASSIFIED == 0 {
        let Some(b) = first4(buf, iov_cnt, ret) else { return };
        let class = classify(b);
        if class == 0 {
            unsafe {
                (*s).unclassified += 1;
                if flags & sock_flags::SEEDED == 0 || (*s).unclassified >= SEEDED_PATIENCE {
                    (*s).flags = flags | sock_flags::OTHER;
                    count(counter::SOCKETS_NOT_HTTP, 1);
                }
            }
            return;
        }
        flags |= class;
        unsafe { (*s).flags = flags };
    }
    let state = unsafe { (*p).state };
    if flags & sock_flags::TLS != 0 {
        // Only the TLS sessions of processes whose TLS library is probed
        // (tracked, or probed for discovery) are tied to their sockets:
        // for everyone else this would be a map write per socket call.
        if state & (proc_state::TRACKED | proc_state::TLS_PROBED) != 0 {
            note_thread_sock(pid_tgid, fd as i32, io);
        } else if state & proc_state::TLS_SEEN == 0 && config::discovery() {
            // A candidate speaks TLS: the agent may probe its library
            // (HTTPS discovery without host-wide probes). Once.
            unsafe { (*p).state = state | proc_state::TLS_SEEN };
            send_now(ProcessRecord {
                kind: record::TLS_SEEN,
                tgid,
                ts_ns: unsafe { bpf_ktime_get_ns() },
            });
        }
        return;
    }
    if state & proc_state::TRACKED != 0 {
        send_chunk(p, pid_tgid, fd, io, 0, buf, iov_cnt, ret);
        return;
    }
    if flags & sock_flags::CAPTURE != 0 {
        send_chunk(p, pid_tgid, fd, io, chunk_flags::DISCOVERY, buf, iov_cnt, ret);
        return;
    }
    if !config::discovery() || state & proc_state::EXCLUDED != 0 {
        return;
    }
    // Sniff: does this call start a request, in the direction requests go?
    // (The first bytes are read again rather than kept from the
    // classification above: 5.10's verifier cannot follow the compiler's
    // reuse of that value across the two branches and rejects the program.)
    let server_read = flags & sock_flags::SERVER != 0 && io == op::READ;
    let Some(b) = first4(buf, iov_cnt, ret) else {
        // A lone byte that may start the next request (Go's read-ahead):
        // judged with the next read.
        if server_read && emit::may_lead_request(buf, iov_cnt, ret) {
            let _ = SOCK_LEAD_BYTE.insert(sock_key(tgid, fd as u32), buf, 0);
        }
        return;
    };
    let direction = if flags & sock_flags::SERVER != 0 {
        io == op::READ
    } else {
        io == op::WRITE
    };
    let mut request = direction && (&b == b"POST" || &b == b"GET ");
    let mut lead = None;
    if !request
        && server_read
        && let Some(&at) = unsafe { SOCK_LEAD_BYTE.get(sock_key(tgid, fd as u32)) }
    {
        let _ = SOCK_LEAD_BYTE.remove(sock_key(tgid, fd as u32));
        request = emit::lead_starts_request(at, b);
        lead = request.then_some(at);
    }
    if !request {
        return;
    }
    unsafe { (*s).flags = flags | sock_flags::CAPTURE };
    count(counter::NET_SNIFFS, 1);
    if let Some(at) = lead {
        send_chunk(p, pid_tgid, fd, io, chunk_flags::DISCOVERY, at, 0, 1);
    }
    send_chunk(p, pid_tgid, fd, io, chunk_flags::DISCOVERY, buf, iov_cnt, ret);
}

/// Where a lone byte that may start a request was read to, per socket of
/// an untracked server (see `emit::lead_starts_request`).
#[map]
static SOCK_LEAD_BYTE: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn send_chunk(p: *mut ProcState, pid_tgid: u64, fd: u64, io: u8, flags: u8, buf: u64, iov_cnt: u64, ret: u64) {
    let call = emit::Call {
        channel: channel::SOCKET,
        pid_tgid,
        fd: fd as i32,
        op: io,
        flags,
        ssl: 0,
    };
    emit::queue(call, buf, iov_cnt, ret, Some(p));
}

/// Remembers the TLS socket this thread just used (see `tls`); a write
/// may carry the ciphertext of a rustls write waiting for its socket.
#[inline(always)]
fn note_thread_sock(pid_tgid: u64, fd: i32, io: u8) {
    // Verifier note: on kernels without bpf_loop (the compat object, 5.10
    // to 5.16) the raw tracepoint's dispatcher is at the verifier's size
    // limit with its unrolled copy loop; this second copy site would pass
    // it (E2BIG on 5.10). There rustls writes are sent at once instead
    // (see `rustls::rustls_write_exit`).
    if io == op::WRITE && crate::HAS_BPF_LOOP {
        crate::rustls::on_socket_write(pid_tgid, fd);
    }
    let now = unsafe { bpf_ktime_get_ns() };
    match THREAD_SOCK.get_ptr_mut(pid_tgid) {
        Some(t) => unsafe {
            if io == op::READ {
                (*t).read_fd = fd;
                (*t).read_ts = now;
            } else {
                (*t).write_fd = fd;
                (*t).write_ts = now;
            }
        },
        None => {
            let t = if io == op::READ {
                ThreadSock {
                    read_fd: fd,
                    write_fd: -1,
                    read_ts: now,
                    write_ts: 0,
                }
            } else {
                ThreadSock {
                    read_fd: -1,
                    write_fd: fd,
                    read_ts: 0,
                    write_ts: now,
                }
            };
            let _ = THREAD_SOCK.insert(pid_tgid, t, 0);
        }
    }
}

/// close(fd) of a watched process.
#[inline(always)]
pub fn on_close(p: *mut ProcState, pid_tgid: u64, fd: u64) {
    if fd > u32::MAX as u64 {
        return;
    }
    let tgid = (pid_tgid >> 32) as u32;
    // This thread's TLS socket is gone: a later session must not be tied
    // to whatever reuses the number.
    if let Some(t) = THREAD_SOCK.get_ptr_mut(pid_tgid) {
        unsafe {
            if (*t).read_fd == fd as i32 {
                (*t).read_fd = -1;
            }
            if (*t).write_fd == fd as i32 {
                (*t).write_fd = -1;
            }
        }
    }
    let key = sock_key(tgid, fd as u32);
    let Some(s) = (unsafe { SOCKS.get(key) }) else {
        return;
    };
    let flags = s.flags;
    let _ = SOCKS.remove(key);
    let tracked = unsafe { (*p).state } & (proc_state::TRACKED | proc_state::TLS_PROBED) != 0;
    // The agent holds state for captured HTTP connections, and ties TLS
    // sessions to TLS sockets: both end here (some runtimes free the TLS
    // session much later, when their garbage collector gets to it).
    let held = flags & (sock_flags::HTTP | sock_flags::TLS) != 0;
    if held && (tracked || flags & sock_flags::CAPTURE != 0) {
        send(SocketRecord {
            kind: record::SOCKET_CLOSE,
            tgid,
            ts_ns: unsafe { bpf_ktime_get_ns() },
            fd: fd as i32,
            ..SocketRecord::default()
        });
    }
}

/// recvmsg/sendmsg: the iovec array and its length from the user msghdr.
#[inline(always)]
pub fn msghdr_iov(msg: u64) -> Option<(u64, u64)> {
    // struct user_msghdr { void *msg_name; int msg_namelen; struct iovec *msg_iov; size_t msg_iovlen; ... }
    let v = unsafe { bpf_probe_read_user((msg + 16) as *const [u64; 2]) }.ok()?;
    Some((v[0], v[1]))
}
