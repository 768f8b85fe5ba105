//! What each operation did on the host: the side effects of a server
//! process (and of the processes it started) while it handled a request,
//! and the CPU it spent.
//!
//! ```text
//! RequestStarted ─┐
//! RawEffect ──→ resolve (absolute paths, exec arguments, listen address,
//!               │        a connection's host name: naming)
//!               └→ EffectTable: attributed to the server's requests in flight
//! Operation ──────→ EffectTable::finish → OperationEffects (summary, CPU)
//! ```
//!
//! Attribution: the ring buffer keeps the kernel's order, so when an effect
//! arrives the requests the server has in flight are exactly those it had
//! received and not answered when it acted. One in flight: the effect is
//! that request's (`exact`). Several: it is each of theirs, marked
//! `overlap` — never a guess at which. None: the server acted on its own
//! (start-up, a timer); counted, not attributed.

pub mod cpu;
pub mod naming;
pub mod resolve;

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
};

use serde::Serialize;

/// What kind of side effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EffectKind {
    /// A file opened for reading.
    FileRead,
    /// A file opened for writing (or created).
    FileWrite,
    FileDelete,
    FileRename,
    /// A program run.
    Exec,
    /// An outbound connection.
    Connect,
    /// A listening socket.
    Listen,
}

impl EffectKind {
    pub const ALL: [EffectKind; 7] = [
        EffectKind::FileRead,
        EffectKind::FileWrite,
        EffectKind::FileDelete,
        EffectKind::FileRename,
        EffectKind::Exec,
        EffectKind::Connect,
        EffectKind::Listen,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EffectKind::FileRead => "file_read",
            EffectKind::FileWrite => "file_write",
            EffectKind::FileDelete => "file_delete",
            EffectKind::FileRename => "file_rename",
            EffectKind::Exec => "exec",
            EffectKind::Connect => "connect",
            EffectKind::Listen => "listen",
        }
    }
}

/// One side effect, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Effect {
    pub kind: EffectKind,
    /// The process that did it (the server, or one it started).
    pub pid: u32,
    #[serde(skip)]
    pub ts_ns: u64,
    /// Files: the absolute path (lexically normalised); exec: the
    /// executable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A rename's new name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Exec: the arguments after the program name, masked; absent when the
    /// process was gone before the agent could read them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Connect: the peer; listen: the local address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<SocketAddr>,
    /// Connect: the host name behind the address, when the process
    /// resolved it or named it on the connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_from: Option<naming::HostFrom>,
    /// Connect: the socket (to join the host its first bytes name).
    #[serde(skip)]
    pub fd: Option<i32>,
    /// The kernel refused it (EACCES, EPERM): the process tried.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub denied: bool,
    /// Connect: it did not succeed (refused, unreachable...).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub failed: bool,
}

/// How an effect or a CPU figure was tied to its operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribution {
    /// The server had this one operation in flight.
    #[default]
    Exact,
    /// It had several: the effect is each of theirs.
    Overlap,
}

impl Attribution {
    pub fn as_str(self) -> &'static str {
        match self {
            Attribution::Exact => "exact",
            Attribution::Overlap => "overlap",
        }
    }
}

/// An effect in an operation's summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttributedEffect {
    #[serde(flatten)]
    pub effect: Effect,
    pub attribution: Attribution,
}

/// The effects of one operation: the first `per_kind` of each kind, the
/// count of each kind, and how many were left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EffectSummary {
    pub items: Vec<AttributedEffect>,
    pub counts: BTreeMap<EffectKind, u64>,
    /// Effects counted but not listed (the per-kind bound was reached).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub omitted: BTreeMap<EffectKind, u64>,
    /// `overlap` when any effect was shared with another operation.
    pub attribution: Attribution,
}

