//! The connections of watched processes (TCP sockets and TLS sessions):
//! the network path of the sessions stage, with the same contract as the
//! stdio streams — records in, outputs out.
//!
//! Per connection: its bytes in order (reassembly), HTTP/1.1 both ways
//! (`protocol::http`), MCP over HTTP (`session::http`) into the session
//! table. Discovery's verdict on a connection (MCP, not MCP, a protocol
//! mcptap does not parse) becomes an [`Output::Discovery`]; the router
//! carries it out in the kernel. Also which socket each TLS session runs
//! on, and an index of watched connections by address (on loopback, the
//! other end is often a watched process too).

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::Arc,
};

use super::{
    ConnFacts, Discovered, Observer, Output, Problem, SessionTable,
    http::{Decision, HttpMcp, McpConn, Problems, Verdict},
};
use crate::{
    capture::{Channel, Chunk, Io, SocketOpen},
    protocol::http::{HttpConn, HttpEvent, parse_host},
    reassembly::Reassembler,
};

/// Finds a socket's addresses (the enrich stage: /proc, or a copy of the
/// descriptor). A trait so that the table is tested without processes.
pub trait SocketResolver {
    /// Fills `facts.addrs` (and what follows from them) when it can.
    fn resolve(&mut self, tgid: u32, fd: i32, open: Option<&SocketOpen>, facts: &ConnFacts);
}

struct SocketEntry {
    open: Option<SocketOpen>,
    facts: Arc<ConnFacts>,
}

/// A TCP connection (or TLS session) of a watched process.
struct NetConn {
    http: HttpConn,
    mcp: McpConn,
    /// Which end the process is, from accept/connect, until the traffic
    /// says (HTTP requests read: server; written: client).
    role: Option<Observer>,
    /// The socket (for TLS: the one its ciphertext moves on), once known.
    fd: Option<i32>,
    /// The port of the latest request's Host header.
    host_port: Option<u16>,
}

impl NetConn {
    fn observer(&self) -> Option<Observer> {
        match self.http.requests_on() {
            Some(Io::Read) => Some(Observer::Server),
            Some(Io::Write) => Some(Observer::Client),
            None => self.role,
        }
    }
}

pub struct ConnTable {
    max_message_bytes: usize,
    reassembler: Reassembler,
    http_mcp: HttpMcp,
    net: HashMap<(u32, Channel), NetConn>,
    /// Connections let go by discovery: their stragglers are ignored until
    /// a new request starts (and the kernel sniffed it again).
    released: HashSet<(u32, Channel)>,
    /// Sockets of watched processes: what accept/connect said, and the
    /// connection facts found for them.
    sockets: HashMap<(u32, i32), SocketEntry>,
    /// Watched sockets by (local, peer) address.
    by_addrs: HashMap<(SocketAddr, SocketAddr), u32>,
    next_serial: u64,
    events: Vec<HttpEvent>,
}

impl ConnTable {
    pub fn new(max_message_bytes: usize, parse_payloads: bool) -> ConnTable {
        ConnTable {
            max_message_bytes,
            reassembler: Reassembler::default(),
            http_mcp: HttpMcp::new(parse_payloads),
            net: HashMap::new(),
            released: HashSet::new(),
            sockets: HashMap::new(),
            by_addrs: HashMap::new(),
            next_serial: 0,
            events: Vec::new(),
        }
    }

    /// Whether payload trees are built (someone may want them).
    pub fn set_payloads(&mut self, parse_payloads: bool) {
        self.http_mcp.set_payloads(parse_payloads);
    }

    /// The watched process holding the other end of a connection seen as
    /// (local, peer), when there is one.
    pub fn watched_peer(&self, local: SocketAddr, peer: SocketAddr) -> Option<u32> {
        self.by_addrs.get(&(peer, local)).copied()
    }

