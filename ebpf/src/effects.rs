//! Side effects of MCP servers: the files a server process (or a process
//! it started) opens, removes and renames, the programs it runs, where it
//! connects and where it listens. One [`EffectRecord`] each, named after
//! the server it belongs to (its `owner`); the agent attributes it to the
//! operations that server had in flight (agent/src/effects).
//!
//! Who pays: a process the agent marked as serving MCP
//! (`proc_state::SERVES`) and the processes it starts (marked at fork:
//! `watch::byte::CHILD`, their server in [`OWNERS`]). Every other process
//! pays what any hooked syscall costs it (the glance at its watch byte),
//! and nothing at all when effects are off (their fexit programs are not
//! attached and the tracepoint's branch is pruned at load).
//!
//! Paths are copied as the process passed them, with the directory
//! descriptor they are relative to; the agent makes them absolute.

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes, bpf_probe_read_user,
        bpf_probe_read_user_str_bytes, generated,
    },
    macros::{map, tracepoint},
    maps::{LruHashMap, ring_buf::RingBufEntry},
    programs::TracePointContext,
};
use core::ffi::c_void;

use mcptap_common::{EFFECT_PATH_MAX, EffectRecord, ProcState, counter, effect, proc_state, record, watch};

use crate::{
    config, emit,
    maps::{EVENTS, Glance, PROCS, count, glance, kernel_byte_value, set_kernel_byte, wakeup_flags},
    regs::Args,
    sockets, sysnr,
};

/// Processes started by MCP servers (key: tgid), and the server each
/// belongs to. LRU: a process whose exit the kernel missed must not stay.
#[map]
pub static OWNERS: LruHashMap<u32, u32> = LruHashMap::with_max_entries(16384, 0);

/// Sockets an MCP server (or a process it started) connected, whose next
/// bytes name the host it wanted (key: tgid << 32 | fd): the first write of
/// a connection ([`naming::HELLO`]: a TLS ClientHello's SNI, an HTTP
/// `Host`), or the answers read from a DNS server ([`naming::DNS`]). Set at
/// connect, removed at the first write (HELLO) or at close. LRU: a socket
/// of a process that never closed it must not stay.
#[map]
static NAMING: LruHashMap<u64, u8> = LruHashMap::with_max_entries(4096, 0);

mod naming {
    /// Copy the first write.
    pub const HELLO: u8 = 1;
    /// Copy every read (port 53).
    pub const DNS: u8 = 2;
}

const DNS_PORT: u16 = 53;
const EINPROGRESS: i64 = -115;

#[inline(always)]
fn naming_key(tgid: u32, fd: i32) -> u64 {
    ((tgid as u64) << 32) | fd as u32 as u64
}

const AT_FDCWD: i32 = -100;
const EPERM: i64 = -1;
const EACCES: i64 = -13;

/// The server whose effects this process's are: itself when it serves
/// MCP, the server that started it (or started its parent) when it is a
/// child, none otherwise.
#[inline(always)]
pub fn owner_of(seen: Glance, tgid: u32) -> Option<u32> {
    let state = match seen {
        Glance::Watched => unsafe { PROCS.get(tgid) }.map_or(0, |p: &ProcState| p.state),
        _ => 0,
    };
    owner_with(seen, tgid, state)
}

/// [`owner_of`] for a caller that has already read the process's state
/// (`state`: its `ProcState::state` when `seen` is `Watched`).
#[inline(always)]
fn owner_with(seen: Glance, tgid: u32, state: u32) -> Option<u32> {
    match seen {
        Glance::Watched => {
            if state & proc_state::SERVES != 0 {
                return Some(tgid);
            }
            // A child of a server that became watched itself (it made a
            // connection discovery looks at); any other watched process
            // (a client, a candidate) has no owner, without a lookup.
            if state & proc_state::CHILD == 0 {
                return None;
            }
            unsafe { OWNERS.get(tgid) }.copied()
        }
        Glance::Child => unsafe { OWNERS.get(tgid) }.copied(),
        _ => None,
    }
}

