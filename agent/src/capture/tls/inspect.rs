//! Looking at files that processes name, without letting them hurt the
//! agent.
//!
//! A file a process maps or runs is the process's choice: its user may
//! have crafted it, may truncate it while it is read, may have put a FIFO,
//! a device or somebody else's secret where its path points (in a mount
//! namespace of its own), or may serve it from a FUSE daemon that never
//! answers. So:
//!
//! - **What is opened is what the process maps.** A mapped file is reached
//!   through `/proc/PID/map_files/START-END`, an executable through
//!   `/proc/PID/exe`: magic links to the very file, whatever the mounts say
//!   at its path. Everything is first opened `O_PATH` (nothing of the file
//!   runs: no FIFO wait, no device open, no FUSE open), `fstat`ed, and
//!   refused unless it is a regular file with the inode the maps line
//!   names; only then is it opened for reading, through that `O_PATH`
//!   descriptor, non-blocking.
//! - **Never mapped where another user can truncate it** (a truncated
//!   mapping kills the reader with SIGBUS): a file is mapped only when root
//!   owns it, nobody else may write it, and it lives on a local disk
//!   filesystem; otherwise its bytes are copied with bounded `pread`s.
//!   Either way a file larger than [`MAX_FILE_BYTES`] is refused unread
//!   (one to be copied, larger than [`COPY_BUDGET`]), and one that changes
//!   while it is read is refused. Copies held at once by all workers
//!   together stay within [`COPY_BUDGET`].
//! - **Off the capture thread, with a time budget.** [`Inspector`] runs
//!   jobs on worker threads. A job that outlives [`BUDGET`] is given up
//!   (`inspection_timeout`) and its worker, stuck in the kernel on a
//!   hostile file, is replaced, up to [`MAX_WORKERS`]: a slow or hostile
//!   file delays only its own verdict, and the capture loop never waits
//!   for any of it.
//!
//! Attaching a probe takes a path, resolved by the kernel: the agent gives
//! it `/proc/self/fd/N` of the `O_PATH` descriptor it inspected (or the
//! process's `map_files` link), so the probe lands on the inode that was
//! read, never on what a path points to a moment later.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::FileExt},
    },
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use thiserror::Error;

use super::target::{self, FileKind, Profile};

/// Largest file looked at (a Bun-built program with its runtime is
/// 100-250 MB; a larger "library" is refused unread).
pub const MAX_FILE_BYTES: u64 = 512 << 20;

/// How long one file may take, opened, read and searched.
pub const BUDGET: Duration = Duration::from_secs(30);

/// Workers at most: one stuck on a hostile file is replaced, up to this.
pub const MAX_WORKERS: usize = 8;

/// Jobs waiting at most (more are dropped and counted; rescans retry).
const QUEUE: usize = 1024;

/// Bytes copied per `pread`.
const CHUNK: usize = 4 << 20;

/// Bytes of copies held at once by all workers together: a file that
/// cannot be mapped waits for room (within its budget), so that users
/// handing the agent big files of theirs cost it this much memory at most.
pub const COPY_BUDGET: u64 = 256 << 20;

/// Room left in [`COPY_BUDGET`].
static COPY_ROOM: (Mutex<u64>, std::sync::Condvar) = (Mutex::new(COPY_BUDGET), std::sync::Condvar::new());

/// A share of [`COPY_BUDGET`], given back on drop.
struct CopyShare(u64);

impl CopyShare {
    /// Waits (until `deadline`) for `bytes` of room.
    fn take(bytes: u64, deadline: Instant) -> Result<CopyShare, Refused> {
        let (lock, freed) = &COPY_ROOM;
        let mut room = lock.lock().map_err(|_| Refused::TimedOut)?;
        while *room < bytes {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Refused::TimedOut);
            }
            room = freed.wait_timeout(room, left).map_err(|_| Refused::TimedOut)?.0;
        }
        *room -= bytes;
        Ok(CopyShare(bytes))
    }
}

