//! Types shared by the kernel programs (`mcptap-ebpf`) and the agent.
//!
//! Everything here is `#[repr(C)]` and plain data: the kernel writes these
//! records into the ring buffer and the agent reads them back byte for byte.
//! Every record starts with a `u32` kind so the agent can tell them apart.
#![no_std]

/// Most payload bytes one chunk record carries. A syscall that moved more
/// bytes is sent as several chunks with increasing `offset`.
pub const CHUNK_DATA_MAX: usize = 16 * 1024;

/// Kind tag at the start of every ring buffer record.
pub mod record {
    /// A [`super::ChunkHeader`] followed by `len` payload bytes.
    pub const CHUNK: u32 = 1;
    /// A [`super::ProcessRecord`]: a tracked process exited.
    pub const PROCESS_EXIT: u32 = 2;
    /// A [`super::ProcessRecord`]: a tracked process called execve.
    pub const PROCESS_EXEC: u32 = 3;
}

/// What the traced process did with the bytes.
pub mod op {
    /// The process read these bytes (they came from its peer).
    pub const READ: u8 = 1;
    /// The process wrote these bytes (they go to its peer).
    pub const WRITE: u8 = 2;
}

/// Flags of a chunk.
pub mod chunk_flags {
    /// The call moved more bytes than the capture cap; the bytes past the
    /// cap were not sent. Set on every chunk of such a call.
    pub const TRUNCATED: u8 = 1;
    /// The call was read by a process that was not tracked yet and whose
    /// data looked like JSON: the agent decides whether it speaks MCP.
    pub const DISCOVERY: u8 = 2;
    /// The kernel lost data of this process (ring buffer full, copy failed)
    /// since the previous chunk it sent for it: the agent must resync.
    pub const LOSS_BEFORE: u8 = 4;
}

/// Header of a chunk record; `len` bytes of payload follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Always [`record::CHUNK`].
    pub kind: u32,
    /// Payload bytes that follow this header in the record.
    pub len: u32,
    /// CLOCK_MONOTONIC nanoseconds when the syscall returned.
    pub ts_ns: u64,
    /// `tgid << 32 | tid` of the calling thread.
    pub pid_tgid: u64,
    /// Bytes the whole call moved (its return value).
    pub call_len: u64,
    /// Offset of this chunk's first byte within the call's bytes.
    pub offset: u64,
    /// File descriptor of the call.
    pub fd: i32,
    /// One of [`op`].
    pub op: u8,
    /// Bit set of [`chunk_flags`].
    pub flags: u8,
    pub _reserved: [u8; 2],
}

pub const CHUNK_HEADER_LEN: usize = core::mem::size_of::<ChunkHeader>();

/// A chunk as the kernel assembles it in its per-CPU scratch buffer before
/// copying `CHUNK_HEADER_LEN + header.len` bytes of it into the ring buffer.
#[repr(C)]
pub struct Chunk {
    pub header: ChunkHeader,
    pub data: [u8; CHUNK_DATA_MAX],
}

/// A process lifecycle record ([`record::PROCESS_EXIT`] or
/// [`record::PROCESS_EXEC`]) for a tracked process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessRecord {
    pub kind: u32,
    pub tgid: u32,
    /// CLOCK_MONOTONIC nanoseconds of the event.
    pub ts_ns: u64,
}

/// State bits of a process in the kernel's process map.
pub mod proc_state {
    /// Tracked by the kernel because data it read looked like JSON; the
    /// agent has not confirmed it speaks MCP yet.
    pub const PROVISIONAL: u32 = 1;
    /// The agent confirmed the process speaks MCP.
    pub const CONFIRMED: u32 = 2;
    /// The operator selected the process (by pid or executable name).
    pub const SELECTED: u32 = 4;
    /// Not tracked, but reads on its `in_fds` are sniffed for discovery.
    pub const CANDIDATE: u32 = 8;
    /// Never tracked nor sniffed: excluded by the operator, or rejected by
    /// the agent after discovery.
    pub const EXCLUDED: u32 = 16;
    /// Any of these: the process's stdio is captured.
    pub const TRACKED: u32 = PROVISIONAL | CONFIRMED | SELECTED;
}

/// Bitmaps of file descriptors (bit n = fd n; fds of 64 and above are not
/// representable and counted as such).
pub mod fds {
    /// Where a process reads its peer's messages when nothing else is known.
    pub const DEFAULT_IN: u64 = 1 << 0;
    /// Where it writes its own.
    pub const DEFAULT_OUT: u64 = 1 << 1;
    pub const MAX: u64 = 64;

    #[inline(always)]
    pub fn has(set: u64, fd: u64) -> bool {
        fd < MAX && set & (1u64 << fd) != 0
    }
}

/// Value of the kernel's process map (key: tgid). Processes without an
/// entry are plain: stdin (fd 0) reads are sniffed for discovery.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcState {
    /// Bit set of [`proc_state`].
    pub state: u32,
    /// Non-zero when data of this process was lost since the last chunk
    /// the kernel sent for it; turned into [`chunk_flags::LOSS_BEFORE`].
    pub lost: u32,
    /// Descriptors that carry the peer's messages to this process: stdin
    /// and its duplicates (stdio servers often move the wire off fd 0).
    pub in_fds: u64,
    /// Descriptors that carry this process's messages: stdout and its
    /// duplicates.
    pub out_fds: u64,
}

impl ProcState {
    pub const fn with_state(state: u32) -> Self {
        ProcState {
            state,
            lost: 0,
            in_fds: fds::DEFAULT_IN,
            out_fds: fds::DEFAULT_OUT,
        }
    }
}

/// Value of the executable-name rules map (key: the 16-byte `comm`).
pub mod comm_rule {
    /// Track processes that exec this executable.
    pub const SELECT: u8 = 1;
    /// Never track processes that exec this executable.
    pub const EXCLUDE: u8 = 2;
}

/// Kernel-side counters, one slot per CPU each; the agent sums the CPUs.
pub mod counter {
    /// Chunk records written to the ring buffer.
    pub const CHUNKS_SENT: u32 = 0;
    /// Payload bytes written to the ring buffer.
    pub const BYTES_SENT: u32 = 1;
    /// Chunk records lost because the ring buffer was full.
    pub const RINGBUF_FULL_CHUNKS: u32 = 2;
    /// Payload bytes lost because the ring buffer was full.
    pub const RINGBUF_FULL_BYTES: u32 = 3;
    /// Calls whose user memory could not be read (part or all lost).
    pub const COPY_FAILED: u32 = 4;
    /// Calls that moved more bytes than the capture cap.
    pub const TRUNCATED_CALLS: u32 = 5;
    /// Bytes past the capture cap that were not sent.
    pub const TRUNCATED_BYTES: u32 = 6;
    /// Reads of untracked processes that looked like JSON and were sent
    /// to the agent for discovery.
    pub const DISCOVERY_SNIFFS: u32 = 7;
    /// Process lifecycle records lost because the ring buffer was full.
    pub const RINGBUF_FULL_PROCESS: u32 = 8;
    /// Duplicates of stdin/stdout landing on fd 64 or above (not followed).
    pub const FD_BEYOND_BITMAP: u32 = 9;
    /// Process map full: a process could not be tracked.
    pub const PROCS_FULL: u32 = 10;
    pub const COUNT: u32 = 11;
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: plain `#[repr(C)]` data without padding holes that matter.
    unsafe impl aya::Pod for ProcState {}
    unsafe impl aya::Pod for ChunkHeader {}
    unsafe impl aya::Pod for ProcessRecord {}
}
