//! The exec gate: what lets a program's very first HTTPS request be seen.
//!
//! A uprobe only sees calls made after it is attached, and a short client
//! connects within milliseconds of its exec: probes attached when it is
//! first seen speaking TLS land after its first requests. So the agent
//! learns what a program is *before it runs*: the kernel asks it at every
//! exec of a file it has not decided about (fanotify's `FAN_OPEN_EXEC_PERM`,
//! a permission event: the exec waits for the answer, as an on-access
//! scanner's would), and it answers once it knows:
//!
//! - a compiled program that carries its TLS library and names MCP's HTTP
//!   headers (`target::Program::SpeaksMcp`): its probes are put on the file
//!   for every process that runs it, then the exec goes on; its first
//!   request finds them in place;
//! - an interpreter (Python, Node, Bun): the exec goes on with the process
//!   pointed out to the kernel (`INTERP_PENDING`), which tells the agent
//!   when it opens an MCP SDK's files (`ebpf/src/interp.rs`), long before
//!   its first TLS byte; its TLS library is probed then;
//! - anything else: the exec goes on, and the file is not asked about
//!   again while it is unchanged (an ignore mark on its inode, which the
//!   kernel drops when the file is written).
//!
//! What it costs: the first exec of each file after the agent starts waits
//! for the file to be read (most files: a few milliseconds); later execs of
//! the same file are not asked about at all, except interpreters' and MCP
//! programs' (one round trip to this thread, microseconds). Never longer
//! than [`HOLD_MAX`]: past it the exec goes on unanswered-for (counted),
//! whatever the rest of the agent is doing. This thread does nothing that
//! can wait on a file system or on another process (it reads the file's
//! identity with `statx(AT_STATX_DONT_SYNC)`; marking new mounts and
//! reading files happen elsewhere), so a stalled agent delays an exec by
//! `HOLD_MAX` at most; a killed one lets every held exec go (the kernel
//! answers for a closed group).
//!
//! Where: every mounted filesystem of the host (pid 1's mount table, so
//! container roots mounted there too; the agent's own when pid 1's root
//! cannot be reached), marked as they appear. Needs
//! `CAP_SYS_ADMIN` and a kernel with fanotify permission events (Linux
//! 5.0+, `CONFIG_FANOTIFY_ACCESS_PERMISSIONS`); without them the agent says
//! so in one line and HTTPS discovery works as before (first requests of a
//! program new to the host may be missed).

use std::{
    collections::{HashMap, HashSet},
    fs,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use nix::{
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::fanotify::{
        EventFFlags, Fanotify, FanotifyEvent, FanotifyResponse, InitFlags, MarkFlags, MaskFlags, Response,
    },
};
use thiserror::Error;

use super::inspect::FileId;

/// The longest an exec waits for the agent's answer.
pub const HOLD_MAX: Duration = Duration::from_secs(1);

/// Files not asked about again, at most, where the kernel cannot evict
/// ignore marks (before Linux 5.19): each pins its inode in memory.
const MAX_IGNORED: u64 = 65536;

/// How often the mount table is read again when the kernel does not say it
/// changed.
const MOUNTS_EVERY: Duration = Duration::from_secs(30);

/// Filesystems nothing is run from.
const PSEUDO_FILESYSTEMS: &[&str] = &[
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "mqueue",
    "bpf",
    "tracefs",
    "debugfs",
    "securityfs",
    "configfs",
    "fusectl",
    "pstore",
    "hugetlbfs",
    "autofs",
    "binfmt_misc",
    "nsfs",
    "efivarfs",
    "rpc_pipefs",
    "selinuxfs",
    "devtmpfs",
];

#[derive(Debug, Error)]
pub enum GateError {
    #[error(
        "fanotify permission events are not available: {0} (needs CAP_SYS_ADMIN and CONFIG_FANOTIFY_ACCESS_PERMISSIONS)"
    )]
    Init(nix::Error),
    #[error("this kernel refuses exec permission events on the root filesystem: {0} (Linux 5.0+)")]
    Mark(nix::Error),
}

/// What the agent decided about a file a process is about to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Nothing to do: not asked about again while unchanged.
    Plain,
    /// An interpreter: each of its processes is pointed out to the kernel.
    Interpreter,
    /// Its probes are in place for every process that runs it.
    McpProgram,
}

/// A file a process is about to run, for the capture loop to decide about
/// (through the file catalogue).
#[derive(Debug)]
pub struct Ask {
    pub ticket: u64,
    pub pid: u32,
    /// The file, open (the exec's own file: whatever path it was run by).
    pub fd: Arc<OwnedFd>,
    pub id: FileId,
}