impl Drop for CopyShare {
    fn drop(&mut self) {
        let (lock, freed) = &COPY_ROOM;
        if let Ok(mut room) = lock.lock() {
            *room += self.0;
        }
        freed.notify_all();
    }
}

/// A file identity: device and inode.
pub type FileId = (u64, u64);

/// What tells one content of a file from another under the same device and
/// inode: a file rewritten in place (`cp` over it), or a new file given an
/// inode number freed since, has another size, modification or change time
/// (the change time cannot be set back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub len: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl Stamp {
    pub fn of(st: &libc::stat) -> Stamp {
        Stamp {
            len: st.st_size as u64,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }
}

/// Where the file a job looks at is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file a process maps: `/proc/PID/map_files/RANGE`, which must hold
    /// the maps line's inode (`id`: its device and inode).
    Mapped { pid: u32, range: String, id: FileId },
    /// A process's executable: `/proc/PID/exe`, the maps line's file `id`.
    Exe { pid: u32, id: FileId },
    /// A path in the agent's own view (the library directories), or seen
    /// through a process's root; `only`: the file must be this one (a file
    /// already inspected), else it is not read at all.
    Path { path: PathBuf, only: Option<FileId> },
    /// A file the agent holds open: the one a process is about to run,
    /// given by the exec gate (`/proc/self/fd/N`, which must be `id`).
    Held { fd: HeldFd, id: FileId },
}

/// A descriptor of the agent's, shared by the jobs that read its file (the
/// same descriptor is the same file).
#[derive(Debug, Clone)]
pub struct HeldFd(pub Arc<OwnedFd>);

impl PartialEq for HeldFd {
    fn eq(&self, other: &HeldFd) -> bool {
        self.0.as_raw_fd() == other.0.as_raw_fd()
    }
}

impl Eq for HeldFd {}

/// How a job is known while it runs: a file by its identity (as the maps
/// line names it), or a path (library directories, files a program used
/// last time).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobKey {
    File(FileId),
    Path(PathBuf),
}

impl Source {
    pub fn key(&self) -> JobKey {
        match self {
            Source::Mapped { id, .. } | Source::Exe { id, .. } | Source::Held { id, .. } => JobKey::File(*id),
            Source::Path { path, .. } => JobKey::Path(path.clone()),
        }
    }

    /// The path that reaches the file (through /proc for a process's).
    pub fn path(&self, proc_root: &Path) -> PathBuf {
        match self {
            Source::Mapped { pid, range, .. } => proc_root.join(pid.to_string()).join("map_files").join(range),
            Source::Exe { pid, .. } => proc_root.join(pid.to_string()).join("exe"),
            Source::Path { path, .. } => path.clone(),
            Source::Held { fd, .. } => fd_path(&fd.0),
        }
    }

    fn check(&self, st: &libc::stat) -> Result<(), Refused> {
        let found = (st.st_dev, st.st_ino);
        match self {
            // The inode only: btrfs subvolumes show another device to
            // stat than in the maps.
            Source::Mapped { id, .. } | Source::Exe { id, .. } if id.1 != st.st_ino => Err(Refused::Identity),
            Source::Path { only: Some(id), .. } | Source::Held { id, .. } if *id != found => Err(Refused::Identity),
            _ => Ok(()),
        }
    }
}

/// One file to look at.
#[derive(Debug, Clone)]
pub struct Job {
    pub source: Source,
    pub kind: FileKind,
    /// Its stamp when last read: if it still holds, nothing is read again.
    pub unless: Option<Stamp>,
}

/// The file as opened: an `O_PATH` descriptor on it (to attach probes
/// through `/proc/self/fd/N`, and to notice a rewrite in place).
#[derive(Debug, Clone)]
pub struct Opened {
    pub id: FileId,
    pub stamp: Stamp,
    pub fd: Arc<OwnedFd>,
}

