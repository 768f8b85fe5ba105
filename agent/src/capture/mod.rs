//! Capture stage: loads the kernel programs, attaches them, and hands the
//! pipeline one typed [`CaptureRecord`] per ring buffer record.
//!
//! Also owns the kernel-side selection (which processes are tracked or
//! excluded) and the kernel's loss counters.

pub mod preflight;
pub mod record;
mod selection;

use std::os::fd::AsRawFd;

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
};
use mcptap_common::counter;
use thiserror::Error;
use tokio::io::unix::AsyncFd;

pub use record::{CaptureRecord, Chunk, Io};
pub use selection::Selection;

/// The kernel programs, built by build.rs and embedded in the binary.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mcptap"));

/// Settings of the kernel side.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Most bytes sent per syscall.
    pub capture_cap: u64,
    /// Sniff untracked processes' stdin for MCP.
    pub discovery: bool,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_buffer_bytes: u32,
    /// Processes to track from the start.
    pub select_pids: Vec<u32>,
    /// Executable names to track.
    pub select_exes: Vec<String>,
    pub exclude_pids: Vec<u32>,
    pub exclude_exes: Vec<String>,
}

#[derive(Debug, Error)]
pub enum CaptureError {
    #[error(transparent)]
    Preflight(#[from] preflight::PreflightError),
    #[error(
        "loading mcptap's eBPF programs failed: {0}. mcptap needs Linux 5.17 or later with BPF, BPF ring \
         buffers and bpf_loop enabled (CONFIG_BPF_SYSCALL, CONFIG_BPF_EVENTS)"
    )]
    Load(#[source] aya::EbpfError),
    #[error("attaching {program} to tracepoint {category}:{name} failed: {source}")]
    Attach {
        program: &'static str,
        category: &'static str,
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF object has no {0} (the embedded object is out of date: rebuild mcptap)")]
    Missing(&'static str),
    #[error("eBPF map {0}: {1}")]
    Map(&'static str, #[source] aya::maps::MapError),
    #[error("cannot poll the ring buffer: {0}")]
    Poll(#[source] std::io::Error),
}

/// Program → tracepoint it is attached to, and whether the tracepoint may
/// be absent (dup2 does not exist on every architecture). Only syscall
/// exits are hooked (arguments are read from the saved registers), except
/// close.
const ATTACHMENTS: &[(&str, &str, &str, bool)] = &[
    ("exit_read", "syscalls", "sys_exit_read", false),
    ("exit_readv", "syscalls", "sys_exit_readv", false),
    ("exit_write", "syscalls", "sys_exit_write", false),
    ("exit_writev", "syscalls", "sys_exit_writev", false),
    ("exit_dup", "syscalls", "sys_exit_dup", false),
    ("exit_dup", "syscalls", "sys_exit_dup2", true),
    ("exit_dup", "syscalls", "sys_exit_dup3", false),
    ("exit_fcntl", "syscalls", "sys_exit_fcntl", false),
    ("enter_close", "syscalls", "sys_enter_close", false),
    ("sched_exec", "sched", "sched_process_exec", false),
    ("sched_exit", "sched", "sched_process_exit", false),
];

/// Loaded and attached kernel programs. Dropping it detaches them.
pub struct Capture {
    // Holds the programs and their links.
    _ebpf: Ebpf,
    ring: AsyncFd<RingBuf<MapData>>,
    pub selection: Selection,
    counters: PerCpuArray<MapData, u64>,
}

impl Capture {
    pub fn start(opts: &CaptureOptions) -> Result<Capture, CaptureError> {
        if !preflight::is_privileged() {
            return Err(preflight::PreflightError::NotPrivileged.into());
        }
        let tracefs = preflight::ensure_tracefs()?;
        let layout = preflight::check_tracepoint_layout(&tracefs)?;
        raise_memlock_limit();

        let agent_tgid = std::process::id();
        let discovery = u8::from(opts.discovery);
        let has_comm_rules = u8::from(!opts.select_exes.is_empty() || !opts.exclude_exes.is_empty());
        let mut ebpf = EbpfLoader::new()
            .override_global("AGENT_TGID", &agent_tgid, true)
            .override_global("CAPTURE_CAP", &opts.capture_cap, true)
            .override_global("DISCOVERY", &discovery, true)
            .override_global("HAS_COMM_RULES", &has_comm_rules, true)
            .override_global("EXIT_GROUP_DEAD_OFFSET", &layout.exit_group_dead, true)
            .map_max_entries("EVENTS", opts.ring_buffer_bytes)
            .load(EBPF_OBJECT)
            .map_err(CaptureError::Load)?;

        let mut selection = Selection::new(&mut ebpf)?;
        // Rules first, so that processes started while we attach follow them.
        selection.apply_rules(opts)?;

        for &(program, category, name, optional) in ATTACHMENTS {
            if optional && !tracefs.join("events").join(category).join(name).is_dir() {
                tracing::debug!("no tracepoint {category}:{name} on this kernel: skipped");
                continue;
            }
            let prog: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or(CaptureError::Missing(program))?
                .try_into()
                .map_err(|source| CaptureError::Attach {
                    program,
                    category,
                    name,
                    source,
                })?;
            if prog.fd().is_err() {
                prog.load().map_err(|source| CaptureError::Attach {
                    program,
                    category,
                    name,
                    source,
                })?;
            }
            prog.attach(category, name).map_err(|source| CaptureError::Attach {
                program,
                category,
                name,
                source,
            })?;
        }

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
            fd = ring.get_ref().as_raw_fd(),
            "eBPF programs attached"
        );
        Ok(Capture {
            _ebpf: ebpf,
            ring,
            selection,
            counters,
        })
    }

    /// Waits until the ring buffer has records.
    pub async fn readable(&mut self) -> Result<(), CaptureError> {
        let mut guard = self.ring.readable_mut().await.map_err(CaptureError::Poll)?;
        guard.clear_ready();
        Ok(())
    }

    /// Hands up to `max` raw records to `f`; returns how many it handed.
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(&mut Selection, &[u8])) -> usize {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while n < max {
            let Some(item) = ring.next() else { break };
            f(&mut self.selection, &item);
            n += 1;
        }
        n
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
