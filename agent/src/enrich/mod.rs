//! Enrichment stage: who is behind a session. Processes are read from /proc
//! once, when first needed (a process may be gone by the time its last
//! operation ends), and cached by pid until it exits or runs a new program
//! (processes the agent does not track are checked by `prune`).
//!
//! - stdio: the server is the watched process; its client is the process
//!   holding the other end of its stdin pipe;
//! - TCP: the watched process is the server or the client, by the side of
//!   the connection it is on; the other end, when it is on this host
//!   (loopback), is found from the socket tables.

pub mod cgroup;
pub mod clients;
pub mod host;
pub mod identity;
pub mod operation;
pub mod process;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

pub use host::{Clock, HostInfo};
pub use process::{ClientFoundBy, ProcessInfo};

use crate::{
    capture::SocketOpen,
    session::{ConnFacts, Observer, SessionKey, Via},
};

/// The processes at both ends of a session.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    pub server: Option<Arc<ProcessInfo>>,
    pub client: Option<Arc<ProcessInfo>>,
    pub client_found_by: Option<ClientFoundBy>,
    /// The application behind the client process (`claude-code`, `vscode`...).
    pub client_app: Option<&'static str>,
    /// The client process's ancestors, nearest first, up to the
    /// application (at most [`MAX_ANCESTRY`]).
    pub client_ancestry: Vec<clients::Ancestor>,
}

/// Ancestors looked at above a client process.
pub const MAX_ANCESTRY: usize = 8;

/// Most /proc scans for loopback peers per second (each reads every
/// process's descriptors).
const PEER_SCANS_PER_SECOND: u32 = 20;

/// How often cached processes are checked against /proc.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// How long "no process listens there" holds before the sockets are
/// scanned again for that address.
const NO_LISTENER_RETRY: Duration = Duration::from_secs(5);

/// Who listens on a loopback address, as last found.
#[derive(Debug, Clone, Copy)]
struct Listener {
    owner: Option<u32>,
    at: Instant,
}

#[derive(Debug)]
pub struct Enricher {
    proc_root: PathBuf,
    processes: HashMap<u32, Option<Arc<ProcessInfo>>>,
    stdio_clients: HashMap<u32, Option<(Arc<ProcessInfo>, ClientFoundBy)>>,
    scans: (Instant, u32),
    pub peer_scans_skipped: u64,
    /// Owners of loopback servers' listening sockets, by address. An owner
    /// holds while it lives (a server restarted on the same port is looked
    /// up again); none found holds for [`NO_LISTENER_RETRY`].
    listeners: HashMap<std::net::SocketAddr, Listener>,
    pruned: Instant,
}

impl Enricher {
    pub fn new(proc_root: PathBuf) -> Self {
        Enricher {
            proc_root,
            processes: HashMap::new(),
            stdio_clients: HashMap::new(),
            scans: (Instant::now(), 0),
            peer_scans_skipped: 0,
            listeners: HashMap::new(),
            pruned: Instant::now(),
        }
    }

    /// Every [`PRUNE_EVERY`]: drops what is cached about processes that are
    /// gone or whose pid another process now has. The agent hears of the
    /// exits of the processes it tracks; clients, their ancestors and
    /// loopback servers it only reads are checked here, so a long-running
    /// agent neither keeps them forever nor names a later process by them.
    pub fn prune(&mut self) {
        if self.pruned.elapsed() < PRUNE_EVERY {
            return;
        }
        self.pruned = Instant::now();
        let stale: Vec<u32> = self
            .processes
            .iter()
            .filter(|(_, info)| {
                info.as_ref()
                    .is_none_or(|i| !process::still_running(&self.proc_root, i))
            })
            .map(|(pid, _)| *pid)
            .collect();
        for pid in stale {
            self.forget(pid);
        }
    }

