//! Stdio capture: reads on a process's "in" descriptors (stdin and its
//! copies) and writes on its "out" descriptors (stdout and its copies), see
//! `fds` for how those are followed.
//!
//! A stdio MCP server reads its client's messages from stdin and writes its
//! own to stdout, so both directions of the session are seen from the
//! server alone. Only the exit tracepoints are hooked: they know how many
//! bytes moved, and `args` recovers where from.
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
    args::{syscall_arg0, syscall_args},
    config,
    emit::emit,
    maps::{PROCS, count},
};

/// Offset of `ret` in the syscalls:sys_exit_* records, and of the first
/// argument in sys_enter_* records (checked by the agent against tracefs).
pub const EXIT_RET: usize = 16;
pub const ENTER_ARG0: usize = 16;

#[inline(always)]
pub fn ctx_u64(ctx: &TracePointContext, offset: usize) -> u64 {
    // Tracepoint records are directly readable context memory.
    unsafe { *(ctx.as_ptr().add(offset) as *const u64) }
}

#[tracepoint]
pub fn exit_read(ctx: TracePointContext) -> u32 {
    on_exit(&ctx, op::READ, false);
    0
}

#[tracepoint]
pub fn exit_readv(ctx: TracePointContext) -> u32 {
    on_exit(&ctx, op::READ, true);
    0
}

#[tracepoint]
pub fn exit_write(ctx: TracePointContext) -> u32 {
    on_exit(&ctx, op::WRITE, false);
    0
}

#[tracepoint]
pub fn exit_writev(ctx: TracePointContext) -> u32 {
    on_exit(&ctx, op::WRITE, true);
    0
}

#[inline(always)]
fn on_exit(ctx: &TracePointContext, op: u8, vectored: bool) {
    let ret = ctx_u64(ctx, EXIT_RET) as i64;
    if ret <= 0 {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;

    // Who is this, and does this call concern us? One map lookup.
    let (watched, mut flags) = match unsafe { PROCS.get(&tgid) } {
        Some(p) => {
            if p.state & proc_state::EXCLUDED != 0 {
                return;
            }
            if p.state & proc_state::TRACKED != 0 {
                (if op == op::READ { p.in_fds } else { p.out_fds }, 0)
            } else if op == op::READ && p.state & proc_state::CANDIDATE != 0 && config::discovery() {
                (p.in_fds, chunk_flags::DISCOVERY)
            } else {
                return;
            }
        }
        // A plain process: only what it reads on stdin is worth a look.
        None => {
            if op != op::READ || !config::discovery() || tgid == config::agent_tgid() {
                return;
            }
            (fds::DEFAULT_IN, chunk_flags::DISCOVERY)
        }
    };
    // Cheap test of the descriptor before reading all the arguments.
    let Some(fd) = syscall_arg0() else { return };
    if !fds::has(watched, fd) {
        return;
    }
    let Some([_, buf, vlen]) = syscall_args() else { return };
    let iov_cnt = if vectored { vlen } else { 0 };

    if flags & chunk_flags::DISCOVERY != 0 {
        if !looks_like_json(buf, iov_cnt) {
            // This descriptor does not carry JSON: stop sniffing it (a fresh
            // MCP peer's first read always starts a message).
            if let Some(p) = PROCS.get_ptr_mut(&tgid) {
                unsafe { (*p).in_fds &= !(1u64 << (fd & 63)) };
            }
            return;
        }
        match PROCS.get_ptr_mut(&tgid) {
            Some(p) => unsafe { (*p).state |= proc_state::PROVISIONAL },
            None => {
                if PROCS
                    .insert(
                        &tgid,
                        &ProcState::with_state(proc_state::PROVISIONAL),
                        BPF_NOEXIST as u64,
                    )
                    .is_err()
                {
                    count(counter::PROCS_FULL, 1);
                    return;
                }
            }
        }
        count(counter::DISCOVERY_SNIFFS, 1);
    }
    let Some(p) = PROCS.get_ptr_mut(&tgid) else { return };
    unsafe {
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
        fd: fd as i32,
        op,
        flags,
        _reserved: [0; 2],
    };
    if !emit(header, buf, iov_cnt, len) {
        unsafe { (*p).lost = 1 };
    }
}

/// True when the first byte the call moved opens a JSON object or array.
#[inline(always)]
fn looks_like_json(buf: u64, iov_cnt: u64) -> bool {
    let mut first = buf;
    if iov_cnt != 0 {
        match unsafe { bpf_probe_read_user(buf as *const u64) } {
            Ok(base) => first = base,
            Err(_) => return false,
        }
    }
    match unsafe { bpf_probe_read_user(first as *const u8) } {
        Ok(b) => b == b'{' || b == b'[',
        Err(_) => false,
    }
}
