//! The pipeline: capture → reassembly → protocol → sessions → enrichment →
//! sinks, one ring buffer record at a time. Data flows one way; the only
//! thing that flows back is the discovery decision (keep or stop capturing
//! a process or connection), through the [`Control`] the caller passes in.
//!
//! Two protocol paths meet at the sessions stage:
//! - stdio chunks → newline framing → JSON-RPC;
//! - socket and TLS chunks → HTTP/1.1 per connection → MCP over HTTP
//!   (`session::http`) → JSON-RPC.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use crate::{
    capture::{CaptureRecord, Channel, Chunk, Io, Selection, SocketOpen},
    enrich::{Clock, Enricher, HostInfo},
    event::{self, Event, EventContext, PayloadMode},
    inventory::Inventory,
    policy::{
        Policy,
        eval::{Evaluator, Facts},
    },
    protocol::{
        http::{HttpConn, HttpEvent},
        jsonrpc::{self, Parsed},
        ndjson::{Dropped, FramerOutput, LineFramer},
    },
    reassembly::{Reassembler, StreamBytes, StreamId},
    session::{
        ConnFacts, Direction, Observer, Origin, Output, SessionConfig, SessionKey, SessionTable,
        http::{Decision, HttpMcp, McpConn, Problems, Verdict},
    },
    sinks::metrics::{LabelLimiter, Metrics},
};

/// The kernel-side tracking decisions the pipeline makes.
pub trait Control {
    /// The process speaks MCP: track everything of it.
    fn confirm(&mut self, tgid: u32);
    /// A discovered stdio process does not speak MCP: never look again.
    fn reject(&mut self, tgid: u32);
    /// A sniffed connection is not MCP: stop capturing it.
    fn release(&mut self, tgid: u32, channel: Channel);
    /// A connection speaks what mcptap does not parse: never capture it.
    fn ignore(&mut self, tgid: u32, channel: Channel);
    fn is_selected(&self, tgid: u32) -> bool;
    /// The process is gone.
    fn forget_process(&mut self, tgid: u32);
}

impl Control for Selection {
    fn confirm(&mut self, tgid: u32) {
        Selection::confirm(self, tgid)
    }
    fn reject(&mut self, tgid: u32) {
        Selection::reject(self, tgid)
    }
    fn release(&mut self, tgid: u32, channel: Channel) {
        Selection::release(self, tgid, channel)
    }
    fn ignore(&mut self, tgid: u32, channel: Channel) {
        Selection::ignore(self, tgid, channel)
    }
    fn is_selected(&self, tgid: u32) -> bool {
        Selection::is_selected(self, tgid)
    }
    fn forget_process(&mut self, tgid: u32) {
        Selection::forget_process(self, tgid)
    }
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub max_message_bytes: usize,
    /// `Some(max bytes per value)` when payloads are captured
    /// (`--capture-payloads`).
    pub payloads: Option<usize>,
    /// Largest value kept when a policy rule allows payload capture.
    pub payload_max_bytes: usize,
    pub policy: Arc<Policy>,
    /// Where what must survive restarts is kept: the policy's seen tools
    /// and servers (`seen.json`), the server inventory (`inventory.json`).
    pub state_dir: Option<std::path::PathBuf>,
    pub sessions: SessionConfig,
    pub max_label_values: usize,
    pub proc_root: std::path::PathBuf,
}

