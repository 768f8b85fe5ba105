//! Enrichment stage: who is behind a session. Server and client processes
//! are read from /proc once, when the session starts (the processes may be
//! gone by the time their last operation ends), and cached per connection.

pub mod host;
pub mod process;

use std::{collections::HashMap, path::PathBuf, sync::Arc};

pub use host::{Clock, HostInfo};
pub use process::{ClientFoundBy, ProcessInfo};

use crate::session::ConnKey;

/// The processes at both ends of a connection.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    pub server: Option<ProcessInfo>,
    pub client: Option<ProcessInfo>,
    pub client_found_by: Option<ClientFoundBy>,
}

#[derive(Debug)]
pub struct Enricher {
    proc_root: PathBuf,
    peers: HashMap<ConnKey, Arc<Peers>>,
}

impl Enricher {
    pub fn new(proc_root: PathBuf) -> Self {
        Enricher {
            proc_root,
            peers: HashMap::new(),
        }
    }

    /// Looks up (once) and returns the processes of a connection; `in_fd`
    /// is where the server reads its client's messages.
    pub fn peers(&mut self, conn: ConnKey, in_fd: i32) -> Arc<Peers> {
        let proc_root = &self.proc_root;
        self.peers
            .entry(conn)
            .or_insert_with(|| {
                let server = process::read(proc_root, conn.tgid());
                let client = server.as_ref().and_then(|s| process::find_client(proc_root, s, in_fd));
                Arc::new(Peers {
                    client_found_by: client.as_ref().map(|(_, how)| *how),
                    client: client.map(|(c, _)| c),
                    server,
                })
            })
            .clone()
    }

    /// The process ran a new program: read it again next time.
    pub fn refresh(&mut self, conn: ConnKey) {
        self.peers.remove(&conn);
    }

    /// The processes of a connection, as looked up before (or unknown).
    pub fn known_peers(&self, conn: ConnKey) -> Arc<Peers> {
        self.peers.get(&conn).cloned().unwrap_or_default()
    }

    /// The connection is over; its facts are no longer needed.
    pub fn forget(&mut self, conn: ConnKey) {
        self.peers.remove(&conn);
    }
}