impl Opened {
    /// The path that reaches this very file (the kernel follows the link).
    pub fn attach_path(&self) -> PathBuf {
        fd_path(&self.fd)
    }
}

/// The path of one of the agent's descriptors.
pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// What a job found.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Its stamp is the one given: nothing read.
    Unchanged,
    Read(Profile),
}

/// A finished job.
#[derive(Debug)]
pub struct Done {
    pub job: Job,
    pub result: Result<(Opened, Outcome), Refused>,
}

/// Why a file was not looked at.
#[derive(Debug, Error)]
pub enum Refused {
    /// The process or the file is gone (not worth reporting).
    #[error("cannot open it: {0}")]
    Gone(#[source] io::Error),
    #[error("it is not a regular file ({0})")]
    NotRegular(&'static str),
    #[error("it is not the file the process maps (another inode at that path)")]
    Identity,
    #[error("{0} bytes: larger than mcptap reads ({max} MiB; {copy} MiB for a file another user could truncate, which is copied)", max = MAX_FILE_BYTES >> 20, copy = COPY_BUDGET >> 20)]
    TooLarge(u64),
    #[error("reading it failed: {0}")]
    Read(#[source] io::Error),
    #[error("it changed while it was read")]
    Changed,
    #[error("reading and searching it took longer than {} s", BUDGET.as_secs())]
    TimedOut,
    #[error("too many files wait to be looked at")]
    QueueFull,
}

impl Refused {
    /// The `mcptap_tls_unsupported_binaries{reason}` label, `None` when
    /// not worth reporting (the file or its process went away).
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Refused::Gone(_) => None,
            Refused::NotRegular(_) => Some("not_a_regular_file"),
            Refused::Identity => Some("not_the_mapped_file"),
            Refused::TooLarge(_) => Some("too_large"),
            Refused::Read(_) | Refused::Changed => Some("unreadable"),
            Refused::TimedOut => Some("inspection_timeout"),
            Refused::QueueFull => Some("inspection_queue_full"),
        }
    }
}

/// Opens a file `O_PATH` (nothing of it runs) and checks it.
fn open_path(path: &Path, source: &Source) -> Result<(OwnedFd, libc::stat), Refused> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| Refused::Gone(io::Error::other(e)))?;
    // SAFETY: a valid NUL-terminated path; the result is checked.
    let raw = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(Refused::Gone(io::Error::last_os_error()));
    }
    // SAFETY: a descriptor we just opened and own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let st = fstat(&fd).map_err(Refused::Gone)?;
    let kind = st.st_mode & libc::S_IFMT;
    if kind != libc::S_IFREG {
        return Err(Refused::NotRegular(match kind {
            libc::S_IFIFO => "a FIFO",
            libc::S_IFCHR => "a character device",
            libc::S_IFBLK => "a block device",
            libc::S_IFSOCK => "a socket",
            libc::S_IFDIR => "a directory",
            _ => "a special file",
        }));
    }
    source.check(&st)?;
    Ok((fd, st))
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: `stat` is plain data; fstat fills it or fails.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a valid pointer to a local.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// The stamp of an opened file now (a rewrite in place shows here).
pub fn stamp_now(fd: &OwnedFd) -> Option<Stamp> {
    fstat(fd).ok().map(|st| Stamp::of(&st))
}

/// Reopens an `O_PATH` descriptor for reading, without blocking on it.
fn reopen(fd: &OwnedFd) -> Result<File, Refused> {
    let path = CString::new(fd_path(fd).as_os_str().as_bytes()).map_err(|e| Refused::Gone(io::Error::other(e)))?;
    // SAFETY: a valid NUL-terminated path; the result is checked.
    let raw = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK,
        )
    };
    if raw < 0 {
        return Err(Refused::Gone(io::Error::last_os_error()));
    }
    // SAFETY: a descriptor we just opened and own.
    Ok(unsafe { File::from_raw_fd(raw) })
}