/// Figures of the gate (`mcptap_exec_gate_*`).
#[derive(Debug, Default)]
pub struct GateStats {
    /// Execs answered from what the gate knew (interpreters, files asked
    /// about before whose ignore mark could not be set).
    pub known: AtomicU64,
    /// Execs of files the capture loop was asked about, by answer.
    pub plain: AtomicU64,
    pub interpreter: AtomicU64,
    pub mcp_program: AtomicU64,
    /// Execs let go at [`HOLD_MAX`] without an answer.
    pub timeout: AtomicU64,
    /// Files not asked about again (ignore marks set).
    pub ignored: AtomicU64,
    /// Filesystems marked.
    pub filesystems: AtomicU64,
    /// How long execs waited for their answer, since the metrics last
    /// took them (at most [`MAX_SAMPLES`] kept; the rest counted).
    pub holds: Mutex<Vec<Duration>>,
    pub holds_dropped: AtomicU64,
}

/// Hold times kept between two looks of the metrics.
const MAX_SAMPLES: usize = 4096;

impl GateStats {
    fn held(&self, d: Duration) {
        if let Ok(mut h) = self.holds.lock()
            && h.len() < MAX_SAMPLES
        {
            h.push(d);
            return;
        }
        self.holds_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// The hold times since the last call.
    pub fn take_holds(&self) -> Vec<Duration> {
        self.holds
            .lock()
            .map(|mut h| std::mem::take(&mut *h))
            .unwrap_or_default()
    }
}

/// The capture loop's end of the gate.
pub struct GateLink {
    pub asks: mpsc::Receiver<Ask>,
    answers: mpsc::Sender<(u64, Answer)>,
    wake: Arc<OwnedFd>,
    pub stats: Arc<GateStats>,
}

impl GateLink {
    /// Answers an ask: the exec goes on.
    pub fn answer(&self, ticket: u64, answer: Answer) {
        if self.answers.send((ticket, answer)).is_ok() {
            wake(&self.wake);
        }
    }
}

impl Drop for GateLink {
    /// The capture side is gone: the gate thread lets every held exec go
    /// and closes the group.
    fn drop(&mut self) {
        wake(&self.wake);
    }
}

fn wake(fd: &OwnedFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: an eventfd the gate owns; writing 8 bytes adds to its count.
    let _ = unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
}

/// A fanotify group able to hold execs, before the thread that answers.
pub struct Gate {
    fan: Arc<Fanotify>,
    proc_root: PathBuf,
}

impl Gate {
    /// Opens the group and checks that this kernel takes exec permission
    /// marks (on the agent's own root; removed at once).
    pub fn open() -> Result<Gate, GateError> {
        let fan = Fanotify::init(
            InitFlags::FAN_CLASS_CONTENT
                | InitFlags::FAN_CLOEXEC
                | InitFlags::FAN_NONBLOCK
                | InitFlags::FAN_UNLIMITED_MARKS,
            EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE | EventFFlags::O_CLOEXEC,
        )
        .map_err(GateError::Init)?;
        let cwd = nix::fcntl::AT_FDCWD;
        fan.mark(
            MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_FILESYSTEM,
            MaskFlags::FAN_OPEN_EXEC_PERM,
            cwd,
            Some("/"),
        )
        .map_err(GateError::Mark)?;
        let _ = fan.mark(
            MarkFlags::FAN_MARK_REMOVE | MarkFlags::FAN_MARK_FILESYSTEM,
            MaskFlags::FAN_OPEN_EXEC_PERM,
            cwd,
            Some("/"),
        );
        Ok(Gate {
            fan: Arc::new(fan),
            proc_root: PathBuf::from("/proc"),
        })
    }

