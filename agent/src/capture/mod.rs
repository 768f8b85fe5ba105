//! Capture stage: loads the kernel programs, attaches them, and hands the
//! pipeline one typed [`CaptureRecord`] per ring buffer record.
//!
//! Also owns what the kernel offers (`kernel`: which object, which hook
//! family), the kernel-side selection (which processes and connections are
//! captured), the TLS hooks (which OpenSSL copies are probed), and the
//! kernel's loss counters.

pub mod hooks;
pub mod kernel;
pub mod preflight;
pub mod record;
mod selection;
pub mod tls;

use std::os::fd::AsRawFd;

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{ProgramError, TracePoint, UProbe},
};
use mcptap_common::{
    KernelConfig, counter,
    names::{self, map, program},
    record as kind, watch,
};
use thiserror::Error;
use tokio::io::unix::AsyncFd;

pub use hooks::{HookChoice, Hooks};
pub use kernel::Kernel;
pub use record::{CaptureRecord, Channel, Chunk, Io, PathArg, RawEffect, RawEffectKind, SocketOpen};
pub use selection::Selection;

/// Settings of the kernel side.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Most bytes sent per call.
    pub capture_cap: u64,
    /// Sniff untracked processes for MCP (stdin, HTTP requests, TLS).
    pub discovery: bool,
    /// Capture TCP connections of tracked processes.
    pub capture_sockets: bool,
    /// Probe OpenSSL for TLS plaintext (of tracked processes).
    pub capture_tls: bool,
    /// Probe OpenSSL in every process, to discover MCP inside TLS of
    /// processes not tracked yet (costs every OpenSSL user a trap per call).
    pub tls_discovery: bool,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_buffer_bytes: u32,
    /// Processes to track from the start.
    pub select_pids: Vec<u32>,
    /// Executable names to track.
    pub select_exes: Vec<String>,
    /// Ports whose servers and clients are tracked.
    pub select_ports: Vec<u16>,
    pub exclude_pids: Vec<u32>,
    pub exclude_exes: Vec<String>,
    /// Which syscall hook family (`--hooks`).
    pub hooks: HookChoice,
    /// Record side effects of MCP servers (files, programs, connections,
    /// listeners).
    pub effects: bool,
    /// Where HTTPS discovery keeps its verdicts across restarts (in the
    /// state directory; `None`: this run only).
    pub tls_verdicts_file: Option<std::path::PathBuf>,
    /// Hold execs of files not read yet until they are (`tls::gate`): what
    /// lets a program's first HTTPS request be seen.
    pub exec_gate: bool,
}

impl CaptureOptions {
    /// Defaults of `mcptap run`.
    pub fn new(ring_buffer_bytes: u32) -> Self {
        CaptureOptions {
            capture_cap: 16 << 20,
            discovery: true,
            capture_sockets: true,
            capture_tls: true,
            tls_discovery: false,
            ring_buffer_bytes,
            select_pids: Vec::new(),
            select_exes: Vec::new(),
            select_ports: Vec::new(),
            exclude_pids: Vec::new(),
            exclude_exes: Vec::new(),
            hooks: HookChoice::Auto,
            effects: true,
            tls_verdicts_file: None,
            exec_gate: true,
        }
    }
}