/// Where finished events go.
pub trait EventSink {
    fn send(&mut self, event: &Event);
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

pub struct Pipeline {
    cfg: PipelineConfig,
    reassembler: Reassembler,
    framers: HashMap<StreamId, LineFramer>,
    sessions: SessionTable,
    http_mcp: HttpMcp,
    net: HashMap<(u32, Channel), NetConn>,
    /// Connections let go by discovery: their stragglers are ignored until
    /// a new request starts (and the kernel sniffed it again).
    released: HashSet<(u32, Channel)>,
    /// Sockets of watched processes: what accept/connect said, and the
    /// connection facts found for them.
    sockets: HashMap<(u32, i32), SocketEntry>,
    /// Processes confirmed as MCP peers (each is confirmed once).
    confirmed: HashSet<u32>,
    /// Watched sockets by (local, peer) address: on loopback, the other
    /// end of a connection is often a watched process too.
    by_addrs: HashMap<(std::net::SocketAddr, std::net::SocketAddr), u32>,
    next_serial: u64,
    enricher: Enricher,
    /// Stdio processes the agent stopped tracking: their records still in
    /// the ring buffer are ignored.
    rejected: HashSet<u32>,
    /// Per stdio server process, the descriptor its client's messages arrive on.
    in_fds: HashMap<u32, i32>,
    host: Arc<HostInfo>,
    clock: Clock,
    metrics: Arc<Metrics>,
    labels: LabelLimiter,
    sink: Box<dyn EventSink + Send>,
    framed: Vec<FramerOutput>,
    http_events: Vec<HttpEvent>,
    outputs: Vec<Output>,
    evaluator: Evaluator,
    inventory: Inventory,
    /// Build payload trees when parsing (someone may want them).
    parse_payloads: bool,
}

/// Stdio: the kernel sends only what the server read from its stdin (or a
/// copy of it) and wrote to its stdout (or a copy).
fn stdio_direction(io: Io) -> Direction {
    match io {
        Io::Read => Direction::ClientToServer,
        Io::Write => Direction::ServerToClient,
    }
}

impl Pipeline {
    pub fn new(cfg: PipelineConfig, metrics: Arc<Metrics>, sink: Box<dyn EventSink + Send>) -> Pipeline {
        Pipeline {
            reassembler: Reassembler::default(),
            framers: HashMap::new(),
            sessions: SessionTable::new(cfg.sessions.clone()),
            http_mcp: HttpMcp::new(cfg.payloads.is_some() || cfg.policy.any_capture()),
            net: HashMap::new(),
            released: HashSet::new(),
            sockets: HashMap::new(),
            confirmed: HashSet::new(),
            by_addrs: HashMap::new(),
            next_serial: 0,
            enricher: Enricher::new(cfg.proc_root.clone()),
            rejected: HashSet::new(),
            in_fds: HashMap::new(),
            host: Arc::new(HostInfo::detect()),
            clock: Clock::new(),
            labels: LabelLimiter::new(cfg.max_label_values),
            metrics,
            sink,
            framed: Vec::new(),
            http_events: Vec::new(),
            outputs: Vec::new(),
            evaluator: Evaluator::new(cfg.policy.clone(), cfg.state_dir.as_ref().map(|d| d.join("seen.json"))),
            inventory: Inventory::open(cfg.state_dir.as_ref().map(|d| d.join("inventory.json"))),
            parse_payloads: cfg.payloads.is_some() || cfg.policy.any_capture(),
            cfg,
        }
    }

    /// A new policy (SIGHUP).
    pub fn set_policy(&mut self, policy: Arc<Policy>) {
        self.parse_payloads = self.cfg.payloads.is_some() || policy.any_capture();
        self.http_mcp.set_payloads(self.parse_payloads);
        self.evaluator.set_policy(policy);
    }

    /// One raw ring buffer record.
    pub fn on_raw(&mut self, raw: &[u8], control: &mut dyn Control) {
        match CaptureRecord::decode(raw) {
            Ok(record) => self.on_record(record, control),
            Err(err) => {
                self.metrics.record_decode_errors.inc();
                tracing::debug!("ring buffer record dropped: {err}");
            }
        }
    }