    /// Starts answering: the thread that holds execs, and the one that
    /// marks the host's filesystems as they are mounted. `pending`: the
    /// kernel's map of processes about to run an interpreter; `notify`
    /// wakes the capture loop when a file is to be decided about.
    pub fn start(
        self,
        pending: BpfHashMap<MapData, u32, u8>,
        notify: Arc<tokio::sync::Notify>,
    ) -> std::io::Result<GateLink> {
        // SAFETY: eventfd returns a new descriptor or -1.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if efd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor just created, owned from here on.
        let wake_fd = Arc::new(unsafe { OwnedFd::from_raw_fd(efd) });
        let (ask_tx, asks) = mpsc::channel();
        let (answers, answer_rx) = mpsc::channel();
        let stats = Arc::new(GateStats::default());
        let evictable = Arc::new(Mutex::new(None));
        let mut worker = Holder {
            fan: self.fan.clone(),
            wake: wake_fd.clone(),
            asks: ask_tx,
            answers: answer_rx,
            notify,
            pending,
            held: HashMap::new(),
            interpreters: HashMap::new(),
            plain: HashSet::new(),
            next_ticket: 1,
            stats: stats.clone(),
            evictable,
            own_pid: std::process::id() as i32,
        };
        std::thread::Builder::new()
            .name("exec-gate".into())
            .spawn(move || worker.run())?;
        let marker = Marker {
            fan: self.fan,
            proc_root: self.proc_root,
            ns: "1",
            marked: HashSet::new(),
            stats: stats.clone(),
        };
        let gone = Arc::downgrade(&wake_fd);
        std::thread::Builder::new()
            .name("exec-gate-mounts".into())
            .spawn(move || marker.run(gone))?;
        Ok(GateLink {
            asks,
            answers,
            wake: wake_fd,
            stats,
        })
    }
}

/// An exec waiting for its answer.
struct Held {
    event: FanotifyEvent,
    since: Instant,
    id: FileId,
    stamp: (i64, u32, i64, u32),
    pid: u32,
}

/// The thread that answers the kernel.
struct Holder {
    fan: Arc<Fanotify>,
    wake: Arc<OwnedFd>,
    asks: mpsc::Sender<Ask>,
    answers: mpsc::Receiver<(u64, Answer)>,
    notify: Arc<tokio::sync::Notify>,
    pending: BpfHashMap<MapData, u32, u8>,
    held: HashMap<u64, Held>,
    /// Interpreter files (by identity and change times, so a rewritten
    /// file is asked about again).
    interpreters: HashMap<FileId, (i64, u32, i64, u32)>,
    /// Files decided plain whose ignore mark could not be set.
    plain: HashSet<(FileId, (i64, u32, i64, u32))>,
    next_ticket: u64,
    stats: Arc<GateStats>,
    /// Whether ignore marks may be evictable (`None`: not tried yet).
    evictable: Arc<Mutex<Option<bool>>>,
    own_pid: i32,
}

impl Holder {
    fn run(&mut self) {
        loop {
            let timeout = self
                .held
                .values()
                .map(|h| HOLD_MAX.saturating_sub(h.since.elapsed()))
                .min()
                .unwrap_or(Duration::from_secs(1));
            let ms = u16::try_from(timeout.as_millis().max(1)).unwrap_or(u16::MAX);
            let (fan_ready, wake_ready) = {
                let mut fds = [
                    PollFd::new(self.fan.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
                ];
                let _ = poll(&mut fds, PollTimeout::from(ms));
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), ready(&fds[1]))
            };
            if wake_ready {
                let mut buf = [0u8; 8];
                // SAFETY: reading the eventfd's counter into a local.
                let _ = unsafe { libc::read(self.wake.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            }
            if fan_ready {
                self.read_events();
            }
            if !self.take_answers() {
                // The capture side is gone: everything held goes on.
                for (_, h) in self.held.drain() {
                    allow(&self.fan, &h.event);
                }
                return;
            }
            self.expire();
        }
    }

    fn read_events(&mut self) {
        loop {
            let events = match self.fan.read_events() {
                Ok(e) if !e.is_empty() => e,
                _ => return,
            };
            for event in events {
                self.on_event(event);
            }
        }
    }

    fn on_event(&mut self, event: FanotifyEvent) {
        if !event.check_version() || !event.mask().contains(MaskFlags::FAN_OPEN_EXEC_PERM) {
            return; // no answer owed (overflow, or not a permission event)
        }
        let Some(fd) = event.fd() else { return };
        let pid = event.pid();
        if pid == self.own_pid || pid <= 0 {
            allow(&self.fan, &event);
            return;
        }
        let Some((id, stamp)) = identity(fd) else {
            allow(&self.fan, &event);
            return;
        };
        if self.interpreters.get(&id) == Some(&stamp) {
            let _ = self.pending.insert(pid as u32, 1, 0);
            self.stats.known.fetch_add(1, Ordering::Relaxed);
            allow(&self.fan, &event);
            return;
        }
        if self.plain.contains(&(id, stamp)) {
            self.stats.known.fetch_add(1, Ordering::Relaxed);
            allow(&self.fan, &event);
            return;
        }
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) returns a new descriptor or -1.
        let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            allow(&self.fan, &event);
            return;
        }
        // SAFETY: a descriptor just created, owned from here on.
        let dup = Arc::new(unsafe { OwnedFd::from_raw_fd(dup) });
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let ask = Ask {
            ticket,
            pid: pid as u32,
            fd: dup,
            id,
        };
        if self.asks.send(ask).is_err() {
            allow(&self.fan, &event);
            return;
        }
        self.notify.notify_one();
        self.held.insert(
            ticket,
            Held {
                event,
                since: Instant::now(),
                id,
                stamp,
                pid: pid as u32,
            },
        );
    }