/// Filesystems whose files only root can change under us once root owns
/// them (no FUSE daemon, no remote server behind them).
const LOCAL_FILESYSTEMS: &[i64] = &[
    0xEF53,      // ext2/3/4
    0x5846_5342, // xfs
    0x9123_683E, // btrfs
    0x0102_1994, // tmpfs
    0x794C_7630, // overlayfs
    0x7371_7368, // squashfs
    0xE0F5_E1E2, // erofs
    0xF2F5_2010, // f2fs
    0x2FC1_2FC1, // zfs
    0x8584_58F6, // ramfs
];

fn filesystem(file: &File) -> Option<i64> {
    // SAFETY: `statfs` is plain data; fstatfs fills it or fails.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a valid pointer to a local.
    (unsafe { libc::fstatfs(file.as_raw_fd(), &mut s) } == 0).then_some(s.f_type as i64)
}

/// Whether nobody but root can truncate the file under a mapping.
fn safe_to_map(st: &libc::stat, fs: Option<i64>) -> bool {
    st.st_uid == 0 && st.st_mode & 0o022 == 0 && fs.is_some_and(|f| LOCAL_FILESYSTEMS.contains(&f))
}

/// A file's bytes: mapped when nobody else can truncate it, else copied
/// (within the workers' shared [`COPY_BUDGET`]).
pub enum Image {
    Mapped(memmap2::Mmap),
    #[allow(private_interfaces)]
    Copied(Vec<u8>, CopyShare),
}

impl std::ops::Deref for Image {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Image::Mapped(m) => m,
            Image::Copied(v, _) => v,
        }
    }
}

/// Reads an opened regular file whole, within `deadline`.
fn image(file: &File, st: &libc::stat, deadline: Instant) -> Result<Image, Refused> {
    let len = st.st_size.max(0) as u64;
    if len > MAX_FILE_BYTES {
        return Err(Refused::TooLarge(len));
    }
    if safe_to_map(st, filesystem(file)) {
        // SAFETY: root owns the file, nobody else may write it, and it is on
        // a local filesystem: only root could truncate it under the mapping.
        if let Ok(map) = unsafe { memmap2::Mmap::map(file) } {
            return Ok(Image::Mapped(map));
        }
    }
    // Larger than all copies may take together: it would wait for ever.
    if len > COPY_BUDGET {
        return Err(Refused::TooLarge(len));
    }
    let share = CopyShare::take(len, deadline)?;
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(len as usize)
        .map_err(|e| Refused::Read(io::Error::other(e)))?;
    let mut buf = vec![0u8; CHUNK.min(len as usize).max(1)];
    while (bytes.len() as u64) < len {
        if Instant::now() >= deadline {
            return Err(Refused::TimedOut);
        }
        let want = buf.len().min((len - bytes.len() as u64) as usize);
        match file.read_at(&mut buf[..want], bytes.len() as u64) {
            Ok(0) => return Err(Refused::Changed), // truncated meanwhile
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(Refused::Read(e)),
            Err(e) => return Err(Refused::Read(e)),
        }
    }
    Ok(Image::Copied(bytes, share))
}

/// Runs one job here and now (the workers, and `mcptap tls-info`).
pub fn inspect(job: &Job, proc_root: &Path, deadline: Instant) -> Result<(Opened, Outcome), Refused> {
    let (fd, st) = open_path(&job.source.path(proc_root), &job.source)?;
    let opened = Opened {
        id: (st.st_dev, st.st_ino),
        stamp: Stamp::of(&st),
        fd: Arc::new(fd),
    };
    if job.unless == Some(opened.stamp) {
        return Ok((opened, Outcome::Unchanged));
    }
    let file = reopen(&opened.fd)?;
    let data = image(&file, &st, deadline)?;
    let profile = target::profile_bytes(&data, job.kind);
    if Instant::now() >= deadline {
        return Err(Refused::TimedOut);
    }
    // Rewritten while it was read: what was read is not the file.
    if stamp_now(&opened.fd) != Some(opened.stamp) {
        return Err(Refused::Changed);
    }
    Ok((opened, Outcome::Read(profile)))
}

