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
    /// A [`super::ProcessRecord`]: a process not tracked (a network
    /// candidate) moved its first TLS record; the agent probes its TLS
    /// library for a while to see whether it speaks MCP inside (once per
    /// process).
    pub const TLS_SEEN: u32 = 8;
    /// An [`super::EffectRecord`]: a process serving MCP (or one it
    /// started) opened, removed or renamed a file, ran a program,
    /// connected or listened.
    pub const EFFECT: u32 = 9;
    /// An [`super::SdkOpenRecord`]: an interpreter the agent pointed out at
    /// its exec ([`super::watch::byte::INTERPRETER`]) opened a file of an
    /// MCP SDK (`site-packages/mcp/`, `@modelcontextprotocol/`): it is
    /// about to speak MCP, before its first TLS byte. Once per program.
    pub const SDK_OPEN: u32 = 10;
}

/// How the paths an MCP SDK's import opens end (the kernel's
/// `interp::names_sdk` and the agent check the same list): the Python
/// SDK's package directory (`site-packages/mcp`, listed when its
/// submodules load; also `dist-packages`) and FastMCP's; the TypeScript
/// SDK's package, its directory (which Bun lists) and its `package.json`
/// (which Node reads), 1.x (`sdk`) and 2.x (`client`, `server`).
pub const SDK_SUFFIXES: &[&[u8]] = &[
    b"-packages/mcp",
    b"-packages/fastmcp",
    b"/@modelcontextprotocol/sdk",
    b"/@modelcontextprotocol/sdk/package.json",
    b"/@modelcontextprotocol/client",
    b"/@modelcontextprotocol/client/package.json",
    b"/@modelcontextprotocol/server",
    b"/@modelcontextprotocol/server/package.json",
];

/// Longest path an [`SdkOpenRecord`] carries.
pub const SDK_PATH_MAX: usize = 256;

/// [`record::SDK_OPEN`]: the file an interpreter opened, as it passed it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SdkOpenRecord {
    pub kind: u32,
    pub tgid: u32,
    /// NUL-terminated (unless cut).
    pub path: [u8; SDK_PATH_MAX],
    /// Room past the path: a suffix compared at a masked index stays
    /// inside the record whatever the verifier assumes of the index (see
    /// `ebpf/src/interp.rs`).
    pub _tail: [u8; 64],
}

/// Kinds of [`EffectRecord`].
pub mod effect {
    /// open/openat/openat2: `path`, `flags` (the open flags), `ret` the
    /// descriptor or -errno.
    pub const OPEN: u8 = 1;
    /// unlink/unlinkat/rmdir: `path`; `flags` has `AT_REMOVEDIR` for a
    /// directory.
    pub const UNLINK: u8 = 2;
    /// rename/renameat/renameat2: `path` → `path2`.
    pub const RENAME: u8 = 3;
    /// A new program (sched_process_exec): `path` the executable.
    pub const EXEC: u8 = 4;
    /// connect: `family`, `port`, `addr`.
    pub const CONNECT: u8 = 5;
    /// listen: `fd`; its address is the one its last BIND named.
    pub const LISTEN: u8 = 6;
    /// bind of an internet socket: `fd`, `family`, `port`, `addr` (not an
    /// effect of its own: it names the address a LISTEN opens).
    pub const BIND: u8 = 7;
    /// A successful execve/execveat, read at its exit from the new
    /// program's stack: `flags` its argc; `path` and `path2`, as one
    /// 512-byte region, its argument strings from argv[0] on,
    /// NUL-separated; `ret` how many bytes of the region they fill (the
    /// environment that follows them is never copied). The agent joins it
    /// to the EXEC record just before it.
    pub const EXEC_ARGS: u8 = 8;
    /// The first bytes a process wrote on a socket it connected (a TLS
    /// ClientHello, an HTTP request head: where the host name it wanted
    /// is), from the first write after the connect: `fd` the socket;
    /// `path` and `path2` one 512-byte region, `ret` how many bytes of it
    /// were copied. Joined by the agent to that CONNECT.
    pub const HELLO: u8 = 9;
    /// An answer read on a socket connected to port 53 (DNS): laid out as
    /// HELLO. The agent keeps the names it answers for the process's later
    /// connections; never an effect of its own.
    pub const DNS_ANSWER: u8 = 10;
    /// `flags` bit of UNLINK for a directory (Linux's AT_REMOVEDIR).
    pub const AT_REMOVEDIR: u64 = 0x200;
}

