//! Maps shared with the agent. Their names are `mcptap_common::names::map`
//! (aya names a map after its static); maps only the kernel uses live next
//! to the code that uses them.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use mcptap_common::{ProcState, SockState, SslKey, counter, watch};

use crate::config;

/// Records for the agent: chunks, processes, sockets. The agent sets the
/// real size at load time (`--ring-buffer-mib`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Every process the kernel knows something about (key: tgid): tracked,
/// candidate, excluded, and where its stdin/stdout really are.
#[map]
pub static PROCS: HashMap<u32, ProcState> = HashMap::with_max_entries(65536, 0);

/// One byte per tgid (`watch::byte`): whether the process has an entry in
/// PROCS, or has had its stdin ruled out. Written by the kernel only, with
/// plain byte stores (see `mcptap_common::watch`); the agent writes
/// `WATCH_USER`. The agent sizes both from the host's pid_max.
#[map]
pub static WATCH_KERNEL: Array<u64> = Array::with_max_entries(watch::kernel_words(watch::MAX_TGID), 0);

/// The agent's bits (processes it selected or seeded at start).
#[map]
pub static WATCH_USER: Array<u64> = Array::with_max_entries(watch::user_words(watch::MAX_TGID), 0);

/// TCP sockets of watched processes (key: `sock_key(tgid, fd)`). LRU: a
/// close the kernel missed must not leak entries forever.
#[map]
pub static SOCKS: LruHashMap<u64, SockState> = LruHashMap::with_max_entries(65536, 0);

/// Executable-name rules applied at exec (key: 16-byte comm).
#[map]
pub static COMM_RULES: HashMap<[u8; 16], u8> = HashMap::with_max_entries(256, 0);

/// Port rules applied at connect (key: peer port, host byte order).
#[map]
pub static PORT_RULES: HashMap<u16, u8> = HashMap::with_max_entries(256, 0);

/// TLS sessions of untracked processes that discovery is looking at.
#[map]
pub static SSLS: LruHashMap<SslKey, u32> = LruHashMap::with_max_entries(16384, 0);

/// Per-CPU counters, indexed by `mcptap_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[inline(always)]
pub fn count(index: u32, by: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // Per-CPU slot: no other writer while this program runs.
        unsafe { *slot += by };
    }
}

/// What the kernel knows of a process at a glance, for the price of one
/// or two array loads: the only cost most processes pay per syscall.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Glance {
    /// It has an entry in PROCS.
    Watched,
    /// Nothing, and its stdin was ruled out (not worth a look).
    StdinRuledOut,
    /// Nothing: discovery may look at it.
    Unknown,
    /// Started by an MCP server (its side effects are recorded, see
    /// `effects`); discovery may look at it.
    Child,
    /// Runs an interpreter the agent pointed out (see `interp`): its opens
    /// are looked at for an MCP SDK; discovery may look at it.
    Interpreter,
}

#[inline(always)]
pub fn glance(tgid: u32) -> Glance {
    let Some(k) = kernel_byte(tgid) else {
        // Beyond the maps (pid_max was raised after the agent started).
        return if unsafe { PROCS.get(tgid) }.is_some() {
            Glance::Watched
        } else {
            Glance::Unknown
        };
    };
    let k = unsafe { *k };
    if k == watch::byte::WATCHED {
        return Glance::Watched;
    }
    let u = WATCH_USER
        .get(tgid / watch::USER_TGIDS_PER_WORD)
        .copied()
        .unwrap_or(0);
    if u & (1u64 << (tgid % watch::USER_TGIDS_PER_WORD)) != 0 {
        Glance::Watched
    } else if k == watch::byte::STDIN_RULED_OUT {
        Glance::StdinRuledOut
    } else if k == watch::byte::CHILD {
        Glance::Child
    } else if k == watch::byte::INTERPRETER {
        Glance::Interpreter
    } else {
        Glance::Unknown
    }
}

#[inline(always)]
pub fn is_watched(tgid: u32) -> bool {
    glance(tgid) == Glance::Watched
}

