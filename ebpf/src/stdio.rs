//! Stdio capture: reads on a process's "in" descriptors (stdin and its
//! copies) and writes on its "out" descriptors (stdout and its copies), see
//! `fds` for how those are followed.
//!
//! A stdio MCP server reads its client's messages from stdin and writes its
//! own to stdout, so both directions of the session are seen from the
//! server alone.
//!
//! Discovery: a process reading its stdin is a candidate, once. If the
//! first byte of its first read (since it started, or since the agent
//! started) is `{` or `[` (a JSON object or batch), it becomes
//! provisionally tracked and the bytes go to the agent flagged DISCOVERY;
//! the agent confirms (it speaks MCP) or rejects (excluded from then on).
//! Tracking in the kernel right away matters: the server's answer to that
//! very first message must not be missed while the agent decides.
//! The process is marked as serving at once too (`proc_state::SERVES`):
//! a stdio MCP server's first call can follow its first request within
//! the agent's drain interval, and its side effects must be recorded from
//! that call on; the agent's rejection of a process that is not MCP
//! clears the mark.
//! Otherwise its stdin is ruled out until it execs a new program: a shell
//! pipeline, `dd` or a log shipper reading stdin all day pays one byte
//! load per read, never a copy of user memory. A fresh MCP server's first
//! read always starts a message; one already running when the agent
//! starts is normally blocked in read() waiting for its client's next
//! message, so that read starts a message too (one caught in the middle of
//! a large message is ruled out until it execs: `--pid`/`--exe` select it
//! regardless).

use aya_ebpf::helpers::bpf_probe_read_user;
use mcptap_common::{ProcState, channel, chunk_flags, counter, fds, op, proc_state};

use crate::{
    emit,
    maps::{count, rule_out_stdin, watch_process},
};

/// The first stdin read of a process the kernel knows nothing about:
/// tracked provisionally when it starts a JSON value, else ruled out.
/// Returns true when bytes were queued.
#[inline(always)]
pub fn sniff_unwatched(pid_tgid: u64, buf: u64, iov_cnt: u64, ret: u64) -> bool {
    let tgid = (pid_tgid >> 32) as u32;
    if !looks_like_json(buf, iov_cnt) {
        rule_out_stdin(tgid);
        return false;
    }
    let Some(p) = watch_process(tgid, proc_state::PROVISIONAL | proc_state::SERVES) else {
        return false;
    };
    count(counter::DISCOVERY_SNIFFS, 1);
    send(p, pid_tgid, 0, op::READ, chunk_flags::DISCOVERY, buf, iov_cnt, ret);
    true
}

/// A read or write of a watched process. Returns false when `fd` is not one
/// of its stdio descriptors (the caller then tries sockets).
#[inline(always)]
pub fn on_io(p: *mut ProcState, pid_tgid: u64, fd: u64, io: u8, buf: u64, iov_cnt: u64, ret: u64) -> bool {
    let (state, in_fds, out_fds) = unsafe { ((*p).state, (*p).in_fds, (*p).out_fds) };
    let set = if io == op::READ { in_fds } else { out_fds };
    if !fds::has(set, fd) {
        return false;
    }
    if state & proc_state::TRACKED != 0 {
        send(p, pid_tgid, fd, io, 0, buf, iov_cnt, ret);
        return true;
    }
    if io == op::READ && state & proc_state::CANDIDATE != 0 && crate::config::discovery() {
        if !looks_like_json(buf, iov_cnt) {
            // This descriptor does not carry JSON: stop sniffing it (a fresh
            // MCP peer's first read always starts a message).
            unsafe { (*p).in_fds &= !(1u64 << (fd & 63)) };
            return true;
        }
        unsafe { (*p).state |= proc_state::PROVISIONAL | proc_state::SERVES };
        count(counter::DISCOVERY_SNIFFS, 1);
        send(p, pid_tgid, fd, io, chunk_flags::DISCOVERY, buf, iov_cnt, ret);
    }
    true
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn send(p: *mut ProcState, pid_tgid: u64, fd: u64, io: u8, flags: u8, buf: u64, iov_cnt: u64, ret: u64) {
    let call = emit::Call {
        channel: channel::STDIO,
        pid_tgid,
        fd: fd as i32,
        op: io,
        flags,
        ssl: 0,
    };
    emit::queue(call, buf, iov_cnt, ret, Some(p));
}

/// True when the first byte the call moved opens a JSON object or array.
#[inline(always)]
fn looks_like_json(buf: u64, iov_cnt: u64) -> bool {
    let mut first = buf;
    if iov_cnt != 0 {
        match emit::first_iovec(buf) {
            Some((base, _)) => first = base,
            None => return false,
        }
    }
    match unsafe { bpf_probe_read_user(first as *const u8) } {
        Ok(b) => b == b'{' || b == b'[',
        Err(_) => false,
    }
}