/// Figures for `mcptap_file_inspections_total{outcome}` and the gauge of
/// stuck workers.
#[derive(Debug, Default, Clone, Copy)]
pub struct InspectCounts {
    /// Files read and searched.
    pub read: u64,
    /// Files whose stamp had not changed (nothing read).
    pub unchanged: u64,
    /// Refused (not regular, another inode, too large, unreadable...).
    pub refused: u64,
    /// Given up after [`BUDGET`].
    pub timed_out: u64,
    /// Dropped: the queue was full.
    pub dropped: u64,
    /// Workers stuck past their budget right now.
    pub stuck: u64,
}

/// What one worker is doing.
#[derive(Default)]
struct Busy {
    /// The job and when it started; `None` when idle.
    job: Option<(Job, Instant)>,
    /// Its job was given up: what it finds is dropped.
    given_up: bool,
}

struct Worker {
    busy: Mutex<Busy>,
}

/// Jobs run on worker threads; results come back through [`Inspector::take_done`],
/// and `wake` is notified when one is ready.
pub struct Inspector {
    jobs: mpsc::SyncSender<Job>,
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    done_tx: mpsc::Sender<Done>,
    done: mpsc::Receiver<Done>,
    workers: Vec<Arc<Worker>>,
    proc_root: PathBuf,
    pub wake: Arc<tokio::sync::Notify>,
    counts: InspectCounts,
    queued: Arc<AtomicU64>,
}

impl Inspector {
    pub fn new(proc_root: PathBuf) -> Inspector {
        let (jobs, queue) = mpsc::sync_channel(QUEUE);
        let (done_tx, done) = mpsc::channel();
        let mut inspector = Inspector {
            jobs,
            queue: Arc::new(Mutex::new(queue)),
            done_tx,
            done,
            workers: Vec::new(),
            proc_root,
            wake: Arc::new(tokio::sync::Notify::new()),
            counts: InspectCounts::default(),
            queued: Arc::new(AtomicU64::new(0)),
        };
        inspector.spawn();
        inspector
    }

    fn spawn(&mut self) {
        let worker = Arc::new(Worker {
            busy: Mutex::new(Busy::default()),
        });
        let (queue, done, wake, me) = (
            self.queue.clone(),
            self.done_tx.clone(),
            self.wake.clone(),
            worker.clone(),
        );
        let (proc_root, queued) = (self.proc_root.clone(), self.queued.clone());
        let spawned = std::thread::Builder::new()
            .name("file-inspector".into())
            .spawn(move || {
                loop {
                    let job = {
                        let Ok(rx) = queue.lock() else { return };
                        match rx.recv() {
                            Ok(job) => job,
                            Err(_) => return, // the agent stops
                        }
                    };
                    queued.fetch_sub(1, Ordering::Relaxed);
                    let started = Instant::now();
                    if let Ok(mut b) = me.busy.lock() {
                        *b = Busy {
                            job: Some((job.clone(), started)),
                            given_up: false,
                        };
                    }
                    let result = inspect(&job, &proc_root, started + BUDGET);
                    let given_up = me.busy.lock().map(|mut b| std::mem::take(&mut *b).given_up);
                    if matches!(given_up, Ok(true)) {
                        continue; // reported as timed out already
                    }
                    if done.send(Done { job, result }).is_err() {
                        return;
                    }
                    wake.notify_one();
                }
            });
        if spawned.is_ok() {
            self.workers.push(worker);
        } else {
            tracing::warn!("cannot start a file inspector thread");
        }
    }

    /// Queues a job; a full queue drops it (counted: the process is looked
    /// at again at its next rescan).
    pub fn submit(&mut self, job: Job) -> bool {
        self.supervise();
        match self.jobs.try_send(job) {
            Ok(()) => {
                self.queued.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.counts.dropped += 1;
                false
            }
        }
    }

