//! Finding OpenSSL and hooking it: every `libssl.so*` a process maps, and
//! every executable that links OpenSSL statically and exports its symbols
//! (Node), gets the TLS uprobes, whatever path or mount namespace it is
//! seen through (a file mapped by a process in another mount namespace is
//! opened through `/proc/PID/root`, so the probe lands on the file that
//! process really uses).
//!
//! **Scoped by default.** A uprobe costs every call of the hooked function
//! a trap, in every process that maps the file, whether or not the program
//! then cares: measured at ~12 µs per `SSL_read`/`SSL_write` on the
//! project's VMs (docs/benchmarks.md), against ~1 µs for the call itself.
//! So by default the probes are attached per tracked process (the kernel
//! installs them in that process's address space only) when it becomes
//! tracked, and removed when it exits: unrelated processes pay nothing.
//!
//! **HTTPS discovery, by default.** A process not tracked yet that moves
//! its first TLS record (the kernel says so once per process: `TLS_SEEN`)
//! gets the probes of its own for a while ([`PROBE_WINDOW`]): its requests
//! are sniffed inside TLS like plain HTTP ones. MCP: it is tracked from
//! then on. Not within the window: the probes go. Either verdict is
//! remembered per program (executable and command line): a program known
//! to speak MCP over TLS is probed from its exec on, so its first requests
//! are seen too; one known not to is left alone for [`NOT_MCP_TTL`]. The
//! first exchange of a program never seen before may be missed (the probes
//! land while its handshake runs): it is discovered by the next.
//!
//! **Host-wide with `--tls-discovery`.** The probes are attached once per
//! file for every process, and the programs filter in the kernel; every
//! OpenSSL user on the host then pays the trap, and nothing is missed.
//!
//! Where files are found: the maps of tracked processes (when they become
//! tracked, after each exec, and every few seconds: Python loads libssl on
//! its first `import ssl`); with `--tls-discovery` also the library
//! directories, every running process, and every new program.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fs,
    num::NonZeroU32,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    programs::{
        UProbe,
        uprobe::{UProbeLinkId, UProbeScope},
    },
};
use mcptap_common::names::program;
use object::{Object, ObjectSection, ObjectSymbol};

/// One uprobe: program name, symbol, whether the symbol is required.
const PROBES: &[(&str, &str, bool)] = &[
    (program::SSL_READ_ENTER, "SSL_read", true),
    (program::SSL_RW_EXIT, "SSL_read", true),
    (program::SSL_WRITE_ENTER, "SSL_write", true),
    (program::SSL_RW_EXIT, "SSL_write", true),
    (program::SSL_READ_EX_ENTER, "SSL_read_ex", false),
    (program::SSL_RW_EX_EXIT, "SSL_read_ex", false),
    (program::SSL_WRITE_EX_ENTER, "SSL_write_ex", false),
    (program::SSL_RW_EX_EXIT, "SSL_write_ex", false),
    (program::SSL_FREE, "SSL_free", false),
];

/// Programs of PROBES, loaded once.
pub const PROGRAMS: &[&str] = &[
    program::SSL_READ_ENTER,
    program::SSL_READ_EX_ENTER,
    program::SSL_WRITE_ENTER,
    program::SSL_WRITE_EX_ENTER,
    program::SSL_RW_EXIT,
    program::SSL_RW_EX_EXIT,
    program::SSL_FREE,
];

/// Directories where distributions put libssl (host-wide mode).
const LIB_DIRS: &[&str] = &[
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
];

/// When to look at a process again after its exec.
const RESCAN_AFTER: &[Duration] = &[
    Duration::from_millis(50),
    Duration::from_millis(500),
    Duration::from_secs(3),
];

/// How often tracked processes are looked at again (late dlopen).
const TRACKED_RESCAN: Duration = Duration::from_secs(5);

/// How long an untracked process's TLS library is probed for discovery.
pub const PROBE_WINDOW: Duration = Duration::from_secs(30);

/// How long a program found not to speak MCP over TLS is left alone.
pub const NOT_MCP_TTL: Duration = Duration::from_secs(600);

/// How long a program found to speak MCP is probed from its exec on.
pub const MCP_TTL: Duration = Duration::from_secs(24 * 3600);

/// Programs remembered, at most (the oldest verdicts go first).
const MAX_PROGRAMS: usize = 4096;

