//! Process lifecycle: executable-name rules at exec, and the end of watched
//! processes at exit (the agent closes their sessions: pending requests end
//! as `server_exited`, partial messages are counted as lost).

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use mcptap_common::{ProcessRecord, comm_rule, proc_state, record};

use crate::{
    config,
    maps::{COMM_RULES, PROCS, forget, forget_ruled_out, send, send_now, watch_process},
};

#[tracepoint]
pub fn sched_exec(ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // A server, or a process it started, runs a program: a side effect.
    crate::effects::on_exec(&ctx, tgid);
    // A new program may speak MCP on the stdin the old one ruled out.
    forget_ruled_out(tgid);
    // An interpreter the agent's exec gate pointed out: its opens are
    // looked at for an MCP SDK (or an old program's mark goes).
    crate::interp::on_exec(tgid);
    if config::send_execs() && tgid != config::agent_tgid() {
        // A new program may bring a TLS library the agent has not hooked,
        // and one known to speak MCP is probed before its first request:
        // the agent is woken at once (an exec costs far more than that).
        send_now(ProcessRecord {
            kind: record::EXEC_ANY,
            tgid,
            ts_ns: unsafe { bpf_ktime_get_ns() },
        });
    }
    if let Some(p) = unsafe { PROCS.get(tgid) }
        && p.state & proc_state::TRACKED != 0 {
            // Same process, new program: the agent refreshes what it knows.
            send_process(record::PROCESS_EXEC, tgid);
            return 0;
        }
    if !config::has_comm_rules() || tgid == config::agent_tgid() {
        return 0;
    }
    let Ok(comm) = bpf_get_current_comm() else {
        return 0;
    };
    let rule = match unsafe { COMM_RULES.get(comm) } {
        Some(&rule) => rule,
        None => return 0,
    };
    let add = match rule {
        comm_rule::SELECT => proc_state::SELECTED,
        comm_rule::EXCLUDE => proc_state::EXCLUDED,
        _ => return 0,
    };
    if let Some(p) = PROCS.get_ptr_mut(tgid) {
        unsafe {
            if (*p).state & proc_state::EXCLUDED != 0 {
                return 0;
            }
            if add == proc_state::EXCLUDED {
                (*p).state = proc_state::EXCLUDED;
                return 0;
            }
        }
    }
    let _ = watch_process(tgid, add);
    0
}

#[tracepoint]
pub fn sched_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let offset = config::exit_group_dead_offset();
    let group_dead = if offset != 0 {
        matches!(unsafe { ctx.read_at::<u8>(offset as usize) }, Ok(v) if v != 0)
    } else {
        pid_tgid as u32 == tgid
    };
    crate::effects::task_exited(pid_tgid as u32, group_dead, tgid);
    if !group_dead {
        return 0;
    }
    // Whatever the kernel knew of this tgid goes with it (a ruled-out stdin
    // must not stick to the next process given the same number).
    forget(tgid);
    let state = match unsafe { PROCS.get(tgid) } {
        Some(p) => p.state,
        None => return 0,
    };
    let _ = PROCS.remove(tgid);
    // The agent holds streams for tracked processes and for connections it
    // is still deciding about.
    if state & (proc_state::TRACKED | proc_state::NET_CANDIDATE) != 0 {
        send_process(record::PROCESS_EXIT, tgid);
    }
    0
}

#[inline(always)]
fn send_process(kind: u32, tgid: u32) {
    send(ProcessRecord {
        kind,
        tgid,
        ts_ns: unsafe { bpf_ktime_get_ns() },
    });
}