    /// Jobs waiting for a worker.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Gives up jobs past their budget (reported as `TimedOut`) and starts
    /// a worker in place of each stuck one, up to [`MAX_WORKERS`].
    pub fn supervise(&mut self) {
        let now = Instant::now();
        let mut stuck = 0;
        for w in &self.workers {
            let Ok(mut b) = w.busy.lock() else { continue };
            let over = b.job.as_ref().is_some_and(|(_, at)| now.duration_since(*at) >= BUDGET);
            if !over {
                continue;
            }
            stuck += 1;
            if !b.given_up {
                b.given_up = true;
                if let Some((job, _)) = b.job.clone() {
                    tracing::warn!(source = ?job.source, "a file took longer than its budget to read: given up");
                    self.counts.timed_out += 1;
                    let _ = self.done_tx.send(Done {
                        job,
                        result: Err(Refused::TimedOut),
                    });
                    self.wake.notify_one();
                }
            }
        }
        self.counts.stuck = stuck;
        let idle_or_working = self.workers.len() - stuck as usize;
        if idle_or_working == 0 && self.workers.len() < MAX_WORKERS {
            self.spawn();
        }
    }

    /// Finished jobs.
    pub fn take_done(&mut self) -> Vec<Done> {
        let done: Vec<Done> = self.done.try_iter().collect();
        for d in &done {
            match &d.result {
                Ok((_, Outcome::Unchanged)) => self.counts.unchanged += 1,
                Ok((_, Outcome::Read(_))) => self.counts.read += 1,
                Err(Refused::TimedOut) => {}
                Err(_) => self.counts.refused += 1,
            }
        }
        done
    }

    pub fn counts(&self) -> InspectCounts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::tls::target::Finding;
    use std::os::unix::fs::PermissionsExt;

    fn path_job(path: &Path) -> Job {
        Job {
            source: Source::Path {
                path: path.to_path_buf(),
                only: None,
            },
            kind: FileKind::SharedLibrary,
            unless: None,
        }
    }

    fn run(job: &Job) -> Result<(Opened, Outcome), Refused> {
        inspect(job, Path::new("/proc"), Instant::now() + BUDGET)
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("libssl.so.3");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let started = Instant::now();
        let r = run(&path_job(&fifo));
        assert!(matches!(r, Err(Refused::NotRegular("a FIFO"))), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn devices_and_directories_are_refused() {
        assert!(matches!(
            run(&path_job(Path::new("/dev/null"))),
            Err(Refused::NotRegular("a character device"))
        ));
        assert!(matches!(
            run(&path_job(Path::new("/tmp"))),
            Err(Refused::NotRegular("a directory"))
        ));
    }

    #[test]
    fn another_inode_than_expected_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("libssl.so.3");
        std::fs::write(&path, b"\x7fELF").unwrap();
        let job = Job {
            source: Source::Path {
                path: path.clone(),
                only: Some((1, 2)),
            },
            kind: FileKind::SharedLibrary,
            unless: None,
        };
        assert!(matches!(run(&job), Err(Refused::Identity)));
    }

    #[test]
    fn a_huge_sparse_file_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("libssl.so.9");
        let f = File::create(&path).unwrap();
        f.set_len(20 << 30).unwrap();
        let started = Instant::now();
        assert!(matches!(run(&path_job(&path)), Err(Refused::TooLarge(_))));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_file_another_user_could_truncate_is_copied_not_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lib.so");
        std::fs::write(&path, vec![7u8; 10_000]).unwrap();
        let file = File::open(&path).unwrap();
        let mut st = fstat(&OwnedFd::from(file.try_clone().unwrap())).unwrap();
        // Root's and read-only for others: mapped (on a local filesystem).
        st.st_uid = 0;
        st.st_mode = libc::S_IFREG | 0o755;
        assert!(safe_to_map(&st, Some(0xEF53)));
        // Another owner, a group-writable file, a FUSE filesystem: copied.
        let mut other = st;
        other.st_uid = 1000;
        assert!(!safe_to_map(&other, Some(0xEF53)));
        let mut group_writable = st;
        group_writable.st_mode = libc::S_IFREG | 0o775;
        assert!(!safe_to_map(&group_writable, Some(0xEF53)));
        assert!(!safe_to_map(&st, Some(0x6573_5546)));
        // A user's file is read whole into memory.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let st = fstat(&OwnedFd::from(File::open(&path).unwrap())).unwrap();
        let img = image(&file, &st, Instant::now() + BUDGET).unwrap();
        assert!(matches!(img, Image::Copied(..)));
        assert_eq!(img.len(), 10_000);
    }

