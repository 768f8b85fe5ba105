//! Finding TLS libraries and hooking them. What a file carries is decided
//! from its contents ([`target`]): OpenSSL's exported API in a
//! `libssl.so*` or an executable that links it (Node) ([`openssl`]); Go's
//! crypto/tls in a Go executable, stripped or not ([`golang`]). The probes
//! land on the file the process really uses, whatever path or mount
//! namespace it is seen through (a file mapped by a process in another
//! mount namespace is opened through `/proc/PID/root`). A file recognised
//! but not safe to probe is reported once and left alone.
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
//! remembered per program (executable and command line), across agent
//! restarts ([`verdicts`]): a program known to speak MCP over TLS is
//! probed from its exec on (or from the agent's start, when it runs
//! already), so its first requests are seen too; one known not to is left
//! alone for [`NOT_MCP_TTL`]. A program probed from its exec that stays
//! silent through the window (a server waiting for its first client) keeps
//! its verdict. The first exchange of a program never seen before may be
//! missed (the probes land while its handshake runs): it is discovered by
//! the next.
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

pub mod boringssl;
pub mod golang;
pub mod openssl;
pub mod rustls;
pub mod target;
pub mod verdicts;

use target::{FileKind, Finding, Library, Target};
pub use verdicts::{MCP_TTL, NOT_MCP_TTL};
use verdicts::{ProgramKey, Verdict, Verdicts, program_key};

/// The kernel programs of each library, loaded once.
pub fn programs(library: Library) -> &'static [&'static str] {
    match library {
        Library::OpenSsl => openssl::PROGRAMS,
        Library::Go => golang::PROGRAMS,
        // BoringSSL keeps OpenSSL's signatures: OpenSSL's programs.
        Library::BoringSsl => &[],
        Library::Rustls => rustls::PROGRAMS,
    }
}

/// When to look at a process again after its exec.
const RESCAN_AFTER: &[Duration] = &[
    Duration::from_millis(50),
    Duration::from_millis(500),
    Duration::from_secs(3),
];

/// How often tracked processes are looked at again (late dlopen).
const TRACKED_RESCAN: Duration = Duration::from_secs(5);

/// How often pinned programs are checked for a rewrite in place.
const REWRITE_CHECK: Duration = Duration::from_millis(10);

/// How long an untracked process's TLS library is probed for discovery.
pub const PROBE_WINDOW: Duration = Duration::from_secs(30);

/// Sniffed TLS sessions of a probed process found not to be MCP before its
/// program is taken for one that does not speak MCP (a process may talk to
/// other HTTPS services before its MCP server: a coding agent calls its
/// model's API).
pub const NOT_MCP_SESSIONS: u32 = 8;

/// Runs of a program that may end undecided before it is left alone.
const MAX_MISSES: u8 = 3;

/// A process whose TLS library is probed for discovery.
#[derive(Debug, Clone)]
struct Probing {
    since: Instant,
    /// Probed from its exec (its program was known), not because it
    /// moved TLS: a window that passes with nothing sniffed then says
    /// nothing about the program (a server waiting for its first client).
    from_exec: bool,
    /// Its sniffed TLS sessions found not to be MCP.
    not_mcp: u32,
    /// Its program, read when probing starts (gone from /proc at exit).
    program: Option<ProgramKey>,
}

/// Outcomes of HTTPS discovery (`mcptap_tls_discovery_total{outcome}`).
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscoveryCounts {
    /// A process's TLS library was probed.
    pub probed: u64,
    /// Left alone: its program was found not to speak MCP lately.
    pub skipped: u64,
    /// Probed from its exec: its program speaks MCP, or ended undecided
    /// last time.
    pub expected: u64,
    /// Ended inside its window with nothing decided.
    pub undecided: u64,
    /// The window passed without MCP: probes removed.
    pub not_mcp: u64,
    /// Found to speak MCP.
    pub mcp: u64,
}

/// A file identity: device and inode.
type FileId = (u64, u64);

/// What tells one content of a file from another under the same device and
/// inode: a file rewritten in place (`cp` over it), or a new file given an
/// inode number freed since, has another size, modification or change time
/// (the change time cannot be set back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// What a file carries, as read when its stamp was this: it holds while the
/// stamp does.
#[derive(Clone)]
struct Known {
    stamp: Stamp,
    /// `None` when not probed (no TLS library mcptap knows, or one it
    /// cannot probe safely).
    target: Option<Target>,
}

