//! Which processes and connections the kernel captures: operator selection
//! (pids, executable names, ports, exclusions), the agent's discovery
//! decisions, and what already-running processes have open.

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::Path,
};

use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData},
};
use mcptap_common::{
    ProcState, SockState, SslKey, comm_rule, fds, names::map, proc_state, sock_flags, sock_key, ssl_flags, watch,
};

use super::{CaptureError, CaptureOptions, record::Channel};
use crate::procnet;

/// Connections of an untracked process released as "not MCP" before the
/// agent stops sniffing the process altogether: a busy web server that is
/// not an MCP server stops costing anything after this many requests.
pub const DISCOVERY_BUDGET: u32 = 64;

/// Most established connections seeded at start (the rest are picked up
/// when they open).
const MAX_SEEDED_SOCKETS: usize = 16384;

pub struct Selection {
    procs: BpfHashMap<MapData, u32, ProcState>,
    watch_user: Array<MapData, u64>,
    /// Words of WATCH_USER (sized from pid_max).
    watch_user_words: u32,
    /// Our copy of WATCH_USER (we are its only writer).
    watch_words: HashMap<u32, u64>,
    socks: BpfHashMap<MapData, u64, SockState>,
    ssls: BpfHashMap<MapData, SslKey, u32>,
    comm_rules: BpfHashMap<MapData, [u8; 16], u8>,
    port_rules: BpfHashMap<MapData, u16, u8>,
    select_ports: HashSet<u16>,
    /// Released connections per untracked process (discovery budget).
    released: HashMap<u32, u32>,
    /// Processes excluded because discovery spent its budget on them.
    pub budget_exhausted: u64,
    /// Processes confirmed, and processes gone, since the last look (the
    /// TLS probes follow them).
    newly_tracked: Vec<u32>,
    exited: Vec<u32>,
    /// Untracked processes a sniffed TLS session of which was not MCP,
    /// since the last call (HTTPS discovery counts them).
    tls_not_mcp: Vec<u32>,
}

fn take<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<BpfHashMap<MapData, K, V>, CaptureError> {
    let map = ebpf.take_map(name).ok_or(CaptureError::Missing(name))?;
    BpfHashMap::try_from(map).map_err(|e| CaptureError::Map(name, e))
}

impl Selection {
    pub(super) fn new(ebpf: &mut Ebpf, watch_user_words: u32) -> Result<Self, CaptureError> {
        let watch_user = ebpf
            .take_map(map::WATCH_USER)
            .ok_or(CaptureError::Missing(map::WATCH_USER))?;
        Ok(Selection {
            procs: take(ebpf, map::PROCS)?,
            watch_user: Array::try_from(watch_user).map_err(|e| CaptureError::Map(map::WATCH_USER, e))?,
            watch_user_words,
            watch_words: HashMap::new(),
            socks: take(ebpf, map::SOCKS)?,
            ssls: take(ebpf, map::SSLS)?,
            comm_rules: take(ebpf, map::COMM_RULES)?,
            port_rules: take(ebpf, map::PORT_RULES)?,
            select_ports: HashSet::new(),
            released: HashMap::new(),
            tls_not_mcp: Vec::new(),
            budget_exhausted: 0,
            newly_tracked: Vec::new(),
            exited: Vec::new(),
        })
    }

