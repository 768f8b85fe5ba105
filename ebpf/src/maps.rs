//! Maps shared with the agent. Names are part of the agent contract
//! (`agent/src/capture/maps.rs` opens them by name).

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use mcptap_common::{Chunk, ProcState, counter};

/// Records for the agent: chunks and process lifecycle. The agent sets the
/// real size at load time (`--ring-buffer-mib`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Every process the kernel knows something about (key: tgid): tracked,
/// candidate, excluded, and where its stdin/stdout really are. One lookup
/// in it is all an unrelated process pays per hooked syscall.
#[map]
pub static PROCS: HashMap<u32, ProcState> = HashMap::with_max_entries(32768, 0);

/// Executable-name rules applied at exec (key: 16-byte comm).
#[map]
pub static COMM_RULES: HashMap<[u8; 16], u8> = HashMap::with_max_entries(256, 0);

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