    /// Bytes a socket or TLS session moved.
    pub fn on_chunk(
        &mut self,
        chunk: &Chunk<'_>,
        sessions: &mut SessionTable,
        resolver: &mut dyn SocketResolver,
        out: &mut Vec<Output>,
    ) {
        let id = (chunk.tgid, chunk.channel);
        if self.released.contains(&id) {
            // Stragglers of a connection let go; a new sniffed request
            // starts afresh.
            if !(chunk.discovery && chunk.offset == 0 && starts_request(chunk.data)) {
                return;
            }
            self.released.remove(&id);
            self.reassembler.forget_channel(chunk.tgid, chunk.channel);
        }
        if !self.net.contains_key(&id) {
            let (facts, open) = match chunk.channel {
                Channel::Socket(fd) => {
                    let facts = self.socket_facts(chunk.tgid, fd, None);
                    (facts, self.sockets.get(&(chunk.tgid, fd)).and_then(|s| s.open))
                }
                _ => {
                    self.next_serial += 1;
                    let facts = Arc::new(ConnFacts {
                        serial: self.next_serial,
                        tls: true,
                        ..ConnFacts::default()
                    });
                    (facts, None)
                }
            };
            // Every connection's first exchange decides whether it is MCP,
            // tracked process or not: a tracked server's calls to other
            // HTTP APIs are let go in the kernel after one exchange.
            self.net.insert(
                id,
                NetConn {
                    http: HttpConn::new(self.max_message_bytes),
                    mcp: McpConn::new(facts, Verdict::Undecided),
                    role: open.map(|o| if o.server { Observer::Server } else { Observer::Client }),
                    fd: None,
                    host_port: None,
                },
            );
        }
        let Some(conn) = self.net.get_mut(&id) else { return };
        let bytes = self.reassembler.push(chunk);
        if bytes.gap_before {
            out.push(Output::Problem(Problem::Gap));
        }
        let mut events = std::mem::take(&mut self.events);
        conn.http
            .push(chunk.direction, bytes.data, bytes.ts_ns, bytes.gap_before, &mut events);
        let tls = matches!(chunk.channel, Channel::Tls(_));
        for ev in &events {
            if let HttpEvent::Request(r) = ev {
                conn.host_port = r
                    .headers
                    .host
                    .as_deref()
                    .and_then(|h| parse_host(h, tls))
                    .map(|(_, port)| port);
            }
        }
        let observer = conn.observer();
        let mut problems = Problems::default();
        let mut decision = Decision::None;
        for ev in events.drain(..) {
            let Some(observer) = observer else { break };
            let d = self
                .http_mcp
                .on_event(&mut conn.mcp, chunk.tgid, observer, ev, sessions, &mut problems, out);
            if d != Decision::None {
                decision = d;
                if !matches!(d, Decision::Confirm) {
                    break; // the connection goes: the rest is moot
                }
            }
        }
        self.events = events;
        report(&problems, out);
        if chunk.fd >= 0 {
            self.associate(id, chunk, resolver);
        }
        self.decide(id, chunk.discovery, decision, chunk.ts_ns, sessions, out);
    }

    /// A watched process accepted or connected a socket.
    pub fn on_socket_open(
        &mut self,
        open: SocketOpen,
        sessions: &mut SessionTable,
        resolver: &mut dyn SocketResolver,
        out: &mut Vec<Output>,
    ) {
        // A descriptor number reused: the old connection is over.
        self.close(open.tgid, Channel::Socket(open.fd), open.ts_ns, sessions, out);
        self.sockets.remove(&(open.tgid, open.fd));
        let facts = self.socket_facts(open.tgid, open.fd, Some(open));
        resolver.resolve(open.tgid, open.fd, Some(&open), &facts);
        self.index_addrs(open.tgid, &facts);
    }

    /// A watched socket was closed: its connection, and the TLS sessions
    /// that ran on it, are over.
    pub fn on_socket_close(
        &mut self,
        tgid: u32,
        fd: i32,
        ts_ns: u64,
        sessions: &mut SessionTable,
        out: &mut Vec<Output>,
    ) {
        self.close(tgid, Channel::Socket(fd), ts_ns, sessions, out);
        let tls: Vec<Channel> = self
            .net
            .iter()
            .filter(|((t, c), conn)| *t == tgid && matches!(c, Channel::Tls(_)) && conn.fd == Some(fd))
            .map(|((_, c), _)| *c)
            .collect();
        for channel in tls {
            self.close(tgid, channel, ts_ns, sessions, out);
        }
        if let Some(entry) = self.sockets.remove(&(tgid, fd))
            && let Some(addrs) = entry.facts.addrs.get()
        {
            self.by_addrs.remove(addrs);
        }
    }

