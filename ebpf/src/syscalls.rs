//! Stdio capture: reads on a process's "in" descriptors (stdin and its
//! duplicates) and writes on its "out" descriptors (stdout and its
//! duplicates), see `fds` for how those are followed.
//!
//! A stdio MCP server reads its client's messages from stdin and writes its
//! own to stdout, so both directions of the session are seen from the
//! server alone. The entry tracepoint keeps the call's arguments (only for
//! tracked processes and discovery candidates); the exit tracepoint knows
//! how many bytes moved and copies them.
//!
//! Discovery: an untracked process reading its stdin is a candidate. If the
//! first byte it read is `{` or `[` (a JSON object or batch), it becomes
//! provisionally tracked and the bytes go to the agent flagged DISCOVERY;
//! the agent confirms (it speaks MCP) or rejects (excluded from then on).
//! Tracking in the kernel right away matters: the server's answer to that
//! very first message must not be missed while the agent decides.

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use mcptap_common::{ChunkHeader, ProcState, chunk_flags, counter, fds, op, proc_state, record};

use crate::{
    config,
    emit::emit,
    maps::{INFLIGHT, InflightCall, PROCS, count},
};

/// Offsets in the syscalls:sys_enter_* / sys_exit_* records (checked by the
/// agent against tracefs before loading).
pub const ARG0: usize = 16;
pub const ARG1: usize = 24;
pub const ARG2: usize = 32;
pub const RET: usize = 16;

#[inline(always)]
pub fn arg(ctx: &TracePointContext, offset: usize) -> u64 {
    // Tracepoint records are directly readable context memory.
    unsafe { *(ctx.as_ptr().add(offset) as *const u64) }
}

#[tracepoint]
pub fn enter_read(ctx: TracePointContext) -> u32 {
    stash_read(arg(&ctx, ARG0), arg(&ctx, ARG1), 0);
    0
}

#[tracepoint]
pub fn enter_readv(ctx: TracePointContext) -> u32 {
    stash_read(arg(&ctx, ARG0), arg(&ctx, ARG1), arg(&ctx, ARG2));
    0
}

#[tracepoint]
pub fn enter_write(ctx: TracePointContext) -> u32 {
    stash_write(arg(&ctx, ARG0), arg(&ctx, ARG1), 0);
    0
}

#[tracepoint]
pub fn enter_writev(ctx: TracePointContext) -> u32 {
    stash_write(arg(&ctx, ARG0), arg(&ctx, ARG1), arg(&ctx, ARG2));
    0
}

/// Shared by all four exit tracepoints: the stash says what the call was.
#[tracepoint]
pub fn exit_rw(ctx: TracePointContext) -> u32 {
    on_exit(arg(&ctx, RET) as i64);
    0
}

#[inline(always)]
fn stash_read(fd: u64, buf: u64, iov_cnt: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let flags = match unsafe { PROCS.get(&tgid) } {
        Some(p) => {
            if p.state & proc_state::EXCLUDED != 0 || !fds::has(p.in_fds, fd) {
                return;
            }
            if p.state & proc_state::TRACKED != 0 {
                0
            } else if p.state & proc_state::CANDIDATE != 0 && config::discovery() {
                chunk_flags::DISCOVERY
            } else {
                return;
            }
        }
        // A plain process: only its stdin is worth a look.
        None => {
            if fd != 0 || !config::discovery() || tgid == config::agent_tgid() {
                return;
            }
            chunk_flags::DISCOVERY
        }
    };
    let call = InflightCall {
        buf,
        iov_cnt,
        fd: fd as i32,
        op: op::READ,
        flags,
        _pad: [0; 2],
    };
    let _ = INFLIGHT.insert(&pid_tgid, &call, 0);
}

#[inline(always)]
fn stash_write(fd: u64, buf: u64, iov_cnt: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    match unsafe { PROCS.get(&tgid) } {
        Some(p) if p.state & proc_state::TRACKED != 0 && fds::has(p.out_fds, fd) => {}
        _ => return,
    }
    let call = InflightCall {
        buf,
        iov_cnt,
        fd: fd as i32,
        op: op::WRITE,
        flags: 0,
        _pad: [0; 2],
    };
    let _ = INFLIGHT.insert(&pid_tgid, &call, 0);
}

#[inline(always)]
fn on_exit(ret: i64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(call) = (unsafe { INFLIGHT.get(&pid_tgid) }).copied() else {
        return;
    };
    let _ = INFLIGHT.remove(&pid_tgid);
    if call.op != op::READ && call.op != op::WRITE {
        return;
    }
    if ret <= 0 {
        return;
    }
    let tgid = (pid_tgid >> 32) as u32;
    let mut flags = 0u8;
    if call.flags & chunk_flags::DISCOVERY != 0 {
        if !looks_like_json(&call) {
            // This descriptor does not carry JSON: stop sniffing it (a fresh
            // MCP peer's first read always starts a message).
            if let Some(p) = PROCS.get_ptr_mut(&tgid) {
                unsafe { (*p).in_fds &= !(1u64 << (call.fd as u64 & 63)) };
            }
            return;
        }
        match PROCS.get_ptr_mut(&tgid) {
            Some(p) => unsafe { (*p).state |= proc_state::PROVISIONAL },
            None => {
                let provisional = ProcState::with_state(proc_state::PROVISIONAL);
                if PROCS
                    .insert(&tgid, &provisional, BPF_NOEXIST as u64)
                    .is_err()
                {
                    count(counter::PROCS_FULL, 1);
                }
            }
        }
        count(counter::DISCOVERY_SNIFFS, 1);
        flags |= chunk_flags::DISCOVERY;
    }
    let Some(p) = PROCS.get_ptr_mut(&tgid) else {
        return; // untracked between entry and exit (exited or map full)
    };
    unsafe {
        if (*p).state & proc_state::TRACKED == 0 {
            return; // rejected between entry and exit
        }
        if (*p).lost != 0 {
            flags |= chunk_flags::LOSS_BEFORE;
            (*p).lost = 0;
        }
    }

    let call_len = ret as u64;
    let mut len = call_len;
    let cap = config::capture_cap();
    if len > cap {
        len = cap;
        flags |= chunk_flags::TRUNCATED;
        count(counter::TRUNCATED_CALLS, 1);
        count(counter::TRUNCATED_BYTES, call_len - cap);
    }
    let header = ChunkHeader {
        kind: record::CHUNK,
        len: 0,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        pid_tgid,
        call_len,
        offset: 0,
        fd: call.fd,
        op: call.op,
        flags,
        _reserved: [0; 2],
    };
    if !emit(header, call.buf, call.iov_cnt, len) {
        unsafe { (*p).lost = 1 };
    }
}

/// True when the first byte the call read opens a JSON object or array.
#[inline(always)]
fn looks_like_json(call: &InflightCall) -> bool {
    let mut first = call.buf;
    if call.iov_cnt != 0 {
        match unsafe { bpf_probe_read_user(call.buf as *const u64) } {
            Ok(base) => first = base,
            Err(_) => return false,
        }
    }
    match unsafe { bpf_probe_read_user(first as *const u8) } {
        Ok(b) => b == b'{' || b == b'[',
        Err(_) => false,
    }
}
