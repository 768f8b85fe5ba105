//! Finding TLS libraries and hooking them. What a file carries is decided
//! from its contents ([`target`]): OpenSSL's exported API in a
//! `libssl.so*` or an executable that links it (Node) ([`openssl`]); Go's
//! crypto/tls in a Go executable, stripped or not ([`golang`]); BoringSSL
//! in Bun-built executables ([`boringssl`]); rustls ([`rustls`]). A file
//! recognised but not safe to probe is reported once and left alone.
//!
//! The parts, in the order a file goes through them:
//!
//! - [`catalogue`]: what each file carries, learnt once per content by the
//!   [`inspect`] workers, off the capture thread and within a time budget
//!   (a file is the choice of the process that maps it, and of its user:
//!   see `inspect` for what that user may try);
//! - [`probes`]: the probes attached, per process, per program, per file;
//! - this module: which processes get probes, and when (HTTPS discovery,
//!   its window and its [`verdicts`]).
//!
//! The probes land on the very file the process uses, whatever path or
//! mount namespace it is seen through: attached through the descriptor
//! the file was inspected through, or the process's `/proc/PID/map_files`
//! link to it.
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
//! the next. At most [`MAX_PROBING`] processes are in their window at
//! once, [`MAX_PROBING_PER_USER`] of one user: a user starting TLS
//! programs in a loop cannot take the others' places.
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
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::Ebpf;

pub mod boringssl;
pub mod catalogue;
pub mod gate;
pub mod golang;
pub mod inspect;
pub mod openssl;
pub mod probes;
pub mod rustls;
pub mod target;
pub mod verdicts;

use catalogue::{Answers, Catalogue, ExecReady, Lookup, Ready, Use};
use gate::{Answer, Ask, GateLink};
use inspect::{FileId, HeldFd, Source};
use probes::{Pinned, ProbeSet, through_root};
use target::{FileKind, Library, Program, Target};
pub use verdicts::{MCP_TTL, NOT_MCP_TTL};
use verdicts::{ProgramKey, UsedFile, Verdict, Verdicts, program_key};

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

/// How long an untracked process's TLS library is probed for discovery.
pub const PROBE_WINDOW: Duration = Duration::from_secs(30);

/// Processes in their discovery window at once, at most.
pub const MAX_PROBING: usize = 256;

/// Processes of one user in their discovery window at once, at most.
pub const MAX_PROBING_PER_USER: usize = 32;

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
    /// Probed for what it is, not for what it did: it loaded an MCP SDK,
    /// or runs a program that speaks MCP. Its probes stay while it lives
    /// (a server may wait long for its first client), unless its sessions
    /// are found not to be MCP.
    evidence: bool,
    /// Its sniffed TLS sessions found not to be MCP.
    not_mcp: u32,
    /// Its program, read when probing starts (gone from /proc at exit).
    program: Option<ProgramKey>,
    /// Probes are in place for it (its files were found and read).
    attached: bool,
    uid: Option<u32>,
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
    /// Not probed: too many processes (or too many of its user's) were in
    /// their window already.
    pub saturated: u64,
    /// Probed before its first TLS byte: an interpreter that opened an MCP
    /// SDK's files.
    pub sdk: u64,
    /// Probed before it ran: a program that carries its TLS library and
    /// names MCP's headers, held at its exec by the gate.
    pub first_exec: u64,
}

pub struct TlsHooks {
    host_wide: bool,
    proc_root: PathBuf,
    catalogue: Catalogue,
    probes: ProbeSet,
    /// Libraries whose kernel programs did not load.
    disabled: Vec<Library>,
    /// Exec'd processes to look at, when.
    due: VecDeque<(Instant, u32, usize)>,
    last_tracked_scan: Option<Instant>,
    /// Untracked processes whose TLS library is probed.
    probing: HashMap<u32, Probing>,
    /// Verdicts per program (kept across restarts).
    verdicts: Verdicts,
    pub discovery: DiscoveryCounts,
    /// Program files to pin as speaking MCP once they are read.
    pin_as_mcp: HashSet<FileId>,
    /// Probing processes whose probes were attached since the last poll.
    newly_probed: Vec<u32>,
    /// The exec gate, when this kernel and these privileges allow one.
    gate: Option<GateLink>,
    /// Execs whose file's old probes are still being detached.
    deferred_execs: Vec<(ExecReady, Option<HeldFd>)>,
}

impl Drop for TlsHooks {
    /// The agent stops: changed verdicts are kept for its next run.
    fn drop(&mut self) {
        self.verdicts.save(true);
    }
}