/// Probes attached for one tracked process.
#[derive(Default)]
struct Scoped {
    /// Its TLS files: their paths as the process sees them, and kind.
    files: HashMap<FileId, (String, FileKind)>,
    links: Vec<(FileId, &'static str, UProbeLinkId)>,
}

impl Scoped {
    fn paths(&self) -> Vec<(String, FileKind)> {
        self.files.values().cloned().collect()
    }
}

/// Probes on an executable for every process that runs it: a compiled
/// program (Go) found to speak MCP, so that its next runs are seen from
/// their first request, however short they are.
struct Pinned {
    /// When a process running it last spoke MCP, or ended undecided.
    at: Instant,
    /// Whether one spoke MCP (kept for [`MCP_TTL`]; [`NOT_MCP_TTL`]
    /// otherwise, or until it is found not to).
    mcp: bool,
    on: OnFile,
}

/// Probes on a file for every process: a pinned program, or a library in
/// the host-wide mode.
struct OnFile {
    links: Vec<(&'static str, UProbeLinkId)>,
    /// The path attached through, and the file found there then: the
    /// probes' offsets are that content's.
    path: PathBuf,
    seen: (FileId, Stamp),
}

impl OnFile {
    fn new(links: Vec<(&'static str, UProbeLinkId)>, path: &Path, meta: &fs::Metadata) -> OnFile {
        OnFile {
            links,
            path: path.to_path_buf(),
            seen: ((meta.dev(), meta.ino()), Stamp::of(meta)),
        }
    }

    /// The same file (device and inode) holds another content now.
    fn rewritten(&self) -> bool {
        fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.seen.0 && Stamp::of(&m) != self.seen.1)
    }
}

pub struct TlsHooks {
    host_wide: bool,
    /// Files looked at.
    files: HashMap<FileId, Known>,
    /// Files recognised but not probed, by reason (each file once).
    pub unsupported: HashMap<&'static str, u64>,
    /// Libraries whose kernel programs did not load.
    disabled: Vec<Library>,
    /// Files hooked for every process (host-wide mode).
    global: HashMap<FileId, OnFile>,
    /// Executables hooked for every process that runs them.
    pinned: HashMap<FileId, Pinned>,
    /// Probes per tracked process (scoped mode).
    scoped: HashMap<u32, Scoped>,
    pub errors: u64,
    /// Exec'd processes to look at, when.
    due: VecDeque<(Instant, u32, usize)>,
    last_tracked_scan: Option<Instant>,
    /// Untracked processes whose TLS library is probed, since when.
    probing: HashMap<u32, Probing>,
    /// Verdicts per program (kept across restarts).
    verdicts: Verdicts,
    pub discovery: DiscoveryCounts,
    /// Where links of exited processes go to be dropped: detaching a
    /// uprobe waits for an RCU grace period (~100 ms each here), which
    /// would stall the ring buffer drain for a second per process.
    detacher: Option<std::sync::mpsc::Sender<Vec<aya::programs::uprobe::UProbeLink>>>,
    /// Probes attached or detached, or a file found unsupported, since the
    /// agent last published them (see `take_changed`).
    changed: bool,
    rewrite_checked: Instant,
}

impl Drop for TlsHooks {
    /// The agent stops: changed verdicts are kept for its next run.
    fn drop(&mut self) {
        self.verdicts.save(true);
    }
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
    /// `disabled`: libraries whose programs the kernel refused;
    /// `verdicts_file`: where verdicts are kept across restarts.
    pub fn new(host_wide: bool, disabled: Vec<Library>, verdicts_file: Option<PathBuf>) -> TlsHooks {
        TlsHooks {
            host_wide,
            files: HashMap::new(),
            unsupported: HashMap::new(),
            disabled,
            global: HashMap::new(),
            pinned: HashMap::new(),
            scoped: HashMap::new(),
            errors: 0,
            due: VecDeque::new(),
            last_tracked_scan: None,
            probing: HashMap::new(),
            verdicts: Verdicts::load(verdicts_file),
            discovery: DiscoveryCounts::default(),
            detacher: spawn_detacher(),
            changed: false,
            rewrite_checked: Instant::now(),
        }
    }