    /// Answers from the capture loop. False when it is gone.
    fn take_answers(&mut self) -> bool {
        loop {
            match self.answers.try_recv() {
                Ok((ticket, answer)) => self.on_answer(ticket, answer),
                Err(mpsc::TryRecvError::Empty) => return true,
                Err(mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn on_answer(&mut self, ticket: u64, answer: Answer) {
        let Some(h) = self.held.remove(&ticket) else {
            return; // let go at its deadline already
        };
        self.stats.held(h.since.elapsed());
        match answer {
            Answer::Interpreter => {
                self.stats.interpreter.fetch_add(1, Ordering::Relaxed);
                self.interpreters.insert(h.id, h.stamp);
                let _ = self.pending.insert(h.pid, 1, 0);
            }
            Answer::McpProgram => {
                // Asked about at every exec: the capture loop keeps its
                // probes in place (they may have been removed since).
                self.stats.mcp_program.fetch_add(1, Ordering::Relaxed);
            }
            Answer::Plain => {
                self.stats.plain.fetch_add(1, Ordering::Relaxed);
                if !self.ignore(&h.event) {
                    self.plain.insert((h.id, h.stamp));
                }
            }
        }
        allow(&self.fan, &h.event);
    }

    /// Tells the kernel not to ask about this file again while it is
    /// unchanged. False when the mark could not be set.
    fn ignore(&self, event: &FanotifyEvent) -> bool {
        let Some(fd) = event.fd() else { return false };
        let mut evictable = match self.evictable.lock() {
            Ok(e) => e,
            Err(_) => return false,
        };
        let base = MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_IGNORED_MASK;
        let mark = |flags: MarkFlags| {
            self.fan
                .mark::<_, Path>(flags, MaskFlags::FAN_OPEN_EXEC_PERM, fd, None)
                .is_ok()
        };
        let done = match *evictable {
            Some(true) => mark(base | MarkFlags::FAN_MARK_EVICTABLE),
            Some(false) => self.stats.ignored.load(Ordering::Relaxed) < MAX_IGNORED && mark(base),
            None => {
                // Evictable marks (5.19+) let the kernel reclaim the inode.
                let ok = mark(base | MarkFlags::FAN_MARK_EVICTABLE);
                *evictable = Some(ok);
                ok || mark(base)
            }
        };
        if done {
            self.stats.ignored.fetch_add(1, Ordering::Relaxed);
        }
        done
    }

    /// Execs held too long go on.
    fn expire(&mut self) {
        let late: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, h)| h.since.elapsed() >= HOLD_MAX)
            .map(|(t, _)| *t)
            .collect();
        for ticket in late {
            if let Some(h) = self.held.remove(&ticket) {
                self.stats.timeout.fetch_add(1, Ordering::Relaxed);
                self.stats.held(h.since.elapsed());
                tracing::debug!(pid = h.pid, "exec gate: no answer in time, the exec goes on");
                allow(&self.fan, &h.event);
            }
        }
    }
}

fn allow(fan: &Fanotify, event: &FanotifyEvent) {
    if let Some(fd) = event.fd() {
        let _ = fan.write_response(FanotifyResponse::new(fd, Response::FAN_ALLOW));
    }
}

/// A file's device and inode, and its change times, from what the kernel
/// has cached (never a wait on a file system's server).
fn identity(fd: BorrowedFd<'_>) -> Option<(FileId, (i64, u32, i64, u32))> {
    // SAFETY: statx fills the struct or fails; the path is empty (the
    // descriptor itself).
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
            libc::STATX_INO | libc::STATX_MTIME | libc::STATX_CTIME,
            &mut st,
        )
    };
    if rc != 0 {
        return None;
    }
    let dev = libc::makedev(st.stx_dev_major, st.stx_dev_minor);
    Some((
        (dev, st.stx_ino),
        (
            st.stx_mtime.tv_sec,
            st.stx_mtime.tv_nsec,
            st.stx_ctime.tv_sec,
            st.stx_ctime.tv_nsec,
        ),
    ))
}

/// The thread that marks the host's filesystems as they are mounted.
struct Marker {
    fan: Arc<Fanotify>,
    proc_root: PathBuf,
    /// Whose mount table: `1` or `self`.
    ns: &'static str,
    /// Superblocks marked (by device).
    marked: HashSet<u64>,
    stats: Arc<GateStats>,
}