#[derive(Debug, Error)]
pub enum CaptureError {
    #[error(transparent)]
    Preflight(#[from] preflight::PreflightError),
    #[error("Linux {release} refused mcptap's eBPF object ({kind} variant): {detail}")]
    Load {
        release: String,
        kind: &'static str,
        detail: String,
    },
    #[error("attaching {program} to {hook} failed: {detail}")]
    Attach {
        program: &'static str,
        hook: String,
        detail: String,
    },
    #[error("{0}")]
    Hooks(String),
    #[error("cannot read this kernel's BTF (/sys/kernel/btf/vmlinux): {0}")]
    Btf(#[source] aya::BtfError),
    #[error("eBPF object has no {0} (the embedded object is out of date: rebuild mcptap)")]
    Missing(&'static str),
    #[error("eBPF map {0}: {1}")]
    Map(&'static str, #[source] aya::maps::MapError),
    #[error("cannot poll the ring buffer: {0}")]
    Poll(#[source] std::io::Error),
}

/// A program error in one line: the kernel verifier's log (often hundreds
/// of lines) goes to the debug log, its last line into the message.
pub fn one_line(err: &ProgramError) -> String {
    match err {
        ProgramError::LoadError { io_error, verifier_log } => {
            let log = verifier_log.to_string();
            tracing::debug!("verifier log:\n{log}");
            match log
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with("processed "))
            {
                Some(last) => format!("the verifier refused it ({io_error}): {last}"),
                None => format!("the kernel refused it ({io_error})"),
            }
        }
        other => other.to_string().lines().next().unwrap_or_default().to_string(),
    }
}

/// An object-load error in one line (its program errors through [`one_line`]).
fn load_error_line(err: &aya::EbpfError) -> String {
    match err {
        aya::EbpfError::ProgramError(e) => one_line(e),
        other => other.to_string().lines().next().unwrap_or_default().to_string(),
    }
}

/// Process lifecycle tracepoints (rare events: classic tracepoints are
/// fine here; the syscall hook is the raw `sys_exit`, see ebpf/src/dispatch.rs).
const SCHED: &[(&str, &str, &str)] = &[
    (program::SCHED_EXEC, "sched", "sched_process_exec"),
    (program::SCHED_EXIT, "sched", "sched_process_exit"),
];

/// Loaded and attached kernel programs. Dropping it detaches them.
pub struct Capture {
    ebpf: Ebpf,
    /// What was probed, and the syscall hook family in use.
    pub kernel: Kernel,
    pub hooks: Hooks,
    ring: AsyncFd<RingBuf<MapData>>,
    pub selection: Selection,
    pub tls: Option<tls::TlsHooks>,
    /// Processes that said they speak TLS since the last drain.
    tls_seen: Vec<u32>,
    /// Interpreters that opened an MCP SDK's files since the last drain.
    sdk_opens: Vec<(u32, String)>,
    counters: PerCpuArray<MapData, u64>,
}

fn attach_err(
    program: &'static str,
    hook: impl Into<String>,
) -> impl FnOnce(aya::programs::ProgramError) -> CaptureError {
    let hook = hook.into();
    move |source| CaptureError::Attach {
        program,
        hook,
        detail: one_line(&source),
    }
}

/// Probes the kernel and loads the object that suits it, with the agent's
/// settings and map sizes.
fn load(config: &KernelConfig, ring_buffer_bytes: u32) -> Result<(Kernel, Ebpf, Btf), CaptureError> {
    let kernel = kernel::probe()?;
    raise_memlock_limit();
    let btf = Btf::from_sys_fs().map_err(CaptureError::Btf)?;
    let config = KernelConfig {
        capture_cap: kernel.object.max_call_bytes(config.capture_cap),
        ..*config
    };
    // The compat object assembles its wide chunks in one buffer per CPU;
    // the main object does not use them.
    let wide_buffers = match kernel.object {
        kernel::ObjectKind::Compat => aya::util::nr_cpus().map_or(1024, |n| n as u32),
        kernel::ObjectKind::BpfLoop => 1,
    };
    let ebpf = EbpfLoader::new()
        .override_global(names::CONFIG, &config, true)
        .map_max_entries(map::EVENTS, ring_buffer_bytes)
        .map_max_entries(map::SCRATCH_WIDE, wide_buffers)
        .map_max_entries(map::WATCH_KERNEL, watch::kernel_words(kernel.pid_max))
        .map_max_entries(map::WATCH_USER, watch::user_words(kernel.pid_max))
        .load(kernel.object.bytes())
        .map_err(|e| CaptureError::Load {
            release: kernel.release.clone(),
            kind: kernel.object.name(),
            detail: load_error_line(&e),
        })?;
    Ok((kernel, ebpf, btf))
}

impl Capture {
    pub fn start(opts: &CaptureOptions) -> Result<Capture, CaptureError> {
        preflight::require_privileges()?;
        let tracefs = preflight::ensure_tracefs()?;
        let layout = preflight::check_tracepoint_layout(&tracefs)?;
        let flag = |b: bool| u8::from(b);
        // The exec gate first: whether the kernel programs point
        // interpreters out depends on it.
        let gate = if opts.exec_gate && opts.capture_tls && opts.discovery {
            match tls::gate::Gate::open() {
                Ok(g) => Some(g),
                Err(e) => {
                    tracing::warn!(
                        "exec gate off: {e}; the first HTTPS requests of a program new to this host may be missed"
                    );
                    None
                }
            }
        } else {
            None
        };
        let config = KernelConfig {
            capture_cap: opts.capture_cap,
            // Wake the agent early when an eighth of the buffer is waiting.
            wakeup_bytes: u64::from(opts.ring_buffer_bytes / 8),
            agent_tgid: std::process::id(),
            exit_group_dead_offset: layout.exit_group_dead,
            discovery: flag(opts.discovery),
            capture_sockets: flag(opts.capture_sockets),
            has_comm_rules: flag(!opts.select_exes.is_empty() || !opts.exclude_exes.is_empty()),
            has_port_rules: flag(!opts.select_ports.is_empty()),
            send_execs: flag(opts.capture_tls),
            effects: flag(opts.effects),
            fork_child_pid_offset: layout.fork_child_pid,
            exec_filename_offset: layout.exec_filename,
            sdk_opens: flag(gate.is_some()),
            _pad: [0; 5],
        };
        let (kernel, mut ebpf, btf) = load(&config, opts.ring_buffer_bytes)?;
        if kernel.object == kernel::ObjectKind::Compat && opts.capture_cap > mcptap_common::COMPAT_MAX_CALL_BYTES {
            tracing::info!(
                max_call_mib = mcptap_common::COMPAT_MAX_CALL_BYTES >> 20,
                "this kernel has no bpf_loop (before 5.17): a call moving more bytes is truncated (counted)"
            );
        }

        let mut selection = Selection::new(&mut ebpf, watch::user_words(kernel.pid_max))?;
        // Rules first, so that processes started while we attach follow them.
        selection.apply_rules(opts)?;

        let fork = (program::SCHED_FORK, "sched", "sched_process_fork");
        // Only with side effects on: the fork tracepoint marks the
        // processes servers start.
        let sched = SCHED.iter().chain(opts.effects.then_some(&fork));
        for &(program, category, name) in sched {
            let prog: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or(CaptureError::Missing(program))?
                .try_into()
                .map_err(attach_err(program, format!("{category}:{name}")))?;
            prog.load().map_err(attach_err(program, format!("{category}:{name}")))?;
            prog.attach(category, name)
                .map_err(attach_err(program, format!("{category}:{name}")))?;
        }
        // The open syscalls are hooked for side effects, and for
        // interpreters' opens of an MCP SDK (with the gate).
        let hooks = hooks::attach(&mut ebpf, &btf, opts.hooks, false, opts.effects || gate.is_some())?;
        tracing::info!(
            family = hooks.family.name(),
            kernel_object = kernel.object.name(),
            "syscall hooks: {}",
            hooks.why
        );

        let tls = if opts.capture_tls {
            // OpenSSL's programs are required; another library's refused
            // by this kernel leaves that library uncaptured, said once.
            let mut disabled = Vec::new();
            for library in tls::target::Library::ALL {
                for &program in tls::programs(library) {
                    let prog: &mut UProbe = ebpf
                        .program_mut(program)
                        .ok_or(CaptureError::Missing(program))?
                        .try_into()
                        .map_err(attach_err(program, library.as_str()))?;
                    match prog.load().map_err(attach_err(program, library.as_str())) {
                        Ok(()) => {}
                        Err(e) if library != tls::target::Library::OpenSsl => {
                            tracing::warn!(library = library.as_str(), "TLS of this library is not captured: {e}");
                            disabled.push(library);
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            let mut hooks = tls::TlsHooks::new(opts.tls_discovery, disabled, opts.tls_verdicts_file.clone());
            if let Some(gate) = gate {
                let pending = ebpf
                    .take_map(map::INTERP_PENDING)
                    .ok_or(CaptureError::Missing(map::INTERP_PENDING))?;
                let pending =
                    aya::maps::HashMap::try_from(pending).map_err(|e| CaptureError::Map(map::INTERP_PENDING, e))?;
                match gate.start(pending, hooks.wake()) {
                    Ok(link) => {
                        tracing::info!(
                            hold_max_ms = tls::gate::HOLD_MAX.as_millis() as u64,
                            "exec gate on: programs are read before they first run"
                        );
                        hooks.set_gate(link);
                    }
                    Err(e) => tracing::warn!("exec gate off: cannot start its thread: {e}"),
                }
            }
            hooks.start(&mut ebpf, &selection.tracked());
            Some(hooks)
        } else {
            None
        };

        let ring = ebpf.take_map(map::EVENTS).ok_or(CaptureError::Missing(map::EVENTS))?;
        let ring = RingBuf::try_from(ring).map_err(|e| CaptureError::Map(map::EVENTS, e))?;
        // SAFETY: the ring buffer owns its map fd and keeps it open for as
        // long as it lives, which is as long as the AsyncFd.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| CaptureError::Poll(e.into()))?;
        let counters = ebpf
            .take_map(map::COUNTERS)
            .ok_or(CaptureError::Missing(map::COUNTERS))?;
        let counters = PerCpuArray::try_from(counters).map_err(|e| CaptureError::Map(map::COUNTERS, e))?;
        tracing::info!(
            ring_buffer_mib = opts.ring_buffer_bytes >> 20,
            discovery = opts.discovery,
            sockets = opts.capture_sockets,
            tls = opts.capture_tls,
            tls_discovery = opts.tls_discovery,
            fd = ring.get_ref().as_raw_fd(),
            "eBPF programs attached"
        );
        Ok(Capture {
            ebpf,
            kernel,
            hooks,
            ring,
            selection,
            tls,
            tls_seen: Vec::new(),
            sdk_opens: Vec::new(),
            counters,
        })
    }

    /// Waits until the kernel wakes us (the ring buffer is filling up).
    pub async fn readable(&mut self) -> Result<(), CaptureError> {
        let mut guard = self.ring.readable_mut().await.map_err(CaptureError::Poll)?;
        guard.clear_ready();
        Ok(())
    }

    /// Hands up to `max` raw records to `f`; returns how many it handed.
    /// Records about new programs and processes that speak TLS (TLS
    /// library discovery) stay here.
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(&mut Selection, &[u8])) -> usize {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while n < max {
            let Some(item) = ring.next() else { break };
            n += 1;
            let head = |i: usize| u32::from_ne_bytes([item[i], item[i + 1], item[i + 2], item[i + 3]]);
            if item.len() >= 8 + mcptap_common::SDK_PATH_MAX && head(0) == kind::SDK_OPEN {
                let path = &item[8..8 + mcptap_common::SDK_PATH_MAX];
                let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
                self.sdk_opens
                    .push((head(4), String::from_utf8_lossy(&path[..end]).into_owned()));
                continue;
            }
            if item.len() >= 8 && matches!(head(0), kind::EXEC_ANY | kind::TLS_SEEN) {
                let pid = head(4);
                match head(0) {
                    kind::EXEC_ANY => {
                        if let Some(tls) = &mut self.tls {
                            tls.on_exec(pid);
                        }
                    }
                    _ => self.tls_seen.push(pid),
                }
                continue;
            }
            f(&mut self.selection, &item);
        }
        n
    }

    /// After a drain: processes that became tracked get their TLS probes,
    /// those that ended lose them, programs rewritten in place lose theirs,
    /// files the inspectors have read get the probes that waited for them.
    pub fn after_drain(&mut self) {
        let (tracked, exited) = self.selection.take_changes();
        let seen = std::mem::take(&mut self.tls_seen);
        if let Some(tls) = &mut self.tls {
            for pid in tls.poll(&mut self.ebpf) {
                self.selection.set_tls_probed(pid, true);
            }
            for (pid, path) in std::mem::take(&mut self.sdk_opens) {
                let tracked = self.selection.is_tracked(pid);
                if tls.on_sdk_open(&mut self.ebpf, pid, &path, tracked) {
                    self.selection.set_tls_probed(pid, true);
                }
            }
            for pid in seen {
                if tls.on_tls_seen(&mut self.ebpf, pid) {
                    self.selection.set_tls_probed(pid, true);
                }
            }
            for pid in self.selection.take_tls_not_mcp() {
                if tls.on_tls_not_mcp(&mut self.ebpf, pid) {
                    self.selection.set_tls_probed(pid, false);
                }
            }
            for pid in tracked {
                tls.on_tracked(&mut self.ebpf, pid);
            }
            for pid in exited {
                tls.on_exit(&mut self.ebpf, pid);
            }
            let selection = &self.selection;
            for pid in tls.run_due(&mut self.ebpf, &|pid| selection.is_tracked(pid)) {
                self.selection.set_tls_probed(pid, true);
            }
        }
    }

    /// Periodic work of the capture side: TLS libraries of new and tracked
    /// processes, listeners on selected ports.
    pub fn tick(&mut self) {
        for pid in self.selection.refresh_port_listeners() {
            tracing::info!(pid, "listens on a selected port: tracking it");
            if let Some(tls) = &mut self.tls {
                tls.on_tracked(&mut self.ebpf, pid);
            }
        }
        if let Some(tls) = &mut self.tls {
            let selection = &self.selection;
            let released = tls.expire_probing(&mut self.ebpf, &|pid| selection.is_tracked(pid));
            for pid in released {
                self.selection.set_tls_probed(pid, false);
            }
            let tracked = self.selection.tracked();
            tls.tick(&mut self.ebpf, &tracked);
            tls.save_verdicts(false);
        }
    }

    /// Waits (at most `limit`) until the TLS files asked about are read and
    /// probed (`mcptap check`).
    pub fn settle_tls(&mut self, limit: std::time::Duration) {
        let started = std::time::Instant::now();
        while let Some(tls) = &mut self.tls {
            tls.poll(&mut self.ebpf);
            if !tls.busy() || started.elapsed() >= limit {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Notified when a TLS file's inspection has finished (`None` without
    /// TLS capture): the loop then calls `after_drain`.
    pub fn tls_wake(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        self.tls.as_ref().map(|tls| tls.wake())
    }

    /// Whether TLS probes were attached or detached since the last call.
    pub fn take_tls_changed(&mut self) -> bool {
        self.tls.as_mut().is_some_and(|tls| tls.take_changed())
    }

    /// Files carrying the TLS probes, by kind, and the processes with
    /// probes of their own.
    pub fn tls_hooked(&self) -> (Vec<(tls::target::Library, tls::target::FileKind, usize)>, usize) {
        match &self.tls {
            Some(tls) => (tls.hooked_files(), tls.hooked_processes()),
            None => (Vec::new(), 0),
        }
    }

    /// The kernel's counters, summed over CPUs, indexed by `counter::*`.
    pub fn kernel_counters(&self) -> [u64; counter::COUNT as usize] {
        let mut out = [0u64; counter::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(values) = self.counters.get(&(i as u32), 0) {
                *slot = values.iter().sum();
            }
        }
        out
    }
}

/// The empty programs on the syscall hooks of the family `choice` leads
/// to (benchmarks: what the hook itself costs).
pub fn attach_floor(choice: HookChoice) -> Result<(Kernel, Hooks, Ebpf), CaptureError> {
    preflight::require_privileges()?;
    let (kernel, mut ebpf, btf) = load(&KernelConfig::default(), 1 << 20)?;
    let hooks = hooks::attach(&mut ebpf, &btf, choice, true, true)?;
    Ok((kernel, hooks, ebpf))
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to a local.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK: {}", std::io::Error::last_os_error());
    }
}