/// The tgid's byte in WATCH_KERNEL.
#[inline(always)]
fn kernel_byte(tgid: u32) -> Option<*mut u8> {
    let word = WATCH_KERNEL.get_ptr_mut(tgid / watch::KERNEL_TGIDS_PER_WORD)?;
    Some(unsafe { (word as *mut u8).add((tgid % watch::KERNEL_TGIDS_PER_WORD) as usize) })
}

/// The tgid's byte, when the map has it.
#[inline(always)]
pub fn kernel_byte_value(tgid: u32) -> Option<u8> {
    kernel_byte(tgid).map(|b| unsafe { *b })
}

/// Sets the tgid's byte: a plain byte store, which leaves the other tgids
/// of the word alone (no atomics needed, see `mcptap_common::watch`).
#[inline(always)]
pub fn set_kernel_byte(tgid: u32, value: u8) {
    if let Some(b) = kernel_byte(tgid) {
        unsafe { core::ptr::write_volatile(b, value) };
    }
}

/// The process is gone (its PROCS entry removed): it is a stranger again.
#[inline(always)]
pub fn forget(tgid: u32) {
    set_kernel_byte(tgid, watch::byte::NONE);
}

/// The process's stdin is not worth another look until it execs. A child
/// of a server keeps its mark (its effects matter more; children of
/// servers are few, and their stdin reads are sniffed on). An interpreter
/// loses its own (one byte holds one fact): its opens are no longer looked
/// at for an MCP SDK; HTTPS discovery by its first TLS record still
/// applies.
#[inline(always)]
pub fn rule_out_stdin(tgid: u32) {
    if kernel_byte_value(tgid) != Some(watch::byte::CHILD) {
        set_kernel_byte(tgid, watch::byte::STDIN_RULED_OUT);
    }
}

/// At exec: a new program may speak MCP on the same stdin.
#[inline(always)]
pub fn forget_ruled_out(tgid: u32) {
    if let Some(b) = kernel_byte(tgid) {
        unsafe {
            if *b == watch::byte::STDIN_RULED_OUT {
                core::ptr::write_volatile(b, watch::byte::NONE);
            }
        }
    }
}

/// Adds a process to PROCS (when absent) with `state`, marking it watched.
/// Returns its entry.
#[inline(always)]
pub fn watch_process(tgid: u32, state: u32) -> Option<*mut ProcState> {
    // A child of an MCP server keeps that fact (see `effects`), and an
    // interpreter the agent pointed out keeps its (see `interp`).
    let state = match kernel_byte_value(tgid) {
        Some(watch::byte::CHILD) => state | mcptap_common::proc_state::CHILD,
        Some(watch::byte::INTERPRETER) => state | mcptap_common::proc_state::INTERPRETER,
        _ => state,
    };
    if let Some(p) = PROCS.get_ptr_mut(tgid) {
        unsafe { (*p).state |= state };
        set_kernel_byte(tgid, watch::byte::WATCHED);
        return Some(p);
    }
    if PROCS
        .insert(tgid, ProcState::with_state(state), BPF_NOEXIST as u64)
        .is_err()
    {
        // Another CPU may have inserted it meanwhile.
        if let Some(p) = PROCS.get_ptr_mut(tgid) {
            unsafe { (*p).state |= state };
            return Some(p);
        }
        count(counter::PROCS_FULL, 1);
        return None;
    }
    set_kernel_byte(tgid, watch::byte::WATCHED);
    PROCS.get_ptr_mut(tgid)
}

/// Ring buffer flags for a record: the agent drains on a timer, so only a
/// filling buffer is worth waking it for (a wakeup per message would cost
/// the traced processes a context switch each).
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    if EVENTS.query(0) >= config::wakeup_bytes() {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Sends a small record and wakes the agent at once.
#[inline(always)]
pub fn send_now<T>(rec: T) {
    if EVENTS.output::<T>(rec, BPF_RB_FORCE_WAKEUP as u64).is_err() {
        count(counter::RINGBUF_FULL_OTHER, 1);
    }
}

/// Sends a small fixed-size record; counts it when the buffer is full.
#[inline(always)]
pub fn send<T>(rec: T) {
    if EVENTS.output::<T>(rec, wakeup_flags()).is_err() {
        count(counter::RINGBUF_FULL_OTHER, 1);
    }
}
