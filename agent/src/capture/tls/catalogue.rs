//! The file catalogue: what each file processes map or run carries (a TLS
//! library mcptap probes, one it cannot probe, nothing), learnt once per
//! content by the [`inspect`](super::inspect) workers, and the uses that
//! wait for a file's answer.
//!
//! The capture thread asks ([`Catalogue::lookup`]); a file known and
//! checked lately is answered at once, any other is queued for a worker
//! and its use kept until the answer comes back ([`Catalogue::take_ready`]).
//! A file refused (not a regular file, another inode than mapped, too
//! large, given up after its budget) is not asked about again for
//! [`REFUSED_TTL`], so a hostile file costs one worker once, not one per
//! rescan. Files probed for every process are watched for a rewrite in
//! place by a thread of their own ([`RewriteWatch`]), by `fstat` on the
//! descriptor they were inspected through.

use std::{
    collections::{HashMap, HashSet},
    os::fd::OwnedFd,
    path::PathBuf,
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use super::{
    inspect::{self, Done, FileId, Inspector, Job, JobKey, Opened, Outcome, Source, Stamp},
    target::{FileKind, Finding, Profile, Program, Target},
};

/// A file checked this recently is used without asking again (a rewrite in
/// place within this window is caught by the next check).
const FRESH: Duration = Duration::from_secs(1);

/// How long a refused file is not looked at again.
const REFUSED_TTL: Duration = Duration::from_secs(600);

/// Files remembered at most (the least recently checked go first).
const MAX_KNOWN: usize = 4096;

/// How often files probed for every process are checked for a rewrite.
const REWRITE_CHECK: Duration = Duration::from_millis(10);

/// What a file carries, as read when its stamp was this: it holds while the
/// stamp does.
#[derive(Clone)]
pub struct Known {
    pub stamp: Stamp,
    /// `None` when not probed (no TLS library mcptap knows, or one it
    /// cannot probe safely).
    pub target: Option<Target>,
    /// What it is as a program (executables).
    pub program: Program,
    checked: Instant,
}

/// Where a file is used, once its answer is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Use {
    /// Probe it for this process (its TLS library or its program), seen
    /// there as `seen_as`; `via` reaches the very file through /proc.
    Scoped {
        pid: u32,
        seen_as: String,
        kind: FileKind,
        via: PathBuf,
    },
    /// Probe it for every process (host-wide); `seen`: the process it was
    /// found in and the path it has there.
    Global { seen: Option<(u32, String)> },
    /// Process `pid` is about to run it: the exec gate waits for the
    /// answer (`ticket`), whatever it is.
    Exec { ticket: u64, pid: u32 },
}

/// The answer for a file a process is about to run (a [`Use::Exec`]).
pub struct ExecReady {
    pub ticket: u64,
    pub pid: u32,
    pub id: FileId,
    /// `None`: not probed (nothing known, or not read: refused).
    pub target: Option<Target>,
    pub program: Program,
    pub opened: Option<Opened>,
}

/// What came back from the workers since the last look.
#[derive(Default)]
pub struct Answers {
    /// Uses now ready (their file carries a target).
    pub ready: Vec<Ready>,
    /// Files found changed on disk (what was probed in them is at the old
    /// content's offsets).
    pub changed: Vec<Changed>,
    /// Files processes are about to run, whatever they carry.
    pub execs: Vec<ExecReady>,
}

/// A use whose file is known: its target and how to reach the file.
pub struct Ready {
    pub id: FileId,
    pub target: Target,
    /// The inspected file (present when the answer just came from a
    /// worker; else reach it through the use's `via`).
    pub opened: Option<Opened>,
    pub use_: Use,
}

/// A file's content changed on disk (same device and inode).
pub struct Changed {
    pub id: FileId,
}

