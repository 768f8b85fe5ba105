//! Maps shared with the agent. Names are part of the agent contract
//! (`agent/src/capture` opens them by name).

use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use core::intrinsics::{AtomicOrdering, atomic_and, atomic_or};
use mcptap_common::{Chunk, ProcState, SockState, SslKey, counter, watch};

use crate::config;

/// Records for the agent: chunks, processes, sockets. The agent sets the
/// real size at load time (`--ring-buffer-mib`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Every process the kernel knows something about (key: tgid): tracked,
/// candidate, excluded, and where its stdin/stdout really are.
#[map]
pub static PROCS: HashMap<u32, ProcState> = HashMap::with_max_entries(65536, 0);

/// Bit `tgid` set: the process has an entry in PROCS. Written by the
/// kernel only (atomically); the agent writes `WATCH_USER`.
#[map]
pub static WATCH_KERNEL: Array<u64> = Array::with_max_entries(watch::WORDS, 0);

/// The agent's bits (processes it selected or seeded at start).
#[map]
pub static WATCH_USER: Array<u64> = Array::with_max_entries(watch::WORDS, 0);

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

/// The socket each thread last moved TLS ciphertext on: how a TLS session
/// (an `SSL*`) is tied to its connection (see `tls`).
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

/// TLS sessions of untracked processes that discovery is looking at.
#[map]
pub static SSLS: LruHashMap<SslKey, u32> = LruHashMap::with_max_entries(16384, 0);

/// Per-CPU scratch buffer where a chunk is assembled before it is copied
/// into the ring buffer with its exact length.
#[map]
pub static SCRATCH: PerCpuArray<Chunk> = PerCpuArray::with_max_entries(1, 0);

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

/// Whether the process has an entry in PROCS: two array reads, the only
/// cost most processes pay per syscall.
#[inline(always)]
pub fn is_watched(tgid: u32) -> bool {
    if tgid >= watch::MAX_TGID {
        return unsafe { PROCS.get(&tgid) }.is_some();
    }
    let word = tgid >> 6;
    let bit = 1u64 << (tgid & 63);
    let k = WATCH_KERNEL.get(word).copied().unwrap_or(0);
    let u = WATCH_USER.get(word).copied().unwrap_or(0);
    (k | u) & bit != 0
}

#[inline(always)]
fn watch_word(tgid: u32) -> Option<*mut u64> {
    if tgid >= watch::MAX_TGID {
        return None;
    }
    WATCH_KERNEL.get_ptr_mut(tgid >> 6)
}

// Atomic read-modify-write: other CPUs may set bits of the same word at
// the same time (BPF atomics, kernel 5.12+).

#[inline(always)]
pub fn set_watched(tgid: u32) {
    if let Some(w) = watch_word(tgid) {
        unsafe { atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(w, 1u64 << (tgid & 63)) };
    }
}

#[inline(always)]
pub fn clear_watched(tgid: u32) {
    if let Some(w) = watch_word(tgid) {
        unsafe { atomic_and::<u64, u64, { AtomicOrdering::Relaxed }>(w, !(1u64 << (tgid & 63))) };
    }
}

/// Adds a process to PROCS (when absent) with `state`, marking it watched.
/// Returns its entry.
#[inline(always)]
pub fn watch_process(tgid: u32, state: u32) -> Option<*mut ProcState> {
    if let Some(p) = PROCS.get_ptr_mut(&tgid) {
        unsafe { (*p).state |= state };
        return Some(p);
    }
    if PROCS
        .insert(&tgid, &ProcState::with_state(state), BPF_NOEXIST as u64)
        .is_err()
    {
        // Another CPU may have inserted it meanwhile.
        if let Some(p) = PROCS.get_ptr_mut(&tgid) {
            unsafe { (*p).state |= state };
            return Some(p);
        }
        count(counter::PROCS_FULL, 1);
        return None;
    }
    set_watched(tgid);
    PROCS.get_ptr_mut(&tgid)
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