/// Longest path an [`EffectRecord`] carries (longer ones are cut and
/// marked by a full buffer without a terminating NUL).
pub const EFFECT_PATH_MAX: usize = 256;

/// A side effect of a process serving MCP ([`proc_state::SERVES`]) or of a
/// process it started (its `owner`). Paths are as the process passed them
/// (relative to `dirfd` or the working directory when not absolute).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EffectRecord {
    pub kind: u32,
    /// The process that did it.
    pub tgid: u32,
    pub ts_ns: u64,
    /// The MCP server process it is attributed to (`tgid` itself, or the
    /// server that started it).
    pub owner: u32,
    /// [`effect`] kind.
    pub effect: u8,
    pub _pad: u8,
    /// Address family (CONNECT, BIND).
    pub family: u16,
    /// The syscall's result: a descriptor, 0, or -errno.
    pub ret: i64,
    /// Open flags; `AT_REMOVEDIR` for UNLINK.
    pub flags: u64,
    /// The directory descriptor a relative path is resolved against
    /// (-100: the working directory); LISTEN: the socket.
    pub fd: i32,
    /// Port, host byte order (CONNECT: the peer's, BIND: the local one).
    pub port: u16,
    pub _pad2: u16,
    /// Address (CONNECT, BIND): 4 bytes for IPv4, 16 for IPv6.
    pub addr: [u8; 16],
    /// NUL-terminated (unless cut).
    pub path: [u8; EFFECT_PATH_MAX],
    /// RENAME: the new name.
    pub path2: [u8; EFFECT_PATH_MAX],
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

/// Steps of the chunk copy loop on kernels without `bpf_loop` (before
/// 5.17), where the verifier walks every step: one step per chunk, plus
/// one per iovec segment.
pub const COMPAT_STEPS: u32 = 96;

/// Most bytes one call carries on kernels without `bpf_loop`: the agent
/// lowers the capture cap to this (a call moving more is truncated,
/// flagged and counted like any call above the cap). 32 steps are kept for
/// iovec segments.
pub const COMPAT_MAX_CALL_BYTES: u64 = (COMPAT_STEPS as u64 - 32) * COMPAT_CHUNK_DATA_MAX as u64;

/// A chunk as the kernel assembles it in its scratch buffer before copying
/// `CHUNK_HEADER_LEN + header.len` bytes of it into the ring buffer, with
/// room for `N` payload bytes.
#[repr(C)]
pub struct ChunkBuf<const N: usize> {
    pub header: ChunkHeader,
    pub data: [u8; N],
}

/// The main object's chunk (a per-CPU map value: at most 32 KiB).
pub type Chunk = ChunkBuf<CHUNK_DATA_MAX>;

/// Most payload bytes one chunk record carries on kernels without
/// `bpf_loop`, where the copy loop is walked by the verifier step by step:
/// wide chunks keep the steps few (64 of them carry the default capture cap,
/// 16 MiB). Assembled in a plain array indexed by
/// CPU (per-CPU map values are limited to 32 KiB).
pub const COMPAT_CHUNK_DATA_MAX: usize = 256 * 1024;

/// The compat object's chunk.
pub type WideChunk = ChunkBuf<COMPAT_CHUNK_DATA_MAX>;

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

