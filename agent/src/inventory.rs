//! What the agent has seen of MCP servers, kept in the state directory
//! (`inventory.json`) so that `mcptap scan` can set it against what MCP
//! clients are configured to run: configured but never seen, seen but
//! configured nowhere (a shadow server).
//!
//! One entry per server identity (serverInfo name, executable, port, side
//! observed), bounded; command lines are already masked by enrichment.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{enrich::operation::OperationRecord, session::Observer};

/// Most servers remembered; past it the least recently seen are forgotten.
const MAX_SERVERS: usize = 1000;
/// Most clients and users remembered per server.
const MAX_NAMES: usize = 50;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ObservedServer {
    /// serverInfo name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// The latest command line seen (masked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmdline: Vec<String>,
    /// `pipe` or `tcp`.
    pub transport: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Which side the agent watched (`server`: on this host; `client`: a
    /// remote server called from this host).
    pub observer: String,
    pub first_seen: String,
    pub last_seen: String,
    pub calls: u64,
    #[serde(default)]
    pub clients: BTreeSet<String>,
    #[serde(default)]
    pub users: BTreeSet<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Inventory {
    #[serde(default)]
    pub servers: Vec<ObservedServer>,
    #[serde(skip)]
    index: BTreeMap<String, usize>,
    #[serde(skip)]
    dirty: bool,
    #[serde(skip)]
    path: Option<PathBuf>,
}

impl Inventory {
    /// The inventory kept at `path` (empty when there is none yet).
    pub fn open(path: Option<PathBuf>) -> Inventory {
        let mut inv = path
            .as_deref()
            .and_then(|p| Inventory::read(p).ok())
            .unwrap_or_default();
        inv.path = path;
        inv.reindex();
        inv
    }

    /// Reads an inventory file (for `mcptap scan`).
    pub fn read(path: &Path) -> std::io::Result<Inventory> {
        let bytes = std::fs::read(path)?;
        let mut inv: Inventory = serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
        inv.reindex();
        Ok(inv)
    }

    fn reindex(&mut self) {
        self.index = self.servers.iter().enumerate().map(|(i, s)| (key(s), i)).collect();
    }

    /// Counts one finished operation, seen at `time` (RFC 3339).
    pub fn observe(&mut self, r: &OperationRecord, time: &str) {
        let op = &r.op;
        let process = r.peers.server.as_deref();
        let ends = r.endpoints.as_ref();
        let observer = op.key.observer();
        let probe = ObservedServer {
            name: r.server_name.clone(),
            version: op.session.server.as_ref().and_then(|s| s.version.clone()),
            exe: process.and_then(|p| p.exe.clone()),
            cmdline: process.map(|p| p.cmdline.clone()).unwrap_or_default(),
            transport: op.key.transport().as_str().to_string(),
            port: ends.and_then(|e| e.server_port),
            address: (observer == Observer::Client)
                .then(|| ends.and_then(|e| e.server_address.clone()))
                .flatten(),
            observer: observer.as_str().to_string(),
            first_seen: time.to_string(),
            last_seen: time.to_string(),
            calls: 0,
            ..Default::default()
        };
        let k = key(&probe);
        let i = match self.index.get(&k) {
            Some(&i) => i,
            None => {
                if self.servers.len() >= MAX_SERVERS {
                    self.forget_oldest();
                }
                self.servers.push(probe.clone());
                self.index.insert(k, self.servers.len() - 1);
                self.servers.len() - 1
            }
        };
        let s = &mut self.servers[i];
        s.calls += 1;
        s.last_seen = probe.last_seen;
        if probe.version.is_some() {
            s.version = probe.version;
        }
        if !probe.cmdline.is_empty() {
            s.cmdline = probe.cmdline;
        }
        let client = r.peers.client_app.map(str::to_string).or_else(|| r.client_name.clone());
        if let Some(c) = client
            && s.clients.len() < MAX_NAMES
        {
            s.clients.insert(c);
        }
        let user = r.user().map(str::to_string);
        if let Some(u) = user
            && s.users.len() < MAX_NAMES
        {
            s.users.insert(u);
        }
        self.dirty = true;
    }

    fn forget_oldest(&mut self) {
        if let Some(i) =
            (0..self.servers.len()).min_by(|&a, &b| self.servers[a].last_seen.cmp(&self.servers[b].last_seen))
        {
            self.servers.swap_remove(i);
            self.reindex();
        }
    }

    /// Writes the file when something changed.
    pub fn persist(&mut self) {
        if !self.dirty {
            return;
        }
        let Some(path) = &self.path else { return };
        let result = serde_json::to_vec_pretty(&self)
            .map_err(std::io::Error::other)
            .and_then(|b| crate::statefile::write_atomically(path, &b));
        match result {
            Ok(()) => self.dirty = false,
            Err(err) => tracing::warn!(path = %path.display(), "cannot save the server inventory: {err}"),
        }
    }
}

fn key(s: &ObservedServer) -> String {
    format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{}",
        s.name.as_deref().unwrap_or(""),
        s.exe.as_deref().unwrap_or(""),
        s.port.map(|p| p.to_string()).unwrap_or_default(),
        s.observer
    )
}