impl EffectSummary {
    /// The summary of `all` (in order): the first `per_kind` of each kind
    /// listed; `counts` may be larger than what `all` holds (effects past
    /// the per-operation bound).
    fn of(all: &[AttributedEffect], counts: BTreeMap<EffectKind, u64>, per_kind: usize) -> EffectSummary {
        let mut listed: BTreeMap<EffectKind, u64> = BTreeMap::new();
        let mut items = Vec::new();
        let mut attribution = Attribution::Exact;
        for e in all {
            if e.attribution == Attribution::Overlap {
                attribution = Attribution::Overlap;
            }
            let n = listed.entry(e.effect.kind).or_default();
            if (*n as usize) < per_kind {
                *n += 1;
                items.push(e.clone());
            }
        }
        let omitted = counts
            .iter()
            .filter_map(|(k, n)| {
                let left = n.saturating_sub(listed.get(k).copied().unwrap_or(0));
                (left > 0).then_some((*k, left))
            })
            .collect();
        EffectSummary {
            items,
            counts,
            omitted,
            attribution,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// CPU time the server's processes spent on an operation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CpuUse {
    pub seconds: f64,
    /// `overlap`: other operations of the server ran meanwhile, and this
    /// is the server's CPU over the whole time (theirs included).
    pub attribution: Attribution,
}

/// What an operation did, handed to the operation record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OperationEffects {
    /// What events show (bounded per kind).
    pub effects: EffectSummary,
    /// Every effect up to the per-operation bound, in order: what the
    /// policy checks.
    pub all: Vec<AttributedEffect>,
    /// Effects past the per-operation bound: counted, not checked.
    pub unchecked: u64,
    pub cpu: Option<CpuUse>,
}

/// Bounds of the effects stage (`--effects-per-kind`).
#[derive(Debug, Clone, Copy)]
pub struct EffectLimits {
    /// Effects listed per kind in one operation's event (the rest are
    /// counted).
    pub per_kind: usize,
    /// Effects kept per operation for the policy (the rest are counted).
    pub per_operation: usize,
    /// Requests in flight tracked per server (the oldest goes first).
    pub in_flight_per_server: usize,
}

impl Default for EffectLimits {
    fn default() -> Self {
        EffectLimits {
            per_kind: 16,
            per_operation: 1024,
            in_flight_per_server: 256,
        }
    }
}

/// Where an effect went (for the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    Attributed(Attribution),
    /// The server had nothing in flight.
    Unattributed,
}

#[derive(Debug)]
struct InFlight {
    serial: u64,
    cpu_start_ns: Option<u64>,
    /// Another request of the server was in flight at some point.
    cpu_overlap: bool,
    all: Vec<AttributedEffect>,
    counts: BTreeMap<EffectKind, u64>,
    unchecked: u64,
}

/// Requests in flight per server process, and what each has done so far.
#[derive(Debug, Default)]
pub struct EffectTable {
    limits: EffectLimits,
    servers: HashMap<u32, Vec<InFlight>>,
    /// Effects past the per-operation bound (counted, not checked).
    pub unchecked: u64,
    /// Requests forgotten because a server had too many in flight.
    pub evicted: u64,
    /// Host names whose connection's operation had ended (not shown).
    pub names_late: u64,
}

impl EffectTable {
    pub fn new(limits: EffectLimits) -> EffectTable {
        EffectTable {
            limits,
            ..EffectTable::default()
        }
    }

    /// The server received request `serial`; `cpu_ns` is its CPU time now.
    pub fn request_started(&mut self, server: u32, serial: u64, cpu_ns: Option<u64>) {
        let list = self.servers.entry(server).or_default();
        if list.len() >= self.limits.in_flight_per_server {
            // The oldest (its answer never came, or was never seen).
            list.remove(0);
            self.evicted += 1;
        }
        let overlap = !list.is_empty();
        for other in list.iter_mut() {
            other.cpu_overlap = true;
        }
        list.push(InFlight {
            serial,
            cpu_start_ns: cpu_ns,
            cpu_overlap: overlap,
            all: Vec::new(),
            counts: BTreeMap::new(),
            unchecked: 0,
        });
    }

