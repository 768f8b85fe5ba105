//! Types shared by the kernel programs (`mcptap-ebpf`) and the agent.
//!
//! Everything here is `#[repr(C)]` and plain data: the kernel writes these
//! records into the ring buffer and the agent reads them back byte for byte.
//! Every record starts with a `u32` kind so the agent can tell them apart.
#![no_std]

/// Most payload bytes one chunk record carries. A call that moved more
/// bytes is sent as several chunks with increasing `offset`.
pub const CHUNK_DATA_MAX: usize = 16 * 1024;

/// Kind tag at the start of every ring buffer record.
pub mod record {
    /// A [`super::ChunkHeader`] followed by `len` payload bytes.
    pub const CHUNK: u32 = 1;
    /// A [`super::ProcessRecord`]: a watched process exited.
    pub const PROCESS_EXIT: u32 = 2;
    /// A [`super::ProcessRecord`]: a tracked process called execve.
    pub const PROCESS_EXEC: u32 = 3;
    /// A [`super::SocketRecord`]: a watched process accepted or connected
    /// an internet socket.
    pub const SOCKET_OPEN: u32 = 4;
    /// A [`super::SocketRecord`]: a watched socket was closed.
    pub const SOCKET_CLOSE: u32 = 5;
    /// A [`super::TlsCloseRecord`]: a watched process freed a TLS session.
    pub const TLS_CLOSE: u32 = 6;
    /// A [`super::ProcessRecord`]: some process (watched or not) called
    /// execve; the agent looks for TLS libraries it has not hooked yet.
    pub const EXEC_ANY: u32 = 7;
}

/// What the traced process did with the bytes.
pub mod op {
    /// The process read these bytes (they came from its peer).
    pub const READ: u8 = 1;
    /// The process wrote these bytes (they go to its peer).
    pub const WRITE: u8 = 2;
}

/// Where the bytes of a chunk travelled.
pub mod channel {
    /// A stdin/stdout pipe (or socketpair) of a stdio server.
    pub const STDIO: u8 = 1;
    /// A TCP socket, plain bytes.
    pub const SOCKET: u8 = 2;
    /// Plaintext of a TLS session (OpenSSL `SSL_read`/`SSL_write`).
    pub const TLS: u8 = 3;
}

/// Flags of a chunk.
pub mod chunk_flags {
    /// The call moved more bytes than the capture cap; the bytes past the
    /// cap were not sent. Set on every chunk of such a call.
    pub const TRUNCATED: u8 = 1;
    /// Sniffed from a process (or connection) that is not tracked: the
    /// agent decides whether it speaks MCP.
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
    /// CLOCK_MONOTONIC nanoseconds when the call returned.
    pub ts_ns: u64,
    /// `tgid << 32 | tid` of the calling thread.
    pub pid_tgid: u64,
    /// Bytes the whole call moved (its return value).
    pub call_len: u64,
    /// Offset of this chunk's first byte within the call's bytes.
    pub offset: u64,
    /// The `SSL*` of a [`channel::TLS`] chunk, 0 otherwise.
    pub ssl: u64,
    /// File descriptor of the call. For TLS: the socket this thread last
    /// moved ciphertext on (how the agent learns a session's connection),
    /// or -1 when unknown.
    pub fd: i32,
    /// One of [`op`].
    pub op: u8,
    /// Bit set of [`chunk_flags`].
    pub flags: u8,
    /// One of [`channel`].
    pub channel: u8,
    pub _reserved: u8,
}

pub const CHUNK_HEADER_LEN: usize = core::mem::size_of::<ChunkHeader>();

/// A chunk as the kernel assembles it in its per-CPU scratch buffer before
/// copying `CHUNK_HEADER_LEN + header.len` bytes of it into the ring buffer.
#[repr(C)]
pub struct Chunk {
    pub header: ChunkHeader,
    pub data: [u8; CHUNK_DATA_MAX],
}

/// A process lifecycle record ([`record::PROCESS_EXIT`],
/// [`record::PROCESS_EXEC`] or [`record::EXEC_ANY`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessRecord {
    pub kind: u32,
    pub tgid: u32,
    /// CLOCK_MONOTONIC nanoseconds of the event.
    pub ts_ns: u64,
}

/// How a socket came to be.
pub mod sock_role {
    /// accept(): the process serves this connection.
    pub const SERVER: u8 = 1;
    /// connect(): the process is the client of this connection.
    pub const CLIENT: u8 = 2;
}

/// A socket opened or closed by a watched process ([`record::SOCKET_OPEN`],
/// [`record::SOCKET_CLOSE`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketRecord {
    pub kind: u32,
    pub tgid: u32,
    pub ts_ns: u64,
    pub fd: i32,
    /// AF_INET or AF_INET6 when `addr` holds the peer's address, else 0.
    pub family: u16,
    /// The peer's port (host byte order), when `family` is set.
    pub port: u16,
    /// One of [`sock_role`].
    pub role: u8,
    pub _pad: [u8; 3],
    /// accept(): the listening socket (its address is this connection's
    /// local address); -1 otherwise.
    pub listen_fd: i32,
    /// The peer's address: 4 bytes for AF_INET, 16 for AF_INET6.
    pub addr: [u8; 16],
}

/// A TLS session of a watched process ended (`SSL_free`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsCloseRecord {
    pub kind: u32,
    pub tgid: u32,
    pub ts_ns: u64,
    pub ssl: u64,
}

