//! Command line.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};

/// Where the agent serves its local API (`top`, `tail`).
pub const DEFAULT_API_SOCKET: &str = "/run/mcptap/api.sock";

#[derive(Debug, Parser)]
#[command(
    name = "mcptap",
    version,
    about = "See what AI agents do through MCP servers, from the kernel"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: capture MCP traffic, emit events and metrics.
    Run(Box<RunArgs>),
    /// Check that this host can run the agent: privileges, tracefs, tracepoints,
    /// and loading and attaching the eBPF programs; says which kernel object and
    /// syscall hook family this kernel gets, and why. Exits 0 when it can.
    Check(HooksArg),
    /// Attach empty programs to the syscall hooks and wait for SIGINT: the
    /// kernel's own cost of the hooks, for `cargo xtask bench`.
    #[command(hide = true)]
    Floor(HooksArg),
    /// Live figures of a running agent in the terminal: calls, errors and
    /// latency by tool, client and server, recent calls.
    Top(crate::top::TopArgs),
    /// Print a running agent's events as they happen, filtered.
    Tail(crate::tail::TailArgs),
    /// List the MCP servers this host's clients (Claude Desktop, Claude Code,
    /// Cursor, VS Code, Windsurf, mcp.json files) are configured to run, flag
    /// credentials written into their configurations, and compare with the
    /// servers the agent observed.
    Scan(crate::scan::ScanArgs),
    /// Feed a capture recorded with `run --record` through the pipeline again
    /// and print the events (no kernel, no root): how parser bugs are
    /// reproduced.
    Replay(ReplayArgs),
    /// Say which TLS library each executable or shared library carries and
    /// where mcptap would probe it, or why it would not (no root, no kernel):
    /// what to run when a program's HTTPS is not seen.
    TlsInfo(TlsInfoArgs),
    /// Print the dashboard's address with its token (the agent keeps it in
    /// its state directory, readable by root only).
    UiUrl(UiUrlArgs),
    /// Install the agent as a service: `mcptap install systemd`.
    #[command(subcommand)]
    Install(crate::install::Install),
}

#[derive(Debug, Args, Clone)]
pub struct UiUrlArgs {
    /// The agent's state directory.
    #[arg(long, default_value = "/var/lib/mcptap", value_name = "DIR")]
    pub state_dir: std::path::PathBuf,
}

#[derive(Debug, Args, Clone)]
pub struct TlsInfoArgs {
    /// Files to look at (executables, libssl copies).
    #[arg(required = true)]
    pub files: Vec<std::path::PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct HooksArg {
    /// Syscall hook family: `auto` uses fexit on the syscall entry points where
    /// the kernel allows tracing programs (only the syscalls mcptap reads pay
    /// anything) and falls back to the raw `sys_exit` tracepoint (every syscall
    /// takes the slow path) where it does not; `fexit` and `tracepoint` force one.
    #[arg(long, value_enum, default_value = "auto")]
    pub hooks: crate::capture::HookChoice,
}

#[derive(Debug, Args, Clone)]
pub struct ReplayArgs {
    /// The recording.
    pub file: std::path::PathBuf,
    /// Include payloads in the events (masked), as `run --capture-payloads`.
    #[arg(long)]
    pub capture_payloads: bool,
}

#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Where events go, one JSON object per line: a file path, `-` for stdout,
    /// or `off` (when the configuration file's sinks are enough).
    #[arg(long, default_value = "-", value_name = "PATH")]
    pub events: String,

    /// Configuration file (TOML, see docs/configuration.md): further sinks
    /// (rotated files, syslog, HTTP collectors, OTLP), each with filters and a
    /// rate limit.
    #[arg(long, value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,

    /// Address of the Prometheus endpoint (`/metrics`, `/healthz`), or `off`.
    #[arg(long, default_value = "127.0.0.1:9464", value_name = "ADDR", value_parser = parse_metrics_addr)]
    pub metrics_addr: MetricsAddr,

    /// Track this process from the start (repeatable). Its stdio is captured even
    /// before it speaks MCP.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Track processes running this executable (its file name, as the kernel's
    /// `comm` shows it: at most 15 characters; repeatable).
    #[arg(long = "exe", value_name = "NAME")]
    pub exes: Vec<String>,

    /// Track processes that serve on this TCP port, and processes that connect to
    /// it (repeatable).
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,

    /// Never track this process (repeatable).
    #[arg(long = "exclude-pid", value_name = "PID")]
    pub exclude_pids: Vec<u32>,

    /// Never track processes running this executable (repeatable).
    #[arg(long = "exclude-exe", value_name = "NAME")]
    pub exclude_exes: Vec<String>,

    /// Only track selected processes: do not discover MCP peers by what they read
    /// on stdin or send and receive over HTTP.
    #[arg(long)]
    pub no_discovery: bool,

    /// Do not capture TCP connections (stdio only).
    #[arg(long)]
    pub no_network: bool,

    #[command(flatten)]
    pub hooks: HooksArg,

    /// Do not probe OpenSSL for TLS plaintext (plain TCP and stdio only).
    #[arg(long)]
    pub no_tls: bool,

    /// Do not record what servers do while they handle calls (files opened,
    /// deleted and renamed, programs run, connections, listeners, CPU): the
    /// open/unlink/rename/listen hooks and the fork tracepoint stay detached.
    #[arg(long)]
    pub no_effects: bool,

    /// Side effects listed per kind in one event (the rest are counted in
    /// `mcp.effects.omitted`).
    #[arg(long, default_value_t = 16)]
    pub effects_per_kind: usize,