    #[test]
    fn a_file_truncated_while_it_is_read_is_refused_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lib.so");
        std::fs::write(&path, vec![1u8; 3 * CHUNK]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let file = File::open(&path).unwrap();
        let st = fstat(&OwnedFd::from(file.try_clone().unwrap())).unwrap();
        // Truncated after the stat: the copy meets the end early.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(10)
            .unwrap();
        assert!(matches!(
            image(&file, &st, Instant::now() + BUDGET),
            Err(Refused::Changed)
        ));
    }

    #[test]
    fn an_unchanged_file_is_not_read_again() {
        let (opened, outcome) = run(&Job {
            kind: FileKind::Executable,
            ..path_job(Path::new("/bin/sh"))
        })
        .unwrap();
        assert!(matches!(
            outcome,
            Outcome::Read(Profile {
                finding: Finding::Nothing,
                ..
            })
        ));
        let again = Job {
            unless: Some(opened.stamp),
            kind: FileKind::Executable,
            ..path_job(Path::new("/bin/sh"))
        };
        assert!(matches!(run(&again), Ok((_, Outcome::Unchanged))));
    }

    #[test]
    fn this_process_maps_and_runs_are_reached_through_proc() {
        let me = std::process::id();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let exe_ino = std::fs::metadata("/proc/self/exe").unwrap();
        let job = Job {
            source: Source::Exe {
                pid: me,
                id: (0, std::os::unix::fs::MetadataExt::ino(&exe_ino)),
            },
            kind: FileKind::Executable,
            unless: None,
        };
        let (opened, _) = run(&job).unwrap();
        assert_eq!(opened.id.1, std::os::unix::fs::MetadataExt::ino(&exe_ino));
        // A mapped file through map_files, and the wrong inode refused.
        let line = maps
            .lines()
            .find(|l| l.split_whitespace().nth(4).is_some_and(|i| i != "0"))
            .unwrap();
        let mut f = line.split_whitespace();
        let range = f.next().unwrap().to_string();
        let ino: u64 = f.nth(3).unwrap().parse().unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("map_files needs CAP_SYS_ADMIN: not tried without root");
            return;
        }
        let mapped = Job {
            source: Source::Mapped {
                pid: me,
                range: range.clone(),
                id: (0, ino),
            },
            kind: FileKind::SharedLibrary,
            unless: None,
        };
        assert!(run(&mapped).is_ok());
        let wrong = Job {
            source: Source::Mapped {
                pid: me,
                range,
                id: (0, ino + 1),
            },
            ..mapped
        };
        assert!(matches!(run(&wrong), Err(Refused::Identity)));
    }

    #[test]
    fn the_inspector_answers_and_wakes() {
        let mut i = Inspector::new("/proc".into());
        assert!(i.submit(Job {
            kind: FileKind::Executable,
            ..path_job(Path::new("/bin/sh"))
        }));
        let started = Instant::now();
        let done = loop {
            let d = i.take_done();
            if !d.is_empty() || started.elapsed() > Duration::from_secs(10) {
                break d;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(done.len(), 1);
        assert!(done[0].result.is_ok());
        assert_eq!(i.counts().read, 1);
    }
}