    pub fn on_record(&mut self, record: CaptureRecord<'_>, control: &mut dyn Control) {
        match record {
            CaptureRecord::Chunk(chunk) => match chunk.channel {
                Channel::Stdio(_) => self.on_stdio_chunk(&chunk, control),
                Channel::Socket(_) | Channel::Tls(_) => self.on_net_chunk(&chunk, control),
            },
            CaptureRecord::ProcessExit { tgid, ts_ns } => self.on_exit(tgid, ts_ns, control),
            CaptureRecord::ProcessExec { tgid, .. } => self.enricher.refresh(tgid),
            CaptureRecord::ExecAny { .. } => {}
            CaptureRecord::SocketOpen(open) => {
                // A descriptor number reused: the old connection is over.
                self.close_conn(open.tgid, Channel::Socket(open.fd), open.ts_ns, control);
                self.sockets.remove(&(open.tgid, open.fd));
                let facts = self.socket_facts(open.tgid, open.fd, Some(open));
                self.enricher
                    .resolve_connection(open.tgid, open.fd, Some(&open), &facts);
                self.index_addrs(open.tgid, &facts);
            }
            CaptureRecord::SocketClose { tgid, fd, ts_ns } => {
                self.close_conn(tgid, Channel::Socket(fd), ts_ns, control);
                // TLS sessions that ran on this socket are over too.
                let sessions: Vec<Channel> = self
                    .net
                    .iter()
                    .filter(|((t, c), conn)| *t == tgid && matches!(c, Channel::Tls(_)) && conn.fd == Some(fd))
                    .map(|((_, c), _)| *c)
                    .collect();
                for channel in sessions {
                    self.close_conn(tgid, channel, ts_ns, control);
                }
                if let Some(entry) = self.sockets.remove(&(tgid, fd))
                    && let Some(addrs) = entry.facts.addrs.get()
                {
                    self.by_addrs.remove(addrs);
                }
            }
            CaptureRecord::TlsClose { tgid, ssl, ts_ns } => self.close_conn(tgid, Channel::Tls(ssl), ts_ns, control),
        }
    }

    fn on_stdio_chunk(&mut self, chunk: &Chunk<'_>, control: &mut dyn Control) {
        if self.rejected.contains(&chunk.tgid) {
            return;
        }
        let direction = stdio_direction(chunk.direction);
        let key = SessionKey::Stdio { tgid: chunk.tgid };
        if direction == Direction::ClientToServer {
            self.in_fds.insert(chunk.tgid, chunk.fd);
        }
        if !self.sessions.contains(&key) {
            let origin = if !chunk.discovery && control.is_selected(chunk.tgid) {
                Origin::Selected
            } else {
                Origin::Discovered
            };
            self.sessions.open(&key, origin, chunk.ts_ns, &mut self.outputs);
        }
        let bytes = self.reassembler.push(chunk);
        if bytes.gap_before {
            self.metrics.gap();
        }
        let max = self.cfg.max_message_bytes;
        let framer = self.framers.entry(bytes.stream).or_insert_with(|| LineFramer::new(max));
        framer.push(&bytes, &mut self.framed);

        let framed = std::mem::take(&mut self.framed);
        for item in &framed {
            match item {
                FramerOutput::Frame(frame) => {
                    let parsed = if frame.truncated {
                        self.metrics.truncated_message();
                        match jsonrpc::parse_truncated(&frame.bytes, &frame.tail, frame.len) {
                            Ok(m) => Parsed {
                                messages: vec![m],
                                ..Parsed::default()
                            },
                            Err(e) => Parsed {
                                errors: vec![e],
                                ..Parsed::default()
                            },
                        }
                    } else {
                        jsonrpc::parse(&frame.bytes, self.parse_payloads)
                    };
                    if parsed.utf8_replaced {
                        self.metrics.parse_error("invalid_utf8_replaced");
                    }
                    for err in &parsed.errors {
                        self.metrics.parse_error(err.kind());
                        tracing::debug!(
                            pid = key.tgid(),
                            direction = direction.as_str(),
                            "dropped a frame: {err}"
                        );
                        self.sessions.on_malformed(&key, direction, &mut self.outputs);
                    }
                    for msg in parsed.messages {
                        self.sessions
                            .on_message(&key, direction, frame.ts_ns, msg, None, &mut self.outputs);
                    }
                }
                FramerOutput::Dropped(Dropped::Gap { bytes }) => {
                    self.metrics.parse_error("capture_gap");
                    tracing::debug!(pid = key.tgid(), bytes, "dropped bytes cut by a capture gap");
                }
            }
        }
        self.framed = framed;
        self.framed.clear();
        self.dispatch(control);
    }