    /// A side effect of `owner` (a server process).
    pub fn on_effect(&mut self, owner: u32, effect: Effect) -> Placed {
        let Some(list) = self.servers.get_mut(&owner).filter(|l| !l.is_empty()) else {
            return Placed::Unattributed;
        };
        let attribution = if list.len() == 1 {
            Attribution::Exact
        } else {
            Attribution::Overlap
        };
        for op in list.iter_mut() {
            *op.counts.entry(effect.kind).or_default() += 1;
            if op.all.len() < self.limits.per_operation {
                op.all.push(AttributedEffect {
                    effect: effect.clone(),
                    attribution,
                });
            } else {
                op.unchecked += 1;
                self.unchecked += 1;
            }
        }
        Placed::Attributed(attribution)
    }

    /// Process `pid` of `owner` named the host of the connection on `fd`
    /// in its first bytes: the connect effect is given that name, in place
    /// of the one a DNS answer gave its address (the name sent is the
    /// connection's own; an address can answer for many names). False when
    /// no operation in flight holds that connection (it ended first, or
    /// none was in flight).
    pub fn name_host(&mut self, owner: u32, pid: u32, fd: i32, host: &str, from: naming::HostFrom) -> bool {
        let Some(list) = self.servers.get_mut(&owner) else {
            self.names_late += 1;
            return false;
        };
        let mut found = false;
        for op in list.iter_mut() {
            let connect = op
                .all
                .iter_mut()
                .rev()
                .find(|e| e.effect.kind == EffectKind::Connect && e.effect.pid == pid && e.effect.fd == Some(fd));
            if let Some(e) = connect {
                found = true;
                if e.effect.host_from.is_none_or(|f| f == naming::HostFrom::Dns) {
                    e.effect.host = Some(host.to_string());
                    e.effect.host_from = Some(from);
                }
            }
        }
        if !found {
            self.names_late += 1;
        }
        found
    }

    /// Request `serial` of `server` ended; `cpu_ns` is the server's CPU
    /// time now. `None` when the request was not tracked here (a client's
    /// view, or evicted).
    pub fn finish(
        &mut self,
        server: u32,
        serial: u64,
        cpu_ns: impl FnOnce() -> Option<u64>,
    ) -> Option<OperationEffects> {
        let list = self.servers.get_mut(&server)?;
        let i = list.iter().position(|op| op.serial == serial)?;
        let op = list.remove(i);
        let cpu_ns = cpu_ns();
        if list.is_empty() {
            self.servers.remove(&server);
        }
        let cpu = match (op.cpu_start_ns, cpu_ns) {
            (Some(start), Some(end)) if end >= start => Some(CpuUse {
                seconds: (end - start) as f64 / 1e9,
                attribution: if op.cpu_overlap {
                    Attribution::Overlap
                } else {
                    Attribution::Exact
                },
            }),
            _ => None,
        };
        Some(OperationEffects {
            effects: EffectSummary::of(&op.all, op.counts, self.limits.per_kind),
            all: op.all,
            unchecked: op.unchecked,
            cpu,
        })
    }

    /// The server process is gone.
    pub fn forget(&mut self, server: u32) {
        self.servers.remove(&server);
    }

    /// Requests tracked (`mcptap_table_entries{table="effects_in_flight"}`).
    pub fn in_flight(&self) -> usize {
        self.servers.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &str) -> Effect {
        Effect {
            kind: EffectKind::FileRead,
            pid: 1,
            ts_ns: 0,
            path: Some(path.into()),
            to: None,
            args: None,
            address: None,
            host: None,
            host_from: None,
            fd: None,
            denied: false,
            failed: false,
        }
    }

