//! Reading /proc files the kernel fills from a process's own memory (its
//! command line), within a time budget.
//!
//! To answer `read(/proc/PID/cmdline)` the kernel reads the process's
//! argument pages. A process may have mapped a file of its own FUSE daemon
//! over them (unprivileged users may mount FUSE in a user namespace): the
//! read then waits for that daemon, for as long as it likes. So such reads
//! run on a thread of their own and are waited for at most [`READ_WAIT`];
//! a read still blocked then is given up (counted) and its thread left to
//! finish. At most [`MAX_STUCK`] such threads at once: past that, reads
//! fail at once (the process is then named without its command line)
//! until they come back. What is read is cut at [`MAX_BYTES`].

use std::{
    io::Read,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        mpsc,
    },
    time::Duration,
};

/// Longest a read is waited for.
pub const READ_WAIT: Duration = Duration::from_millis(200);

/// Reads in flight at most (a blocked one counts until it returns).
pub const MAX_STUCK: usize = 16;

/// Most bytes of a command line read.
pub const MAX_BYTES: usize = 32 * 1024;

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static GIVEN_UP: AtomicU64 = AtomicU64::new(0);

/// Reads given up since the start (`mcptap_proc_reads_given_up_total`).
pub fn given_up() -> u64 {
    GIVEN_UP.load(Ordering::Relaxed)
}

/// A process's command line as /proc has it (NUL-separated), at most
/// [`MAX_BYTES`]; `None` when gone, unreadable or too slow.
pub fn cmdline(proc_root: &Path, pid: u32) -> Option<Vec<u8>> {
    read_bounded(proc_root.join(pid.to_string()).join("cmdline"), MAX_BYTES, READ_WAIT)
}

fn read_bounded(path: PathBuf, max: usize, wait: Duration) -> Option<Vec<u8>> {
    if IN_FLIGHT.fetch_add(1, Ordering::AcqRel) >= MAX_STUCK {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
        GIVEN_UP.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    let (tx, rx) = mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("proc-read".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let read = read_capped(&path, max);
            IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
            let _ = tx.send(read);
        });
    if spawned.is_err() {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
        return None;
    }
    match rx.recv_timeout(wait) {
        Ok(read) => read,
        Err(_) => {
            GIVEN_UP.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("a /proc read took longer than {} ms: given up", wait.as_millis());
            None
        }
    }
}

fn read_capped(path: &Path, max: usize) -> Option<Vec<u8>> {
    let file = std::fs::File::open(path).ok()?;
    let mut out = Vec::new();
    file.take(max as u64).read_to_end(&mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_cuts_at_the_bound() {
        let me = cmdline(Path::new("/proc"), std::process::id()).expect("own cmdline");
        assert!(!me.is_empty());
        let cut = read_bounded("/proc/self/maps".into(), 10, READ_WAIT).unwrap();
        assert_eq!(cut.len(), 10);
        assert!(cmdline(Path::new("/proc"), u32::MAX).is_none());
    }

    #[test]
    fn a_read_that_blocks_is_given_up_in_time() {
        // A FIFO nobody writes: the read blocks, as one backed by a silent
        // FUSE daemon would.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("cmdline");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let before = given_up();
        let started = std::time::Instant::now();
        assert!(read_bounded(fifo.clone(), 100, Duration::from_millis(50)).is_none());
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(given_up() > before);
        // Unblock the stuck thread (it opens for reading; a writer lets it go).
        let _w = std::fs::OpenOptions::new().write(true).open(&fifo);
    }
}