    /// Whether probes were attached or detached (or a file found that
    /// cannot be probed) since the last call: the
    /// agent then publishes what is hooked at once rather than at its next
    /// one-second tick (a scrape right after a server's first calls must
    /// see the probes that caught them).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// A process not tracked moved its first TLS record: probe its TLS
    /// library for a while, unless its program was found not to speak MCP
    /// lately. Returns true when probes were attached (the kernel then ties
    /// its TLS sessions to their sockets).
    pub fn on_tls_seen(&mut self, ebpf: &mut Ebpf, pid: u32) -> bool {
        if let Some(p) = self.probing.get_mut(&pid) {
            p.from_exec = false; // probed from its exec; it speaks TLS now
            return true;
        }
        if self.host_wide || self.scoped.contains_key(&pid) {
            return false;
        }
        let program = program_key(pid);
        if program
            .as_ref()
            .and_then(|key| self.verdicts.get(key))
            .is_some_and(|k| k.left_alone())
        {
            self.discovery.skipped += 1;
            return false;
        }
        self.scan_process(ebpf, pid, true);
        if self.scoped.get(&pid).is_none_or(|s| s.files.is_empty()) {
            return false; // no TLS library mcptap probes
        }
        self.discovery.probed += 1;
        self.probing.insert(
            pid,
            Probing {
                since: Instant::now(),
                from_exec: false,
                not_mcp: 0,
                program,
            },
        );
        tracing::debug!(pid, "probing the TLS library of a process that speaks TLS");
        true
    }

    /// Whether a program that just started is one known to speak MCP over
    /// TLS, or one that ended undecided last time (probed from its exec
    /// on): its program and the files it used.
    fn expected(&self, pid: u32) -> Option<(ProgramKey, Vec<(String, FileKind)>)> {
        let key = program_key(pid)?;
        let k = self.verdicts.get(&key)?;
        let files = k.files.clone();
        k.probe_from_exec().then_some((key, files))
    }

    /// Probed processes whose window passed without MCP: their probes go,
    /// and their program is remembered as not MCP. Returns them (the
    /// kernel stops tying their TLS sessions to sockets).
    pub fn expire_probing(&mut self, ebpf: &mut Ebpf, is_tracked: &dyn Fn(u32) -> bool) -> Vec<u32> {
        let done: Vec<u32> = self
            .probing
            .iter()
            .filter(|(pid, p)| is_tracked(**pid) || p.since.elapsed() >= PROBE_WINDOW)
            .map(|(pid, _)| *pid)
            .collect();
        let mut released = Vec::new();
        for pid in done {
            let Some(probing) = self.probing.remove(&pid) else {
                continue;
            };
            if is_tracked(pid) {
                continue; // on_tracked took it
            }
            if probing.from_exec && probing.not_mcp == 0 {
                // Probed from its exec and silent since: a server waiting
                // for its first client says nothing against its program.
                // Its probes go; its first TLS record brings them back.
                tracing::debug!(
                    pid,
                    verdict = "none (probed from its exec, silent)",
                    "HTTPS discovery verdict"
                );
            } else {
                self.conclude(ebpf, pid, probing.program, Verdict::NotMcp);
                self.discovery.not_mcp += 1;
            }
            self.on_exit(ebpf, pid);
            released.push(pid);
        }
        released
    }

    /// A sniffed TLS session of a probed process was not MCP: after
    /// [`NOT_MCP_SESSIONS`] of them its probes go and its program is taken
    /// for one that does not speak MCP. Returns true then (the kernel stops
    /// tying its TLS sessions to sockets).
    pub fn on_tls_not_mcp(&mut self, ebpf: &mut Ebpf, pid: u32) -> bool {
        let Some(p) = self.probing.get_mut(&pid) else {
            return false;
        };
        p.not_mcp += 1;
        if p.not_mcp < NOT_MCP_SESSIONS {
            return false;
        }
        let Some(probing) = self.probing.remove(&pid) else {
            return false;
        };
        self.conclude(ebpf, pid, probing.program, Verdict::NotMcp);
        self.discovery.not_mcp += 1;
        self.on_exit(ebpf, pid);
        true
    }

    /// Hooks the tracked processes (and, host-wide, everything installed
    /// and running).
    pub fn start(&mut self, ebpf: &mut Ebpf, tracked: &[u32]) {
        if self.host_wide {
            for dir in openssl::LIB_DIRS {
                let Ok(entries) = fs::read_dir(dir) else { continue };
                for e in entries.flatten() {
                    if openssl::is_libssl(&e.file_name().to_string_lossy()) {
                        self.hook_global(ebpf, &e.path(), None, FileKind::SharedLibrary, None);
                    }
                }
            }
            for exe in ["node", "nodejs"] {
                if let Some(path) = which(exe) {
                    self.hook_global(ebpf, &path, None, FileKind::Executable, None);
                }
            }
            for pid in pids() {
                self.scan_process(ebpf, pid, false);
            }
        }
        for &pid in tracked {
            self.scan_process(ebpf, pid, true);
        }
        // Programs running already that the verdicts kept from the last
        // run say to probe (an MCP server over HTTPS): now, as if they had
        // just started, so that their next requests are seen whole.
        if !self.host_wide && self.verdicts.any_probed_from_exec() {
            for pid in pids() {
                if !tracked.contains(&pid) && self.may_be_expected(pid) {
                    self.on_exec(pid);
                }
            }
        }
    }