impl Marker {
    fn run(mut self, alive: std::sync::Weak<OwnedFd>) {
        use std::io::{Read, Seek};
        // The kernel flags a change of the mount table on the descriptor
        // it was read through (POLLPRI), until it is read again from the
        // start.
        // The host's mount table (pid 1's: the agent may run in a mount
        // namespace of its own, in a container), or the agent's own where
        // pid 1's root cannot be reached.
        let ns = if fs::read_dir(self.proc_root.join("1/root")).is_ok() {
            "1"
        } else {
            "self"
        };
        self.ns = ns;
        let mut table = fs::File::open(self.proc_root.join(ns).join("mountinfo")).ok();
        loop {
            if alive.strong_count() == 0 {
                return;
            }
            let mut text = String::new();
            let read = table
                .as_mut()
                .is_some_and(|f| f.rewind().is_ok() && f.read_to_string(&mut text).is_ok());
            if read {
                self.mark_all(&text);
            }
            // Woken by a change, or every MOUNTS_EVERY all the same (and
            // every second to notice that the agent is stopping).
            let started = Instant::now();
            while started.elapsed() < MOUNTS_EVERY && alive.strong_count() > 0 {
                match &table {
                    Some(f) => {
                        let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLPRI)];
                        if poll(&mut fds, PollTimeout::from(1000u16)).unwrap_or(0) > 0 {
                            break;
                        }
                    }
                    None => std::thread::sleep(Duration::from_secs(1)),
                }
            }
        }
    }

    fn mark_all(&mut self, text: &str) {
        let root = self.proc_root.join(self.ns).join("root");
        for m in text.lines().filter_map(parse_mountinfo) {
            if PSEUDO_FILESYSTEMS.contains(&m.fstype) || self.marked.contains(&m.dev) {
                continue;
            }
            let path = root.join(m.mount_point.trim_start_matches('/'));
            match self.fan.mark(
                MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_FILESYSTEM,
                MaskFlags::FAN_OPEN_EXEC_PERM,
                nix::fcntl::AT_FDCWD,
                Some(path.as_path()),
            ) {
                Ok(()) => {
                    self.marked.insert(m.dev);
                    self.stats.filesystems.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(mount = m.mount_point, fstype = m.fstype, "exec gate: filesystem marked");
                }
                Err(e) => {
                    // Not again for this superblock (a mount point that
                    // cannot be reached, a filesystem fanotify refuses).
                    self.marked.insert(m.dev);
                    tracing::debug!(
                        mount = m.mount_point,
                        fstype = m.fstype,
                        "exec gate: filesystem not marked: {e}"
                    );
                }
            }
        }
    }
}

/// One line of /proc/PID/mountinfo: the superblock's device, where it is
/// mounted, its type.
struct MountLine<'a> {
    dev: u64,
    mount_point: String,
    fstype: &'a str,
}

/// `id parent major:minor root mount_point options [optional...] - fstype source super_options`
fn parse_mountinfo(line: &str) -> Option<MountLine<'_>> {
    let (head, tail) = line.split_once(" - ")?;
    let mut f = head.split(' ');
    let _id = f.next()?;
    let _parent = f.next()?;
    let (major, minor) = f.next()?.split_once(':')?;
    let _root = f.next()?;
    let mount_point = unescape_octal(f.next()?);
    let fstype = tail.split(' ').next()?;
    Some(MountLine {
        dev: libc::makedev(major.parse().ok()?, minor.parse().ok()?),
        mount_point,
        fstype,
    })
}

/// mountinfo writes space, tab, newline and backslash as `\NNN`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(digits) = b.get(i + 1..i + 4)
            && let Ok(v) = u8::from_str_radix(std::str::from_utf8(digits).unwrap_or("x"), 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let m =
            parse_mountinfo("29 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw,errors=remount-ro").unwrap();
        assert_eq!(
            (m.dev, m.mount_point.as_str(), m.fstype),
            (libc::makedev(259, 1), "/", "ext4")
        );
        let m = parse_mountinfo(
            "600 29 0:52 / /var/lib/containers/storage/overlay/ab/merged rw,nodev - overlay overlay rw,lowerdir=x",
        )
        .unwrap();
        assert_eq!(m.fstype, "overlay");
        let m = parse_mountinfo("31 29 0:26 / /mnt/with\\040space rw - tmpfs tmpfs rw").unwrap();
        assert_eq!(m.mount_point, "/mnt/with space");
        assert!(parse_mountinfo("garbage").is_none());
    }
}