/// A program: its executable and command line.
type ProgramKey = (PathBuf, Vec<u8>);

/// What HTTPS discovery concluded about a program, and when; for one that
/// speaks MCP, the TLS files it used (paths as it sees them, with their
/// kind), probed at its next exec before it maps them.
#[derive(Debug, Clone)]
struct Verdict {
    mcp: bool,
    at: Instant,
    files: Vec<(String, &'static str)>,
}

/// Outcomes of HTTPS discovery (`mcptap_tls_discovery_total{outcome}`).
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscoveryCounts {
    /// A process's TLS library was probed.
    pub probed: u64,
    /// Left alone: its program was found not to speak MCP lately.
    pub skipped: u64,
    /// Probed from its exec: its program speaks MCP.
    pub expected: u64,
    /// The window passed without MCP: probes removed.
    pub not_mcp: u64,
    /// Found to speak MCP.
    pub mcp: u64,
}

/// A file identity: device and inode.
type FileId = (u64, u64);

/// An OpenSSL copy: its kind and its functions' file offsets.
#[derive(Debug, Clone)]
struct Target {
    kind: &'static str,
    offsets: HashMap<&'static str, u64>,
}

/// Probes attached for one tracked process.
#[derive(Default)]
struct Scoped {
    files: HashSet<FileId>,
    /// The files' paths as the process sees them, and their kind.
    paths: Vec<(String, &'static str)>,
    links: Vec<(&'static str, UProbeLinkId)>,
}

pub struct TlsHooks {
    host_wide: bool,
    /// Files looked at: `None` when not OpenSSL.
    files: HashMap<FileId, Option<Target>>,
    /// Files hooked for every process (host-wide mode).
    global: HashSet<FileId>,
    /// Probes per tracked process (scoped mode).
    scoped: HashMap<u32, Scoped>,
    pub errors: u64,
    /// Exec'd processes to look at, when.
    due: VecDeque<(Instant, u32, usize)>,
    last_tracked_scan: Option<Instant>,
    /// Untracked processes whose TLS library is probed, since when.
    probing: HashMap<u32, Instant>,
    /// Verdicts per program.
    programs: HashMap<ProgramKey, Verdict>,
    pub discovery: DiscoveryCounts,
    /// Where links of exited processes go to be dropped: detaching a
    /// uprobe waits for an RCU grace period (~100 ms each here), which
    /// would stall the ring buffer drain for a second per process.
    detacher: Option<std::sync::mpsc::Sender<Vec<aya::programs::uprobe::UProbeLink>>>,
}

/// A thread that drops (detaches) links; `None` if it cannot start, and
/// links are then detached in place.
fn spawn_detacher() -> Option<std::sync::mpsc::Sender<Vec<aya::programs::uprobe::UProbeLink>>> {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<aya::programs::uprobe::UProbeLink>>();
    std::thread::Builder::new()
        .name("uprobe-detach".into())
        .spawn(move || {
            while let Ok(links) = rx.recv() {
                drop(links);
            }
        })
        .ok()
        .map(|_| tx)
}

impl TlsHooks {
    pub fn new(host_wide: bool) -> TlsHooks {
        TlsHooks {
            host_wide,
            files: HashMap::new(),
            global: HashSet::new(),
            scoped: HashMap::new(),
            errors: 0,
            due: VecDeque::new(),
            last_tracked_scan: None,
            probing: HashMap::new(),
            programs: HashMap::new(),
            discovery: DiscoveryCounts::default(),
            detacher: spawn_detacher(),
        }
    }

    /// A process not tracked moved its first TLS record: probe its TLS
    /// library for a while, unless its program was found not to speak MCP
    /// lately. Returns true when probes were attached (the kernel then ties
    /// its TLS sessions to their sockets).
    pub fn on_tls_seen(&mut self, ebpf: &mut Ebpf, pid: u32) -> bool {
        if self.host_wide || self.probing.contains_key(&pid) || self.scoped.contains_key(&pid) {
            return false;
        }
        if let Some(key) = program_key(pid)
            && let Some(v) = self.programs.get(&key)
            && !v.mcp
            && v.at.elapsed() < NOT_MCP_TTL
        {
            self.discovery.skipped += 1;
            return false;
        }
        self.scan_process(ebpf, pid, true);
        if self.scoped.get(&pid).is_none_or(|s| s.links.is_empty()) {
            return false; // no TLS library mcptap probes
        }
        self.discovery.probed += 1;
        self.probing.insert(pid, Instant::now());
        tracing::debug!(pid, "probing the TLS library of a process that speaks TLS");
        true
    }

    /// Whether a program that just started is one known to speak MCP over
    /// TLS (probed from its exec on).
    fn expected_mcp(&self, pid: u32) -> Option<Vec<(String, &'static str)>> {
        program_key(pid)
            .and_then(|k| self.programs.get(&k).cloned())
            .filter(|v| v.mcp && v.at.elapsed() < MCP_TTL)
            .map(|v| v.files)
    }

    /// Probed processes whose window passed without MCP: their probes go,
    /// and their program is remembered as not MCP. Returns them (the
    /// kernel stops tying their TLS sessions to sockets).
    pub fn expire_probing(&mut self, ebpf: &mut Ebpf, is_tracked: &dyn Fn(u32) -> bool) -> Vec<u32> {
        let done: Vec<u32> = self
            .probing
            .iter()
            .filter(|(pid, since)| is_tracked(**pid) || since.elapsed() >= PROBE_WINDOW)
            .map(|(pid, _)| *pid)
            .collect();
        let mut released = Vec::new();
        for pid in done {
            self.probing.remove(&pid);
            if is_tracked(pid) {
                continue; // on_tracked took it
            }
            if let Some(key) = program_key(pid) {
                self.remember(key, false, Vec::new());
            }
            self.discovery.not_mcp += 1;
            self.on_exit(ebpf, pid);
            released.push(pid);
        }
        released
    }

    fn remember(&mut self, key: ProgramKey, mcp: bool, files: Vec<(String, &'static str)>) {
        if self.programs.len() >= MAX_PROGRAMS && !self.programs.contains_key(&key) {
            if let Some(oldest) = self.programs.iter().min_by_key(|(_, v)| v.at).map(|(k, _)| k.clone()) {
                self.programs.remove(&oldest);
            }
        }
        self.programs.insert(
            key,
            Verdict {
                mcp,
                at: Instant::now(),
                files,
            },
        );
    }

    /// Hooks the tracked processes (and, host-wide, everything installed
    /// and running).
    pub fn start(&mut self, ebpf: &mut Ebpf, tracked: &[u32]) {
        if self.host_wide {
            for dir in LIB_DIRS {
                let Ok(entries) = fs::read_dir(dir) else { continue };
                for e in entries.flatten() {
                    if is_libssl(&e.file_name().to_string_lossy()) {
                        self.hook_global(ebpf, &e.path(), None, "shared_library");
                    }
                }
            }
            for exe in ["node", "nodejs"] {
                if let Some(path) = which(exe) {
                    self.hook_global(ebpf, &path, None, "executable");
                }
            }
            for pid in pids() {
                self.scan_process(ebpf, pid, false);
            }
        }
        for &pid in tracked {
            self.scan_process(ebpf, pid, true);
        }
    }

    /// A process ran a new program: look at it a few times as it loads.
    pub fn on_exec(&mut self, pid: u32) {
        if self.due.len() > 100_000 {
            return; // an exec storm: the periodic scans still catch up
        }
        // In deadline order: later rescans of earlier programs may already
        // wait in the queue, and a new program must not wait behind them.
        let at = Instant::now() + RESCAN_AFTER[0];
        let pos = self.due.partition_point(|(t, _, _)| *t <= at);
        self.due.insert(pos, (at, pid, 0));
    }

    /// A process became tracked: its TLS is captured from now on, and its
    /// program is probed from its exec on next time.
    pub fn on_tracked(&mut self, ebpf: &mut Ebpf, pid: u32) {
        if self.probing.remove(&pid).is_some() {
            self.discovery.mcp += 1;
        }
        self.scan_process(ebpf, pid, true);
        if let Some(key) = program_key(pid) {
            let files = self.scoped.get(&pid).map(|s| s.paths.clone()).unwrap_or_default();
            self.remember(key, true, files);
        }
    }

    /// A process ended: its scoped probes go.
    pub fn on_exit(&mut self, ebpf: &mut Ebpf, pid: u32) {
        self.probing.remove(&pid);
        let Some(scoped) = self.scoped.remove(&pid) else { return };
        let mut owned = Vec::new();
        for (program, link) in scoped.links {
            if let Some(p) = ebpf.program_mut(program).and_then(|p| <&mut UProbe>::try_from(p).ok()) {
                match &self.detacher {
                    Some(_) => owned.extend(p.take_link(link).ok()),
                    None => drop(p.detach(link)),
                }
            }
        }
        if let Some(tx) = &self.detacher
            && !owned.is_empty()
            && let Err(back) = tx.send(owned)
        {
            drop(back.0); // the thread is gone: detach here after all
        }
    }

    /// Scans of new programs that are due (called often: cheap when none).
    pub fn run_due(&mut self, ebpf: &mut Ebpf, is_tracked: &dyn Fn(u32) -> bool) {
        let now = Instant::now();
        while let Some(&(at, pid, step)) = self.due.front() {
            if at > now {
                break;
            }
            self.due.pop_front();
            if !Path::new("/proc").join(pid.to_string()).exists() {
                continue;
            }
            let tracked = is_tracked(pid);
            // A program known to speak MCP over TLS: probed from its start,
            // so that its first requests are seen.
            let files = (!tracked && !self.host_wide).then(|| self.expected_mcp(pid)).flatten();
            let expected = files.is_some();
            if let Some(files) = files
                && !self.probing.contains_key(&pid)
            {
                self.discovery.expected += 1;
                self.probing.insert(pid, Instant::now());
                // The files it used last time, before it maps them.
                let root = Path::new("/proc").join(pid.to_string()).join("root");
                for (path, kind) in files {
                    let full = root.join(path.trim_start_matches('/'));
                    if let Ok(meta) = fs::metadata(&full) {
                        self.hook_scoped(ebpf, pid, &full, &path, (meta.dev(), meta.ino()), kind);
                    }
                }
            }
            if tracked || expected || self.host_wide {
                self.scan_process(ebpf, pid, tracked || expected);
            }
            if let Some(next) = RESCAN_AFTER.get(step + 1) {
                // Keep the queue ordered: later deadlines go to the back.
                let at = now + (*next - RESCAN_AFTER[step]);
                let pos = self.due.partition_point(|(t, _, _)| *t <= at);
                self.due.insert(pos, (at, pid, step + 1));
            }
        }
    }

    /// Periodic work: rescans of tracked processes (late dlopen), and
    /// probes of processes that ended unnoticed.
    pub fn tick(&mut self, ebpf: &mut Ebpf, tracked: &[u32]) {
        let now = Instant::now();
        if self.last_tracked_scan.is_none_or(|t| now - t >= TRACKED_RESCAN) {
            self.last_tracked_scan = Some(now);
            for &pid in tracked {
                self.scan_process(ebpf, pid, true);
            }
            // Processes that exited without the agent hearing of it.
            let gone: Vec<u32> = self
                .scoped
                .keys()
                .copied()
                .filter(|pid| !Path::new("/proc").join(pid.to_string()).exists())
                .collect();
            for pid in gone {
                self.on_exit(ebpf, pid);
            }
        }
    }

    /// Files with probes, by kind (`shared_library`, `executable`).
    pub fn hooked_files(&self) -> Vec<(&'static str, usize)> {
        let mut files: HashSet<FileId> = self.global.clone();
        for s in self.scoped.values() {
            files.extend(s.files.iter().copied());
        }
        ["shared_library", "executable"]
            .into_iter()
            .map(|kind| {
                let n = files
                    .iter()
                    .filter(|id| {
                        self.files
                            .get(id)
                            .and_then(|t| t.as_ref())
                            .is_some_and(|t| t.kind == kind)
                    })
                    .count();
                (kind, n)
            })
            .collect()
    }

    /// Tracked processes with probes of their own.
    pub fn hooked_processes(&self) -> usize {
        self.scoped.values().filter(|s| !s.links.is_empty()).count()
    }

    /// Looks at the files a process maps; hooks the OpenSSL ones for this
    /// process (`scoped`) or for every process (host-wide mode).
    fn scan_process(&mut self, ebpf: &mut Ebpf, pid: u32, scoped: bool) {
        let proc_dir = Path::new("/proc").join(pid.to_string());
        let Ok(maps) = fs::read_to_string(proc_dir.join("maps")) else {
            return;
        };
        let exe = fs::read_link(proc_dir.join("exe")).ok();
        let mut done = HashSet::new();
        for line in maps.lines() {
            let Some(m) = parse_maps_line(line) else { continue };
            if !done.insert(m.id) {
                continue;
            }
            let name = m.path.rsplit('/').next().unwrap_or_default();
            let kind = if is_libssl(name) {
                "shared_library"
            } else if exe.as_deref() == Some(Path::new(m.path)) {
                "executable"
            } else {
                continue;
            };
            // The path as that process sees it, from our mount namespace.
            let path = proc_dir.join("root").join(m.path.trim_start_matches('/'));
            if self.host_wide && !self.global.contains(&m.id) {
                self.hook_global(ebpf, &path, Some(m.id), kind);
            }
            if scoped && !self.host_wide {
                self.hook_scoped(ebpf, pid, &path, m.path, m.id, kind);
            }
        }
    }

    /// The OpenSSL functions of a file, parsed once.
    fn target(&mut self, path: &Path, id: Option<FileId>, kind: &'static str) -> Option<(FileId, Target)> {
        let meta = fs::metadata(path).ok()?;
        // Overlay filesystems show another device and inode through the
        // path than in the maps (the real file): remember both.
        let id = id.unwrap_or((meta.dev(), meta.ino()));
        if let Some(known) = self.files.get(&id) {
            return known.clone().map(|t| (id, t));
        }
        let target = match symbol_offsets(path) {
            Ok(offsets)
                if PROBES
                    .iter()
                    .filter(|(_, _, required)| *required)
                    .all(|(_, sym, _)| offsets.contains_key(sym)) =>
            {
                Some(Target { kind, offsets })
            }
            Ok(_) => None,
            Err(err) => {
                tracing::debug!(path = %path.display(), "not an ELF file with symbols: {err}");
                None
            }
        };
        self.files.insert(id, target.clone());
        self.files.insert((meta.dev(), meta.ino()), target.clone());
        target.map(|t| (id, t))
    }

    fn hook_global(&mut self, ebpf: &mut Ebpf, path: &Path, id: Option<FileId>, kind: &'static str) {
        let Some((id, target)) = self.target(path, id, kind) else {
            return;
        };
        if !self.global.insert(id) {
            return;
        }
        let links = self.attach(ebpf, &target, path, UProbeScope::AllProcesses);
        if !links.is_empty() {
            tracing::info!(path = %path.display(), kind, "hooked OpenSSL for every process");
        }
    }

    /// `path`: from here; `seen_as`: as the process sees it.
    fn hook_scoped(&mut self, ebpf: &mut Ebpf, pid: u32, path: &Path, seen_as: &str, id: FileId, kind: &'static str) {
        if self.scoped.get(&pid).is_some_and(|s| s.files.contains(&id)) {
            return;
        }
        let Some(nz) = NonZeroU32::new(pid) else { return };
        let Some((_, target)) = self.target(path, Some(id), kind) else {
            return;
        };
        let links = self.attach(ebpf, &target, path, UProbeScope::OneProcess(nz));
        let scoped = self.scoped.entry(pid).or_default();
        scoped.files.insert(id);
        scoped.paths.push((seen_as.to_string(), kind));
        if !links.is_empty() {
            tracing::info!(pid, path = %path.display(), kind, "hooked OpenSSL for this process");
        }
        scoped.links.extend(links);
    }

    fn attach(
        &mut self,
        ebpf: &mut Ebpf,
        target: &Target,
        path: &Path,
        scope: UProbeScope,
    ) -> Vec<(&'static str, UProbeLinkId)> {
        let mut links = Vec::new();
        for &(program, symbol, _) in PROBES {
            let Some(&offset) = target.offsets.get(symbol) else {
                continue;
            };
            let result = ebpf
                .program_mut(program)
                .ok_or_else(|| format!("no program {program}"))
                .and_then(|p| <&mut UProbe>::try_from(p).map_err(|e| e.to_string()))
                .and_then(|p| p.attach(offset, path, scope).map_err(|e| e.to_string()));
            match result {
                Ok(link) => links.push((program, link)),
                Err(err) => {
                    self.errors += 1;
                    tracing::warn!(path = %path.display(), symbol, "cannot attach the TLS probe: {err}");
                }
            }
        }
        links
    }
}

/// A program: the executable a process runs and its command line.
fn program_key(pid: u32) -> Option<ProgramKey> {
    let dir = Path::new("/proc").join(pid.to_string());
    let exe = fs::read_link(dir.join("exe")).ok()?;
    let cmdline = fs::read(dir.join("cmdline")).ok()?;
    Some((exe, cmdline))
}

fn is_libssl(name: &str) -> bool {
    name.starts_with("libssl.so")
}

fn which(exe: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(exe))
        .find(|p| p.is_file())
        .and_then(|p| fs::canonicalize(p).ok())
}

fn pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

struct MapsLine<'a> {
    id: FileId,
    path: &'a str,
}

/// `start-end perms offset dev:dev inode path`; only file-backed lines.
fn parse_maps_line(line: &str) -> Option<MapsLine<'_>> {
    let mut f = line.splitn(6, ' ');
    let _range = f.next()?;
    let _perms = f.next()?;
    let _offset = f.next()?;
    let dev = f.next()?;
    let inode: u64 = f.next()?.parse().ok()?;
    let path = f.next()?.trim_start();
    if inode == 0 || !path.starts_with('/') || path.ends_with(" (deleted)") {
        return None;
    }
    let (major, minor) = dev.split_once(':')?;
    let major = u64::from_str_radix(major, 16).ok()?;
    let minor = u64::from_str_radix(minor, 16).ok()?;
    Some(MapsLine {
        id: (libc::makedev(major as u32, minor as u32), inode),
        path,
    })
}

/// File offsets of the exported OpenSSL functions of an ELF file (dynamic
/// symbols first, the full symbol table otherwise).
pub fn symbol_offsets(path: &Path) -> Result<HashMap<&'static str, u64>, String> {
    let file = fs::File::open(path).map_err(|e| e.to_string())?;
    // SAFETY: read-only mapping of a file we only read; a concurrent
    // truncation could fault, which is why only ELF headers and symbol
    // tables are touched, briefly.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| e.to_string())?;
    let elf = object::File::parse(&*map).map_err(|e| e.to_string())?;
    let mut out = HashMap::new();
    let wanted: Vec<&'static str> = PROBES.iter().map(|(_, s, _)| *s).collect();
    for symbols in [elf.dynamic_symbols(), elf.symbols()] {
        for sym in symbols {
            if sym.is_undefined() || sym.address() == 0 {
                continue;
            }
            let Ok(name) = sym.name() else { continue };
            let Some(&want) = wanted.iter().find(|w| **w == name) else {
                continue;
            };
            if out.contains_key(want) {
                continue;
            }
            let Some(index) = sym.section_index() else { continue };
            let Ok(section) = elf.section_by_index(index) else {
                continue;
            };
            let Some((file_offset, _)) = section.file_range() else {
                continue;
            };
            // The kernel wants a file offset, not a virtual address.
            let offset = sym.address() - section.address() + file_offset;
            out.insert(want, offset);
        }
        if !out.is_empty() {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let m = parse_maps_line(
            "7f1c2a400000-7f1c2a45e000 r--p 00000000 fd:01 1311023                    /usr/lib/x86_64-linux-gnu/libssl.so.3",
        )
        .unwrap();
        assert_eq!(m.path, "/usr/lib/x86_64-linux-gnu/libssl.so.3");
        assert_eq!(m.id, (libc::makedev(0xfd, 1), 1311023));
        assert!(
            parse_maps_line("7ffd1c3d2000-7ffd1c3f3000 rw-p 00000000 00:00 0                          [stack]")
                .is_none()
        );
        assert!(parse_maps_line("7f00-7f01 r--p 00000000 fd:01 12 /tmp/x (deleted)").is_none());
    }

    #[test]
    fn finds_openssl_symbols_in_the_system_libssl() {
        // Present on every machine the end-to-end tests run on (Python's
        // ssl module needs it).
        let Some(lib) = LIB_DIRS
            .iter()
            .filter_map(|d| fs::read_dir(d).ok())
            .flat_map(|d| d.flatten())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("libssl.so.3"))
            })
        else {
            panic!("no libssl.so.3 on this machine");
        };
        let offsets = symbol_offsets(&lib).unwrap();
        for sym in ["SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex", "SSL_free"] {
            assert!(offsets.contains_key(sym), "{sym} missing in {}", lib.display());
        }
        assert!(symbol_offsets(Path::new("/etc/hostname")).is_err());
    }
}