    /// Writes changed verdicts (at most every `verdicts::SAVE_EVERY`, or
    /// now: at shutdown).
    pub fn save_verdicts(&mut self, now: bool) {
        self.verdicts.save(now);
    }

    /// A process ran a new program: look at it a few times as it loads.
    pub fn on_exec(&mut self, pid: u32) {
        tracing::trace!(pid, "exec");
        if self.due.len() > 100_000 {
            return; // an exec storm: the periodic scans still catch up
        }
        // A program known to speak MCP is looked at right away: a short
        // one is done within milliseconds.
        let now = Instant::now();
        let at = if self.may_be_expected(pid) {
            now
        } else {
            now + RESCAN_AFTER[0]
        };
        // In deadline order: later rescans of earlier programs may already
        // wait in the queue, and a new program must not wait behind them.
        let pos = self.due.partition_point(|(t, _, _)| *t <= at);
        self.due.insert(pos, (at, pid, 0));
    }

    /// Whether a process's executable is one of a program remembered as
    /// speaking MCP or ended undecided (cheap: no work when there is none).
    fn may_be_expected(&self, pid: u32) -> bool {
        if self.host_wide || !self.verdicts.any_probed_from_exec() {
            return false;
        }
        let Ok(exe) = fs::read_link(Path::new("/proc").join(pid.to_string()).join("exe")) else {
            return false;
        };
        self.verdicts.may_probe_exe(&exe)
    }

    /// A process became tracked: its TLS is captured from now on, and its
    /// program is probed from its exec on next time.
    pub fn on_tracked(&mut self, ebpf: &mut Ebpf, pid: u32) {
        let program = match self.probing.remove(&pid) {
            Some(p) => {
                self.discovery.mcp += 1;
                p.program
            }
            None => program_key(pid),
        };
        self.scan_process(ebpf, pid, true);
        self.conclude(ebpf, pid, program, Verdict::Mcp);
    }

    /// A process's program reached a verdict: it is remembered; and a
    /// compiled program's executable is probed for every process that
    /// runs it while it may speak MCP (so that its next runs are seen
    /// from their first request, however short), and no longer once it
    /// is found not to.
    fn conclude(&mut self, ebpf: &mut Ebpf, pid: u32, program: Option<ProgramKey>, verdict: Verdict) {
        self.conclude_files(ebpf, pid, program, verdict);
        // Once the probes it implies are in place.
        tracing::debug!(pid, ?verdict, "HTTPS discovery verdict");
    }