/// At the exit of syscall `nr` (one `sysnr::is_effect` says yes to).
#[inline(always)]
pub fn on_exit(nr: u64, seen: Glance, tgid: u32, regs: &impl Args, ret: i64) {
    if !config::effects() {
        return;
    }
    let Some(owner) = owner_of(seen, tgid) else { return };
    // A failed call did nothing, except when it was refused: a refusal
    // says what the server tried (an open of a file it may not read).
    let refused = ret == EPERM || ret == EACCES;
    match nr {
        sysnr::OPEN | sysnr::OPENAT | sysnr::OPENAT2 => {
            if ret < 0 && !refused {
                return;
            }
            let (dirfd, path, flags) = match nr {
                sysnr::OPEN => (AT_FDCWD, regs.arg0(), regs.arg1()),
                sysnr::OPENAT => (regs.arg0() as i32, regs.arg1(), regs.arg2()),
                // openat2: the flags are the first field of `struct open_how`.
                _ => (
                    regs.arg0() as i32,
                    regs.arg1(),
                    unsafe { bpf_probe_read_user(regs.arg2() as *const u64) }.unwrap_or(0),
                ),
            };
            send(owner, tgid, effect::OPEN, ret, flags, dirfd, path, 0, None);
        }
        sysnr::UNLINK | sysnr::UNLINKAT | sysnr::RMDIR => {
            if ret != 0 && !refused {
                return;
            }
            let (dirfd, path, flags) = match nr {
                sysnr::UNLINK => (AT_FDCWD, regs.arg0(), 0),
                sysnr::RMDIR => (AT_FDCWD, regs.arg0(), effect::AT_REMOVEDIR),
                _ => (regs.arg0() as i32, regs.arg1(), regs.arg2() & effect::AT_REMOVEDIR),
            };
            send(owner, tgid, effect::UNLINK, ret, flags, dirfd, path, 0, None);
        }
        sysnr::RENAME | sysnr::RENAMEAT | sysnr::RENAMEAT2 => {
            if ret != 0 && !refused {
                return;
            }
            // `flags` carries the new name's directory descriptor.
            let (dirfd, from, new_dirfd, to) = match nr {
                sysnr::RENAME => (AT_FDCWD, regs.arg0(), AT_FDCWD, regs.arg1()),
                _ => (regs.arg0() as i32, regs.arg1(), regs.arg2() as i32, regs.arg3()),
            };
            send(owner, tgid, effect::RENAME, ret, new_dirfd as i64 as u64, dirfd, from, to, None);
        }
        sysnr::CONNECT => {
            let Some(peer) = sockets::read_sockaddr(regs.arg1()) else { return };
            if !sockets::is_inet(peer.family) {
                return;
            }
            let fd = regs.arg0() as i32;
            send(owner, tgid, effect::CONNECT, ret, 0, fd, 0, 0, Some(peer));
            if ret == 0 || ret == EINPROGRESS {
                let what = if peer.port == DNS_PORT { naming::DNS } else { naming::HELLO };
                let _ = NAMING.insert(naming_key(tgid, fd), what, 0);
            }
        }
        sysnr::LISTEN => {
            if ret != 0 {
                return;
            }
            send(owner, tgid, effect::LISTEN, ret, 0, regs.arg0() as i32, 0, 0, None);
        }
        sysnr::EXECVE | sysnr::EXECVEAT => {
            if ret == 0 {
                send_exec_args(owner, tgid, regs.sp());
            }
        }
        sysnr::BIND => {
            // Only to name the address of a later listen (read from user
            // memory now: at listen only the socket is left).
            if ret != 0 {
                return;
            }
            let Some(local) = sockets::read_sockaddr(regs.arg1()) else { return };
            if !sockets::is_inet(local.family) {
                return;
            }
            send(owner, tgid, effect::BIND, ret, 0, regs.arg0() as i32, 0, 0, Some(local));
        }
        _ => {}
    }
}

