//! Process lifecycle: executable-name rules at exec, and the end of tracked
//! processes at exit (the agent closes their sessions: pending requests end
//! as `server_exited`, partial messages are counted as lost).

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use mcptap_common::{ProcState, ProcessRecord, comm_rule, counter, proc_state, record};

use crate::{
    config,
    maps::{COMM_RULES, EVENTS, PROCS, count},
};

#[tracepoint]
pub fn sched_exec(_ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if let Some(p) = unsafe { PROCS.get(&tgid) } {
        if p.state & proc_state::TRACKED != 0 {
            // Same process, new program: the agent refreshes what it knows.
            send(record::PROCESS_EXEC, tgid);
            return 0;
        }
    }
    if !config::has_comm_rules() || tgid == config::agent_tgid() {
        return 0;
    }
    let Ok(comm) = bpf_get_current_comm() else {
        return 0;
    };
    let rule = match unsafe { COMM_RULES.get(&comm) } {
        Some(&rule) => rule,
        None => return 0,
    };
    let add = match rule {
        comm_rule::SELECT => proc_state::SELECTED,
        comm_rule::EXCLUDE => proc_state::EXCLUDED,
        _ => return 0,
    };
    match PROCS.get_ptr_mut(&tgid) {
        Some(p) => unsafe {
            if (*p).state & proc_state::EXCLUDED == 0 {
                (*p).state |= add;
            }
        },
        None => {
            if PROCS.insert(&tgid, &ProcState::with_state(add), 0).is_err() {
                count(counter::PROCS_FULL, 1);
            }
        }
    }
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
    if !group_dead {
        return 0;
    }
    let tracked = match unsafe { PROCS.get(&tgid) } {
        Some(p) => p.state & proc_state::TRACKED != 0,
        None => return 0,
    };
    let _ = PROCS.remove(&tgid);
    if tracked {
        send(record::PROCESS_EXIT, tgid);
    }
    0
}

#[inline(always)]
fn send(kind: u32, tgid: u32) {
    let rec = ProcessRecord {
        kind,
        tgid,
        ts_ns: unsafe { bpf_ktime_get_ns() },
    };
    if EVENTS.output::<ProcessRecord>(rec, 0).is_err() {
        count(counter::RINGBUF_FULL_PROCESS, 1);
    }
}