/// Settings the agent writes into the kernel programs before loading them:
/// one read-only global ([`names::CONFIG`]), so the verifier sees the final
/// values and prunes the branches they rule out.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelConfig {
    /// Most bytes sent per call; the rest is counted as truncated.
    pub capture_cap: u64,
    /// Wake the agent once this many bytes wait in the ring buffer; below
    /// it the agent drains on its own timer (no wakeup per message).
    pub wakeup_bytes: u64,
    /// The agent's own tgid: never tracked, never sniffed.
    pub agent_tgid: u32,
    /// Offset of `group_dead` in the sched_process_exit record, 0 when this
    /// kernel's record has no such field (then the leader's exit ends the
    /// group).
    pub exit_group_dead_offset: u32,
    /// 1 when untracked processes are sniffed for MCP (stdin, HTTP, TLS).
    pub discovery: u8,
    /// 1 when TCP sockets of tracked processes are captured.
    pub capture_sockets: u8,
    /// 1 when the executable-name rules map has entries.
    pub has_comm_rules: u8,
    /// 1 when the port rules map has entries.
    pub has_port_rules: u8,
    /// 1 when the agent wants to hear of every exec (to find TLS libraries).
    pub send_execs: u8,
    /// 1 when side effects of MCP servers are recorded ([`record::EFFECT`]).
    pub effects: u8,
    /// Offset of `child_pid` in the sched_process_fork record (read from
    /// its format at start).
    pub fork_child_pid_offset: u16,
    /// Offset of the `filename` data location in the sched_process_exec
    /// record (read from its format at start).
    pub exec_filename_offset: u16,
    /// 1 when the agent points interpreters out at their exec
    /// ([`names::map::INTERP_PENDING`]): their file opens are looked at for
    /// an MCP SDK.
    pub sdk_opens: u8,
    /// Explicit, so the value has no uninitialised bytes.
    pub _pad: [u8; 5],
}

/// Names both sides use: the kernel declares maps and programs under these
/// identifiers (aya names them after the Rust item), the agent opens them
/// by these strings. A unit test of the agent checks every one against the
/// embedded objects.
pub mod names {
    /// The read-only [`super::KernelConfig`] global.
    pub const CONFIG: &str = "CONFIG";

    pub mod map {
        pub const EVENTS: &str = "EVENTS";
        pub const PROCS: &str = "PROCS";
        pub const WATCH_KERNEL: &str = "WATCH_KERNEL";
        pub const WATCH_USER: &str = "WATCH_USER";
        pub const SOCKS: &str = "SOCKS";
        pub const SSLS: &str = "SSLS";
        pub const COMM_RULES: &str = "COMM_RULES";
        pub const PORT_RULES: &str = "PORT_RULES";
        pub const COUNTERS: &str = "COUNTERS";
        /// Processes started by MCP servers (key: tgid, value: the server).
        pub const OWNERS: &str = "OWNERS";
        /// Processes about to run an interpreter (key: tgid), written by
        /// the agent's exec gate before it lets the exec go on; the kernel
        /// takes the entry at `sched_process_exec` and marks the process
        /// [`super::super::watch::byte::INTERPRETER`].
        pub const INTERP_PENDING: &str = "INTERP_PENDING";
        /// The compat object's wide chunk buffers, one per possible CPU (the
        /// agent sizes it; 1 entry in the main object, which does not use it).
        pub const SCRATCH_WIDE: &str = "SCRATCH_WIDE";
        /// Every map the agent opens.
        pub const ALL: &[&str] = &[
            EVENTS,
            PROCS,
            WATCH_KERNEL,
            WATCH_USER,
            SOCKS,
            SSLS,
            COMM_RULES,
            PORT_RULES,
            COUNTERS,
            OWNERS,
            INTERP_PENDING,
        ];
    }

    pub mod program {
        /// The raw `sys_exit` tracepoint dispatcher (fallback hook family).
        pub const SYS_EXIT: &str = "sys_exit";
        /// An empty program on the same hook (benchmarks: the floor).
        pub const SYS_EXIT_FLOOR: &str = "sys_exit_floor";
        pub const SCHED_EXEC: &str = "sched_exec";
        pub const SCHED_EXIT: &str = "sched_exit";
        pub const SCHED_FORK: &str = "sched_fork";
        pub const SSL_READ_ENTER: &str = "ssl_read_enter";
        pub const SSL_READ_EX_ENTER: &str = "ssl_read_ex_enter";
        pub const SSL_WRITE_ENTER: &str = "ssl_write_enter";
        pub const SSL_WRITE_EX_ENTER: &str = "ssl_write_ex_enter";
        pub const SSL_RW_EXIT: &str = "ssl_rw_exit";
        pub const SSL_RW_EX_EXIT: &str = "ssl_rw_ex_exit";
        pub const SSL_FREE: &str = "ssl_free";
        pub const GO_TLS_READ_ENTER: &str = "go_tls_read_enter";
        pub const GO_TLS_WRITE_ENTER: &str = "go_tls_write_enter";
        pub const GO_TLS_RET: &str = "go_tls_ret";
        pub const GO_TLS_CLOSE: &str = "go_tls_close";
        pub const RUSTLS_WRITE_ENTER: &str = "rustls_write_enter";
        pub const RUSTLS_WRITEV_ENTER: &str = "rustls_writev_enter";
        pub const RUSTLS_WRITE_EXIT: &str = "rustls_write_exit";
        pub const RUSTLS_READ: &str = "rustls_read";
        pub const RUSTLS_CLOSE: &str = "rustls_close";
    }