    fn conclude_files(&mut self, ebpf: &mut Ebpf, pid: u32, program: Option<ProgramKey>, verdict: Verdict) {
        let files = match verdict {
            Verdict::NotMcp => Vec::new(),
            _ => self.scoped.get(&pid).map(Scoped::paths).unwrap_or_default(),
        };
        if let Some(key) = program {
            self.verdicts.remember(key, verdict, files);
        }
        if self.host_wide {
            return;
        }
        let program_files: Vec<(FileId, String)> = self
            .scoped
            .get(&pid)
            .map(|s| {
                s.files
                    .iter()
                    .filter(|(id, _)| self.known_target(id).is_some_and(|t| t.program_file))
                    .map(|(id, (seen_as, _))| (*id, seen_as.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (id, seen_as) in program_files {
            if verdict == Verdict::NotMcp {
                if self.pinned.get(&id).is_some_and(|p| !p.mcp)
                    && let Some(p) = self.pinned.remove(&id)
                {
                    self.detach(ebpf, p.on.links);
                }
                continue;
            }
            match self.stable_path(pid, &seen_as, id) {
                Some(path) => self.pin(ebpf, id, &path, verdict == Verdict::Mcp),
                None => tracing::debug!(pid, path = seen_as, "the program's executable is gone: not pinned"),
            }
        }
    }

    /// Where to attach to a file for every process: through our root if it
    /// is the same file (a short program may be gone before its probes are
    /// all attached), through the process's otherwise.
    fn stable_path(&self, pid: u32, seen_as: &str, id: FileId) -> Option<PathBuf> {
        let through_process = Path::new("/proc")
            .join(pid.to_string())
            .join("root")
            .join(seen_as.trim_start_matches('/'));
        [PathBuf::from(seen_as), through_process].into_iter().find(|p| {
            fs::metadata(p).is_ok_and(|m| {
                let same = (m.dev(), m.ino());
                same == id || self.files.get(&same).map(|k| &k.target) == self.files.get(&id).map(|k| &k.target)
            })
        })
    }

    /// Probes `id` for every process that runs it; the per-process probes
    /// on it go. (While both exist, a call is seen twice at entry and
    /// return: the second entry overwrites the first, the second return
    /// finds nothing; no chunk is sent twice.)
    fn pin(&mut self, ebpf: &mut Ebpf, id: FileId, path: &Path, mcp: bool) {
        if let Some(p) = self.pinned.get_mut(&id) {
            p.at = Instant::now();
            p.mcp |= mcp;
            return;
        }
        let Some(Known {
            stamp,
            target: Some(target),
        }) = self.files.get(&id).cloned()
        else {
            return;
        };
        let Ok(meta) = fs::metadata(path) else { return };
        if Stamp::of(&meta) != stamp {
            // Changed since it was read: read again at its next exec.
            tracing::debug!(path = %path.display(), "the program changed since it was read: not pinned");
            return;
        }
        let links = self.attach(ebpf, &target, path, UProbeScope::AllProcesses);
        if links.is_empty() {
            return;
        }
        tracing::info!(path = %path.display(), library = target.library.as_str(), mcp, "hooked TLS for every process running this program");
        let mut old = Vec::new();
        for scoped in self.scoped.values_mut() {
            let (on_file, rest): (Vec<_>, Vec<_>) = scoped.links.drain(..).partition(|(f, _, _)| *f == id);
            scoped.links = rest;
            old.extend(on_file.into_iter().map(|(_, program, link)| (program, link)));
        }
        self.detach(ebpf, old);
        self.pinned.insert(
            id,
            Pinned {
                at: Instant::now(),
                mcp,
                on: OnFile::new(links, path, &meta),
            },
        );
    }

    /// Detaches links (off the drain path when the detacher runs).
    fn detach(&mut self, ebpf: &mut Ebpf, links: Vec<(&'static str, UProbeLinkId)>) {
        self.detach_links(ebpf, links, self.detacher.is_some());
    }

    /// Detaches links, here or (`off_drain`) in the detacher.
    fn detach_links(&mut self, ebpf: &mut Ebpf, links: Vec<(&'static str, UProbeLinkId)>, off_drain: bool) {
        self.changed |= !links.is_empty();
        let mut owned = Vec::new();
        for (program, link) in links {
            if let Some(p) = ebpf.program_mut(program).and_then(|p| <&mut UProbe>::try_from(p).ok()) {
                if off_drain {
                    owned.extend(p.take_link(link).ok());
                } else {
                    drop(p.detach(link));
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

    /// A process ended: its scoped probes go. One that ended inside its
    /// discovery window, undecided, is probed from its exec next time.
    pub fn on_exit(&mut self, ebpf: &mut Ebpf, pid: u32) {
        let probing = self.probing.remove(&pid);
        if let Some(Probing {
            from_exec: true,
            not_mcp: 0,
            ..
        }) = probing
        {
            // Probed from its exec, and it ended without a word of TLS
            // sniffed: nothing learned about its program.
            tracing::debug!(
                pid,
                verdict = "none (probed from its exec, silent)",
                "HTTPS discovery verdict"
            );
        } else if let Some(Probing { program: Some(key), .. }) = probing {
            self.discovery.undecided += 1;
            let misses = match self.verdicts.get(&key).map(|k| k.verdict) {
                Some(Verdict::Unsure { misses }) => misses + 1,
                _ => 1,
            };
            let verdict = if misses >= MAX_MISSES {
                Verdict::NotMcp
            } else {
                Verdict::Unsure { misses }
            };
            self.conclude(ebpf, pid, Some(key), verdict);
        }
        let Some(scoped) = self.scoped.remove(&pid) else { return };
        let links = scoped
            .links
            .into_iter()
            .map(|(_, program, link)| (program, link))
            .collect();
        self.detach(ebpf, links);
    }

    /// Scans of new programs that are due (called often: cheap when none).
    /// Returns the processes now probed from their exec (the kernel ties
    /// their TLS sessions to sockets from then on).
    pub fn run_due(&mut self, ebpf: &mut Ebpf, is_tracked: &dyn Fn(u32) -> bool) -> Vec<u32> {
        let now = Instant::now();
        let mut probed = Vec::new();
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
            let expected = (!tracked && !self.host_wide).then(|| self.expected(pid)).flatten();
            let is_expected = expected.is_some();
            if let Some((program, files)) = expected
                && !self.probing.contains_key(&pid)
            {
                self.discovery.expected += 1;
                probed.push(pid);
                tracing::debug!(pid, "probing a program known to speak MCP from its exec");
                self.probing.insert(
                    pid,
                    Probing {
                        since: Instant::now(),
                        from_exec: true,
                        not_mcp: 0,
                        program: Some(program),
                    },
                );
                // The files it used last time, before it maps them.
                let root = Path::new("/proc").join(pid.to_string()).join("root");
                for (path, kind) in files {
                    let full = root.join(path.trim_start_matches('/'));
                    if let Ok(meta) = fs::metadata(&full) {
                        self.hook_scoped(ebpf, pid, &full, &path, (meta.dev(), meta.ino()), kind);
                    }
                }
            }
            if tracked || is_expected || self.host_wide {
                self.scan_process(ebpf, pid, tracked || is_expected);
            }
            if let Some(next) = RESCAN_AFTER.get(step + 1) {
                // Keep the queue ordered: later deadlines go to the back.
                let at = now + (*next - RESCAN_AFTER[step]);
                let pos = self.due.partition_point(|(t, _, _)| *t <= at);
                self.due.insert(pos, (at, pid, step + 1));
            }
        }
        probed
    }

    /// Files probed for every process (pinned programs, host-wide
    /// libraries) rewritten in place, `cp` over them between two runs:
    /// their probes are at the old content's offsets, and go. Checked after
    /// every drain, at most every [`REWRITE_CHECK`] (a stat per file), so
    /// the probes go soon after the first byte written; a process that maps
    /// the file before they are all gone still meets them (docs/tls.md).
    pub fn check_rewritten(&mut self, ebpf: &mut Ebpf) {
        if (self.pinned.is_empty() && self.global.is_empty()) || self.rewrite_checked.elapsed() < REWRITE_CHECK {
            return;
        }
        self.rewrite_checked = Instant::now();
        let rewritten: Vec<(FileId, PathBuf)> = self
            .pinned
            .iter()
            .map(|(id, p)| (id, &p.on))
            .chain(self.global.iter())
            .filter(|(_, on)| on.rewritten())
            .map(|(id, on)| (*id, on.path.clone()))
            .collect();
        for (id, path) in rewritten {
            self.file_changed(ebpf, id, &path);
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
            // Pinned programs that have not spoken MCP for a long time.
            let stale: Vec<FileId> = self
                .pinned
                .iter()
                .filter(|(_, p)| p.at.elapsed() >= if p.mcp { MCP_TTL } else { NOT_MCP_TTL })
                .map(|(id, _)| *id)
                .collect();
            for id in stale {
                if let Some(p) = self.pinned.remove(&id) {
                    self.detach(ebpf, p.on.links);
                }
            }
        }
    }

    /// Files with probes, by library and kind.
    pub fn hooked_files(&self) -> Vec<(Library, FileKind, usize)> {
        let mut files: HashSet<FileId> = self.global.keys().copied().collect();
        files.extend(self.pinned.keys().copied());
        for s in self.scoped.values() {
            files.extend(s.links.iter().map(|(id, _, _)| *id));
        }
        let mut out = Vec::new();
        for library in Library::ALL {
            for kind in FileKind::ALL {
                let n = files
                    .iter()
                    .filter_map(|id| self.known_target(id))
                    .filter(|t| t.library == library && t.kind == kind)
                    .count();
                out.push((library, kind, n));
            }
        }
        out
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
            let kind = if openssl::is_libssl(name) {
                FileKind::SharedLibrary
            } else if exe.as_deref() == Some(Path::new(m.path)) {
                FileKind::Executable
            } else {
                continue;
            };
            // The path as that process sees it, from our mount namespace.
            let path = proc_dir.join("root").join(m.path.trim_start_matches('/'));
            if self.host_wide && !self.global.contains_key(&m.id) {
                self.hook_global(ebpf, &path, Some(m.id), kind, Some((pid, m.path)));
            }
            if scoped && !self.host_wide {
                self.hook_scoped(ebpf, pid, &path, m.path, m.id, kind);
            }
        }
    }

    /// What a file carries, looked at once.
    fn target(&mut self, ebpf: &mut Ebpf, path: &Path, id: Option<FileId>, kind: FileKind) -> Option<(FileId, Target)> {
        let meta = fs::metadata(path).ok()?;
        let stamp = Stamp::of(&meta);
        // Overlay filesystems show another device and inode through the
        // path than in the maps (the real file): remember both.
        let id = id.unwrap_or((meta.dev(), meta.ino()));
        if let Some(known) = self.files.get(&id) {
            if known.stamp == stamp {
                return known.target.clone().map(|t| (id, t));
            }
            self.file_changed(ebpf, id, path);
        }
        let target = match target::identify(path, kind) {
            Finding::Tls(t) if self.disabled.contains(&t.library) => {
                *self.unsupported.entry("kernel_refused_programs").or_default() += 1;
                tracing::warn!(path = %path.display(), library = t.library.as_str(), "TLS not captured: this kernel refused the programs for this library");
                None
            }
            Finding::Tls(t) => Some(t),
            Finding::Nothing => None,
            Finding::Unsupported(u) => {
                *self.unsupported.entry(u.reason).or_default() += 1;
                self.changed = true;
                tracing::warn!(path = %path.display(), reason = u.reason, "TLS not captured: {}", u.message);
                None
            }
        };
        let known = Known {
            stamp,
            target: target.clone(),
        };
        self.files.insert(id, known.clone());
        self.files.insert((meta.dev(), meta.ino()), known);
        target.map(|t| (id, t))
    }

    /// What is probed in a file looked at, if anything.
    fn known_target(&self, id: &FileId) -> Option<&Target> {
        self.files.get(id)?.target.as_ref()
    }

    /// The file known as `id` is not the one read then (rewritten in place,
    /// or a new file given its inode number): what was learnt from it goes,
    /// and so do the probes pinned on it, at the old content's offsets (a
    /// probe inside an instruction of the new program would break it).
    fn file_changed(&mut self, ebpf: &mut Ebpf, id: FileId, path: &Path) {
        tracing::warn!(path = %path.display(), "a probed file changed on disk: its probes are removed, it is read again");
        self.files.remove(&id);
        if let Some(p) = self.pinned.remove(&id) {
            self.detach_now(ebpf, p.on.links);
        }
        if let Some(g) = self.global.remove(&id) {
            self.detach_now(ebpf, g.links);
        }
        // Tracked processes running it as a program (no probes of their own
        // on it) are looked at again at their next rescan: an executable
        // being run cannot be written (ETXTBSY), so for one still running
        // it only the times changed (chmod, touch), and the file read again
        // gets its probes back.
        for s in self.scoped.values_mut() {
            if !s.links.iter().any(|(f, _, _)| *f == id) {
                s.files.remove(&id);
            }
        }
    }

    /// Detaches links here and now, for probes that must be gone before
    /// anything else happens: a probe attached again at an offset still
    /// probed would share the old probe's copy of the instruction there.
    /// Each detach waits for a grace period, one after the other (~90 ms
    /// each on this host's kernel, threads or not): the drain stalls that
    /// long, once per rewritten program.
    fn detach_now(&mut self, ebpf: &mut Ebpf, links: Vec<(&'static str, UProbeLinkId)>) {
        let (n, started) = (links.len(), Instant::now());
        self.detach_links(ebpf, links, false);
        tracing::info!(links = n, ms = started.elapsed().as_millis() as u64, "probes detached");
    }

    /// `seen`: the process it was found in, and the path as that process
    /// sees it (the file is then watched through our root if it is the same
    /// file: the process may be gone by the time it is rewritten).
    fn hook_global(
        &mut self,
        ebpf: &mut Ebpf,
        path: &Path,
        id: Option<FileId>,
        kind: FileKind,
        seen: Option<(u32, &str)>,
    ) {
        let Some((id, target)) = self.target(ebpf, path, id, kind) else {
            return;
        };
        if self.global.contains_key(&id) {
            return;
        }
        let watched = seen
            .and_then(|(pid, seen_as)| self.stable_path(pid, seen_as, id))
            .unwrap_or_else(|| path.to_path_buf());
        let Ok(meta) = fs::metadata(&watched) else { return };
        self.changed = true;
        let links = self.attach(ebpf, &target, path, UProbeScope::AllProcesses);
        if !links.is_empty() {
            tracing::info!(path = %path.display(), library = target.library.as_str(), version = target.detail.as_deref(), "hooked TLS for every process");
        }
        self.global.insert(id, OnFile::new(links, &watched, &meta));
    }

    /// `path`: from here; `seen_as`: as the process sees it.
    fn hook_scoped(&mut self, ebpf: &mut Ebpf, pid: u32, path: &Path, seen_as: &str, id: FileId, kind: FileKind) {
        if self.scoped.get(&pid).is_some_and(|s| s.files.contains_key(&id)) {
            return;
        }
        let Some(nz) = NonZeroU32::new(pid) else { return };
        let Some((_, target)) = self.target(ebpf, path, Some(id), kind) else {
            return;
        };
        // A pinned executable already has probes for every process; a
        // compiled program's is probed for every process running it from
        // the start (never per process, then for all: for a while both
        // would fire, and probes that copy at entry would copy twice).
        let links = if self.pinned.contains_key(&id) {
            Vec::new()
        } else if target.program_file && !self.host_wide {
            match self.stable_path(pid, seen_as, id) {
                Some(stable) => self.pin(ebpf, id, &stable, false),
                None => tracing::debug!(pid, path = seen_as, "the program's executable is gone"),
            }
            Vec::new()
        } else {
            self.attach(ebpf, &target, path, UProbeScope::OneProcess(nz))
        };
        let scoped = self.scoped.entry(pid).or_default();
        scoped.files.insert(id, (seen_as.to_string(), kind));
        if !links.is_empty() {
            tracing::info!(pid, path = %path.display(), library = target.library.as_str(), version = target.detail.as_deref(), "hooked TLS for this process");
        }
        scoped
            .links
            .extend(links.into_iter().map(|(program, link)| (id, program, link)));
    }

    fn attach(
        &mut self,
        ebpf: &mut Ebpf,
        target: &Target,
        path: &Path,
        scope: UProbeScope,
    ) -> Vec<(&'static str, UProbeLinkId)> {
        let mut links = Vec::new();
        for probe in &target.probes {
            let result = ebpf
                .program_mut(probe.program)
                .ok_or_else(|| format!("no program {}", probe.program))
                .and_then(|p| <&mut UProbe>::try_from(p).map_err(|e| e.to_string()))
                .and_then(|p| p.attach(probe.offset, path, scope).map_err(|e| e.to_string()));
            match result {
                Ok(link) => links.push((probe.program, link)),
                Err(err) => {
                    let gone = matches!(scope, UProbeScope::OneProcess(pid) if !Path::new("/proc").join(pid.to_string()).exists());
                    if !gone {
                        self.errors += 1;
                        self.changed = true;
                        tracing::warn!(path = %path.display(), function = probe.function, "cannot attach the TLS probe: {err}");
                    }
                    // All or none: an entry without its return would
                    // leave calls in flight forever.
                    self.detach(ebpf, std::mem::take(&mut links));
                    break;
                }
            }
        }
        self.changed |= !links.is_empty();
        links
    }
}

/// `mcptap tls-info`: what each file carries, one line each.
pub fn print_info(files: &[PathBuf]) -> std::process::ExitCode {
    let mut status = std::process::ExitCode::SUCCESS;
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let kind = if openssl::is_libssl(&name) {
            FileKind::SharedLibrary
        } else {
            FileKind::Executable
        };
        if let Err(e) = fs::metadata(path) {
            println!("{}: cannot read: {e}", path.display());
            status = std::process::ExitCode::FAILURE;
            continue;
        }
        let started = Instant::now();
        let finding = target::identify(path, kind);
        let took = started.elapsed().as_millis();
        match finding {
            Finding::Tls(t) => {
                let mut functions: Vec<String> = Vec::new();
                for p in &t.probes {
                    let f = format!("{}@{:#x}", p.function, p.offset);
                    if !functions.contains(&f) {
                        functions.push(f);
                    }
                }
                println!(
                    "{}: {} ({}{}{}), {} probes: {} [{took} ms]",
                    path.display(),
                    t.library.as_str(),
                    kind.as_str(),
                    t.detail.as_deref().map(|d| format!(", {d}")).unwrap_or_default(),
                    if t.program_file { ", the program itself" } else { "" },
                    t.probes.len(),
                    functions.join(" "),
                );
            }
            Finding::Nothing => println!("{}: no TLS library mcptap knows [{took} ms]", path.display()),
            Finding::Unsupported(u) => {
                println!(
                    "{}: not probed ({}): {} [{took} ms]",
                    path.display(),
                    u.reason,
                    u.message
                )
            }
        }
    }
    status
}

/// A program: the executable a process runs and its command line.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_rewritten_in_place_is_told_from_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server");
        fs::write(&path, b"first build").unwrap();
        let on = OnFile::new(Vec::new(), &path, &fs::metadata(&path).unwrap());
        assert!(!on.rewritten(), "untouched");
        // `cp` over it: same inode, another content.
        std::thread::sleep(Duration::from_millis(20));
        fs::write(&path, b"second build").unwrap();
        assert!(on.rewritten());
        // A new file renamed over it (`install`, a package manager): the
        // probes are on the old inode, which the running processes keep.
        let on = OnFile::new(Vec::new(), &path, &fs::metadata(&path).unwrap());
        let new = dir.path().join("server.new");
        fs::write(&new, b"third build").unwrap();
        fs::rename(&new, &path).unwrap();
        assert!(!on.rewritten());
    }

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
}
