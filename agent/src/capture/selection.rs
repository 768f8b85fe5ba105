//! Which processes the kernel tracks: operator selection (pids, executable
//! names, exclusions), the agent's discovery decisions, and where already
//! running processes keep their stdio.

use std::{collections::HashSet, fs, path::Path};

use aya::{
    Ebpf,
    maps::{HashMap, MapData},
};
use mcptap_common::{ProcState, comm_rule, fds, proc_state};

use super::{CaptureError, CaptureOptions};

pub struct Selection {
    procs: HashMap<MapData, u32, ProcState>,
    comm_rules: HashMap<MapData, [u8; 16], u8>,
}

fn take<K: aya::Pod, V: aya::Pod>(ebpf: &mut Ebpf, name: &'static str) -> Result<HashMap<MapData, K, V>, CaptureError> {
    let map = ebpf.take_map(name).ok_or(CaptureError::Missing(name))?;
    HashMap::try_from(map).map_err(|e| CaptureError::Map(name, e))
}

impl Selection {
    pub(super) fn new(ebpf: &mut Ebpf) -> Result<Self, CaptureError> {
        Ok(Selection {
            procs: take(ebpf, "PROCS")?,
            comm_rules: take(ebpf, "COMM_RULES")?,
        })
    }

    /// Installs the operator's rules, then looks at the processes already
    /// running: which are selected or excluded, and where each keeps copies
    /// of its stdin/stdout (new processes are followed by the kernel).
    pub(super) fn apply_rules(&mut self, opts: &CaptureOptions) -> Result<(), CaptureError> {
        for (names, rule) in [
            (&opts.exclude_exes, comm_rule::EXCLUDE),
            (&opts.select_exes, comm_rule::SELECT),
        ] {
            for name in names {
                self.comm_rules
                    .insert(comm_key(name), rule, 0)
                    .map_err(|e| CaptureError::Map("COMM_RULES", e))?;
            }
        }
        let me = std::process::id();
        let unix_sockets = unix_socket_inodes(Path::new("/proc"));
        for proc in running_processes(Path::new("/proc")) {
            if proc.pid == me {
                continue;
            }
            let named = |names: &[String]| {
                names
                    .iter()
                    .any(|n| n.as_str() == proc.comm || Some(n.as_str()) == proc.exe_name.as_deref())
            };
            if opts.exclude_pids.contains(&proc.pid) || named(&opts.exclude_exes) {
                self.exclude(proc.pid);
                continue;
            }
            let selected = opts.select_pids.contains(&proc.pid) || named(&opts.select_exes);
            let (in_fds, out_fds) = stdio_copies(Path::new("/proc"), proc.pid, &unix_sockets);
            let moved = in_fds != fds::DEFAULT_IN || out_fds != fds::DEFAULT_OUT;
            if selected || (opts.discovery && moved && in_fds != 0) {
                self.update(proc.pid, |p| {
                    p.state |= if selected {
                        proc_state::SELECTED
                    } else {
                        proc_state::CANDIDATE
                    };
                    p.in_fds = in_fds;
                    p.out_fds = out_fds;
                });
            }
        }
        // Selected pids that /proc did not list (gone already) are ignored.
        Ok(())
    }

    /// Read-modify-write of a process's entry (created plain when absent).
    fn update(&mut self, tgid: u32, f: impl FnOnce(&mut ProcState)) {
        let mut value = self.procs.get(&tgid, 0).unwrap_or(ProcState::with_state(0));
        f(&mut value);
        if let Err(err) = self.procs.insert(tgid, value, 0) {
            tracing::warn!(tgid, "cannot update the kernel's process map: {err}");
        }
    }

    fn exclude(&mut self, tgid: u32) {
        self.update(tgid, |p| p.state = proc_state::EXCLUDED);
    }

    /// The agent saw the process speak MCP.
    pub fn confirm(&mut self, tgid: u32) {
        if let Ok(mut value) = self.procs.get(&tgid, 0) {
            value.state = (value.state & !proc_state::PROVISIONAL) | proc_state::CONFIRMED;
            let _ = self.procs.insert(tgid, value, 0);
        }
    }