    /// The fexit hook family: one program per syscall, attached to the
    /// kernel's entry point of that syscall, a twin reading the registers
    /// untyped (for kernels whose BTF only declares their struct for that
    /// function), and an empty twin (the floor). `(syscall, program,
    /// untyped program, floor program)`. Each is attached
    /// to that syscall's entry point (`__x64_sys_<syscall>` on x86_64,
    /// `__arm64_sys_<syscall>` on arm64, which has no dup2): it takes the
    /// saved registers, so the fexit programs read the same arguments the
    /// raw tracepoint does and share its handler. Names stay within the
    /// kernel's 15 characters, so `bpftool prog` shows them whole:
    /// `fx_` typed, `fxu_` untyped, `fxf_` floor.
    pub const FEXIT: &[(&str, &str, &str, &str)] = &[
        ("read", "fx_read", "fxu_read", "fxf_read"),
        ("write", "fx_write", "fxu_write", "fxf_write"),
        ("readv", "fx_readv", "fxu_readv", "fxf_readv"),
        ("writev", "fx_writev", "fxu_writev", "fxf_writev"),
        ("recvfrom", "fx_recvfrom", "fxu_recvfrom", "fxf_recvfrom"),
        ("sendto", "fx_sendto", "fxu_sendto", "fxf_sendto"),
        ("recvmsg", "fx_recvmsg", "fxu_recvmsg", "fxf_recvmsg"),
        ("sendmsg", "fx_sendmsg", "fxu_sendmsg", "fxf_sendmsg"),
        ("accept", "fx_accept", "fxu_accept", "fxf_accept"),
        ("accept4", "fx_accept4", "fxu_accept4", "fxf_accept4"),
        ("connect", "fx_connect", "fxu_connect", "fxf_connect"),
        ("dup", "fx_dup", "fxu_dup", "fxf_dup"),
        ("dup2", "fx_dup2", "fxu_dup2", "fxf_dup2"),
        ("dup3", "fx_dup3", "fxu_dup3", "fxf_dup3"),
        ("fcntl", "fx_fcntl", "fxu_fcntl", "fxf_fcntl"),
        ("close", "fx_close", "fxu_close", "fxf_close"),
        ("close_range", "fx_close_range", "fxu_close_range", "fxf_close_range"),
        // Side effects of MCP servers (x86_64 only: open, unlink, rmdir,
        // rename; arm64 has only the *at forms).
        ("open", "fx_open", "fxu_open", "fxf_open"),
        ("openat", "fx_openat", "fxu_openat", "fxf_openat"),
        ("openat2", "fx_openat2", "fxu_openat2", "fxf_openat2"),
        ("unlink", "fx_unlink", "fxu_unlink", "fxf_unlink"),
        ("unlinkat", "fx_unlinkat", "fxu_unlinkat", "fxf_unlinkat"),
        ("rmdir", "fx_rmdir", "fxu_rmdir", "fxf_rmdir"),
        ("rename", "fx_rename", "fxu_rename", "fxf_rename"),
        ("renameat", "fx_renameat", "fxu_renameat", "fxf_renameat"),
        ("renameat2", "fx_renameat2", "fxu_renameat2", "fxf_renameat2"),
        ("listen", "fx_listen", "fxu_listen", "fxf_listen"),
        ("bind", "fx_bind", "fxu_bind", "fxf_bind"),
        ("execve", "fx_execve", "fxu_execve", "fxf_execve"),
        ("execveat", "fx_execveat", "fxu_execveat", "fxf_execveat"),
    ];