impl TlsHooks {
    /// `disabled`: libraries whose programs the kernel refused;
    /// `verdicts_file`: where verdicts are kept across restarts.
    pub fn new(host_wide: bool, disabled: Vec<Library>, verdicts_file: Option<PathBuf>) -> TlsHooks {
        let proc_root = PathBuf::from("/proc");
        TlsHooks {
            host_wide,
            catalogue: Catalogue::new(proc_root.clone()),
            proc_root,
            probes: ProbeSet::new(),
            disabled,
            due: VecDeque::new(),
            last_tracked_scan: None,
            probing: HashMap::new(),
            verdicts: Verdicts::load(verdicts_file),
            discovery: DiscoveryCounts::default(),
            pin_as_mcp: HashSet::new(),
            newly_probed: Vec::new(),
            gate: None,
            deferred_execs: Vec::new(),
        }
    }

    /// Files about to be run are asked about through `link` from now on.
    pub fn set_gate(&mut self, link: GateLink) {
        self.gate = Some(link);
    }

    /// The exec gate's figures, when it runs.
    pub fn gate_stats(&self) -> Option<&gate::GateStats> {
        self.gate.as_ref().map(|g| &*g.stats)
    }

    /// Notified when a file's answer is ready: the capture loop then calls
    /// [`TlsHooks::poll`].
    pub fn wake(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.catalogue.wake()
    }

    /// Whether probes were attached or detached (or a file found that
    /// cannot be probed) since the last call: the agent then publishes
    /// what is hooked at once rather than at its next one-second tick (a
    /// scrape right after a server's first calls must see the probes that
    /// caught them).
    pub fn take_changed(&mut self) -> bool {
        self.probes.take_changed() | self.catalogue.take_changed()
    }