    fn on_net_chunk(&mut self, chunk: &Chunk<'_>, control: &mut dyn Control) {
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
                    let facts = Arc::new(ConnFacts {
                        serial: self.next_serial,
                        tls: true,
                        ..ConnFacts::default()
                    });
                    self.next_serial += 1;
                    (facts, None)
                }
            };
            // Every connection's first exchange decides whether it is MCP,
            // tracked process or not: a tracked server's calls to other
            // HTTP APIs are let go in the kernel after one exchange.
            let verdict = Verdict::Undecided;
            self.net.insert(
                id,
                NetConn {
                    http: HttpConn::new(self.cfg.max_message_bytes),
                    mcp: McpConn::new(facts, verdict),
                    role: open.map(|o| if o.server { Observer::Server } else { Observer::Client }),
                    fd: None,
                    host_port: None,
                },
            );
        }
        let Some(conn) = self.net.get_mut(&id) else { return };
        let bytes: StreamBytes<'_> = self.reassembler.push(chunk);
        if bytes.gap_before {
            self.metrics.gap();
        }
        let mut events = std::mem::take(&mut self.http_events);
        conn.http
            .push(chunk.direction, bytes.data, bytes.ts_ns, bytes.gap_before, &mut events);
        for ev in &events {
            if let HttpEvent::Request(r) = ev {
                conn.host_port = r
                    .headers
                    .host
                    .as_deref()
                    .and_then(|h| h.rsplit_once(':')?.1.parse().ok());
            }
        }
        let observer = conn.observer();
        let mut problems = Problems::default();
        let mut decision = Decision::None;
        for ev in events.drain(..) {
            let Some(observer) = observer else { break };
            let d = self.http_mcp.on_event(
                &mut conn.mcp,
                chunk.tgid,
                observer,
                ev,
                &mut self.sessions,
                &mut problems,
                &mut self.outputs,
            );
            if d != Decision::None {
                decision = d;
                if !matches!(d, Decision::Confirm) {
                    break; // the connection goes: the rest is moot
                }
            }
        }
        self.http_events = events;
        self.count_problems(&problems);
        if chunk.fd >= 0 {
            self.associate(id, chunk);
        }
        self.decide(
            chunk.tgid,
            chunk.channel,
            chunk.discovery,
            decision,
            chunk.ts_ns,
            control,
        );
        self.dispatch(control);
    }

    /// Ties a connection to its socket (for TLS: the socket the kernel saw
    /// this thread move ciphertext on), for addresses and the peer process.
    fn associate(&mut self, id: (u32, Channel), chunk: &Chunk<'_>) {
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
        self.enricher.resolve_connection(chunk.tgid, fd, open.as_ref(), &socket);
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

    fn count_problems(&mut self, problems: &Problems) {
        for kind in &problems.parse_errors {
            self.metrics.parse_error(kind);
        }
        for _ in 0..problems.truncated {
            self.metrics.truncated_message();
        }
        for _ in 0..problems.utf8_replaced {
            self.metrics.parse_error("invalid_utf8_replaced");
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

    /// Carries out what discovery decided about a connection. `sniffed`:
    /// the process is not tracked (the kernel sent the bytes for a decision).
    fn decide(
        &mut self,
        tgid: u32,
        channel: Channel,
        sniffed: bool,
        decision: Decision,
        ts_ns: u64,
        control: &mut dyn Control,
    ) {
        match decision {
            Decision::None => {}
            Decision::Confirm => {
                for ((t, _), conn) in self.net.iter_mut() {
                    if *t == tgid {
                        conn.mcp.verdict = Verdict::Tracked;
                    }
                }
                if self.confirmed.insert(tgid) {
                    control.confirm(tgid);
                    self.metrics.discovery.with_label_values(&["confirmed"]).inc();
                    tracing::info!(pid = tgid, "discovered an MCP peer speaking HTTP");
                }
            }
            Decision::Release => {
                // Untracked: sniff its next request again (budgeted).
                // Tracked: this connection is something else (an API the
                // server calls): never capture it again.
                if sniffed {
                    control.release(tgid, channel);
                } else {
                    control.ignore(tgid, channel);
                }
                self.drop_conn(tgid, channel, ts_ns);
                self.released.insert((tgid, channel));
                self.metrics.discovery.with_label_values(&["released"]).inc();
                tracing::debug!(pid = tgid, ?channel, "not MCP: connection released");
            }
            Decision::Ignore(kind) => {
                control.ignore(tgid, channel);
                self.drop_conn(tgid, channel, ts_ns);
                self.released.insert((tgid, channel));
                self.metrics.http_unsupported.with_label_values(&[kind]).inc();
                tracing::info!(
                    pid = tgid,
                    ?channel,
                    kind,
                    "connection speaks what mcptap does not parse: left alone"
                );
            }
        }
    }

    /// Forgets a connection without ending anything (it was never MCP).
    fn drop_conn(&mut self, tgid: u32, channel: Channel, ts_ns: u64) {
        if let Some(mut conn) = self.net.remove(&(tgid, channel))
            && conn.mcp.verdict == Verdict::Tracked
        {
            let observer = conn.observer();
            self.http_mcp.on_close(
                &mut conn.mcp,
                tgid,
                observer,
                ts_ns,
                &mut self.sessions,
                &mut self.outputs,
            );
        }
        self.reassembler.forget_channel(tgid, channel);
    }

    /// A connection ended (socket closed, TLS session freed, process gone).
    fn close_conn(&mut self, tgid: u32, channel: Channel, ts_ns: u64, control: &mut dyn Control) {
        self.released.remove(&(tgid, channel));
        let Some(mut conn) = self.net.remove(&(tgid, channel)) else {
            self.reassembler.forget_channel(tgid, channel);
            return;
        };
        let mut events = std::mem::take(&mut self.http_events);
        conn.http.close(ts_ns, &mut events);
        let observer = conn.observer();
        let mut problems = Problems::default();
        if let Some(observer) = observer {
            for ev in events.drain(..) {
                self.http_mcp.on_event(
                    &mut conn.mcp,
                    tgid,
                    observer,
                    ev,
                    &mut self.sessions,
                    &mut problems,
                    &mut self.outputs,
                );
            }
        }
        events.clear();
        self.http_events = events;
        self.count_problems(&problems);
        self.http_mcp.on_close(
            &mut conn.mcp,
            tgid,
            observer,
            ts_ns,
            &mut self.sessions,
            &mut self.outputs,
        );
        self.reassembler.forget_channel(tgid, channel);
        self.dispatch(control);
    }

    fn on_exit(&mut self, tgid: u32, ts_ns: u64, control: &mut dyn Control) {
        self.rejected.remove(&tgid);
        self.in_fds.remove(&tgid);
        for (id, framer) in self.framers.iter().filter(|(id, _)| id.tgid == tgid) {
            if framer.pending() > 0 {
                self.metrics.parse_error("exited_mid_message");
                tracing::debug!(
                    pid = tgid,
                    channel = ?id.channel,
                    bytes = framer.pending(),
                    "process exited mid-message"
                );
            }
        }
        self.framers.retain(|id, _| id.tgid != tgid);
        let channels: Vec<Channel> = self.net.keys().filter(|(t, _)| *t == tgid).map(|(_, c)| *c).collect();
        for channel in channels {
            if let Some(conn) = self.net.get(&(tgid, channel))
                && conn.http.pending() > 0
            {
                self.metrics.parse_error("exited_mid_message");
            }
            self.close_conn(tgid, channel, ts_ns, control);
        }
        self.released.retain(|(t, _)| *t != tgid);
        self.sockets.retain(|(t, _), _| *t != tgid);
        self.by_addrs.retain(|_, t| *t != tgid);
        self.confirmed.remove(&tgid);
        self.reassembler.forget_process(tgid);
        self.sessions.close_process(tgid, ts_ns, &mut self.outputs);
        self.dispatch(control);
        control.forget_process(tgid);
        self.enricher.forget(tgid);
    }

    /// Periodic work: request timeouts, idle sessions, saving what the
    /// policy has seen.
    pub fn tick(&mut self, now_ns: u64, control: &mut dyn Control) {
        self.clock.resync();
        self.evaluator.persist();
        self.inventory.persist();
        self.sessions.expire(now_ns, &mut self.outputs);
        self.dispatch(control);
        self.metrics
            .peer_scans_skipped
            .set(self.enricher.peer_scans_skipped as i64);
    }

    /// Agent stopping: returns the number of requests still in flight.
    pub fn finish(&mut self) -> usize {
        self.evaluator.persist();
        self.inventory.persist();
        self.sessions.abandon_all()
    }

    fn dispatch(&mut self, control: &mut dyn Control) {
        let outputs = std::mem::take(&mut self.outputs);
        for out in outputs {
            match out {
                Output::Confirm(tgid) => {
                    control.confirm(tgid);
                    self.metrics.discovery.with_label_values(&["confirmed"]).inc();
                    tracing::info!(pid = tgid, "discovered an MCP server on stdio");
                }
                Output::Reject(tgid) => {
                    control.reject(tgid);
                    self.rejected.insert(tgid);
                    self.in_fds.remove(&tgid);
                    self.framers.retain(|id, _| id.tgid != tgid);
                    self.reassembler.forget_process(tgid);
                    self.metrics.discovery.with_label_values(&["rejected"]).inc();
                    tracing::debug!(pid = tgid, "not an MCP peer: stopped tracking it");
                }
                Output::SessionStarted { key, .. } => {
                    self.metrics.session_started(key.transport());
                    // Read the processes now, while they surely exist.
                    let in_fd = self.in_fds.get(&key.tgid()).copied().unwrap_or(0);
                    let _ = self.enricher.peers(&key, None, in_fd);
                }
                Output::SessionMerged { transport } => self.metrics.session_ended(transport),
                Output::SessionEnded {
                    key,
                    session,
                    ts_ns,
                    via,
                } => {
                    self.metrics.session_ended(key.transport());
                    let peers = self.peers(&key, via.as_ref());
                    let e = event::session_end(&self.ctx(), &key, &session, ts_ns, via.as_ref(), &peers);
                    self.sink.send(&e);
                }
                Output::Message {
                    transport,
                    direction,
                    bytes,
                    notification,
                } => {
                    self.metrics
                        .message(transport, direction, bytes, notification.as_deref(), &mut self.labels);
                }
                Output::Operation(op) => {
                    let via = op.request_via.as_ref().or(op.response_via.as_ref()).cloned();
                    let peers = self.peers(&op.key, via.as_ref());
                    let client = op
                        .request_client
                        .as_ref()
                        .or(op.session.client.as_ref())
                        .map(|c| c.name.as_str());
                    let server = op.session.server.as_ref().map(|s| s.name.as_str());
                    self.metrics
                        .operation(&op, client.unwrap_or(""), server.unwrap_or(""), &mut self.labels);
                    let policy = self.evaluator.policy().clone();
                    let server_exe = peers.server.as_ref().and_then(|p| p.exe.as_deref());
                    let server_port = via.as_ref().and_then(|v| {
                        let &(local, peer) = v.conn.addrs.get()?;
                        Some(match op.key.observer() {
                            crate::session::Observer::Server => local.port(),
                            crate::session::Observer::Client => peer.port(),
                        })
                    });
                    let mode = match (self.cfg.payloads, policy.rule_for(server, server_exe, server_port)) {
                        (Some(max), _) => PayloadMode::Full { max },
                        (None, Some(rule)) if rule.capture_payloads => PayloadMode::Policy {
                            max: self.cfg.payload_max_bytes,
                            allow_keys: rule.payload_allow_keys.clone().into(),
                        },
                        _ => PayloadMode::Off,
                    };
                    let e = event::from_operation(&self.ctx_with(mode), &op, &peers);
                    self.sink.send(&e);
                    self.inventory.observe(&e);
                    let facts = Facts {
                        server_name: server,
                        server_exe,
                        server_port: server_port.or(e.server_port),
                        client_name: client,
                        client_app: peers.client_app,
                        user: peers.client.as_ref().and_then(|p| p.user.as_deref()),
                        method: &op.method,
                        tool: e.tool.as_deref(),
                        ok: op.status == crate::session::Status::Ok,
                        duration_s: op.duration_s(),
                        ts_ns: op.request_ts_ns,
                    };
                    for alert in self.evaluator.check(&facts) {
                        self.metrics.alert(alert.kind, &alert.rule, &mut self.labels);
                        tracing::warn!(kind = alert.kind, rule = %alert.rule, "{}", alert.message);
                        self.sink.send(&Event::alert_from(&e, alert));
                    }
                }
                Output::Notification(n) => {
                    let peers = self.peers(&n.key, n.via.as_ref());
                    let e = event::from_notification(&self.ctx(), &n, &peers);
                    self.sink.send(&e);
                }
                Output::Unmatched => self.metrics.unmatched_responses.inc(),
                Output::DuplicateId => self.metrics.duplicate_request_ids.inc(),
            }
        }
    }

    fn peers(&mut self, key: &SessionKey, via: Option<&crate::session::Via>) -> crate::enrich::Peers {
        if let (Some(conn), SessionKey::Http { tgid, observer, .. }) = (via.map(|v| &v.conn), key)
            && conn.peer_pid.get().is_none()
        {
            // A watched process at the other end, else a /proc lookup.
            let watched = conn
                .addrs
                .get()
                .and_then(|&(local, peer)| self.by_addrs.get(&(peer, local)).copied());
            let found = watched.or_else(|| match observer {
                // The server: the connection's peer, or (a TLS session
                // not tied to its socket) the Host the client asked for.
                Observer::Client => conn
                    .addrs
                    .get()
                    .map(|&(_, peer)| peer)
                    .or_else(|| via.and_then(host_addr))
                    .and_then(|peer| self.enricher.find_loopback_server(*tgid, peer)),
                Observer::Server => None,
            });
            if let Some(pid) = found {
                let _ = conn.peer_pid.set(Some(pid));
            }
        }
        let in_fd = self.in_fds.get(&key.tgid()).copied().unwrap_or(0);
        self.enricher.peers(key, via, in_fd)
    }

    fn ctx(&self) -> EventContext<'_> {
        let mode = match self.cfg.payloads {
            Some(max) => PayloadMode::Full { max },
            None => PayloadMode::Off,
        };
        self.ctx_with(mode)
    }

    fn ctx_with(&self, payloads: PayloadMode) -> EventContext<'_> {
        EventContext {
            host: &self.host,
            clock: &self.clock,
            payloads,
        }
    }

    /// Active sessions (for the log line at exit).
    pub fn active_sessions(&self) -> usize {
        self.sessions.active()
    }
}

/// A Host header naming this machine as an address (`localhost`, a
/// loopback IP), with its port.
fn host_addr(via: &crate::session::Via) -> Option<std::net::SocketAddr> {
    let host = via.host.as_deref()?;
    let (name, port) = host.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let ip: std::net::IpAddr = match name.trim_start_matches('[').trim_end_matches(']') {
        "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
        other => other.parse().ok()?,
    };
    Some(std::net::SocketAddr::new(ip, port))
}

/// Whether bytes open an HTTP request.
fn starts_request(b: &[u8]) -> bool {
    b.starts_with(b"POST ") || b.starts_with(b"GET ")
}

#[cfg(test)]
mod tests;