/// A record reserved in the ring buffer with its header filled and the rest
/// empty (no address, no paths, no descriptor): each sender fills what its
/// kind carries. `None` when the ring buffer is full (counted).
#[inline(always)]
fn reserve(owner: u32, tgid: u32, kind: u8) -> Option<RingBufEntry<EffectRecord>> {
    let Some(mut entry) = EVENTS.reserve::<EffectRecord>(0) else {
        count(counter::RINGBUF_FULL_OTHER, 1);
        return None;
    };
    let r = entry.as_mut_ptr();
    unsafe {
        (*r).kind = record::EFFECT;
        (*r).tgid = tgid;
        (*r).ts_ns = bpf_ktime_get_ns();
        (*r).owner = owner;
        (*r).effect = kind;
        (*r)._pad = 0;
        (*r).family = 0;
        (*r).ret = 0;
        (*r).flags = 0;
        (*r).fd = AT_FDCWD;
        (*r).port = 0;
        (*r)._pad2 = 0;
        // Two words, not a byte array: see `sockets::Peer`.
        let words = (&raw mut (*r).addr) as *mut [u64; 2];
        *words = [0, 0];
        (*r).path[0] = 0;
        (*r).path2[0] = 0;
    }
    Some(entry)
}

/// Writes the record straight into the ring buffer (two paths do not fit
/// on the 512-byte BPF stack).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn send(
    owner: u32,
    tgid: u32,
    kind: u8,
    ret: i64,
    flags: u64,
    fd: i32,
    path: u64,
    path2: u64,
    peer: Option<sockets::Peer>,
) {
    let Some(mut entry) = reserve(owner, tgid, kind) else { return };
    let r = entry.as_mut_ptr();
    unsafe {
        (*r).ret = ret;
        (*r).flags = flags;
        (*r).fd = fd;
        if let Some(p) = peer {
            (*r).family = p.family;
            (*r).port = p.port;
            let words = (&raw mut (*r).addr) as *mut [u64; 2];
            *words = p.addr;
        }
        if path != 0 {
            let _ = bpf_probe_read_user_str_bytes(path as *const u8, &mut (*r).path);
        }
        if path2 != 0 {
            let _ = bpf_probe_read_user_str_bytes(path2 as *const u8, &mut (*r).path2);
        }
    }
    entry.submit(wakeup_flags());
}

/// A read, write or close of a server or of a process it started: the
/// bytes of a naming socket, or its end. `state`: the process's
/// `ProcState::state` when `seen` is `Watched` (its caller has read it).
#[inline(always)]
pub fn on_io_or_close(nr: u64, seen: Glance, tgid: u32, state: u32, regs: &impl Args, ret: i64) {
    if sysnr::moves_bytes(nr) {
        on_socket_io(nr, seen, tgid, state, regs, ret);
    } else if nr == sysnr::CLOSE {
        on_close(tgid, regs, ret);
    }
}