    /// Installs the operator's rules, then looks at the processes already
    /// running: which are selected or excluded, where each keeps copies of
    /// its stdin/stdout, and which connections each has open (new ones are
    /// followed by the kernel).
    pub(super) fn apply_rules(&mut self, opts: &CaptureOptions) -> Result<(), CaptureError> {
        for (names, rule) in [
            (&opts.exclude_exes, comm_rule::EXCLUDE),
            (&opts.select_exes, comm_rule::SELECT),
        ] {
            for name in names {
                self.comm_rules
                    .insert(comm_key(name), rule, 0)
                    .map_err(|e| CaptureError::Map(map::COMM_RULES, e))?;
            }
        }
        for &port in &opts.select_ports {
            self.port_rules
                .insert(port, comm_rule::SELECT, 0)
                .map_err(|e| CaptureError::Map(map::PORT_RULES, e))?;
            self.select_ports.insert(port);
        }
        let proc_root = Path::new("/proc");
        let me = std::process::id();
        let unix_sockets = unix_socket_inodes(proc_root);
        let listening_on_selected: HashSet<u32> = self.port_listeners(proc_root).into_iter().collect();
        let mut tables: HashMap<u64, Vec<procnet::TcpEntry>> = HashMap::new();
        let mut seeded = 0usize;
        for proc in running_processes(proc_root) {
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
            let selected = opts.select_pids.contains(&proc.pid)
                || named(&opts.select_exes)
                || listening_on_selected.contains(&proc.pid);
            let (in_fds, out_fds) = stdio_copies(proc_root, proc.pid, &unix_sockets);
            let moved = in_fds != fds::DEFAULT_IN || out_fds != fds::DEFAULT_OUT;
            let mut state = 0;
            if selected {
                state |= proc_state::SELECTED;
            } else if opts.discovery && moved && in_fds != 0 {
                state |= proc_state::CANDIDATE;
            }
            // Open connections: seeded so that the next request on a
            // keep-alive connection is seen.
            if opts.capture_sockets && (selected || opts.discovery) && seeded < MAX_SEEDED_SOCKETS {
                let n = self.seed_sockets(proc_root, proc.pid, &mut tables);
                seeded += n;
                if n > 0 && !selected {
                    state |= proc_state::NET_CANDIDATE;
                }
            }
            if state != 0 {
                self.update(proc.pid, |p| {
                    p.state |= state;
                    p.in_fds = in_fds;
                    p.out_fds = out_fds;
                });
            }
        }
        if seeded >= MAX_SEEDED_SOCKETS {
            tracing::warn!(
                "more than {MAX_SEEDED_SOCKETS} connections were open at start: the others are seen when new ones open"
            );
        }
        // Selected pids that /proc did not list (gone already) are ignored.
        Ok(())
    }

    /// Processes listening on a selected port.
    fn port_listeners(&self, proc_root: &Path) -> Vec<u32> {
        if self.select_ports.is_empty() {
            return Vec::new();
        }
        procnet::listeners(proc_root)
            .into_iter()
            .filter(|(_, port)| self.select_ports.contains(port))
            .map(|(pid, _)| pid)
            .collect()
    }

    /// Selects processes that started listening on a selected port since
    /// the last look (called every few seconds). Returns the new ones.
    pub fn refresh_port_listeners(&mut self) -> Vec<u32> {
        let proc_root = Path::new("/proc");
        let mut new = Vec::new();
        for pid in self.port_listeners(proc_root) {
            let state = self.procs.get(&pid, 0).map(|p| p.state).unwrap_or(0);
            if state & (proc_state::SELECTED | proc_state::EXCLUDED) != 0 {
                continue;
            }
            let mut tables = HashMap::new();
            self.seed_sockets(proc_root, pid, &mut tables);
            self.update(pid, |p| p.state |= proc_state::SELECTED);
            new.push(pid);
        }
        new
    }

