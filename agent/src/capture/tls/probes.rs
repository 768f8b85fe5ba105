//! The probes attached, by scope: per tracked process (`scoped`), per
//! program for every process that runs it (`pinned`), per file for every
//! process (`global`, the host-wide mode).
//!
//! Attaching is quick; detaching waits for an RCU grace period (~0.1 s per
//! probe here), one after another: it runs on a thread of its own, never
//! on the capture loop. While a file's old probes are being detached
//! (after a rewrite in place), nothing is attached to it: a probe at an
//! offset still probed would share the old probe's copy of the
//! instruction there.

use std::{
    collections::{HashMap, HashSet},
    num::NonZeroU32,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
    time::Instant,
};

use aya::{
    Ebpf,
    programs::{
        UProbe,
        uprobe::{UProbeLink, UProbeLinkId, UProbeScope},
    },
};

use super::{
    inspect::{FileId, Stamp, fd_path},
    target::{FileKind, Target},
};

pub type Link = (&'static str, UProbeLinkId);

/// Probes attached for one tracked process.
#[derive(Default)]
pub struct Scoped {
    /// Its TLS files: their paths as the process sees them, and kind.
    pub files: HashMap<FileId, (String, FileKind)>,
    pub links: Vec<(FileId, &'static str, UProbeLinkId)>,
}

impl Scoped {
    pub fn paths(&self) -> Vec<(String, FileKind, FileId)> {
        self.files.iter().map(|(id, (p, k))| (p.clone(), *k, *id)).collect()
    }
}

/// Probes on a file for every process: a pinned program, or a library in
/// the host-wide mode. The descriptor it was inspected through keeps the
/// way to it (a short program may be gone before its probes are all
/// attached) and shows a rewrite in place.
pub struct OnFile {
    pub links: Vec<Link>,
    pub fd: Arc<OwnedFd>,
    pub stamp: Stamp,
    /// The path it was seen at, for the log.
    pub seen_as: String,
}

/// Probes on an executable for every process that runs it: a compiled
/// program found to speak MCP (or on trial), so that its next runs are
/// seen from their first request, however short they are.
pub struct Pinned {
    /// When a process running it last spoke MCP, or ended undecided.
    pub at: Instant,
    /// Whether one spoke MCP.
    pub mcp: bool,
    pub on: OnFile,
}

/// Where a per-process probe goes: the process, the file (`via` reaches
/// it through /proc), its path there and kind.
pub struct ScopedAt<'a> {
    pub pid: u32,
    pub id: FileId,
    pub via: &'a Path,
    pub seen_as: &'a str,
    pub kind: FileKind,
}

/// Links the detacher has finished with: how many, for which file, how long.
pub struct Detached {
    pub file: Option<FileId>,
    pub links: usize,
    pub ms: u64,
}

pub struct ProbeSet {
    pub scoped: HashMap<u32, Scoped>,
    pub pinned: HashMap<FileId, Pinned>,
    pub global: HashMap<FileId, OnFile>,
    /// Files whose old probes are being detached: nothing attaches there
    /// until they are gone.
    detaching: HashSet<FileId>,
    detacher: Option<mpsc::Sender<(Option<FileId>, Vec<UProbeLink>)>>,
    detached: mpsc::Receiver<Detached>,
    pub errors: u64,
    /// Probes attached or detached since `take_changed`.
    changed: bool,
}

impl Default for ProbeSet {
    fn default() -> Self {
        ProbeSet::new()
    }
}

impl ProbeSet {
    pub fn new() -> ProbeSet {
        let (tx, rx) = mpsc::channel::<(Option<FileId>, Vec<UProbeLink>)>();
        let (done_tx, detached) = mpsc::channel();
        let detacher = std::thread::Builder::new()
            .name("uprobe-detach".into())
            .spawn(move || {
                while let Ok((file, links)) = rx.recv() {
                    let (n, started) = (links.len(), Instant::now());
                    drop(links);
                    let _ = done_tx.send(Detached {
                        file,
                        links: n,
                        ms: started.elapsed().as_millis() as u64,
                    });
                }
            })
            .ok()
            .map(|_| tx);
        ProbeSet {
            scoped: HashMap::new(),
            pinned: HashMap::new(),
            global: HashMap::new(),
            detaching: HashSet::new(),
            detacher,
            detached,
            errors: 0,
            changed: false,
        }
    }

    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Whether a file's old probes are still being detached.
    pub fn detaching(&self, id: &FileId) -> bool {
        self.detaching.contains(id)
    }

    /// Detachments finished since the last call.
    pub fn take_detached(&mut self) -> Vec<Detached> {
        let done: Vec<Detached> = self.detached.try_iter().collect();
        for d in &done {
            if let Some(id) = d.file {
                self.detaching.remove(&id);
            }
        }
        done
    }

    /// Attaches every probe of `target` to the file `path` reaches, all or
    /// none: an entry without its return would leave calls in flight
    /// forever.
    pub fn attach(&mut self, ebpf: &mut Ebpf, target: &Target, path: &Path, scope: UProbeScope) -> Vec<Link> {
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
                    self.detach(ebpf, None, std::mem::take(&mut links));
                    break;
                }
            }
        }
        self.changed |= !links.is_empty();
        links
    }

    /// Detaches links on the detacher thread (here when it is gone);
    /// `file`: nothing attaches to it until they are gone.
    pub fn detach(&mut self, ebpf: &mut Ebpf, file: Option<FileId>, links: Vec<Link>) {
        if links.is_empty() {
            return;
        }
        self.changed = true;
        let mut owned = Vec::new();
        for (program, link) in links {
            if let Some(p) = ebpf.program_mut(program).and_then(|p| <&mut UProbe>::try_from(p).ok()) {
                owned.extend(p.take_link(link).ok());
            }
        }
        if let Some(id) = file {
            self.detaching.insert(id);
        }
        match &self.detacher {
            Some(tx) => {
                if let Err(back) = tx.send((file, owned)) {
                    drop(back.0); // the thread is gone: detach here after all
                    if let Some(id) = file {
                        self.detaching.remove(&id);
                    }
                }
            }
            None => {
                drop(owned);
                if let Some(id) = file {
                    self.detaching.remove(&id);
                }
            }
        }
    }

    /// Probes a file for one process, through `via` (the file itself,
    /// reached through /proc).
    pub fn attach_scoped(&mut self, ebpf: &mut Ebpf, at: ScopedAt<'_>, target: &Target) {
        let ScopedAt {
            pid,
            id,
            via,
            seen_as,
            kind,
        } = at;
        if self.scoped.get(&pid).is_some_and(|s| s.files.contains_key(&id)) || self.detaching(&id) {
            return;
        }
        let Some(nz) = NonZeroU32::new(pid) else { return };
        // A pinned executable has probes for every process already.
        let started = std::time::Instant::now();
        let links = if self.pinned.contains_key(&id) || self.global.contains_key(&id) {
            Vec::new()
        } else {
            self.attach(ebpf, target, via, UProbeScope::OneProcess(nz))
        };
        if !links.is_empty() {
            tracing::info!(
                pid,
                path = seen_as,
                library = target.library.as_str(),
                version = target.detail.as_deref(),
                ms = started.elapsed().as_millis() as u64,
                "hooked TLS for this process"
            );
        }
        let scoped = self.scoped.entry(pid).or_default();
        scoped.files.insert(id, (seen_as.to_string(), kind));
        scoped
            .links
            .extend(links.into_iter().map(|(program, link)| (id, program, link)));
    }

    /// Probes a file for every process (pinned program or host-wide
    /// library), through the descriptor it was inspected through; the
    /// per-process probes on it go. Returns whether probes were attached.
    pub fn attach_everywhere(
        &mut self,
        ebpf: &mut Ebpf,
        id: FileId,
        target: &Target,
        fd: Arc<OwnedFd>,
        stamp: Stamp,
        seen_as: &str,
    ) -> Option<OnFile> {
        if self.detaching(&id) {
            return None;
        }
        let links = self.attach(ebpf, target, &fd_path(&fd), UProbeScope::AllProcesses);
        if links.is_empty() {
            return None;
        }
        // While both exist, a call is seen twice at entry and return (the
        // second entry overwrites the first, the second return finds
        // nothing): the per-process probes on it go.
        let mut old = Vec::new();
        for scoped in self.scoped.values_mut() {
            let (on_file, rest): (Vec<_>, Vec<_>) = scoped.links.drain(..).partition(|(f, _, _)| *f == id);
            scoped.links = rest;
            old.extend(on_file.into_iter().map(|(_, program, link)| (program, link)));
        }
        self.detach(ebpf, None, old);
        Some(OnFile {
            links,
            fd,
            stamp,
            seen_as: seen_as.to_string(),
        })
    }

    /// A process ended: its probes go. Returns its files.
    pub fn drop_process(&mut self, ebpf: &mut Ebpf, pid: u32) -> Option<Scoped> {
        let mut scoped = self.scoped.remove(&pid)?;
        let links = std::mem::take(&mut scoped.links)
            .into_iter()
            .map(|(_, program, link)| (program, link))
            .collect();
        self.detach(ebpf, None, links);
        Some(scoped)
    }

    /// A file changed on disk: the probes on it for every process go
    /// (nothing attaches to it until they are gone); tracked processes
    /// running it as a program, without probes of their own on it, forget
    /// it (their next rescan reads it again). Returns whether any went.
    pub fn file_changed(&mut self, ebpf: &mut Ebpf, id: FileId) -> bool {
        let mut links = Vec::new();
        if let Some(p) = self.pinned.remove(&id) {
            links.extend(p.on.links);
        }
        if let Some(g) = self.global.remove(&id) {
            links.extend(g.links);
        }
        for s in self.scoped.values_mut() {
            if !s.links.iter().any(|(f, _, _)| *f == id) {
                s.files.remove(&id);
            }
        }
        let any = !links.is_empty();
        self.detach(ebpf, Some(id), links);
        any
    }

    /// Files with probes.
    pub fn hooked(&self) -> HashSet<FileId> {
        let mut files: HashSet<FileId> = self.global.keys().copied().collect();
        files.extend(self.pinned.keys().copied());
        for s in self.scoped.values() {
            files.extend(s.links.iter().map(|(id, _, _)| *id));
        }
        files
    }

    /// Tracked processes with probes of their own.
    pub fn hooked_processes(&self) -> usize {
        self.scoped.values().filter(|s| !s.links.is_empty()).count()
    }
}

/// The path of a file as a process sees it, reached from the agent.
pub fn through_root(pid: u32, seen_as: &str) -> PathBuf {
    Path::new("/proc")
        .join(pid.to_string())
        .join("root")
        .join(seen_as.trim_start_matches('/'))
}