    /// Processes, stdio clients and listeners cached (the soak test
    /// watches them).
    pub fn tables(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("processes", self.processes.len()),
            ("stdio_clients", self.stdio_clients.len()),
            ("listeners", self.listeners.len()),
        ]
    }

    /// A process's facts, read once.
    pub fn process(&mut self, pid: u32) -> Option<Arc<ProcessInfo>> {
        let proc_root = &self.proc_root;
        self.processes
            .entry(pid)
            .or_insert_with(|| process::read(proc_root, pid).map(Arc::new))
            .clone()
    }

    /// The client of a stdio server (`in_fd`: where it reads its client's
    /// messages), looked up once.
    pub fn stdio_client(&mut self, server_pid: u32, in_fd: i32) -> Option<(Arc<ProcessInfo>, ClientFoundBy)> {
        if let Some(found) = self.stdio_clients.get(&server_pid) {
            return found.clone();
        }
        let server = self.process(server_pid);
        let found = server
            .as_ref()
            .and_then(|s| process::find_client(&self.proc_root, s, in_fd))
            .map(|(c, how)| (Arc::new(c), how));
        self.stdio_clients.insert(server_pid, found.clone());
        found
    }

    /// Looks up where a connection goes: its addresses, exactly, from a
    /// copy of the descriptor. A connect still in progress has no peer yet,
    /// and a short connection may be gone: then the addresses come from
    /// what accept/connect said, and the local one from the socket (or, for
    /// an accepted one, its listening socket). An unknown local address is
    /// left unspecified (events omit it). Cheap: no /proc scan here.
    fn resolve_connection(&mut self, tgid: u32, fd: i32, open: Option<&SocketOpen>, facts: &ConnFacts) {
        if facts.addrs.get().is_some() {
            return;
        }
        let addrs = crate::procnet::socket_addrs(tgid, fd).or_else(|| {
            let open = open?;
            let peer = open.peer?;
            let local = crate::procnet::socket_addrs_local(tgid, fd)
                .or_else(|| crate::procnet::socket_addrs_local(tgid, open.listen_fd?))
                .unwrap_or_else(|| std::net::SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0));
            Some((local, peer))
        });
        tracing::debug!(
            tgid,
            fd,
            late_us = open.map(|o| (Clock::monotonic_now_ns().saturating_sub(o.ts_ns)) / 1000),
            found = addrs.is_some(),
            "connection addresses"
        );
        if let Some((_, peer)) = addrs {
            let _ = facts.addrs.set(addrs.unwrap_or((peer, peer)));
            if !peer.ip().is_loopback() {
                let _ = facts.peer_pid.set(None);
            }
        }
    }

    /// The server process of a loopback connection a watched client made,
    /// when no watched process holds the other end: the owner of the
    /// server's listening socket (one /proc scan per server, cached and
    /// rate-limited). A loopback client of a watched server is only known
    /// when it is watched too (`Pipeline::peers`): finding the owner of an
    /// ephemeral port means scanning every process's descriptors per
    /// connection, which would stall the capture.
    pub fn find_loopback_server(&mut self, tgid: u32, peer: std::net::SocketAddr) -> Option<u32> {
        if !peer.ip().is_loopback() {
            return None;
        }
        if let Some(&known) = self.listeners.get(&peer) {
            match known.owner {
                Some(pid) if self.proc_root.join(pid.to_string()).exists() => return Some(pid),
                None if known.at.elapsed() < NO_LISTENER_RETRY => return None,
                _ => {} // its owner is gone, or time to look again
            }
        }
        let now = Instant::now();
        if now.duration_since(self.scans.0) >= Duration::from_secs(1) {
            self.scans = (now, 0);
        }
        if self.scans.1 >= PEER_SCANS_PER_SECOND {
            self.peer_scans_skipped += 1;
            return None;
        }
        self.scans.1 += 1;
        let table = crate::procnet::tcp_table(&self.proc_root, tgid);
        let inode = table
            .iter()
            .find(|e| e.state == crate::procnet::LISTEN && e.local.port() == peer.port())
            .map(|e| e.inode);
        let owner = inode.and_then(|ino| crate::procnet::inode_owner(&self.proc_root, ino));
        self.listeners.insert(peer, Listener { owner, at: now });
        if let Some(pid) = owner {
            let _ = self.process(pid);
        }
        owner
    }

    /// The processes of a session's ends, with the client's ancestry and
    /// application.
    pub fn peers(&mut self, key: &SessionKey, via: Option<&Via>, stdio_in_fd: i32) -> Peers {
        let mut peers = self.ends(key, via, stdio_in_fd);
        if let Some(client) = peers.client.clone() {
            let mut chain = vec![client.clone()];
            let mut ppid = client.ppid;
            while chain.len() <= MAX_ANCESTRY && ppid > 1 {
                let Some(parent) = self.process(ppid) else { break };
                ppid = parent.ppid;
                chain.push(parent);
            }
            let refs: Vec<&ProcessInfo> = chain.iter().map(|p| &**p).collect();
            peers.client_app = clients::app_of_chain(&refs);
            // Ancestors up to (and with) the application's process.
            let upto = refs
                .iter()
                .position(|p| clients::app_of(p).is_some())
                .unwrap_or(refs.len() - 1);
            peers.client_ancestry = refs[1..=upto].iter().map(|p| clients::Ancestor::of(p)).collect();
        }
        peers
    }

    fn ends(&mut self, key: &SessionKey, via: Option<&Via>, stdio_in_fd: i32) -> Peers {
        match key {
            SessionKey::Stdio { tgid } => {
                let client = self.stdio_client(*tgid, stdio_in_fd);
                Peers {
                    server: self.process(*tgid),
                    client_found_by: client.as_ref().map(|(_, how)| *how),
                    client: client.map(|(c, _)| c),
                    ..Peers::default()
                }
            }
            SessionKey::Http { tgid, observer, .. } => {
                let me = self.process(*tgid);
                let other = via
                    .and_then(|v| v.conn.peer_pid.get().copied().flatten())
                    .and_then(|pid| self.process(pid));
                match observer {
                    Observer::Server => Peers {
                        server: me,
                        client_found_by: other.as_ref().map(|_| ClientFoundBy::SocketPeer),
                        client: other,
                        ..Peers::default()
                    },
                    Observer::Client => Peers {
                        server: other,
                        client: me,
                        ..Peers::default()
                    },
                }
            }
        }
    }

    /// The process ran a new program: read it again next time.
    pub fn refresh(&mut self, pid: u32) {
        self.processes.remove(&pid);
        self.stdio_clients.remove(&pid);
    }

    /// The process is gone; its facts are no longer needed, nor the
    /// addresses it listened on.
    pub fn forget(&mut self, pid: u32) {
        self.processes.remove(&pid);
        self.stdio_clients.remove(&pid);
        self.listeners.retain(|_, l| l.owner != Some(pid));
    }
}