    /// Files recognised but not probed, by reason.
    pub fn unsupported(&self) -> &HashMap<&'static str, u64> {
        &self.catalogue.unsupported
    }

    /// Probes that could not be attached.
    pub fn errors(&self) -> u64 {
        self.probes.errors
    }

    pub fn inspections(&self) -> inspect::InspectCounts {
        self.catalogue.counts()
    }

    /// Sizes of the tables kept (`mcptap_table_entries`).
    pub fn sizes(&self) -> Vec<(&'static str, usize)> {
        let mut out = self.catalogue.sizes().to_vec();
        out.push(("tls_probing", self.probing.len()));
        out.push(("tls_scoped", self.probes.scoped.len()));
        out.push(("tls_exec_queue", self.due.len()));
        out
    }

    /// Answers of the file workers, detachments finished: probes attached
    /// where they were waited for. Returns the processes probed for
    /// discovery since the last call (the kernel ties their TLS sessions
    /// to sockets from then on).
    pub fn poll(&mut self, ebpf: &mut Ebpf) -> Vec<u32> {
        let asks: Vec<Ask> = self
            .gate
            .as_ref()
            .map(|g| g.asks.try_iter().collect())
            .unwrap_or_default();
        for ask in asks {
            self.on_exec_ask(ebpf, ask);
        }
        let Answers { ready, changed, execs } = self.catalogue.take_ready();
        for c in changed {
            self.file_changed(ebpf, c.id);
        }
        for r in ready {
            self.on_ready(ebpf, r);
        }
        for e in execs {
            self.on_exec_ready(ebpf, e, None);
        }
        for d in self.probes.take_detached() {
            if d.file.is_some() {
                tracing::info!(links = d.links, ms = d.ms, "probes detached");
            }
        }
        for (e, held) in std::mem::take(&mut self.deferred_execs) {
            self.on_exec_ready(ebpf, e, held);
        }
        std::mem::take(&mut self.newly_probed)
    }

    /// A process is about to run a file (the exec gate holds it): what the
    /// file is decides what happens before it runs.
    fn on_exec_ask(&mut self, ebpf: &mut Ebpf, ask: Ask) {
        let Ask { ticket, pid, fd, id } = ask;
        let held = HeldFd(fd);
        let source = Source::Held { fd: held.clone(), id };
        if let Some((target, program)) = self.catalogue.lookup_exec(source, ticket, pid) {
            let e = ExecReady {
                ticket,
                pid,
                id,
                target,
                program,
                opened: None,
            };
            self.on_exec_ready(ebpf, e, Some(held));
        }
    }

    /// The answer for a file a process is about to run: an interpreter is
    /// pointed out to the kernel (by the gate), a compiled MCP program gets
    /// its probes for every process that runs it before it runs, anything
    /// else runs as it is.
    fn on_exec_ready(&mut self, ebpf: &mut Ebpf, e: ExecReady, held: Option<HeldFd>) {
        if self.probes.detaching(&e.id) {
            // Probes at an old content's offsets are still going: the exec
            // waits for them to be gone (a probe inside an instruction of
            // the new program would break it), within the gate's limit.
            self.deferred_execs.push((e, held));
            return;
        }
        let answer = match (e.program, &e.target) {
            (Program::Interpreter(_), _) => Answer::Interpreter,
            (Program::SpeaksMcp, Some(target)) if target.program_file && !self.disabled.contains(&target.library) => {
                let opened = e.opened.clone().or_else(|| {
                    let fd = held?.0;
                    let stamp = inspect::stamp_now(&fd)?;
                    Some(inspect::Opened { id: e.id, stamp, fd })
                });
                match opened {
                    Some(opened) if self.probe_program_before_exec(ebpf, e.pid, e.id, target, &opened) => {
                        Answer::McpProgram
                    }
                    _ => Answer::Plain,
                }
            }
            _ => Answer::Plain,
        };
        tracing::debug!(pid = e.pid, ?answer, file = ?e.id, "exec gate answer");
        if let Some(gate) = &self.gate {
            gate.answer(e.ticket, answer);
        }
    }

    /// Probes a compiled MCP program's file for every process that runs it
    /// (pinned), before process `pid` runs it; `pid` is probed for
    /// discovery from its exec on.
    fn probe_program_before_exec(
        &mut self,
        ebpf: &mut Ebpf,
        pid: u32,
        id: FileId,
        target: &Target,
        opened: &inspect::Opened,
    ) -> bool {
        let seen_as = fs::read_link(opened.attach_path())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "(a program about to run)".to_string());
        if self.host_wide {
            if !self.probes.global.contains_key(&id) {
                let Some(on) =
                    self.probes
                        .attach_everywhere(ebpf, id, target, opened.fd.clone(), opened.stamp, &seen_as)
                else {
                    return false;
                };
                tracing::info!(
                    path = seen_as,
                    library = target.library.as_str(),
                    "hooked TLS for every process"
                );
                self.catalogue.watch(id, on.fd.clone(), on.stamp);
                self.probes.global.insert(id, on);
            }
            // Its TLS sessions are tied to their sockets from its exec on.
            self.newly_probed.push(pid);
            return true;
        }
        if self.probes.detaching(&id) {
            return false;
        }
        let first = !self.probes.pinned.contains_key(&id);
        self.pin_as_mcp.insert(id);
        self.pin(ebpf, id, target, opened, &seen_as);
        if !self.probes.pinned.contains_key(&id) {
            return false;
        }
        if first {
            tracing::info!(
                path = seen_as,
                library = target.library.as_str(),
                "a program that speaks MCP is about to run: probed before its first request"
            );
        }
        if let Some(p) = self.probing.get_mut(&pid) {
            p.evidence = true;
        } else if self.room_for(pid) {
            self.discovery.first_exec += 1;
            self.probing.insert(
                pid,
                Probing {
                    since: Instant::now(),
                    from_exec: true,
                    evidence: true,
                    not_mcp: 0,
                    program: None,
                    attached: true,
                    uid: proc_uid(&self.proc_root, pid),
                },
            );
            self.probes
                .scoped
                .entry(pid)
                .or_default()
                .files
                .insert(id, (seen_as, FileKind::Executable));
            self.newly_probed.push(pid);
        }
        true
    }

    /// An interpreter (pointed out by the gate at its exec) opened a file
    /// of an MCP SDK: it is about to speak MCP. Its TLS library is probed
    /// now, before its first TLS byte: the one it maps already, or the
    /// shared libssl it will load (Python loads it on `import ssl`),
    /// probed for this process before it maps it. Returns true when it is
    /// probed (the kernel then ties its TLS sessions to their sockets).
    pub fn on_sdk_open(&mut self, ebpf: &mut Ebpf, pid: u32, path: &str, tracked: bool) -> bool {
        if !mcptap_common::SDK_SUFFIXES.iter().any(|s| path.as_bytes().ends_with(s)) {
            return false;
        }
        tracing::debug!(pid, path, "an interpreter loads an MCP SDK");
        if tracked {
            return false;
        }
        if self.host_wide {
            // Its library is probed for every process already: its TLS
            // sessions are tied to their sockets from now on.
            return true;
        }
        if let Some(p) = self.probing.get_mut(&pid) {
            p.from_exec = true;
            p.evidence = true;
            return true;
        }
        if !self.room_for(pid) {
            return false;
        }
        self.discovery.sdk += 1;
        let uid = proc_uid(&self.proc_root, pid);
        self.probing.insert(
            pid,
            Probing {
                since: Instant::now(),
                from_exec: true,
                evidence: true,
                not_mcp: 0,
                program: program_key(&self.proc_root, pid),
                attached: false,
                uid,
            },
        );
        self.scan_process(ebpf, pid, true);
        self.probe_libssl_before_load(ebpf, pid);
        // Its TLS sessions are tied to their sockets from now on, its
        // probes in place or about to be: its first connection is reported
        // while it exists.
        self.newly_probed.retain(|p| *p != pid);
        true
    }

    /// The shared libssl files a process may load, in its own root: the
    /// library directories, and `lib` beside its executable's directory
    /// (a virtual environment's or a bundled interpreter's), each probed
    /// for this process alone (the kernel installs the probes when the
    /// process maps the file; unmapped, they cost nothing).
    fn probe_libssl_before_load(&mut self, ebpf: &mut Ebpf, pid: u32) {
        let root = self.proc_root.join(pid.to_string()).join("root");
        let mut dirs: Vec<String> = openssl::LIB_DIRS.iter().map(|d| d.to_string()).collect();
        if let Ok(exe) = fs::read_link(self.proc_root.join(pid.to_string()).join("exe"))
            && let Some(prefix) = exe.parent().and_then(Path::parent)
        {
            dirs.push(prefix.join("lib").display().to_string());
        }
        for dir in dirs {
            let Ok(entries) = fs::read_dir(root.join(dir.trim_start_matches('/'))) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !openssl::is_libssl(&name) {
                    continue;
                }
                let seen_as = format!("{}/{name}", dir.trim_end_matches('/'));
                let path = e.path();
                self.use_file(
                    ebpf,
                    Source::Path {
                        path: path.clone(),
                        only: None,
                    },
                    FileKind::SharedLibrary,
                    Use::Scoped {
                        pid,
                        seen_as,
                        kind: FileKind::SharedLibrary,
                        via: path,
                    },
                );
            }
        }
    }

    /// Whether files are still being read.
    pub fn busy(&self) -> bool {
        self.catalogue.busy()
    }

    /// A process not tracked moved its first TLS record: probe its TLS
    /// library for a while, unless its program was found not to speak MCP
    /// lately. Returns true when probes are in place already (the kernel
    /// then ties its TLS sessions to their sockets); otherwise `poll`
    /// says when they are.
    pub fn on_tls_seen(&mut self, ebpf: &mut Ebpf, pid: u32) -> bool {
        if let Some(p) = self.probing.get_mut(&pid) {
            p.from_exec = false; // probed from its exec; it speaks TLS now
            return p.attached;
        }
        if self.host_wide || self.probes.scoped.contains_key(&pid) {
            return false;
        }
        let program = program_key(&self.proc_root, pid);
        if program
            .as_ref()
            .and_then(|key| self.verdicts.get(key))
            .is_some_and(|k| k.left_alone())
        {
            self.discovery.skipped += 1;
            return false;
        }
        if !self.room_for(pid) {
            return false;
        }
        let uid = proc_uid(&self.proc_root, pid);
        self.probing.insert(
            pid,
            Probing {
                since: Instant::now(),
                from_exec: false,
                evidence: false,
                not_mcp: 0,
                program,
                attached: false,
                uid,
            },
        );
        self.scan_process(ebpf, pid, true);
        self.newly_probed.retain(|p| *p != pid);
        self.probing.get(&pid).is_some_and(|p| p.attached)
    }

    /// Whether another process may enter its discovery window (counted
    /// when not).
    fn room_for(&mut self, pid: u32) -> bool {
        let full = self.probing.len() >= MAX_PROBING || {
            let uid = proc_uid(&self.proc_root, pid);
            self.probing.values().filter(|p| p.uid == uid).count() >= MAX_PROBING_PER_USER
        };
        if full {
            self.discovery.saturated += 1;
            tracing::debug!(
                pid,
                "not probed for HTTPS discovery: too many processes in their window"
            );
        }
        !full
    }

    /// A probing process got its first probes.
    fn mark_attached(&mut self, pid: u32) {
        if let Some(p) = self.probing.get_mut(&pid)
            && !p.attached
        {
            p.attached = true;
            if !p.from_exec {
                self.discovery.probed += 1;
            }
            tracing::debug!(pid, "probing the TLS library of a process that speaks TLS");
            self.newly_probed.push(pid);
        }
    }

    /// Whether a program that just started is one known to speak MCP over
    /// TLS, or one that ended undecided last time (probed from its exec
    /// on): its program and the files it used.
    fn expected(&self, pid: u32) -> Option<(ProgramKey, Vec<UsedFile>)> {
        let key = program_key(&self.proc_root, pid)?;
        let k = self.verdicts.get(&key)?;
        let files = k.files.clone();
        k.probe_from_exec().then_some((key, files))
    }

    /// Probed processes whose window passed without MCP: their probes go,
    /// and their program is remembered as not MCP. Returns them (the
    /// kernel stops tying their TLS sessions to sockets).
    pub fn expire_probing(&mut self, ebpf: &mut Ebpf, is_tracked: &dyn Fn(u32) -> bool) -> Vec<u32> {
        let mut released = Vec::new();
        // Processes that ended unnoticed (a process kept for what it is
        // has no window to close it).
        let gone: Vec<u32> = self
            .probing
            .iter()
            .filter(|(pid, p)| p.since.elapsed() >= PROBE_WINDOW && !self.pid_alive(**pid))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in gone {
            self.on_exit(ebpf, pid);
            released.push(pid);
        }
        let done: Vec<u32> = self
            .probing
            .iter()
            .filter(|(pid, p)| {
                is_tracked(**pid) || (p.since.elapsed() >= PROBE_WINDOW && !(p.evidence && p.not_mcp == 0))
            })
            .map(|(pid, _)| *pid)
            .collect();
        for pid in done {
            let Some(probing) = self.probing.remove(&pid) else {
                continue;
            };
            if is_tracked(pid) {
                continue; // on_tracked took it
            }
            if !probing.attached || (probing.from_exec && probing.not_mcp == 0) {
                // No probes ever landed (no TLS library mcptap probes), or
                // probed from its exec and silent since (a server waiting
                // for its first client): nothing learnt about its program.
                // Its probes go; its first TLS record brings them back.
                tracing::debug!(pid, verdict = "none (nothing sniffed)", "HTTPS discovery verdict");
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
                        self.want_global(ebpf, e.path(), FileKind::SharedLibrary);
                    }
                }
            }
            for exe in ["node", "nodejs"] {
                if let Some(path) = which(exe) {
                    self.want_global(ebpf, path, FileKind::Executable);
                }
            }
            for pid in pids(&self.proc_root) {
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
            for pid in pids(&self.proc_root) {
                if !tracked.contains(&pid) && self.may_be_expected(pid) {
                    self.on_exec(pid);
                }
            }
        }
    }

    /// A library of the agent's own view, probed for every process.
    fn want_global(&mut self, ebpf: &mut Ebpf, path: PathBuf, kind: FileKind) {
        let source = Source::Path { path, only: None };
        let use_ = Use::Global { seen: None };
        // Asked whatever is known: attaching for every process needs the
        // descriptor a worker opens.
        if let Lookup::Known(Some(_)) = self.catalogue.lookup(source.clone(), kind, use_.clone()) {
            self.catalogue.ask(source, kind, use_);
        }
        let _ = ebpf;
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
        let Ok(exe) = fs::read_link(self.proc_root.join(pid.to_string()).join("exe")) else {
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
            None => program_key(&self.proc_root, pid),
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
        let files: Vec<UsedFile> = match verdict {
            Verdict::NotMcp => Vec::new(),
            _ => self
                .probes
                .scoped
                .get(&pid)
                .map(|s| {
                    s.paths()
                        .into_iter()
                        .map(|(path, kind, id)| UsedFile {
                            path,
                            kind,
                            id: Some(id),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
        if let Some(key) = program {
            self.verdicts.remember(key, verdict, files);
        }
        tracing::debug!(pid, ?verdict, "HTTPS discovery verdict");
        if self.host_wide {
            return;
        }
        let program_files: Vec<FileId> = self
            .probes
            .scoped
            .get(&pid)
            .map(|s| {
                s.files
                    .keys()
                    .filter(|id| self.catalogue.target(id).is_some_and(|t| t.program_file))
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        for id in program_files {
            if verdict == Verdict::NotMcp {
                if self.probes.pinned.get(&id).is_some_and(|p| !p.mcp)
                    && let Some(p) = self.probes.pinned.remove(&id)
                {
                    self.catalogue.unwatch(&id);
                    self.probes.detach(ebpf, None, p.on.links);
                }
                continue;
            }
            let mcp = verdict == Verdict::Mcp;
            match self.probes.pinned.get_mut(&id) {
                Some(p) => {
                    p.at = Instant::now();
                    p.mcp |= mcp;
                }
                None => {
                    // Not pinned (yet, or any more): pinned when its
                    // executable is read again.
                    if mcp {
                        self.pin_as_mcp.insert(id);
                    }
                    self.scan_process(ebpf, pid, true);
                }
            }
        }
    }

    /// Probes a program file for every process that runs it, through the
    /// descriptor it was inspected through.
    fn pin(&mut self, ebpf: &mut Ebpf, id: FileId, target: &Target, opened: &inspect::Opened, seen_as: &str) {
        let mcp = self.pin_as_mcp.remove(&id);
        if let Some(p) = self.probes.pinned.get_mut(&id) {
            p.at = Instant::now();
            p.mcp |= mcp;
            return;
        }
        let Some(on) = self
            .probes
            .attach_everywhere(ebpf, id, target, opened.fd.clone(), opened.stamp, seen_as)
        else {
            return;
        };
        tracing::info!(
            path = seen_as,
            library = target.library.as_str(),
            mcp,
            "hooked TLS for every process running this program"
        );
        self.catalogue.watch(id, on.fd.clone(), on.stamp);
        self.probes.pinned.insert(
            id,
            Pinned {
                at: Instant::now(),
                mcp,
                on,
            },
        );
    }

    /// A file known now: its probes go where its uses want them.
    fn on_ready(&mut self, ebpf: &mut Ebpf, r: Ready) {
        let Ready {
            id,
            target,
            opened,
            use_,
        } = r;
        if self.disabled.contains(&target.library) {
            self.catalogue.report_disabled(id, target.library);
            return;
        }
        match use_ {
            Use::Scoped {
                pid,
                seen_as,
                kind,
                via,
            } => {
                if target.program_file && !self.host_wide {
                    if !self.probes.pinned.contains_key(&id) {
                        match &opened {
                            Some(o) => self.pin(ebpf, id, &target, o, &seen_as),
                            // Pinning needs the descriptor: a worker opens it.
                            None => {
                                self.catalogue.ask(
                                    Source::Exe { pid, id },
                                    kind,
                                    Use::Scoped {
                                        pid,
                                        seen_as,
                                        kind,
                                        via,
                                    },
                                );
                                return;
                            }
                        }
                    } else if self.pin_as_mcp.remove(&id)
                        && let Some(p) = self.probes.pinned.get_mut(&id)
                    {
                        p.mcp = true;
                        p.at = Instant::now();
                    }
                    if self.probes.pinned.contains_key(&id) {
                        self.probes
                            .scoped
                            .entry(pid)
                            .or_default()
                            .files
                            .insert(id, (seen_as, kind));
                        self.mark_attached(pid);
                    }
                    return;
                }
                if !self.pid_alive(pid) {
                    return;
                }
                let path = opened.as_ref().map(inspect::Opened::attach_path).unwrap_or(via);
                let at = probes::ScopedAt {
                    pid,
                    id,
                    via: &path,
                    seen_as: &seen_as,
                    kind,
                };
                self.probes.attach_scoped(ebpf, at, &target);
                if self.probes.scoped.get(&pid).is_some_and(|s| s.files.contains_key(&id)) {
                    self.mark_attached(pid);
                }
            }
            Use::Global { seen } => {
                if self.probes.global.contains_key(&id) {
                    return;
                }
                let Some(opened) = opened else { return };
                let seen_as = seen
                    .map(|(_, p)| p)
                    .unwrap_or_else(|| "(library directory)".to_string());
                let Some(on) =
                    self.probes
                        .attach_everywhere(ebpf, id, &target, opened.fd.clone(), opened.stamp, &seen_as)
                else {
                    return;
                };
                tracing::info!(
                    path = seen_as,
                    library = target.library.as_str(),
                    version = target.detail.as_deref(),
                    "hooked TLS for every process"
                );
                self.catalogue.watch(id, on.fd.clone(), on.stamp);
                self.probes.global.insert(id, on);
            }
            // Answered through `Answers::execs`, never as a ready use.
            Use::Exec { .. } => {}
        }
    }

    fn pid_alive(&self, pid: u32) -> bool {
        self.proc_root.join(pid.to_string()).exists()
    }

    /// The file known as `id` is not the one read then (rewritten in place,
    /// or a new file given its inode number): what was learnt from it goes,
    /// and so do the probes for every process on it, at the old content's
    /// offsets (a probe inside an instruction of the new program would
    /// break it).
    fn file_changed(&mut self, ebpf: &mut Ebpf, id: FileId) {
        self.catalogue.forget(&id);
        self.catalogue.unwatch(&id);
        if self.probes.file_changed(ebpf, id) {
            tracing::warn!(file = ?id, "a probed file changed on disk: its probes are removed, it is read again");
        } else {
            tracing::debug!(file = ?id, "a file changed on disk: it is read again");
        }
    }

    /// A process ended: its scoped probes go. One that ended inside its
    /// discovery window, undecided, is probed from its exec next time.
    pub fn on_exit(&mut self, ebpf: &mut Ebpf, pid: u32) {
        let probing = self.probing.remove(&pid);
        match probing {
            Some(Probing { attached: false, .. }) => {}
            Some(Probing {
                from_exec: true,
                evidence: false,
                not_mcp: 0,
                ..
            }) => {
                // Probed from its exec, and it ended without a word of TLS
                // sniffed: nothing learned about its program.
                tracing::debug!(
                    pid,
                    verdict = "none (probed from its exec, silent)",
                    "HTTPS discovery verdict"
                );
            }
            Some(Probing { program: Some(key), .. }) => {
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
            _ => {}
        }
        self.probes.drop_process(ebpf, pid);
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
            if !self.pid_alive(pid) {
                continue;
            }
            let tracked = is_tracked(pid);
            // A program known to speak MCP over TLS: probed from its start,
            // so that its first requests are seen.
            let expected = (!tracked && !self.host_wide).then(|| self.expected(pid)).flatten();
            let is_expected = expected.is_some();
            if let Some((program, files)) = expected
                && !self.probing.contains_key(&pid)
                && self.room_for(pid)
            {
                self.discovery.expected += 1;
                tracing::debug!(pid, "probing a program known to speak MCP from its exec");
                let uid = proc_uid(&self.proc_root, pid);
                // Found to speak MCP before (not only undecided): kept
                // probed while it lives, as one that loaded an SDK.
                let spoke_mcp = self.verdicts.get(&program).is_some_and(|k| k.verdict == Verdict::Mcp);
                self.probing.insert(
                    pid,
                    Probing {
                        since: Instant::now(),
                        from_exec: true,
                        evidence: spoke_mcp,
                        not_mcp: 0,
                        program: Some(program),
                        attached: false,
                        uid,
                    },
                );
                // The files it used last time, before it maps them: only
                // those very files (same device and inode), never whatever
                // its root shows at that path now.
                for f in files {
                    let Some(only) = f.id else { continue };
                    let path = through_root(pid, &f.path);
                    let via = path.clone();
                    self.use_file(
                        ebpf,
                        Source::Path { path, only: Some(only) },
                        f.kind,
                        Use::Scoped {
                            pid,
                            seen_as: f.path,
                            kind: f.kind,
                            via,
                        },
                    );
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
        probed.append(&mut self.newly_probed);
        probed
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
                .probes
                .scoped
                .keys()
                .copied()
                .filter(|pid| !self.pid_alive(*pid))
                .collect();
            for pid in gone {
                self.on_exit(ebpf, pid);
            }
            // Pinned programs that have not spoken MCP for a long time.
            let stale: Vec<FileId> = self
                .probes
                .pinned
                .iter()
                .filter(|(_, p)| p.at.elapsed() >= if p.mcp { MCP_TTL } else { NOT_MCP_TTL })
                .map(|(id, _)| *id)
                .collect();
            for id in stale {
                if let Some(p) = self.probes.pinned.remove(&id) {
                    self.catalogue.unwatch(&id);
                    self.probes.detach(ebpf, None, p.on.links);
                }
            }
        }
    }

    /// Files with probes, by library and kind.
    pub fn hooked_files(&self) -> Vec<(Library, FileKind, usize)> {
        let files = self.probes.hooked();
        let mut out = Vec::new();
        for library in Library::ALL {
            for kind in FileKind::ALL {
                let n = files
                    .iter()
                    .filter_map(|id| self.catalogue.target(id))
                    .filter(|t| t.library == library && t.kind == kind)
                    .count();
                out.push((library, kind, n));
            }
        }
        out
    }

    /// Tracked processes with probes of their own.
    pub fn hooked_processes(&self) -> usize {
        self.probes.hooked_processes()
    }

    /// Looks at the files a process maps; hooks the TLS ones for this
    /// process (`scoped`) or for every process (host-wide mode).
    fn scan_process(&mut self, ebpf: &mut Ebpf, pid: u32, scoped: bool) {
        // The agent itself: its own code quotes the markers it looks for.
        if pid == std::process::id() {
            return;
        }
        let proc_dir = self.proc_root.join(pid.to_string());
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
            let (kind, source) = if exe.as_deref() == Some(Path::new(m.path)) {
                (FileKind::Executable, Source::Exe { pid, id: m.id })
            } else if openssl::is_libssl(name) {
                (
                    FileKind::SharedLibrary,
                    Source::Mapped {
                        pid,
                        range: m.range.to_string(),
                        id: m.id,
                    },
                )
            } else {
                continue;
            };
            if self.host_wide && !self.probes.global.contains_key(&m.id) {
                let use_ = Use::Global {
                    seen: Some((pid, m.path.to_string())),
                };
                if let Lookup::Known(Some(_)) = self.catalogue.lookup(source.clone(), kind, use_.clone()) {
                    // Probing for every process needs the descriptor a
                    // worker opens.
                    self.catalogue.ask(source.clone(), kind, use_);
                }
            }
            if scoped && !self.host_wide {
                if self
                    .probes
                    .scoped
                    .get(&pid)
                    .is_some_and(|s| s.files.contains_key(&m.id))
                {
                    continue;
                }
                let via = source.path(&self.proc_root);
                self.use_file(
                    ebpf,
                    source,
                    kind,
                    Use::Scoped {
                        pid,
                        seen_as: m.path.to_string(),
                        kind,
                        via,
                    },
                );
            }
        }
    }

    /// Uses a file now when it is known, or once a worker has read it.
    fn use_file(&mut self, ebpf: &mut Ebpf, source: Source, kind: FileKind, use_: Use) {
        let id = match &source {
            Source::Mapped { id, .. } | Source::Exe { id, .. } | Source::Held { id, .. } => *id,
            Source::Path { only: Some(id), .. } => *id,
            Source::Path { only: None, .. } => (0, 0),
        };
        if self.probes.detaching(&id) {
            return; // its old probes are still going: the next rescan
        }
        if let Lookup::Known(Some(target)) = self.catalogue.lookup(source, kind, use_.clone()) {
            self.on_ready(
                ebpf,
                Ready {
                    id,
                    target,
                    opened: None,
                    use_,
                },
            );
        }
    }
}

/// The user a process runs as (its real uid), from /proc.
fn proc_uid(proc_root: &Path, pid: u32) -> Option<u32> {
    fs::read_to_string(proc_root.join(pid.to_string()).join("status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
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
        let started = Instant::now();
        let job = inspect::Job {
            source: Source::Path {
                path: path.clone(),
                only: None,
            },
            kind,
            unless: None,
        };
        let (finding, program) = match inspect::inspect(&job, Path::new("/proc"), started + inspect::BUDGET) {
            Ok((_, inspect::Outcome::Read(p))) => (p.finding, p.program),
            Ok((_, inspect::Outcome::Unchanged)) => (target::Finding::Nothing, Program::Plain),
            Err(e) => {
                println!("{}: not read: {e}", path.display());
                status = std::process::ExitCode::FAILURE;
                continue;
            }
        };
        let took = started.elapsed().as_millis();
        // What it is as a program, when that says something (the exec
        // gate's answer).
        let program = match program {
            Program::Plain => String::new(),
            Program::SpeaksMcp => ", speaks MCP: probed before its first run".to_string(),
            Program::Interpreter(i) => format!(", interpreter ({}): probed when it loads an MCP SDK", i.as_str()),
        };
        match finding {
            target::Finding::Tls(t) => {
                let mut functions: Vec<String> = Vec::new();
                for p in &t.probes {
                    let f = format!("{}@{:#x}", p.function, p.offset);
                    if !functions.contains(&f) {
                        functions.push(f);
                    }
                }
                println!(
                    "{}: {} ({}{}{}{program}), {} probes: {} [{took} ms]",
                    path.display(),
                    t.library.as_str(),
                    kind.as_str(),
                    t.detail.as_deref().map(|d| format!(", {d}")).unwrap_or_default(),
                    if t.program_file { ", the program itself" } else { "" },
                    t.probes.len(),
                    functions.join(" "),
                );
            }
            target::Finding::Nothing => {
                println!("{}: no TLS library mcptap knows{program} [{took} ms]", path.display())
            }
            target::Finding::Unsupported(u) => {
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

/// Where `exe` is on the agent's PATH.
fn which(exe: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(exe))
        .find(|p| p.is_file())
        .and_then(|p| fs::canonicalize(p).ok())
}

fn pids(proc_root: &Path) -> Vec<u32> {
    fs::read_dir(proc_root)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

struct MapsLine<'a> {
    /// `start-end`: the mapping's name under /proc/PID/map_files.
    range: &'a str,
    id: FileId,
    path: &'a str,
}

/// `start-end perms offset dev:dev inode path`; only file-backed lines.
fn parse_maps_line(line: &str) -> Option<MapsLine<'_>> {
    let mut f = line.splitn(6, ' ');
    let range = f.next()?;
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
        range,
        id: (libc::makedev(major as u32, minor as u32), inode),
        path,
    })
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
        assert_eq!(m.range, "7f1c2a400000-7f1c2a45e000");
        assert_eq!(m.id, (libc::makedev(0xfd, 1), 1311023));
        assert!(
            parse_maps_line("7ffd1c3d2000-7ffd1c3f3000 rw-p 00000000 00:00 0                          [stack]")
                .is_none()
        );
        assert!(parse_maps_line("7f00-7f01 r--p 00000000 fd:01 12 /tmp/x (deleted)").is_none());
    }
}