    /// A TLS session was freed.
    pub fn on_tls_close(
        &mut self,
        tgid: u32,
        ssl: u64,
        ts_ns: u64,
        sessions: &mut SessionTable,
        out: &mut Vec<Output>,
    ) {
        self.close(tgid, Channel::Tls(ssl), ts_ns, sessions, out);
    }

    /// The process ended: each of its connections ends (a message cut short
    /// is counted), and everything known of it goes.
    pub fn on_exit(&mut self, tgid: u32, ts_ns: u64, sessions: &mut SessionTable, out: &mut Vec<Output>) {
        let channels: Vec<Channel> = self.net.keys().filter(|(t, _)| *t == tgid).map(|(_, c)| *c).collect();
        for channel in channels {
            if self.net.get(&(tgid, channel)).is_some_and(|c| c.http.pending() > 0) {
                out.push(Output::Problem(Problem::Parse("exited_mid_message")));
            }
            self.close(tgid, channel, ts_ns, sessions, out);
        }
        self.released.retain(|(t, _)| *t != tgid);
        self.sockets.retain(|(t, _), _| *t != tgid);
        self.by_addrs.retain(|_, t| *t != tgid);
        self.reassembler.forget_process(tgid);
    }

    /// Connections, sockets and address entries held.
    pub fn sizes(&self) -> [usize; 4] {
        [
            self.net.len(),
            self.released.len(),
            self.sockets.len(),
            self.by_addrs.len(),
        ]
    }

    /// Every table, named (`mcptap_table_entries`; the soak test checks
    /// none grows).
    pub fn tables(&self) -> Vec<(&'static str, usize)> {
        let [net, released, sockets, addrs] = self.sizes();
        let [streams, epochs] = self.reassembler.sizes();
        vec![
            ("connections", net),
            ("connections_released", released),
            ("sockets", sockets),
            ("socket_addresses", addrs),
            ("network_streams", streams),
            ("network_loss_epochs", epochs),
            ("legacy_endpoints", self.http_mcp.size()),
        ]
    }

    /// Ties a connection to its socket (for TLS: the socket the kernel saw
    /// this thread move ciphertext on), for addresses and the peer process.
    fn associate(&mut self, id: (u32, Channel), chunk: &Chunk<'_>, resolver: &mut dyn SocketResolver) {
        let fd = chunk.fd;
        let Some(conn) = self.net.get(&id) else { return };
        if conn.fd.is_some() {
            return;
        }
        let tls = matches!(chunk.channel, Channel::Tls(_));
        // A TLS session is never tied to a socket that carries plain HTTP
        // (a stale "last TLS socket" of the thread, whose number was
        // reused), nor to one another live session already runs on (one
        // socket, one session).
        if tls
            && (self.net.contains_key(&(chunk.tgid, Channel::Socket(fd)))
                || self
                    .net
                    .iter()
                    .any(|((t, c), other)| *t == chunk.tgid && *c != chunk.channel && other.fd == Some(fd)))
        {
            return;
        }
        // A client's event loop may decrypt one session's bytes after
        // receiving another's: what its reads point at must be the server
        // its requests name (Host). Servers decrypt as they receive, and a
        // write tied inside the call is exact.
        let check_port = tls && chunk.direction == Io::Read && conn.observer() == Some(Observer::Client);
        let host_port = conn.host_port;
        let socket = self.socket_facts(chunk.tgid, fd, None);
        let open = self.sockets.get(&(chunk.tgid, fd)).and_then(|s| s.open);
        resolver.resolve(chunk.tgid, fd, open.as_ref(), &socket);
        self.index_addrs(chunk.tgid, &socket);
        if check_port {
            let peer_port = socket.addrs.get().map(|(_, peer)| peer.port());
            if host_port.is_none() || peer_port != host_port {
                return;
            }
        }
        let Some(conn) = self.net.get_mut(&id) else { return };
        conn.fd = Some(fd);
        if !Arc::ptr_eq(&socket, &conn.mcp.facts) {
            if let Some(addrs) = socket.addrs.get() {
                let _ = conn.mcp.facts.addrs.set(*addrs);
            }
            if let Some(pid) = socket.peer_pid.get() {
                let _ = conn.mcp.facts.peer_pid.set(*pid);
            }
        }
    }