impl crate::session::conns::SocketResolver for Enricher {
    fn resolve(&mut self, tgid: u32, fd: i32, open: Option<&SocketOpen>, facts: &ConnFacts) {
        self.resolve_connection(tgid, fd, open, facts);
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::symlink, path::Path};

    use super::*;

    const PORT: u16 = 0x1F90; // 8080

    /// A /proc with the client (pid 100) and its network namespace's TCP
    /// table: one socket listening on 127.0.0.1:8080, inode `inode`.
    fn proc_with_listener(root: &Path, inode: u64) {
        let net = root.join("100/net");
        fs::create_dir_all(&net).unwrap();
        fs::write(
            net.join("tcp"),
            format!(
                "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:{PORT:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
            ),
        )
        .unwrap();
    }

    fn server_process(root: &Path, pid: u32, inode: u64) {
        let fd = root.join(format!("{pid}/fd"));
        fs::create_dir_all(&fd).unwrap();
        symlink(format!("socket:[{inode}]"), fd.join("3")).unwrap();
    }

    #[test]
    fn a_server_restarted_on_the_same_port_is_the_new_process() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let server: std::net::SocketAddr = format!("127.0.0.1:{PORT}").parse().unwrap();
        proc_with_listener(root, 5);
        server_process(root, 200, 5);
        let mut e = Enricher::new(root.to_path_buf());
        assert_eq!(e.find_loopback_server(100, server), Some(200));

        // 200 exits (the agent may not hear of it); 300 listens there now.
        fs::remove_dir_all(root.join("200")).unwrap();
        proc_with_listener(root, 6);
        server_process(root, 300, 6);
        assert_eq!(e.find_loopback_server(100, server), Some(300));

        // Heard of: its addresses go with it.
        e.forget(300);
        assert_eq!(e.tables().iter().find(|t| t.0 == "listeners").map(|t| t.1), Some(0));
    }

    /// /proc/PID/stat of a process started at `start` ticks.
    fn stat(root: &Path, pid: u32, comm: &str, start: u64) {
        let dir = root.join(pid.to_string());
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("stat"),
            format!("{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0\n"),
        )
        .unwrap();
    }

    #[test]
    fn processes_gone_or_whose_pid_was_reused_are_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        stat(root, 500, "claude", 1000);
        stat(root, 501, "bash", 1001);
        let mut e = Enricher::new(root.to_path_buf());
        assert_eq!(e.process(500).map(|p| p.comm.clone()).as_deref(), Some("claude"));
        assert_eq!(e.process(501).and_then(|p| p.start_ticks), Some(1001));

        // 500 exits and its pid goes to another program; 501 exits.
        stat(root, 500, "curl", 9000);
        fs::remove_dir_all(root.join("501")).unwrap();
        e.prune();
        assert_eq!(
            e.process(500).map(|p| p.comm.clone()).as_deref(),
            Some("claude"),
            "checked every PRUNE_EVERY, not at each call"
        );
        e.pruned = e.pruned.checked_sub(PRUNE_EVERY).expect("an instant 10 s back");
        e.prune();
        assert_eq!(e.process(500).map(|p| p.comm.clone()).as_deref(), Some("curl"));
        assert!(e.process(501).is_none());
        e.pruned = e.pruned.checked_sub(PRUNE_EVERY).expect("an instant 10 s back");
        e.prune();
        let cached = |e: &Enricher| e.tables().iter().find(|t| t.0 == "processes").map(|t| t.1);
        assert_eq!(cached(&e), Some(1), "only the running one is kept");
    }

    #[test]
    fn no_listener_found_is_looked_for_again_later() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let server: std::net::SocketAddr = format!("127.0.0.1:{PORT}").parse().unwrap();
        fs::create_dir_all(root.join("100/net")).unwrap();
        let mut e = Enricher::new(root.to_path_buf());
        assert_eq!(e.find_loopback_server(100, server), None);
        proc_with_listener(root, 7);
        server_process(root, 400, 7);
        // Held for a while: no scan per event of a connection nobody owns.
        assert_eq!(e.find_loopback_server(100, server), None);
        if let Some(l) = e.listeners.get_mut(&server) {
            l.at = l.at.checked_sub(NO_LISTENER_RETRY).expect("an instant 5 s back");
        }
        assert_eq!(e.find_loopback_server(100, server), Some(400));
    }
}