    #[test]
    fn one_request_in_flight_gets_its_effects_exactly() {
        let mut t = EffectTable::new(EffectLimits::default());
        assert_eq!(t.on_effect(7, read("/before")), Placed::Unattributed);
        t.request_started(7, 1, Some(1_000));
        assert_eq!(t.on_effect(7, read("/a")), Placed::Attributed(Attribution::Exact));
        // Another server's effect is not this request's.
        assert_eq!(t.on_effect(8, read("/b")), Placed::Unattributed);
        let done = t.finish(7, 1, || Some(201_000_000)).unwrap();
        assert_eq!(done.effects.items.len(), 1);
        assert_eq!(done.effects.items[0].effect.path.as_deref(), Some("/a"));
        assert_eq!(done.effects.attribution, Attribution::Exact);
        let cpu = done.cpu.unwrap();
        assert!((cpu.seconds - 0.200999).abs() < 1e-6);
        assert_eq!(cpu.attribution, Attribution::Exact);
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.on_effect(7, read("/after")), Placed::Unattributed);
    }

    #[test]
    fn concurrent_requests_share_effects_as_overlap() {
        let mut t = EffectTable::new(EffectLimits::default());
        t.request_started(7, 1, Some(0));
        t.on_effect(7, read("/only-first"));
        t.request_started(7, 2, Some(5));
        t.on_effect(7, read("/both"));
        let second = t.finish(7, 2, || Some(10)).unwrap();
        t.on_effect(7, read("/first-again"));
        let first = t.finish(7, 1, || Some(20)).unwrap();
        let paths = |o: &OperationEffects| {
            o.effects
                .items
                .iter()
                .map(|e| (e.effect.path.clone().unwrap(), e.attribution))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            paths(&first),
            vec![
                ("/only-first".into(), Attribution::Exact),
                ("/both".into(), Attribution::Overlap),
                ("/first-again".into(), Attribution::Exact),
            ]
        );
        assert_eq!(paths(&second), vec![("/both".into(), Attribution::Overlap)]);
        assert_eq!(first.effects.attribution, Attribution::Overlap);
        assert_eq!(first.cpu.unwrap().attribution, Attribution::Overlap);
        assert_eq!(second.cpu.unwrap().attribution, Attribution::Overlap);
    }

    #[test]
    fn bounds_are_counted_when_hit() {
        let mut t = EffectTable::new(EffectLimits {
            per_kind: 2,
            per_operation: 4,
            in_flight_per_server: 2,
        });
        t.request_started(7, 1, None);
        for i in 0..5 {
            t.on_effect(7, read(&format!("/{i}")));
        }
        let done = t.finish(7, 1, || None).unwrap();
        assert_eq!(done.effects.items.len(), 2);
        assert_eq!(done.effects.counts[&EffectKind::FileRead], 5);
        assert_eq!(done.effects.omitted[&EffectKind::FileRead], 3);
        assert_eq!((done.all.len(), done.unchecked, t.unchecked), (4, 1, 1));
        assert!(done.cpu.is_none());
        for serial in 1..=3 {
            t.request_started(9, serial, None);
        }
        assert_eq!(t.evicted, 1);
        assert!(t.finish(9, 1, || None).is_none());
        assert!(t.finish(9, 3, || None).is_some());
        t.forget(9);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn a_host_name_joins_its_connection_in_every_operation_holding_it() {
        let mut t = EffectTable::new(EffectLimits::default());
        t.request_started(7, 1, None);
        t.request_started(7, 2, None);
        let mut c = read("/x");
        c.kind = EffectKind::Connect;
        c.pid = 8;
        c.fd = Some(5);
        // Its address was resolved as another name (a shared address).
        c.host = Some("cdn.test".into());
        c.host_from = Some(naming::HostFrom::Dns);
        t.on_effect(7, c.clone());
        // Another process's descriptor 5, another server: no.
        assert!(!t.name_host(7, 9, 5, "a.test", naming::HostFrom::Sni));
        assert!(!t.name_host(6, 8, 5, "a.test", naming::HostFrom::Sni));
        // The name the connection sent wins over the address's.
        assert!(t.name_host(7, 8, 5, "api.test", naming::HostFrom::Sni));
        // Only once: what a connection sent stays.
        assert!(t.name_host(7, 8, 5, "other.test", naming::HostFrom::Http));
        for serial in [1, 2] {
            let done = t.finish(7, serial, || None).unwrap();
            let e = &done.all[0].effect;
            assert_eq!(
                (e.host.as_deref(), e.host_from),
                (Some("api.test"), Some(naming::HostFrom::Sni))
            );
        }
        // The operation ended: the name comes too late (counted).
        assert_eq!(t.names_late, 2);
        assert!(!t.name_host(7, 8, 5, "api.test", naming::HostFrom::Sni));
        assert_eq!(t.names_late, 3);
    }
}