    /// Syscalls arm64 does not have (only their `*at` forms).
    pub const X86_ONLY: &[&str] = &["dup2", "open", "unlink", "rmdir", "rename"];

    /// The syscalls of [`FEXIT`] hooked only for side effects (not attached
    /// when effects are off). connect is not one: it is hooked anyway.
    pub const EFFECT_ONLY: &[&str] = &[
        "open",
        "openat",
        "openat2",
        "unlink",
        "unlinkat",
        "rmdir",
        "rename",
        "renameat",
        "renameat2",
        "listen",
        "bind",
        "execve",
        "execveat",
    ];
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
    /// The kernel told the agent this (untracked) process speaks TLS
    /// ([`super::record::TLS_SEEN`]): once.
    pub const TLS_SEEN: u32 = 64;
    /// The agent probes this untracked process's TLS library (discovery):
    /// its TLS sessions are tied to their sockets like a tracked one's.
    pub const TLS_PROBED: u32 = 128;
    /// The process serves MCP: its side effects, and those of the
    /// processes it starts, are recorded ([`super::record::EFFECT`]). Set
    /// by the kernel with [`PROVISIONAL`] when discovery sees JSON on a
    /// process's stdin (so the effects of its first call are not missed
    /// while the agent decides; the agent's rejection clears it), and by
    /// the agent when it sees a process serve its first request (HTTP
    /// servers, selected processes).
    pub const SERVES: u32 = 256;
    /// Started by a process that serves MCP (its server is in `OWNERS`),
    /// and watched for another reason since (a connection discovery looks
    /// at): its side effects are still that server's. Saves every other
    /// watched process the `OWNERS` lookup.
    pub const CHILD: u32 = 512;
    /// Runs an interpreter the agent pointed out at its exec (see
    /// [`super::watch::byte::INTERPRETER`]), watched since for another
    /// reason (it moved its stdin, it connected): its opens are still
    /// looked at for an MCP SDK.
    pub const INTERPRETER: u32 = 1024;
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

/// Which processes the kernel knows something about, readable in one
/// array load per syscall (every other process pays only that).
///
/// Two maps with one writer each, so that neither overwrites the other:
/// - the kernel's map holds one byte per tgid ([`watch::KERNEL_TGIDS_PER_WORD`]
///   per `u64` value). A byte is written with a plain store: stores to
///   distinct bytes of a word never disturb each other, so no atomic
///   read-modify-write is needed (BPF atomics other than add need Linux
///   5.12; mcptap runs on 5.10).
/// - the agent's map is a bitmap (one bit per tgid): only the agent writes
///   it, through the bpf() syscall, one word at a time.
///
/// Both are sized from the host's `kernel.pid_max` at load time; a larger
/// tgid (pid_max raised later) takes the process map's hash lookup.
pub mod watch {
    /// tgids per value of the kernel's byte map.
    pub const KERNEL_TGIDS_PER_WORD: u32 = 8;
    /// tgids per value of the agent's bitmap.
    pub const USER_TGIDS_PER_WORD: u32 = 64;
    /// Linux's largest pid_max: the maps' sizes in the object (the agent
    /// shrinks them to this host's pid_max).
    pub const MAX_TGID: u32 = 1 << 22;

    /// Values of a tgid's byte in the kernel's map.
    pub mod byte {
        /// The kernel knows nothing of this process: stdin reads are sniffed.
        pub const NONE: u8 = 0;
        /// The process has an entry in the process map.
        pub const WATCHED: u8 = 1;
        /// Its first stdin read since it started (or since the agent
        /// started) did not start a JSON value: its stdin is not looked at
        /// again until it execs a new program. What keeps shell pipelines
        /// and log shippers that read stdin all day from paying for
        /// discovery.
        pub const STDIN_RULED_OUT: u8 = 2;
        /// Started by a process that serves MCP (or by one of its
        /// children): its side effects are recorded for that server (the
        /// server is in the `OWNERS` map). Discovery still applies.
        pub const CHILD: u8 = 3;
        /// Runs an interpreter (Python, Node, Bun) the agent pointed out at
        /// its exec: the files it opens are looked at for an MCP SDK
        /// ([`super::super::record::SDK_OPEN`]), until one is found or its
        /// stdin is ruled out. Discovery applies as for [`NONE`].
        pub const INTERPRETER: u8 = 4;
    }