/// Bytes a naming socket moved (read or written by syscall `nr`, `ret`
/// of them): the first write of a connection, or a DNS answer. One hash
/// lookup when the socket is not one of [`NAMING`].
#[inline(always)]
fn on_socket_io(nr: u64, seen: Glance, tgid: u32, state: u32, regs: &impl Args, ret: i64) {
    if !config::effects() || ret <= 0 {
        return;
    }
    let fd = regs.arg0() as i32;
    let key = naming_key(tgid, fd);
    let Some(what) = (unsafe { NAMING.get(key) }).copied() else { return };
    let (kind, vectored, msg) = match nr {
        sysnr::WRITE | sysnr::SENDTO if what == naming::HELLO => (effect::HELLO, false, false),
        sysnr::WRITEV if what == naming::HELLO => (effect::HELLO, true, false),
        sysnr::SENDMSG if what == naming::HELLO => (effect::HELLO, true, true),
        sysnr::READ | sysnr::RECVFROM if what == naming::DNS => (effect::DNS_ANSWER, false, false),
        sysnr::READV if what == naming::DNS => (effect::DNS_ANSWER, true, false),
        sysnr::RECVMSG if what == naming::DNS => (effect::DNS_ANSWER, true, true),
        _ => return,
    };
    let Some(owner) = owner_with(seen, tgid, state) else { return };
    if kind == effect::HELLO {
        // Only the first write names the host.
        let _ = NAMING.remove(key);
    }
    // The bytes: the buffer, or the first iovec, from the msghdr for
    // sendmsg/recvmsg.
    let mut buf = regs.arg1();
    let mut len = ret as u64;
    if vectored {
        let iov = if msg {
            match sockets::msghdr_iov(buf) {
                Some((iov, n)) if n > 0 => iov,
                _ => return,
            }
        } else {
            buf
        };
        let Some((base, iov_len)) = emit::first_iovec(iov) else { return };
        buf = base;
        len = len.min(iov_len);
    }
    send_bytes(owner, tgid, kind, fd, buf, len);
}

/// A connected socket is closed: it names no host any more.
#[inline(always)]
fn on_close(tgid: u32, regs: &impl Args, ret: i64) {
    if config::effects() && ret == 0 {
        let _ = NAMING.remove(naming_key(tgid, regs.arg0() as i32));
    }
}

/// Up to 512 bytes from `buf` into the record's region (`path` and
/// `path2`); `ret` says how many.
#[inline(always)]
fn send_bytes(owner: u32, tgid: u32, kind: u8, fd: i32, buf: u64, len: u64) {
    let Some(mut entry) = reserve(owner, tgid, kind) else { return };
    let r = entry.as_mut_ptr();
    unsafe {
        (*r).fd = fd;
        let region = (&raw mut (*r).path) as *mut u8;
        // Bounded for the verifier: 1 to 512 bytes, the region's size.
        let n = if len >= 2 * EFFECT_PATH_MAX as u64 {
            2 * EFFECT_PATH_MAX as u64
        } else {
            len & (2 * EFFECT_PATH_MAX as u64 - 1)
        };
        if n > 0 && generated::bpf_probe_read_user(region as *mut c_void, n as u32, buf as *const c_void) == 0 {
            (*r).ret = n as i64;
        }
    }
    entry.submit(wakeup_flags());
}

/// Most argv pointers read: past them arguments are cut (the agent says so).
const MAX_ARGS: u64 = 64;

/// The arguments of the program a successful execve started: at its exit
/// the registers are the new program's, its stack pointer at argc, then
/// the argv pointers; the strings themselves are contiguous from argv[0],
/// and the environment's strings follow the last one.
///
/// No loop over the bytes (the raw tracepoint program carries every
/// syscall and must stay well under the verifier's budget): the bytes up
/// to the last argument are copied in one read, the last argument with a
/// string read, which stops at its NUL, so the environment never leaves
/// the kernel. `path` and `path2` are one 512-byte region here; `ret` is
/// how many of its bytes are arguments.
#[inline(always)]
fn send_exec_args(owner: u32, tgid: u32, sp: u64) {
    let argc = unsafe { bpf_probe_read_user(sp as *const u64) }.unwrap_or(0);
    let argv0 = unsafe { bpf_probe_read_user((sp + 8) as *const u64) }.unwrap_or(0);
    let last_index = argc.saturating_sub(1).min(MAX_ARGS - 1);
    let last = unsafe { bpf_probe_read_user((sp + 8 + 8 * last_index) as *const u64) }.unwrap_or(0);
    let Some(mut entry) = reserve(owner, tgid, effect::EXEC_ARGS) else { return };
    let r = entry.as_mut_ptr();
    unsafe {
        (*r).flags = argc;
        let region = (&raw mut (*r).path) as *mut u8;
        let mut len: i64 = 0;
        if argv0 != 0 && last >= argv0 {
            let before_last = last - argv0;
            if before_last >= EFFECT_PATH_MAX as u64 {
                // Longer than the region's first half: its first 256 bytes
                // are all arguments (cut).
                if generated::bpf_probe_read_user(region as *mut c_void, EFFECT_PATH_MAX as u32, argv0 as *const c_void) == 0 {
                    len = EFFECT_PATH_MAX as i64;
                }
            } else {
                // Bounded for the verifier: at most 255 bytes, then at most
                // 256 more, within the 512 of `path` and `path2`.
                let n = before_last & 0xff;
                if generated::bpf_probe_read_user(region as *mut c_void, n as u32, argv0 as *const c_void) == 0 {
                    let tail = generated::bpf_probe_read_user_str(
                        region.add(n as usize) as *mut c_void,
                        EFFECT_PATH_MAX as u32,
                        last as *const c_void,
                    );
                    if tail > 0 {
                        len = n as i64 + tail;
                    }
                }
            }
        }
        (*r).ret = len;
    }
    entry.submit(wakeup_flags());
}