    /// Side effects kept per call for the policy to check (the rest are
    /// counted in `mcptap_effects_bounded_total{bound="per_operation"}`).
    #[arg(long, default_value_t = 1024)]
    pub effects_per_operation: usize,

    /// Also discover MCP inside TLS of processes not tracked yet: probes OpenSSL
    /// in every process, which costs every OpenSSL user a trap per SSL_read and
    /// SSL_write (see docs/benchmarks.md). Without it, TLS is captured for
    /// tracked processes only (selected, or discovered over stdio or plain HTTP).
    #[arg(long)]
    pub tls_discovery: bool,

    /// Do not hold execs of files the agent has not read yet (the exec gate,
    /// docs/tls.md). Without the gate, the first HTTPS requests of a program
    /// new to this host may be missed.
    #[arg(long)]
    pub no_exec_gate: bool,

    /// Record tool arguments, results and error messages in events (secrets are
    /// still masked). Off by default: payloads can hold anything.
    #[arg(long)]
    pub capture_payloads: bool,

    /// With --capture-payloads: largest params/result kept per event (bytes).
    #[arg(long, default_value_t = 64 * 1024, value_name = "BYTES")]
    pub payload_max_bytes: usize,

    /// Largest message parsed whole (bytes). Longer ones are counted as truncated
    /// and correlated from their first bytes. Also the most bytes the kernel
    /// copies per syscall.
    #[arg(long, default_value_t = 16 << 20, value_name = "BYTES")]
    pub max_message_bytes: usize,

    /// Kernel ring buffer size in MiB (a power of two).
    #[arg(long, default_value_t = 64, value_name = "MIB", value_parser = parse_ring_mib)]
    pub ring_buffer_mib: u32,

    /// Seconds without an answer after which a request ends as `timeout`.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub request_timeout: u64,

    /// Seconds without a message after which an HTTP session is considered over.
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    pub session_idle_timeout: u64,

    /// Most distinct values per metric label (tool, client, server, method);
    /// further values are reported as "other".
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub max_label_values: usize,

    /// Events buffered for `--events` before new ones are dropped (and counted).
    #[arg(long, default_value_t = 65536, value_name = "N")]
    pub event_queue: usize,

    /// The policy of who may call what (TOML, see docs/policy.md): calls outside
    /// a server's scope, error and latency spikes and first uses raise `mcp.alert`
    /// events. Reloaded on SIGHUP.
    #[arg(long, value_name = "PATH")]
    pub policy: Option<std::path::PathBuf>,

    /// Where the agent keeps what must survive restarts: tools and servers seen,
    /// the network sinks' spools.
    #[arg(long, default_value = "/var/lib/mcptap", value_name = "DIR")]
    pub state_dir: std::path::PathBuf,

    /// The local API's unix socket (for `mcptap top` and `mcptap tail`;
    /// root-only permissions), or `off`.
    #[arg(long, default_value = DEFAULT_API_SOCKET, value_name = "PATH")]
    pub api_socket: String,

    /// Serve the web dashboard on this address (e.g. 127.0.0.1:9465). Off by
    /// default. It always needs a bearer token (loopback too): the agent
    /// makes one unless given one, and `mcptap ui-url` prints the address
    /// with it.
    #[arg(long, value_name = "ADDR")]
    pub ui: Option<SocketAddr>,

    /// File holding the dashboard's bearer token (also MCPTAP_UI_TOKEN).
    #[arg(long, value_name = "PATH")]
    pub ui_token_file: Option<std::path::PathBuf>,

    /// Events kept in the agent's store (the dashboard's and top's history, in
    /// the state directory); the oldest go first.
    #[arg(long, default_value_t = 200_000, value_name = "N")]
    pub store_max_events: u64,

    /// Events older than this leave the store.
    #[arg(long, default_value = "7d", value_name = "DURATION", value_parser = parse_duration)]
    pub store_max_age: std::time::Duration,

    /// Do not keep events in the store (no dashboard history, no top).
    #[arg(long)]
    pub no_store: bool,

    /// Record every ring buffer record to this file, for `mcptap replay`. It holds
    /// raw payloads (secrets included): for debugging only, never left on.
    #[arg(long, value_name = "PATH")]
    pub record: Option<std::path::PathBuf>,

    /// Log level of the agent's own logs (stderr): error, warn, info, debug, trace.
    /// RUST_LOG overrides it.
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    pub log_level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAddr {
    Off,
    On(SocketAddr),
}

fn parse_metrics_addr(s: &str) -> Result<MetricsAddr, String> {
    if s == "off" {
        return Ok(MetricsAddr::Off);
    }
    s.parse()
        .map(MetricsAddr::On)
        .map_err(|_| format!("`{s}` is not an address like 127.0.0.1:9464 (or `off`)"))
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration like 7d or 12h: {e}"))
}

fn parse_ring_mib(s: &str) -> Result<u32, String> {
    let mib: u32 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if mib == 0 || !mib.is_power_of_two() || mib > 2048 {
        return Err(format!(
            "{mib} MiB: the ring buffer size must be a power of two between 1 and 2048"
        ));
    }
    Ok(mib)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_and_errors() {
        let cli = Cli::try_parse_from(["mcptap", "run"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run expected")
        };
        assert_eq!(args.metrics_addr, MetricsAddr::On("127.0.0.1:9464".parse().unwrap()));
        assert!(!args.capture_payloads);
        assert!(Cli::try_parse_from(["mcptap", "run", "--bogus"]).is_err());
        assert!(Cli::try_parse_from(["mcptap", "run", "--ring-buffer-mib", "3"]).is_err());
        assert!(Cli::try_parse_from(["mcptap", "run", "--metrics-addr", "nope"]).is_err());
    }
}
