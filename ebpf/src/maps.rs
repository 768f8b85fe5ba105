//! Maps shared with the agent. Names are part of the agent contract
//! (`agent/src/capture/maps.rs` opens them by name).

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
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

/// Arguments of a syscall in flight, kept from its entry to its exit
/// (key: pid_tgid). LRU so that threads dying mid-call cannot fill it.
#[map]
pub static INFLIGHT: LruHashMap<u64, InflightCall> = LruHashMap::with_max_entries(16384, 0);

/// Per-CPU scratch buffer where a chunk is assembled before it is copied
/// into the ring buffer with its exact length.
#[map]
pub static SCRATCH: PerCpuArray<Chunk> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU counters, indexed by `mcptap_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// A syscall's arguments between its entry and exit tracepoints.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct InflightCall {
    /// User buffer, or the iovec array for readv/writev; for a dup, the
    /// new fd when the caller chose it (dup2/dup3), else `NEW_FD_FROM_RET`.
    pub buf: u64,
    /// Number of iovecs; 0 when `buf` is a plain buffer.
    pub iov_cnt: u64,
    pub fd: i32,
    /// `mcptap_common::op`, or `OP_DUP`.
    pub op: u8,
    /// `mcptap_common::chunk_flags::DISCOVERY` when the caller is untracked.
    pub flags: u8,
    pub _pad: [u8; 2],
}

#[inline(always)]
pub fn count(index: u32, by: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // Per-CPU slot: no other writer while this program runs.
        unsafe { *slot += by };
    }
}

/// `InflightCall::op` of a descriptor duplication (dup, dup2, dup3, fcntl).
pub const OP_DUP: u8 = 100;
/// `InflightCall::buf` of a dup whose new fd is its return value.
pub const NEW_FD_FROM_RET: u64 = u64::MAX;