    /// Entries of the kernel's byte map for a pid_max.
    pub const fn kernel_words(pid_max: u32) -> u32 {
        pid_max.div_ceil(KERNEL_TGIDS_PER_WORD)
    }

    /// Entries of the agent's bitmap for a pid_max.
    pub const fn user_words(pid_max: u32) -> u32 {
        pid_max.div_ceil(USER_TGIDS_PER_WORD)
    }
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

/// Session keys of TLS libraries whose connection object moves in memory
/// (rustls: a server connection is built inside the handshake's future,
/// then moved into the stream the program reads from) are their socket:
/// this bit, which no user-space address has, and the descriptor.
pub const FD_SESSION: u64 = 1 << 63;

/// The session key of a socket (see [`FD_SESSION`]).
pub const fn fd_session(fd: i32) -> u64 {
    FD_SESSION | fd as u32 as u64
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
    /// Calls whose copy needed more steps than the bounded copy loop of
    /// kernels without `bpf_loop` has (only many-segment iovec calls: the
    /// agent lowers the capture cap to what the loop can carry).
    pub const COPY_STEPS_EXHAUSTED: u32 = 16;
    pub const COUNT: u32 = 17;
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
    unsafe impl aya::Pod for KernelConfig {}
    unsafe impl aya::Pod for EffectRecord {}
}

#[cfg(test)]
mod tests {
    use core::mem::{offset_of, size_of};

    use super::*;

    // The kernel and the agent must agree byte for byte: every shared type's
    // size and every field's offset, spelled out.

    #[test]
    fn socket_session_keys_are_no_address() {
        assert_eq!(fd_session(7), FD_SESSION | 7);
        assert_ne!(fd_session(0), 0);
        // User-space addresses on x86_64 and arm64 stay below 2^57.
        assert!(fd_session(i32::MAX) > 1 << 57);
    }

    #[test]
    fn chunk_header_layout() {
        assert_eq!(size_of::<ChunkHeader>(), 56);
        assert_eq!(CHUNK_HEADER_LEN, 56);
        assert_eq!(offset_of!(ChunkHeader, kind), 0);
        assert_eq!(offset_of!(ChunkHeader, len), 4);
        assert_eq!(offset_of!(ChunkHeader, ts_ns), 8);
        assert_eq!(offset_of!(ChunkHeader, pid_tgid), 16);
        assert_eq!(offset_of!(ChunkHeader, call_len), 24);
        assert_eq!(offset_of!(ChunkHeader, offset), 32);
        assert_eq!(offset_of!(ChunkHeader, ssl), 40);
        assert_eq!(offset_of!(ChunkHeader, fd), 48);
        assert_eq!(offset_of!(ChunkHeader, op), 52);
        assert_eq!(offset_of!(ChunkHeader, flags), 53);
        assert_eq!(offset_of!(ChunkHeader, channel), 54);
        assert_eq!(offset_of!(Chunk, data), 56);
        assert_eq!(size_of::<Chunk>(), 56 + CHUNK_DATA_MAX);
    }

    #[test]
    fn record_layouts() {
        assert_eq!(size_of::<ProcessRecord>(), 16);
        assert_eq!(offset_of!(ProcessRecord, tgid), 4);
        assert_eq!(offset_of!(ProcessRecord, ts_ns), 8);

        assert_eq!(size_of::<SocketRecord>(), 48);
        assert_eq!(offset_of!(SocketRecord, tgid), 4);
        assert_eq!(offset_of!(SocketRecord, ts_ns), 8);
        assert_eq!(offset_of!(SocketRecord, fd), 16);
        assert_eq!(offset_of!(SocketRecord, family), 20);
        assert_eq!(offset_of!(SocketRecord, port), 22);
        assert_eq!(offset_of!(SocketRecord, role), 24);
        assert_eq!(offset_of!(SocketRecord, listen_fd), 28);
        assert_eq!(offset_of!(SocketRecord, addr), 32);

        assert_eq!(size_of::<TlsCloseRecord>(), 24);
        assert_eq!(offset_of!(TlsCloseRecord, tgid), 4);
        assert_eq!(offset_of!(TlsCloseRecord, ts_ns), 8);
        assert_eq!(offset_of!(TlsCloseRecord, ssl), 16);

        assert_eq!(size_of::<SdkOpenRecord>(), 8 + SDK_PATH_MAX + 64);
        assert_eq!(offset_of!(SdkOpenRecord, tgid), 4);
        assert_eq!(offset_of!(SdkOpenRecord, path), 8);
    }