    /// Enters a process's established TCP connections into the socket map.
    fn seed_sockets(&mut self, proc_root: &Path, pid: u32, tables: &mut HashMap<u64, Vec<procnet::TcpEntry>>) -> usize {
        let fds = procnet::socket_fds(proc_root, pid);
        if fds.is_empty() {
            return 0;
        }
        let Some(ns) = procnet::netns(proc_root, pid) else {
            return 0;
        };
        let table = tables.entry(ns).or_insert_with(|| procnet::tcp_table(proc_root, pid));
        let listening: HashSet<u16> = table
            .iter()
            .filter(|e| e.state == procnet::LISTEN)
            .map(|e| e.local.port())
            .collect();
        let mut n = 0;
        for (fd, ino) in fds {
            let Some(e) = table.iter().find(|e| e.inode == ino && e.state == procnet::ESTABLISHED) else {
                continue;
            };
            let role = if listening.contains(&e.local.port()) {
                sock_flags::SERVER
            } else {
                sock_flags::CLIENT
            };
            let value = SockState {
                flags: role | sock_flags::SEEDED,
                unclassified: 0,
            };
            if self.socks.insert(sock_key(pid, fd as u32), value, 0).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Read-modify-write of a process's entry (created plain when absent),
    /// marking it watched.
    fn update(&mut self, tgid: u32, f: impl FnOnce(&mut ProcState)) {
        let mut value = self.procs.get(&tgid, 0).unwrap_or(ProcState::with_state(0));
        f(&mut value);
        if let Err(err) = self.procs.insert(tgid, value, 0) {
            tracing::warn!(tgid, "cannot update the kernel's process map: {err}");
            return;
        }
        self.set_watched(tgid);
    }

    fn set_watched(&mut self, tgid: u32) {
        let word = tgid / watch::USER_TGIDS_PER_WORD;
        if word >= self.watch_user_words {
            return; // beyond pid_max at start: such processes take the hash lookup
        }
        let bits = self.watch_words.entry(word).or_insert(0);
        let new = *bits | (1u64 << (tgid % watch::USER_TGIDS_PER_WORD));
        if new != *bits {
            *bits = new;
            if let Err(err) = self.watch_user.set(word, new, 0) {
                tracing::warn!(tgid, "cannot update the watch bitmap: {err}");
            }
        }
    }

    fn clear_watched(&mut self, tgid: u32) {
        let word = tgid / watch::USER_TGIDS_PER_WORD;
        if let Some(bits) = self.watch_words.get_mut(&word) {
            let new = *bits & !(1u64 << (tgid % watch::USER_TGIDS_PER_WORD));
            if new != *bits {
                *bits = new;
                let _ = self.watch_user.set(word, new, 0);
            }
        }
    }

    fn exclude(&mut self, tgid: u32) {
        self.update(tgid, |p| p.state = proc_state::EXCLUDED);
    }

    /// Whether the process's TLS library is probed for discovery: the
    /// kernel then ties its TLS sessions to their sockets.
    /// A process the kernel knows nothing of yet (one probed before its
    /// first TLS byte: an MCP program at its exec, an interpreter that
    /// loaded an MCP SDK) gets its entry now, as a candidate on its stdin
    /// and its sockets alike, so that its very first TLS session is tied
    /// to its connection.
    pub fn set_tls_probed(&mut self, tgid: u32, probed: bool) {
        if probed && self.procs.get(&tgid, 0).is_err() {
            self.update(tgid, |p| {
                p.state |= proc_state::CANDIDATE | proc_state::NET_CANDIDATE | proc_state::TLS_PROBED;
            });
            return;
        }
        if let Ok(mut value) = self.procs.get(&tgid, 0) {
            if probed {
                value.state |= proc_state::TLS_PROBED;
            } else {
                value.state &= !proc_state::TLS_PROBED;
            }
            let _ = self.procs.insert(tgid, value, 0);
        }
    }

    /// The agent saw the process speak MCP.
    pub fn confirm(&mut self, tgid: u32) {
        if let Ok(mut value) = self.procs.get(&tgid, 0) {
            value.state =
                (value.state & !(proc_state::PROVISIONAL | proc_state::NET_CANDIDATE)) | proc_state::CONFIRMED;
            let _ = self.procs.insert(tgid, value, 0);
        }
        self.released.remove(&tgid);
        self.newly_tracked.push(tgid);
    }

    /// The process serves MCP: the kernel records its side effects and
    /// those of the processes it starts (`proc_state::SERVES`).
    pub fn serves(&mut self, tgid: u32) {
        if let Ok(mut value) = self.procs.get(&tgid, 0) {
            value.state |= proc_state::SERVES;
            let _ = self.procs.insert(tgid, value, 0);
        }
    }

    /// Processes that became tracked and processes that ended, since the
    /// last call.
    pub fn take_changes(&mut self) -> (Vec<u32>, Vec<u32>) {
        (
            std::mem::take(&mut self.newly_tracked),
            std::mem::take(&mut self.exited),
        )
    }

    /// The agent saw the process is not an MCP peer on its stdio: stop
    /// capturing it and never sniff it again (until it exits).
    pub fn reject(&mut self, tgid: u32) {
        self.exclude(tgid);
    }

    /// An HTTP connection the kernel captured for discovery is not MCP:
    /// capture it no more, and count it against the process's budget.
    pub fn release(&mut self, tgid: u32, channel: Channel) {
        if self.is_tracked(tgid) {
            return;
        }
        self.forget_channel(tgid, channel, false);
        if matches!(channel, Channel::Tls(_)) {
            self.tls_not_mcp.push(tgid);
        }
        let n = self.released.entry(tgid).or_default();
        *n += 1;
        if *n >= DISCOVERY_BUDGET {
            self.released.remove(&tgid);
            self.budget_exhausted += 1;
            tracing::info!(
                pid = tgid,
                "{DISCOVERY_BUDGET} HTTP requests of this process were not MCP: no longer sniffing it"
            );
            self.exclude(tgid);
        }
    }

    /// Untracked processes a sniffed TLS session of which turned out not to
    /// be MCP, since the last call (one entry per session).
    pub fn take_tls_not_mcp(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.tls_not_mcp)
    }

    /// Never capture this connection (HTTP/2, WebSocket).
    pub fn ignore(&mut self, tgid: u32, channel: Channel) {
        self.forget_channel(tgid, channel, true);
    }

    fn forget_channel(&mut self, tgid: u32, channel: Channel, ignore: bool) {
        match channel {
            Channel::Socket(fd) if fd >= 0 => {
                let key = sock_key(tgid, fd as u32);
                if let Ok(mut s) = self.socks.get(&key, 0) {
                    s.flags &= !sock_flags::CAPTURE;
                    if ignore {
                        s.flags |= sock_flags::IGNORE;
                    }
                    let _ = self.socks.insert(key, s, 0);
                }
            }
            Channel::Tls(ssl) => {
                let key = SslKey { tgid, _pad: 0, ssl };
                if ignore {
                    let _ = self.ssls.insert(key, ssl_flags::IGNORE, 0);
                } else {
                    let _ = self.ssls.remove(&key);
                }
            }
            _ => {}
        }
    }

    /// A process ended: forget what the agent set for it.
    pub fn forget_process(&mut self, tgid: u32) {
        self.released.remove(&tgid);
        self.clear_watched(tgid);
        self.exited.push(tgid);
    }

    /// Whether the operator selected this process (never rejected then).
    pub fn is_selected(&self, tgid: u32) -> bool {
        self.procs
            .get(&tgid, 0)
            .is_ok_and(|v| v.state & proc_state::SELECTED != 0)
    }

    /// Whether the kernel captures everything of this process.
    pub fn is_tracked(&self, tgid: u32) -> bool {
        self.procs
            .get(&tgid, 0)
            .is_ok_and(|v| v.state & proc_state::TRACKED != 0)
    }

    /// Entries of the kernel's process, socket and TLS session maps (each a
    /// walk over the map: called every few seconds).
    pub fn map_sizes(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("kernel_processes", self.procs.keys().count()),
            ("kernel_sockets", self.socks.keys().count()),
            ("kernel_tls_sessions", self.ssls.keys().count()),
        ]
    }

    /// Processes the kernel tracks now.
    pub fn tracked(&self) -> Vec<u32> {
        self.procs
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| v.state & proc_state::TRACKED != 0)
            .map(|(k, _)| k)
            .collect()
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
/// sockets are "out". Stderr is logs, never the wire: fd 2 is left out. A
/// descriptor that turns out not to carry JSON stops being sniffed at its
/// first read.
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
        if fd >= fds::MAX || fd == 2 {
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
            && unix_sockets.contains(&ino)
        {
            in_fds |= bit;
            out_fds |= bit;
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