/// State bits of a process in the kernel's process map.
pub mod proc_state {
    /// Tracked by the kernel because data it read looked like JSON; the
    /// agent has not confirmed it speaks MCP yet.
    pub const PROVISIONAL: u32 = 1;
    /// The agent confirmed the process speaks MCP.
    pub const CONFIRMED: u32 = 2;
    /// The operator selected the process (by pid, executable or port).
    pub const SELECTED: u32 = 4;
    /// Not tracked, but reads on its `in_fds` are sniffed for discovery.
    pub const CANDIDATE: u32 = 8;
    /// Never tracked nor sniffed: excluded by the operator, or rejected by
    /// the agent after discovery.
    pub const EXCLUDED: u32 = 16;
    /// Not tracked, but owns sockets the kernel sniffs for MCP requests.
    pub const NET_CANDIDATE: u32 = 32;
    /// Any of these: the process's stdio, sockets and TLS are captured.
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

/// The watch bitmaps: bit `tgid` says "this process has an entry in the
/// process map", so that every other process pays one array read per
/// syscall instead of a hash lookup. Two copies with one writer each (the
/// kernel, the agent) so that neither overwrites the other's bits.
pub mod watch {
    /// Words of each bitmap: covers tgids below 2^22 (Linux's largest
    /// pid_max); larger tgids always take the hash lookup.
    pub const WORDS: u32 = 1 << 16;
    pub const MAX_TGID: u32 = WORDS * 64;
}

/// Key of the socket map: the process and the descriptor.
#[inline(always)]
pub const fn sock_key(tgid: u32, fd: u32) -> u64 {
    ((tgid as u64) << 32) | fd as u64
}

/// Bits of a socket's state in the socket map.
pub mod sock_flags {
    /// accept(): the process is the server of this connection.
    pub const SERVER: u32 = 1;
    /// connect(): the process is the client.
    pub const CLIENT: u32 = 2;
    /// Its first bytes were HTTP/1.x.
    pub const HTTP: u32 = 4;
    /// Its first bytes were a TLS record: its plaintext comes from the TLS
    /// hooks; the socket itself only tells which connection that is.
    pub const TLS: u32 = 8;
    /// Its first bytes were something else: never captured.
    pub const OTHER: u32 = 16;
    /// Captured although the process is not tracked: a sniffed request,
    /// or a connection to a selected port.
    pub const CAPTURE: u32 = 32;
    /// The agent decided: not worth capturing (HTTP/2, not MCP).
    pub const IGNORE: u32 = 64;
    /// Already open when the agent started (seeded from /proc): its next
    /// bytes may be in the middle of a message, so bytes that are not a
    /// message start do not classify it.
    pub const SEEDED: u32 = 128;
    /// Any classification.
    pub const CLASSIFIED: u32 = HTTP | TLS | OTHER;
}

/// Value of the socket map (key: [`sock_key`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockState {
    /// Bit set of [`sock_flags`].
    pub flags: u32,
    /// Calls of a seeded socket that did not start a message yet; after
    /// [`SEEDED_PATIENCE`] of them the socket is classified "other".
    pub unclassified: u32,
}

/// See [`SockState::unclassified`].
pub const SEEDED_PATIENCE: u32 = 16;

/// Key of the TLS session map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SslKey {
    pub tgid: u32,
    pub _pad: u32,
    pub ssl: u64,
}

/// Bits of a TLS session's state (untracked processes only).
pub mod ssl_flags {
    /// Captured although the process is not tracked: it sent or received
    /// what looked like an HTTP request.
    pub const CAPTURE: u32 = 1;
    /// The agent decided: not worth capturing.
    pub const IGNORE: u32 = 2;
}

/// Value of the executable-name rules map (key: the 16-byte `comm`) and of
/// the port rules map (key: a port in host byte order).
pub mod comm_rule {
    /// Track processes that exec this executable (or use this port).
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
    /// Other records (process, socket, TLS) lost because the ring buffer
    /// was full.
    pub const RINGBUF_FULL_OTHER: u32 = 8;
    /// Duplicates of stdin/stdout landing on fd 64 or above (not followed).
    pub const FD_BEYOND_BITMAP: u32 = 9;
    /// Process map full: a process could not be tracked.
    pub const PROCS_FULL: u32 = 10;
    /// Socket map full: a connection could not be watched.
    pub const SOCKS_FULL: u32 = 11;
    /// HTTP requests on untracked connections sent for discovery.
    pub const NET_SNIFFS: u32 = 12;
    /// TLS plaintext of untracked processes sent for discovery.
    pub const TLS_SNIFFS: u32 = 13;
    /// TLS calls whose entry was not seen (the agent attached mid-call).
    pub const TLS_UNPAIRED: u32 = 14;
    /// Connections whose first bytes were neither HTTP/1.x nor TLS (never
    /// captured: databases, DNS, junk).
    pub const SOCKETS_NOT_HTTP: u32 = 15;
    pub const COUNT: u32 = 16;
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: plain `#[repr(C)]` data without padding holes that matter.
    unsafe impl aya::Pod for ProcState {}
    unsafe impl aya::Pod for ChunkHeader {}
    unsafe impl aya::Pod for ProcessRecord {}
    unsafe impl aya::Pod for SocketRecord {}
    unsafe impl aya::Pod for TlsCloseRecord {}
    unsafe impl aya::Pod for SockState {}
    unsafe impl aya::Pod for SslKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_layouts_are_stable() {
        // The kernel and the agent must agree byte for byte.
        assert_eq!(core::mem::size_of::<ChunkHeader>(), 56);
        assert_eq!(core::mem::size_of::<SocketRecord>(), 48);
        assert_eq!(core::mem::size_of::<TlsCloseRecord>(), 24);
        assert_eq!(core::mem::size_of::<ProcessRecord>(), 16);
        assert_eq!(core::mem::size_of::<SslKey>(), 16);
    }
}