    fn index_addrs(&mut self, tgid: u32, facts: &ConnFacts) {
        if let Some(addrs) = facts.addrs.get().filter(|(local, _)| local.port() != 0) {
            self.by_addrs.insert(*addrs, tgid);
            if self.by_addrs.len() > 1 << 20 {
                self.by_addrs.clear(); // leaked closes: start over rather than grow
            }
        }
    }

    /// The facts of a socket of a watched process, created on first sight.
    fn socket_facts(&mut self, tgid: u32, fd: i32, open: Option<SocketOpen>) -> Arc<ConnFacts> {
        let serial = &mut self.next_serial;
        let entry = self.sockets.entry((tgid, fd)).or_insert_with(|| {
            *serial += 1;
            SocketEntry {
                open,
                facts: Arc::new(ConnFacts {
                    serial: *serial,
                    tls: false,
                    ..ConnFacts::default()
                }),
            }
        });
        entry.facts.clone()
    }

    /// What discovery decided about a connection: the table lets it go if
    /// need be, and says so ([`Output::Discovery`]) for the kernel side.
    /// `sniffed`: the process is not tracked (the kernel sent the bytes for
    /// a decision).
    fn decide(
        &mut self,
        (tgid, channel): (u32, Channel),
        sniffed: bool,
        decision: Decision,
        ts_ns: u64,
        sessions: &mut SessionTable,
        out: &mut Vec<Output>,
    ) {
        let found = match decision {
            Decision::None => return,
            Decision::Confirm => {
                for ((t, _), conn) in self.net.iter_mut() {
                    if *t == tgid {
                        conn.mcp.verdict = Verdict::Tracked;
                    }
                }
                Discovered::Mcp
            }
            Decision::Release => Discovered::NotMcpConnection { channel, sniffed },
            Decision::Ignore(kind) => Discovered::Unparsed { channel, kind },
        };
        if found != Discovered::Mcp {
            self.drop_conn(tgid, channel, ts_ns, sessions, out);
            self.released.insert((tgid, channel));
        }
        out.push(Output::Discovery { tgid, found });
    }

    /// Forgets a connection without ending anything (it was never MCP).
    fn drop_conn(
        &mut self,
        tgid: u32,
        channel: Channel,
        ts_ns: u64,
        sessions: &mut SessionTable,
        out: &mut Vec<Output>,
    ) {
        if let Some(mut conn) = self.net.remove(&(tgid, channel))
            && conn.mcp.verdict == Verdict::Tracked
        {
            let observer = conn.observer();
            self.http_mcp
                .on_close(&mut conn.mcp, tgid, observer, ts_ns, sessions, out);
        }
        self.reassembler.forget_channel(tgid, channel);
    }

    /// A connection ended (socket closed, TLS session freed, process gone):
    /// what its parser still held is read, then its sessions hear of it.
    fn close(&mut self, tgid: u32, channel: Channel, ts_ns: u64, sessions: &mut SessionTable, out: &mut Vec<Output>) {
        self.released.remove(&(tgid, channel));
        let Some(mut conn) = self.net.remove(&(tgid, channel)) else {
            self.reassembler.forget_channel(tgid, channel);
            return;
        };
        let mut events = std::mem::take(&mut self.events);
        conn.http.close(ts_ns, &mut events);
        let observer = conn.observer();
        let mut problems = Problems::default();
        if let Some(observer) = observer {
            for ev in events.drain(..) {
                self.http_mcp
                    .on_event(&mut conn.mcp, tgid, observer, ev, sessions, &mut problems, out);
            }
        }
        events.clear();
        self.events = events;
        report(&problems, out);
        self.http_mcp
            .on_close(&mut conn.mcp, tgid, observer, ts_ns, sessions, out);
        self.reassembler.forget_channel(tgid, channel);
    }
}

/// What the HTTP path could not use, as outputs to count.
fn report(problems: &Problems, out: &mut Vec<Output>) {
    out.extend(problems.parse_errors.iter().map(|k| Output::Problem(Problem::Parse(k))));
    out.extend((0..problems.truncated).map(|_| Output::Problem(Problem::Truncated)));
    out.extend((0..problems.utf8_replaced).map(|_| Output::Problem(Problem::Parse("invalid_utf8_replaced"))));
}

/// Whether bytes open an HTTP request.
fn starts_request(b: &[u8]) -> bool {
    b.starts_with(b"POST ") || b.starts_with(b"GET ")
}
