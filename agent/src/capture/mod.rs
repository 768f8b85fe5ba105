//! Capture stage: loads the kernel programs, attaches them, and hands the
//! pipeline one typed [`CaptureRecord`] per ring buffer record.
//!
//! Also owns the kernel-side selection (which processes and connections
//! are captured), the TLS hooks (which OpenSSL copies are probed), and the
//! kernel's loss counters.

pub mod preflight;
pub mod record;
mod selection;
pub mod tls;

use std::os::fd::AsRawFd;

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, TracePoint, UProbe},
};
use mcptap_common::{counter, record as kind};
use thiserror::Error;
use tokio::io::unix::AsyncFd;

pub use record::{CaptureRecord, Channel, Chunk, Io, SocketOpen};
pub use selection::Selection;

/// The kernel programs, built by build.rs and embedded in the binary.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mcptap"));

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
        }
    }
}

#[derive(Debug, Error)]
pub enum CaptureError {
    #[error(transparent)]
    Preflight(#[from] preflight::PreflightError),
    #[error(
        "loading mcptap's eBPF programs failed: {0}. mcptap needs Linux 5.17 or later with BPF, BTF, BPF ring \
         buffers and bpf_loop enabled (CONFIG_BPF_SYSCALL, CONFIG_BPF_EVENTS, CONFIG_DEBUG_INFO_BTF)"
    )]
    Load(#[source] aya::EbpfError),
    #[error("attaching {program} to {hook} failed: {source}")]
    Attach {
        program: &'static str,
        hook: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("cannot read this kernel's BTF (/sys/kernel/btf/vmlinux): {0}")]
    Btf(#[source] aya::BtfError),
    #[error("eBPF object has no {0} (the embedded object is out of date: rebuild mcptap)")]
    Missing(&'static str),
    #[error("eBPF map {0}: {1}")]
    Map(&'static str, #[source] aya::maps::MapError),
    #[error("cannot poll the ring buffer: {0}")]
    Poll(#[source] std::io::Error),
}

/// Process lifecycle tracepoints (rare events: classic tracepoints are
/// fine here; the syscall hook is the raw `sys_exit`, see ebpf/src/dispatch.rs).
const SCHED: &[(&str, &str, &str)] = &[
    ("sched_exec", "sched", "sched_process_exec"),
    ("sched_exit", "sched", "sched_process_exit"),
];

/// Loaded and attached kernel programs. Dropping it detaches them.
pub struct Capture {
    ebpf: Ebpf,
    ring: AsyncFd<RingBuf<MapData>>,
    pub selection: Selection,
    pub tls: Option<tls::TlsHooks>,
    counters: PerCpuArray<MapData, u64>,
}

fn attach_err(
    program: &'static str,
    hook: impl Into<String>,
) -> impl FnOnce(aya::programs::ProgramError) -> CaptureError {
    let hook = hook.into();
    move |source| CaptureError::Attach { program, hook, source }
}

impl Capture {
    pub fn start(opts: &CaptureOptions) -> Result<Capture, CaptureError> {
        if !preflight::is_privileged() {
            return Err(preflight::PreflightError::NotPrivileged.into());
        }
        let tracefs = preflight::ensure_tracefs()?;
        let layout = preflight::check_tracepoint_layout(&tracefs)?;
        preflight::check_btf()?;
        raise_memlock_limit();
        let btf = Btf::from_sys_fs().map_err(CaptureError::Btf)?;

        let agent_tgid = std::process::id();
        let flag = |b: bool| u8::from(b);
        let has_comm_rules = flag(!opts.select_exes.is_empty() || !opts.exclude_exes.is_empty());
        let has_port_rules = flag(!opts.select_ports.is_empty());
        // Wake the agent early when an eighth of the buffer is waiting.
        let wakeup_bytes = u64::from(opts.ring_buffer_bytes / 8);
        let mut ebpf = EbpfLoader::new()
            .override_global("AGENT_TGID", &agent_tgid, true)
            .override_global("CAPTURE_CAP", &opts.capture_cap, true)
            .override_global("DISCOVERY", &flag(opts.discovery), true)
            .override_global("CAPTURE_SOCKETS", &flag(opts.capture_sockets), true)
            .override_global("HAS_COMM_RULES", &has_comm_rules, true)
            .override_global("HAS_PORT_RULES", &has_port_rules, true)
            .override_global("SEND_EXECS", &flag(opts.capture_tls), true)
            .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
            .override_global("EXIT_GROUP_DEAD_OFFSET", &layout.exit_group_dead, true)
            .map_max_entries("EVENTS", opts.ring_buffer_bytes)
            .load(EBPF_OBJECT)
            .map_err(CaptureError::Load)?;

        let mut selection = Selection::new(&mut ebpf)?;
        // Rules first, so that processes started while we attach follow them.
        selection.apply_rules(opts)?;

        for &(program, category, name) in SCHED {
            let prog: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or(CaptureError::Missing(program))?
                .try_into()
                .map_err(attach_err(program, format!("{category}:{name}")))?;
            prog.load().map_err(attach_err(program, format!("{category}:{name}")))?;
            prog.attach(category, name)
                .map_err(attach_err(program, format!("{category}:{name}")))?;
        }
        let sys_exit: &mut BtfTracePoint = ebpf
            .program_mut("sys_exit")
            .ok_or(CaptureError::Missing("sys_exit"))?
            .try_into()
            .map_err(attach_err("sys_exit", "raw tracepoint sys_exit"))?;
        sys_exit
            .load("sys_exit", &btf)
            .map_err(attach_err("sys_exit", "raw tracepoint sys_exit"))?;
        sys_exit
            .attach()
            .map_err(attach_err("sys_exit", "raw tracepoint sys_exit"))?;

        let tls = if opts.capture_tls {
            for &program in tls::PROGRAMS {
                let prog: &mut UProbe = ebpf
                    .program_mut(program)
                    .ok_or(CaptureError::Missing(program))?
                    .try_into()
                    .map_err(attach_err(program, "OpenSSL"))?;
                prog.load().map_err(attach_err(program, "OpenSSL"))?;
            }
            let mut hooks = tls::TlsHooks::new(opts.tls_discovery);
            hooks.start(&mut ebpf, &selection.tracked());
            Some(hooks)
        } else {
            None
        };

        let ring = ebpf.take_map("EVENTS").ok_or(CaptureError::Missing("EVENTS"))?;
        let ring = RingBuf::try_from(ring).map_err(|e| CaptureError::Map("EVENTS", e))?;
        // SAFETY: the ring buffer owns its map fd and keeps it open for as
        // long as it lives, which is as long as the AsyncFd.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| CaptureError::Poll(e.into()))?;
        let counters = ebpf.take_map("COUNTERS").ok_or(CaptureError::Missing("COUNTERS"))?;
        let counters = PerCpuArray::try_from(counters).map_err(|e| CaptureError::Map("COUNTERS", e))?;
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
            ring,
            selection,
            tls,
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
    /// Records about new programs (TLS library discovery) stay here.
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(&mut Selection, &[u8])) -> usize {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while n < max {
            let Some(item) = ring.next() else { break };
            n += 1;
            if item.len() >= 8 && u32::from_ne_bytes([item[0], item[1], item[2], item[3]]) == kind::EXEC_ANY {
                if let Some(tls) = &mut self.tls {
                    tls.on_exec(u32::from_ne_bytes([item[4], item[5], item[6], item[7]]));
                }
                continue;
            }
            f(&mut self.selection, &item);
        }
        n
    }

    /// After a drain: processes that became tracked get their TLS probes,
    /// those that ended lose them.
    pub fn after_drain(&mut self) {
        let (tracked, exited) = self.selection.take_changes();
        if let Some(tls) = &mut self.tls {
            for pid in tracked {
                tls.on_tracked(&mut self.ebpf, pid);
            }
            for pid in exited {
                tls.on_exit(&mut self.ebpf, pid);
            }
            let selection = &self.selection;
            tls.run_due(&mut self.ebpf, &|pid| selection.is_tracked(pid));
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
            let tracked = self.selection.tracked();
            tls.tick(&mut self.ebpf, &tracked);
        }
    }

    /// Files carrying the TLS probes, by kind, and the processes with
    /// probes of their own.
    pub fn tls_hooked(&self) -> (Vec<(&'static str, usize)>, usize) {
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

/// The empty program on the syscall hook (benchmarks: the kernel's floor).
pub fn attach_floor() -> Result<Ebpf, CaptureError> {
    if !preflight::is_privileged() {
        return Err(preflight::PreflightError::NotPrivileged.into());
    }
    preflight::check_btf()?;
    raise_memlock_limit();
    let btf = Btf::from_sys_fs().map_err(CaptureError::Btf)?;
    let mut ebpf = EbpfLoader::new().load(EBPF_OBJECT).map_err(CaptureError::Load)?;
    let prog: &mut BtfTracePoint = ebpf
        .program_mut("sys_exit_floor")
        .ok_or(CaptureError::Missing("sys_exit_floor"))?
        .try_into()
        .map_err(attach_err("sys_exit_floor", "raw tracepoint sys_exit"))?;
    prog.load("sys_exit", &btf)
        .map_err(attach_err("sys_exit_floor", "raw tracepoint sys_exit"))?;
    prog.attach()
        .map_err(attach_err("sys_exit_floor", "raw tracepoint sys_exit"))?;
    Ok(ebpf)
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