    #[test]
    fn map_value_layouts() {
        assert_eq!(size_of::<ProcState>(), 24);
        assert_eq!(offset_of!(ProcState, state), 0);
        assert_eq!(offset_of!(ProcState, lost), 4);
        assert_eq!(offset_of!(ProcState, in_fds), 8);
        assert_eq!(offset_of!(ProcState, out_fds), 16);

        assert_eq!(size_of::<SockState>(), 8);
        assert_eq!(offset_of!(SockState, flags), 0);
        assert_eq!(offset_of!(SockState, unclassified), 4);

        assert_eq!(size_of::<SslKey>(), 16);
        assert_eq!(offset_of!(SslKey, tgid), 0);
        assert_eq!(offset_of!(SslKey, ssl), 8);
    }

    #[test]
    fn kernel_config_layout() {
        assert_eq!(size_of::<KernelConfig>(), 40);
        assert_eq!(offset_of!(KernelConfig, capture_cap), 0);
        assert_eq!(offset_of!(KernelConfig, wakeup_bytes), 8);
        assert_eq!(offset_of!(KernelConfig, agent_tgid), 16);
        assert_eq!(offset_of!(KernelConfig, exit_group_dead_offset), 20);
        assert_eq!(offset_of!(KernelConfig, discovery), 24);
        assert_eq!(offset_of!(KernelConfig, capture_sockets), 25);
        assert_eq!(offset_of!(KernelConfig, has_comm_rules), 26);
        assert_eq!(offset_of!(KernelConfig, has_port_rules), 27);
        assert_eq!(offset_of!(KernelConfig, send_execs), 28);
        assert_eq!(offset_of!(KernelConfig, effects), 29);
        assert_eq!(offset_of!(KernelConfig, fork_child_pid_offset), 30);
        assert_eq!(offset_of!(KernelConfig, exec_filename_offset), 32);
        assert_eq!(offset_of!(KernelConfig, sdk_opens), 34);
        assert_eq!(offset_of!(KernelConfig, _pad), 35);
    }

    #[test]
    fn effect_record_layout() {
        assert_eq!(size_of::<EffectRecord>(), 64 + 2 * EFFECT_PATH_MAX);
        assert_eq!(offset_of!(EffectRecord, kind), 0);
        assert_eq!(offset_of!(EffectRecord, tgid), 4);
        assert_eq!(offset_of!(EffectRecord, ts_ns), 8);
        assert_eq!(offset_of!(EffectRecord, owner), 16);
        assert_eq!(offset_of!(EffectRecord, effect), 20);
        assert_eq!(offset_of!(EffectRecord, family), 22);
        assert_eq!(offset_of!(EffectRecord, ret), 24);
        assert_eq!(offset_of!(EffectRecord, flags), 32);
        assert_eq!(offset_of!(EffectRecord, fd), 40);
        assert_eq!(offset_of!(EffectRecord, port), 44);
        assert_eq!(offset_of!(EffectRecord, addr), 48);
        assert_eq!(offset_of!(EffectRecord, path), 64);
        assert_eq!(offset_of!(EffectRecord, path2), 64 + EFFECT_PATH_MAX);
    }

    #[test]
    fn watch_map_sizes_follow_pid_max() {
        assert_eq!(watch::kernel_words(32768), 4096);
        assert_eq!(watch::user_words(32768), 512);
        assert_eq!(watch::kernel_words(4_194_304), 524_288);
        assert_eq!(watch::kernel_words(9), 2);
        assert_eq!(watch::user_words(65), 2);
    }
}