    /// The agent saw the process is not an MCP peer: stop capturing it and
    /// never sniff it again (until it exits).
    pub fn reject(&mut self, tgid: u32) {
        self.exclude(tgid);
    }

    /// Whether the operator selected this process (never rejected then).
    pub fn is_selected(&self, tgid: u32) -> bool {
        self.procs
            .get(&tgid, 0)
            .is_ok_and(|v| v.state & proc_state::SELECTED != 0)
    }

    /// Number of processes the kernel tracks now.
    pub fn tracked_count(&self) -> usize {
        self.procs
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| v.state & proc_state::TRACKED != 0)
            .count()
    }
}

/// The kernel's `comm` of a process running `name`: at most 15 bytes, NUL padded.
fn comm_key(name: &str) -> [u8; 16] {
    let mut key = [0u8; 16];
    let bytes = name.as_bytes();
    let n = bytes.len().min(15);
    key[..n].copy_from_slice(&bytes[..n]);
    key
}

struct RunningProcess {
    pid: u32,
    comm: String,
    exe_name: Option<String>,
}

fn running_processes(proc_root: &Path) -> Vec<RunningProcess> {
    let Ok(dir) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = fs::read_to_string(entry.path().join("comm"))
                .ok()?
                .trim_end()
                .to_string();
            let exe_name = fs::read_link(entry.path().join("exe"))
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
            Some(RunningProcess { pid, comm, exe_name })
        })
        .collect()
}

/// Inodes of Unix sockets (the other kind of "pipe" stdio can be: Node's
/// child_process uses socketpairs).
fn unix_socket_inodes(proc_root: &Path) -> HashSet<u64> {
    fs::read_to_string(proc_root.join("net/unix"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(6)?.parse().ok())
        .collect()
}

/// Where a running process may read and write its stdio: pipe read ends
/// and Unix sockets among fds 0..63 are "in", pipe write ends and Unix
/// sockets are "out". Stderr is logs, never the wire: fd 2, and any other
/// descriptor pointing where fd 2 points (a server that diverted stdout to
/// stderr), is left out. A descriptor that turns out not to carry JSON
/// stops being sniffed at its first read.
fn stdio_copies(proc_root: &Path, pid: u32, unix_sockets: &HashSet<u64>) -> (u64, u64) {
    let dir = proc_root.join(pid.to_string());
    let Ok(entries) = fs::read_dir(dir.join("fd")) else {
        return (fds::DEFAULT_IN, fds::DEFAULT_OUT);
    };
    let (mut in_fds, mut out_fds) = (0u64, 0u64);
    for entry in entries.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        if fd >= fds::MAX {
            continue;
        }
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        let bit = 1u64 << fd;
        if target.starts_with("pipe:") {
            let flags = fs::read_to_string(dir.join("fdinfo").join(fd.to_string()))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("flags:"))
                        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
                })
                .unwrap_or(0);
            match flags & 0o3 {
                0 => in_fds |= bit,
                1 => out_fds |= bit,
                _ => {}
            }
        } else if let Some(ino) = target
            .strip_prefix("socket:[")
            .and_then(|s| s.trim_end_matches(']').parse::<u64>().ok())
        {
            if unix_sockets.contains(&ino) {
                in_fds |= bit;
                out_fds |= bit;
            }
        }
    }
    (in_fds, out_fds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_keys_are_truncated_like_the_kernel() {
        assert_eq!(&comm_key("node")[..5], b"node\0");
        let long = comm_key("a-very-long-executable-name");
        assert_eq!(&long[..15], b"a-very-long-exe");
        assert_eq!(long[15], 0);
    }

    #[test]
    fn finds_stdio_copies_of_a_running_process() {
        // A child with a pipe on stdin and a pipe on stdout.
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (in_fds, out_fds) = stdio_copies(Path::new("/proc"), child.id(), &HashSet::new());
        assert!(fds::has(in_fds, 0) && !fds::has(in_fds, 1));
        assert!(fds::has(out_fds, 1) && !fds::has(out_fds, 0));
        child.kill().unwrap();
        let _ = child.wait();
    }
}