/// A process serving MCP (or one of its children) runs a new program: the
/// executable's path, from the tracepoint record.
#[inline(always)]
pub fn on_exec(ctx: &TracePointContext, tgid: u32) {
    if !config::effects() {
        return;
    }
    let Some(owner) = owner_of(glance(tgid), tgid) else { return };
    let loc_offset = config::exec_filename_offset();
    if loc_offset == 0 {
        return;
    }
    // `__data_loc char[] filename`: the low 16 bits are the string's
    // offset in the record.
    let Ok(loc) = (unsafe { ctx.read_at::<u32>(loc_offset as usize) }) else {
        return;
    };
    let Some(mut entry) = reserve(owner, tgid, effect::EXEC) else { return };
    let r = entry.as_mut_ptr();
    unsafe {
        let src = (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize);
        let _ = bpf_probe_read_kernel_str_bytes(src, &mut (*r).path);
    }
    entry.submit(wakeup_flags());
}

/// A process forks: a child of a server (or of one of its children)
/// becomes a child too. Runs in the parent.
#[tracepoint]
pub fn sched_fork(ctx: TracePointContext) -> u32 {
    if !config::effects() {
        return 0;
    }
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    let seen = glance(parent);
    if seen != Glance::Watched && seen != Glance::Child {
        return 0;
    }
    let Some(owner) = owner_of(seen, parent) else { return 0 };
    let offset = config::fork_child_pid_offset();
    if offset == 0 {
        return 0;
    }
    let Ok(child) = (unsafe { ctx.read_at::<u32>(offset as usize) }) else {
        return 0;
    };
    // A new thread of the parent is reported here too (its pid is a thread
    // id): harmless while it lives (nothing looks up a thread id), and
    // cleared when it exits (`thread_exited`).
    if kernel_byte_value(child) != Some(watch::byte::NONE) {
        return 0;
    }
    if OWNERS.insert(child, owner, 0).is_ok() {
        set_kernel_byte(child, watch::byte::CHILD);
    }
    0
}

/// A task exits: a thread marked as a child at its clone is unmarked, and
/// a child process forgotten at its end.
#[inline(always)]
pub fn task_exited(pid: u32, group_dead: bool, tgid: u32) {
    if !config::effects() {
        return;
    }
    if pid != tgid && kernel_byte_value(pid) == Some(watch::byte::CHILD) {
        set_kernel_byte(pid, watch::byte::NONE);
        let _ = OWNERS.remove(pid);
    }
    if group_dead {
        // Its byte is cleared by the caller; a child that became watched
        // (a connection discovery looked at) has no CHILD byte left, so the
        // entry goes whatever the byte says (a process exit dwarfs a hash
        // delete).
        let _ = OWNERS.remove(tgid);
    }
}
