//! Interpreters about to speak MCP: a Python, Node or Bun process opens a
//! file of an MCP SDK long before its first TLS byte (an import at start),
//! so the agent can probe its TLS library before its first request.
//!
//! Who pays: only processes the agent pointed out at their exec, through
//! its exec gate (`agent/src/capture/tls/gate.rs`): it puts the tgid in
//! [`INTERP_PENDING`] before it lets the exec of an interpreter go on, and
//! `sched_process_exec` turns that entry into the process's watch byte
//! ([`watch::byte::INTERPRETER`]; one hash lookup per exec). Every other
//! process pays nothing more for its opens than the glance it already
//! takes.
//!
//! An interpreter's successful opens are looked at until one names an SDK
//! ([`names_sdk`]): the agent then hears of it once
//! ([`record::SDK_OPEN`]) and the mark goes. A process watched since for
//! another reason (Bun moves its stdin at start: a stdio candidate) keeps
//! the mark in its process entry (`proc_state::INTERPRETER`, set by
//! `maps::watch_process`).

use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::bpf_probe_read_user_str_bytes,
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use mcptap_common::{ProcState, SDK_PATH_MAX, SDK_SUFFIXES, SdkOpenRecord, counter, proc_state, record, watch};

use crate::{
    config,
    maps::{EVENTS, count, kernel_byte_value, set_kernel_byte},
    regs::Args,
    sysnr,
};

/// Processes about to run an interpreter (key: tgid), written by the agent.
/// LRU: an exec that failed after the gate let it go leaves its entry to
/// age out.
#[map]
pub static INTERP_PENDING: LruHashMap<u32, u8> = LruHashMap::with_max_entries(4096, 0);

/// The record being built, per CPU (too large for the stack).
#[map]
static SDK_SCRATCH: PerCpuArray<SdkOpenRecord> = PerCpuArray::with_max_entries(1, 0);

/// At `sched_process_exec`: the new program is an interpreter the agent
/// pointed out, or the byte of an old one goes.
#[inline(always)]
pub fn on_exec(tgid: u32) {
    if !config::sdk_opens() {
        return;
    }
    let pending = unsafe { INTERP_PENDING.get(tgid) }.is_some();
    let byte = kernel_byte_value(tgid);
    if pending {
        let _ = INTERP_PENDING.remove(tgid);
        // A watched process keeps its byte (its opens are not needed); a
        // child of a server keeps its mark (its effects matter more).
        if matches!(byte, Some(watch::byte::NONE) | Some(watch::byte::STDIN_RULED_OUT)) {
            set_kernel_byte(tgid, watch::byte::INTERPRETER);
        }
    } else if byte == Some(watch::byte::INTERPRETER) {
        set_kernel_byte(tgid, watch::byte::NONE);
    }
}

/// At the exit of a successful open/openat/openat2 of an interpreter the
/// agent pointed out: its byte is `INTERPRETER`, or (watched since for
/// another reason) its process entry `p` has `proc_state::INTERPRETER`.
/// Once an SDK's file is seen, the mark goes.
#[inline(always)]
pub fn on_open(nr: u64, tgid: u32, regs: &impl Args, p: Option<*mut ProcState>) {
    if !sdk_opened(nr, tgid, regs) {
        return;
    }
    match p {
        // SAFETY: the entry of the calling process, from PROCS.
        Some(p) => unsafe { (*p).state &= !proc_state::INTERPRETER },
        None => set_kernel_byte(tgid, watch::byte::NONE),
    }
}

/// Whether the open names an MCP SDK's file: the agent is told then.
#[inline(always)]
fn sdk_opened(nr: u64, tgid: u32, regs: &impl Args) -> bool {
    let path = match nr {
        sysnr::OPEN => regs.arg0(),
        sysnr::OPENAT | sysnr::OPENAT2 => regs.arg1(),
        _ => return false,
    };
    let Some(r) = SDK_SCRATCH.get_ptr_mut(0) else { return false };
    // SAFETY: this CPU's slot, ours while the program runs.
    let r = unsafe { &mut *r };
    let len = match unsafe { bpf_probe_read_user_str_bytes(path as *const u8, &mut r.path) } {
        Ok(s) => s.len(),
        Err(_) => return false,
    };
    if !names_sdk(r, len) {
        return false;
    }
    r.kind = record::SDK_OPEN;
    r.tgid = tgid;
    if EVENTS.output::<SdkOpenRecord>(r, BPF_RB_FORCE_WAKEUP as u64).is_err() {
        count(counter::RINGBUF_FULL_OTHER, 1);
        return false;
    }
    true
}

/// Whether the path (its first `len` bytes) ends like a file of an MCP
/// SDK. No loop over the path: one fixed-length compare per suffix at
/// `len - suffix.len()`, which is what keeps this cheap to run and to
/// verify. The agent checks the path again before acting on it.
#[inline(always)]
fn names_sdk(r: &SdkOpenRecord, len: usize) -> bool {
    let base = r.path.as_ptr();
    for suffix in SDK_SUFFIXES {
        let n = suffix.len();
        if len < n || len > SDK_PATH_MAX {
            continue;
        }
        // Masked: whatever the verifier assumes of `len`, the compare stays
        // inside the record (`_tail` is the room past `path`).
        let start = (len - n) & (SDK_PATH_MAX - 1);
        let mut same = true;
        let mut k = 0;
        while k < n {
            // SAFETY: start < 256 and k < 64: inside path + _tail.
            if unsafe { *base.add(start + k) } != suffix[k] {
                same = false;
                break;
            }
            k += 1;
        }
        if same {
            return true;
        }
    }
    false
}