/// The answer to a lookup.
pub enum Lookup {
    /// Known: here it is (`None`: nothing mcptap probes in it).
    Known(Option<Target>),
    /// Asked; the use comes back through `take_ready`.
    Asked,
    /// Refused lately, or the queue is full: nothing to do.
    Refused,
}

pub struct Catalogue {
    known: HashMap<FileId, Known>,
    /// Uses waiting for a job's answer.
    waiting: HashMap<JobKey, Vec<Use>>,
    refused: HashMap<JobKey, Instant>,
    inspector: Inspector,
    /// Files recognised but not probed, by reason (each file once).
    pub unsupported: HashMap<&'static str, u64>,
    /// Reported once each (files found unsupported or refused).
    reported: HashSet<FileId>,
    /// A file was found unsupported since `take_changed`.
    changed: bool,
    watch: RewriteWatch,
}

impl Catalogue {
    pub fn new(proc_root: PathBuf) -> Catalogue {
        Catalogue {
            known: HashMap::new(),
            waiting: HashMap::new(),
            refused: HashMap::new(),
            inspector: Inspector::new(proc_root),
            unsupported: HashMap::new(),
            reported: HashSet::new(),
            changed: false,
            watch: RewriteWatch::start(),
        }
    }

    /// What wakes the capture loop when an answer is ready.
    pub fn wake(&self) -> Arc<tokio::sync::Notify> {
        self.inspector.wake.clone()
    }

    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// What the file reached by `source` carries, if known and checked
    /// lately; otherwise a worker is asked and `use_` waits for its answer.
    pub fn lookup(&mut self, source: Source, kind: FileKind, use_: Use) -> Lookup {
        self.find(source, kind, use_, true)
    }

    /// What a file a process is about to run is, when known and checked
    /// lately (`Some`); otherwise a worker is asked and the answer comes
    /// back in [`Answers::execs`] (`None`; refused files too).
    pub fn lookup_exec(&mut self, source: Source, ticket: u64, pid: u32) -> Option<(Option<Target>, Program)> {
        // The held file is the one about to run: what is known of it holds
        // only for the same content (a rewrite in place keeps the inode).
        let now = match &source {
            Source::Held { fd, .. } => inspect::stamp_now(&fd.0),
            _ => None,
        };
        if let JobKey::File(id) = source.key()
            && let Some(k) = self.known.get(&id)
            && (now == Some(k.stamp) || (now.is_none() && k.checked.elapsed() < FRESH))
        {
            return Some((k.target.clone(), k.program));
        }
        match self.find(source, FileKind::Executable, Use::Exec { ticket, pid }, false) {
            Lookup::Asked => None,
            // Refused lately, or no room in the queue: nothing known.
            Lookup::Refused | Lookup::Known(_) => Some((None, Program::Plain)),
        }
    }

    /// As [`Catalogue::lookup`] whatever is known: a worker opens the file
    /// (probing it for every process needs the descriptor it opens).
    pub fn ask(&mut self, source: Source, kind: FileKind, use_: Use) -> Lookup {
        self.find(source, kind, use_, false)
    }

    fn find(&mut self, source: Source, kind: FileKind, use_: Use, known_will_do: bool) -> Lookup {
        let key = source.key();
        if known_will_do
            && let JobKey::File(id) = &key
            && let Some(k) = self.known.get(id)
            && k.checked.elapsed() < FRESH
        {
            return Lookup::Known(k.target.clone());
        }
        if self.refused.get(&key).is_some_and(|t| t.elapsed() < REFUSED_TTL) {
            return Lookup::Refused;
        }
        if let Some(uses) = self.waiting.get_mut(&key) {
            if !uses.contains(&use_) {
                uses.push(use_);
            }
            return Lookup::Asked;
        }
        let unless = match &key {
            JobKey::File(id) => self.known.get(id).map(|k| k.stamp),
            JobKey::Path(_) => None,
        };
        if !self.inspector.submit(Job { source, kind, unless }) {
            return Lookup::Refused;
        }
        self.waiting.insert(key, vec![use_]);
        Lookup::Asked
    }

    /// Whether answers are still awaited.
    pub fn busy(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// What is known of a file, however old.
    pub fn target(&self, id: &FileId) -> Option<&Target> {
        self.known.get(id)?.target.as_ref()
    }

    /// Answers that came back since the last call.
    pub fn take_ready(&mut self) -> Answers {
        self.inspector.supervise();
        let mut out = Answers {
            changed: self.watch.take_changed().into_iter().map(|id| Changed { id }).collect(),
            ..Answers::default()
        };
        for done in self.inspector.take_done() {
            let Done { job, result } = done;
            let key = job.source.key();
            let uses = self.waiting.remove(&key).unwrap_or_default();
            let shown = shown(&job.source, &uses);
            let (uses, execs): (Vec<Use>, Vec<Use>) = uses.into_iter().partition(|u| !matches!(u, Use::Exec { .. }));
            let exec_answer = |id: FileId, target: Option<Target>, program: Program, opened: Option<Opened>| {
                execs.iter().filter_map(move |u| match u {
                    Use::Exec { ticket, pid } => Some(ExecReady {
                        ticket: *ticket,
                        pid: *pid,
                        id,
                        target: target.clone(),
                        program,
                        opened: opened.clone(),
                    }),
                    _ => None,
                })
            };
            match result {
                Ok((opened, outcome)) => {
                    let ids: Vec<FileId> = match &key {
                        JobKey::File(id) if *id != opened.id => vec![*id, opened.id],
                        _ => vec![opened.id],
                    };
                    let (target, program) = match outcome {
                        Outcome::Unchanged => {
                            for id in &ids {
                                if let Some(k) = self.known.get_mut(id) {
                                    k.checked = Instant::now();
                                }
                            }
                            self.known
                                .get(&ids[0])
                                .map(|k| (k.target.clone(), k.program))
                                .unwrap_or((None, Program::Plain))
                        }
                        Outcome::Read(Profile { finding, program }) => {
                            if ids
                                .iter()
                                .any(|id| self.known.get(id).is_some_and(|k| k.stamp != opened.stamp))
                            {
                                out.changed.extend(ids.iter().map(|&id| Changed { id }));
                            }
                            let target = self.learn(&shown, &opened, finding);
                            for &id in &ids {
                                self.remember(
                                    id,
                                    Known {
                                        stamp: opened.stamp,
                                        target: target.clone(),
                                        program,
                                        checked: Instant::now(),
                                    },
                                );
                            }
                            (target, program)
                        }
                    };
                    out.execs
                        .extend(exec_answer(ids[0], target.clone(), program, Some(opened.clone())));
                    if let Some(target) = target {
                        out.ready.extend(uses.into_iter().map(|use_| Ready {
                            id: ids[0],
                            target: target.clone(),
                            opened: Some(opened.clone()),
                            use_,
                        }));
                    }
                }
                Err(refused) => {
                    let id = match &key {
                        JobKey::File(id) => Some(*id),
                        JobKey::Path(_) => None,
                    };
                    out.execs
                        .extend(exec_answer(id.unwrap_or_default(), None, Program::Plain, None));
                    if let Some(reason) = refused.reason() {
                        self.refused.insert(key.clone(), Instant::now());
                        if id.is_none_or(|id| self.reported.insert(id)) {
                            *self.unsupported.entry(reason).or_default() += 1;
                            self.changed = true;
                            tracing::warn!(path = shown, reason, "TLS not captured: file not looked at: {refused}");
                        }
                    }
                    self.bound_refused();
                }
            }
        }
        out
    }

    /// A finding becomes a target, or is reported once.
    fn learn(&mut self, shown: &str, opened: &Opened, finding: Finding) -> Option<Target> {
        match finding {
            Finding::Tls(t) => Some(t),
            Finding::Nothing => None,
            Finding::Unsupported(u) => {
                if self.reported.insert(opened.id) {
                    *self.unsupported.entry(u.reason).or_default() += 1;
                    self.changed = true;
                    tracing::warn!(path = shown, reason = u.reason, "TLS not captured: {}", u.message);
                }
                None
            }
        }
    }

    fn remember(&mut self, id: FileId, known: Known) {
        if self.known.len() >= MAX_KNOWN
            && !self.known.contains_key(&id)
            && let Some(oldest) = self.known.iter().min_by_key(|(_, k)| k.checked).map(|(id, _)| *id)
        {
            self.known.remove(&oldest);
        }
        self.known.insert(id, known);
    }

    fn bound_refused(&mut self) {
        if self.refused.len() > MAX_KNOWN {
            self.refused.retain(|_, t| t.elapsed() < REFUSED_TTL);
        }
        if self.reported.len() > MAX_KNOWN {
            self.reported.clear();
        }
    }

    /// A TLS library whose kernel programs this kernel refused: reported
    /// once per file.
    pub fn report_disabled(&mut self, id: FileId, library: super::target::Library) {
        if self.reported.insert(id) {
            *self.unsupported.entry("kernel_refused_programs").or_default() += 1;
            self.changed = true;
            tracing::warn!(
                library = library.as_str(),
                "TLS not captured: this kernel refused the programs for this library"
            );
        }
    }

    /// The file changed on disk: what was learnt from it goes.
    pub fn forget(&mut self, id: &FileId) {
        self.known.remove(id);
    }

    /// Watch a file probed for every process for a rewrite in place.
    pub fn watch(&mut self, id: FileId, fd: Arc<OwnedFd>, stamp: Stamp) {
        self.watch.add(id, fd, stamp);
    }

    pub fn unwatch(&mut self, id: &FileId) {
        self.watch.remove(id);
    }

    pub fn counts(&self) -> inspect::InspectCounts {
        self.inspector.counts()
    }

    /// Entries of its tables (`mcptap_table_entries`).
    pub fn sizes(&self) -> [(&'static str, usize); 3] {
        [
            ("tls_files", self.known.len()),
            ("tls_files_waiting", self.waiting.len()),
            ("tls_files_refused", self.refused.len()),
        ]
    }
}

/// A file's name for the log: its path as the process that uses it sees it.
fn shown(source: &Source, uses: &[Use]) -> String {
    uses.iter()
        .find_map(|u| match u {
            Use::Scoped { seen_as, .. } => Some(seen_as.clone()),
            Use::Global { seen } => seen.as_ref().map(|(_, p)| p.clone()),
            Use::Exec { .. } => None,
        })
        .unwrap_or_else(|| {
            let path = source.path(std::path::Path::new("/proc"));
            // A held file: its path (the descriptor's link), not the link.
            match source {
                Source::Held { .. } => std::fs::read_link(&path).unwrap_or(path),
                _ => path,
            }
            .display()
            .to_string()
        })
}

/// Files probed for every process, checked for a rewrite in place every
/// [`REWRITE_CHECK`] by a thread of its own (an `fstat` of a file on a
/// FUSE filesystem waits for its daemon: never on the capture thread).
/// Watched files: the descriptor each was inspected through, its stamp then.
type Watched = Arc<Mutex<HashMap<FileId, (Arc<OwnedFd>, Stamp)>>>;

struct RewriteWatch {
    files: Watched,
    changed: mpsc::Receiver<FileId>,
}

impl RewriteWatch {
    fn start() -> RewriteWatch {
        let files: Watched = Arc::default();
        let (tx, changed) = mpsc::channel();
        let watched = Arc::downgrade(&files);
        let _ = std::thread::Builder::new().name("rewrite-watch".into()).spawn(move || {
            while let Some(files) = watched.upgrade() {
                let now: Vec<(FileId, Arc<OwnedFd>, Stamp)> = match files.lock() {
                    Ok(f) => f.iter().map(|(id, (fd, s))| (*id, fd.clone(), *s)).collect(),
                    Err(_) => return,
                };
                drop(files);
                for (id, fd, stamp) in now {
                    if inspect::stamp_now(&fd).is_some_and(|s| s != stamp) && tx.send(id).is_err() {
                        return;
                    }
                }
                std::thread::sleep(REWRITE_CHECK);
            }
        });
        RewriteWatch { files, changed }
    }

    fn add(&mut self, id: FileId, fd: Arc<OwnedFd>, stamp: Stamp) {
        if let Ok(mut f) = self.files.lock() {
            f.insert(id, (fd, stamp));
        }
    }

    fn remove(&mut self, id: &FileId) {
        if let Ok(mut f) = self.files.lock() {
            f.remove(id);
        }
    }

    /// Files found changed (each reported once: it is unwatched here).
    fn take_changed(&mut self) -> Vec<FileId> {
        let ids: Vec<FileId> = self.changed.try_iter().collect::<HashSet<_>>().into_iter().collect();
        for id in &ids {
            self.remove(id);
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn wait_ready(c: &mut Catalogue) -> (Vec<Ready>, Vec<Changed>) {
        let started = Instant::now();
        loop {
            let Answers {
                ready: r, changed: ch, ..
            } = c.take_ready();
            if !r.is_empty() || !ch.is_empty() || started.elapsed() > Duration::from_secs(10) {
                return (r, ch);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_fifo_is_refused_once_and_not_asked_about_again() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("libssl.so.3");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let mut cat = Catalogue::new("/proc".into());
        let source = Source::Path {
            path: fifo.clone(),
            only: None,
        };
        let use_ = Use::Global { seen: None };
        assert!(matches!(
            cat.lookup(source.clone(), FileKind::SharedLibrary, use_.clone()),
            Lookup::Asked
        ));
        let started = Instant::now();
        while cat.unsupported.is_empty() && started.elapsed() < Duration::from_secs(10) {
            assert!(cat.take_ready().ready.is_empty());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(cat.unsupported.get("not_a_regular_file"), Some(&1));
        assert!(matches!(
            cat.lookup(source, FileKind::SharedLibrary, use_),
            Lookup::Refused
        ));
    }

    #[test]
    fn a_rewrite_in_place_is_seen_by_the_watch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server");
        std::fs::write(&path, b"first build").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let meta = file.metadata().unwrap();
        let st = {
            use std::os::unix::fs::MetadataExt;
            Stamp {
                len: meta.len(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                ctime: (meta.ctime(), meta.ctime_nsec()),
            }
        };
        let mut cat = Catalogue::new(Path::new("/proc").into());
        cat.watch((1, 2), Arc::new(OwnedFd::from(file)), st);
        std::thread::sleep(Duration::from_millis(30));
        assert!(cat.take_ready().changed.is_empty(), "untouched");
        std::fs::write(&path, b"second build, longer").unwrap();
        let (_, changed) = wait_ready(&mut cat);
        assert_eq!(changed.iter().map(|c| c.id).collect::<Vec<_>>(), vec![(1, 2)]);
    }

    #[test]
    fn a_library_is_known_after_one_look() {
        let Some(lib) = [
            "/usr/lib/x86_64-linux-gnu/libssl.so.3",
            "/lib/x86_64-linux-gnu/libssl.so.3",
        ]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists()) else {
            return;
        };
        let mut cat = Catalogue::new("/proc".into());
        let source = Source::Path {
            path: lib.to_path_buf(),
            only: None,
        };
        let use_ = Use::Global { seen: None };
        assert!(matches!(
            cat.lookup(source, FileKind::SharedLibrary, use_.clone()),
            Lookup::Asked
        ));
        let (ready, _) = wait_ready(&mut cat);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].use_, use_);
        assert!(ready[0].opened.is_some());
        let id = ready[0].id;
        assert!(cat.target(&id).is_some());
    }
}
