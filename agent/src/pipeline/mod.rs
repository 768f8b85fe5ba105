//! The pipeline: a router from ring buffer records to the stages, and from
//! the stages' outputs to the kernel side, the metrics and the sinks. Data
//! flows one way; the only thing that flows back is the discovery decision
//! (keep or stop capturing a process or connection), through the
//! [`Control`] the caller passes in.
//!
//! ```text
//! record ─┬ stdio chunk ──────────────→ session::stdio (framing, JSON-RPC) ─┐
//!         ├ socket/TLS chunk, open,      session::conns (HTTP, MCP over   ├→ SessionTable → outputs
//!         │ close ─────────────────────→   HTTP, connection facts)        ┘
//!         └ exit, exec ───────────────→ all of them, enrich
//! outputs ─┬ discovery ──→ Control (the kernel), metrics, log
//!          ├ problems ───→ metrics
//!          └ operations, notifications, session ends ──→ enrich → event → policy, inventory, sinks
//! ```

use std::{collections::HashSet, sync::Arc};

use crate::{
    capture::{CaptureRecord, Channel, Selection},
    effects::{
        EffectLimits, EffectTable, Placed,
        cpu::server_cpu_ns,
        resolve::{Resolved, Resolver},
    },
    enrich::{Clock, Enricher, HostInfo, identity::Identifier, operation::OperationRecord},
    event::{self, Event, EventContext, PayloadMode},
    inventory::Inventory,
    policy::{
        Policy,
        eval::{Evaluator, Facts},
    },
    protocol::http::parse_host,
    session::{
        Discovered, Observer, Output, Problem, SessionConfig, SessionKey, SessionTable, conns::ConnTable,
        stdio::StdioStreams,
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
    /// The process serves MCP: record its side effects and its children's.
    fn serves(&mut self, tgid: u32);
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
    fn serves(&mut self, tgid: u32) {
        Selection::serves(self, tgid)
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
    pub effects: EffectLimits,
    /// The kernel sends each program's arguments after its exec (all but
    /// the compat object's raw tracepoint).
    pub exec_args: bool,
    /// The keys JWTs are checked against (`[identity]`).
    pub jwt_keys: Option<Arc<crate::enrich::identity::JwtKeys>>,
}

/// A log line for something that may happen in floods: the first time,
/// then at most once per [`RateLimitedLog::EVERY`], with how many happened
/// since.
#[derive(Debug, Default)]
pub struct RateLimitedLog {
    last: Option<std::time::Instant>,
    since: u64,
    reported: u64,
}

impl RateLimitedLog {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    /// Counts one; true when a line is due.
    pub fn note(&mut self) -> bool {
        self.since += 1;
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return false;
        }
        self.last = Some(std::time::Instant::now());
        self.reported = std::mem::take(&mut self.since);
        true
    }

    /// How many the due line stands for.
    pub fn since_last(&self) -> u64 {
        self.reported
    }
}

/// Where finished events go.
pub trait EventSink {
    fn send(&mut self, event: &Event);
}

pub struct Pipeline {
    cfg: PipelineConfig,
    sessions: SessionTable,
    stdio: StdioStreams,
    conns: ConnTable,
    /// Processes confirmed as MCP peers (each is confirmed once).
    confirmed: HashSet<u32>,
    enricher: Enricher,
    host: Arc<HostInfo>,
    clock: Clock,
    metrics: Arc<Metrics>,
    labels: LabelLimiter,
    sink: Box<dyn EventSink + Send>,
    outputs: Vec<Output>,
    evaluator: Evaluator,
    inventory: Inventory,
    /// Build payload trees when parsing (someone may want them).
    parse_payloads: bool,
    /// Who HTTP calls were for (the fingerprint key).
    identifier: Identifier,
    /// What servers did while handling requests.
    effects: EffectTable,
    resolver: Resolver,
    /// Server processes the kernel was told to record effects of.
    serving: HashSet<u32>,
    /// Evictions, for a log line at most every few seconds.
    evictions: RateLimitedLog,
}

/// The fingerprint key of opaque tokens: kept in the state directory so
/// that fingerprints survive restarts; for this run only without one.
fn identifier(state_dir: Option<&std::path::Path>) -> Identifier {
    let from_file = state_dir.map(|d| Identifier::from_file(&d.join("identity.key")));
    match from_file {
        Some(Ok(i)) => return i,
        Some(Err(e)) => tracing::warn!("{e}: token fingerprints will change at the next restart"),
        None => {}
    }
    Identifier::ephemeral().unwrap_or_else(|e| {
        tracing::warn!("{e}: token fingerprints use a fixed key");
        Identifier::with_key(b"mcptap: no randomness available")
    })
}

impl Pipeline {
    pub fn new(cfg: PipelineConfig, metrics: Arc<Metrics>, sink: Box<dyn EventSink + Send>) -> Pipeline {
        let parse_payloads = cfg.payloads.is_some() || cfg.policy.any_capture();
        Pipeline {
            sessions: SessionTable::new(cfg.sessions.clone()),
            stdio: StdioStreams::new(cfg.max_message_bytes),
            conns: ConnTable::new(cfg.max_message_bytes, parse_payloads),
            confirmed: HashSet::new(),
            enricher: Enricher::new(cfg.proc_root.clone()),
            host: Arc::new(HostInfo::detect()),
            clock: Clock::new(),
            labels: LabelLimiter::new(cfg.max_label_values),
            metrics,
            sink,
            outputs: Vec::new(),
            evaluator: Evaluator::new(cfg.policy.clone(), cfg.state_dir.as_ref().map(|d| d.join("seen.json"))),
            inventory: Inventory::open(cfg.state_dir.as_ref().map(|d| d.join("inventory.json"))),
            parse_payloads,
            identifier: identifier(cfg.state_dir.as_deref()).with_jwt_keys(cfg.jwt_keys.clone()),
            effects: EffectTable::new(cfg.effects),
            resolver: Resolver::new(cfg.exec_args),
            serving: HashSet::new(),
            evictions: RateLimitedLog::default(),
            cfg,
        }
    }

    /// Someone read captured payloads through the API.
    pub fn audit(&mut self, a: crate::api::audit::Audit) {
        tracing::info!(route = a.route, event = a.viewed_event_id.as_deref(), viewer = ?a.viewer, "payloads read through the API");
        let e = event::audit(&self.host, a);
        self.sink.send(&e);
    }

    /// A new policy (SIGHUP).
    pub fn set_policy(&mut self, policy: Arc<Policy>) {
        self.parse_payloads = self.cfg.payloads.is_some() || policy.any_capture();
        self.conns.set_payloads(self.parse_payloads);
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
        if let CaptureRecord::Chunk(c) = &record {
            tracing::trace!(
                tgid = c.tgid,
                channel = ?c.channel,
                fd = c.fd,
                direction = ?c.direction,
                len = c.data.len(),
                discovery = c.discovery,
                head = %String::from_utf8_lossy(&c.data[..c.data.len().min(48)]).escape_debug(),
                "chunk"
            );
        }
        let (sessions, out) = (&mut self.sessions, &mut self.outputs);
        match record {
            CaptureRecord::Chunk(chunk) => match chunk.channel {
                Channel::Stdio(_) => {
                    let selected = || control.is_selected(chunk.tgid);
                    self.stdio
                        .on_chunk(&chunk, selected, self.parse_payloads, sessions, out);
                }
                Channel::Socket(_) | Channel::Tls(_) => self.conns.on_chunk(&chunk, sessions, &mut self.enricher, out),
            },
            CaptureRecord::SocketOpen(open) => self.conns.on_socket_open(open, sessions, &mut self.enricher, out),
            CaptureRecord::SocketClose { tgid, fd, ts_ns } => {
                self.conns.on_socket_close(tgid, fd, ts_ns, sessions, out)
            }
            CaptureRecord::TlsClose { tgid, ssl, ts_ns } => self.conns.on_tls_close(tgid, ssl, ts_ns, sessions, out),
            CaptureRecord::ProcessExec { tgid, .. } => self.enricher.refresh(tgid),
            CaptureRecord::ExecAny { .. } => {}
            CaptureRecord::Effect(raw) => match self.resolver.resolve(&raw, &self.cfg.proc_root) {
                Some(Resolved::Effect(effect)) => {
                    let kind = effect.kind;
                    let placed = self.effects.on_effect(raw.owner, effect);
                    self.metrics.effect(kind, placed);
                    if placed == Placed::Unattributed {
                        tracing::trace!(server = raw.owner, kind = kind.as_str(), "effect outside any request");
                    }
                }
                Some(Resolved::Host { pid, fd, host, from }) => {
                    self.effects.name_host(raw.owner, pid, fd, &host, from);
                }
                None => {}
            },
            CaptureRecord::ProcessExit { tgid, ts_ns } => {
                self.stdio.on_exit(tgid, out);
                self.conns.on_exit(tgid, ts_ns, sessions, out);
                sessions.close_process(tgid, ts_ns, out);
                self.confirmed.remove(&tgid);
                self.dispatch(control);
                self.effects.forget(tgid);
                self.resolver.forget(tgid);
                self.serving.remove(&tgid);
                control.forget_process(tgid);
                self.enricher.forget(tgid);
                return;
            }
        }
        self.dispatch(control);
    }

    /// Carries out what discovery decided, for stdio and the network alike:
    /// the kernel side, the metric and the log line.
    fn discovered(&mut self, tgid: u32, found: Discovered, control: &mut dyn Control) {
        let counted = match found {
            Discovered::Mcp => {
                if !self.confirmed.insert(tgid) {
                    return;
                }
                control.confirm(tgid);
                tracing::info!(pid = tgid, "discovered an MCP peer");
                "confirmed"
            }
            Discovered::NotMcp => {
                control.reject(tgid);
                self.stdio.reject(tgid);
                tracing::debug!(pid = tgid, "not an MCP peer: stopped tracking it");
                "rejected"
            }
            Discovered::NotMcpConnection { channel, sniffed } => {
                // Untracked: its next request is sniffed again (budgeted).
                // Tracked: this connection is something else (an API the
                // server calls): never captured again.
                if sniffed {
                    control.release(tgid, channel);
                } else {
                    control.ignore(tgid, channel);
                }
                tracing::debug!(pid = tgid, ?channel, "not MCP: connection released");
                "released"
            }
            Discovered::Unparsed { channel, kind } => {
                control.ignore(tgid, channel);
                self.metrics.http_unsupported.with_label_values(&[kind]).inc();
                tracing::info!(
                    pid = tgid,
                    ?channel,
                    kind,
                    "connection speaks what mcptap does not parse: left alone"
                );
                return;
            }
        };
        self.metrics.discovery.with_label_values(&[counted]).inc();
    }

    /// Periodic work: request timeouts, idle sessions, saving what the
    /// policy has seen.
    pub fn tick(&mut self, now_ns: u64, control: &mut dyn Control) {
        self.clock.resync();
        self.evaluator.persist();
        self.inventory.persist();
        self.sessions.expire(now_ns, &mut self.outputs);
        self.dispatch(control);
        self.enricher.prune();
        self.metrics
            .peer_scans_skipped
            .set(self.enricher.peer_scans_skipped as i64);
        self.metrics
            .effect_names(&self.resolver.naming, self.effects.names_late);
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
                Output::Discovery { tgid, found } => self.discovered(tgid, found, control),
                Output::Problem(Problem::Parse(kind)) => self.metrics.parse_error(kind),
                Output::Problem(Problem::Truncated) => self.metrics.truncated_message(),
                Output::Problem(Problem::Gap) => self.metrics.gap(),
                Output::SessionStarted { key, .. } => {
                    self.metrics.session_started(key.transport());
                    // Read the processes now, while they surely exist.
                    let _ = self.enricher.peers(&key, None, self.stdio.in_fd(key.tgid()));
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
                    cuts,
                } => {
                    self.metrics
                        .message(transport, direction, bytes, notification.as_deref(), &mut self.labels);
                    for field in cuts.fields() {
                        self.metrics.field_cut(field);
                    }
                }
                Output::RequestStarted { server_tgid, serial } => {
                    if self.serving.insert(server_tgid) {
                        control.serves(server_tgid);
                    }
                    let evicted = self.effects.evicted;
                    self.effects
                        .request_started(server_tgid, serial, server_cpu_ns(&self.cfg.proc_root, server_tgid));
                    if self.effects.evicted > evicted {
                        self.metrics.effects_evicted(self.effects.evicted - evicted);
                    }
                }
                Output::Operation(op) => {
                    let via = op.request_via.as_ref().or(op.response_via.as_ref()).cloned();
                    let peers = self.peers(&op.key, via.as_ref());
                    let server = op.key.tgid();
                    let effects = self
                        .effects
                        .finish(server, op.serial, || server_cpu_ns(&self.cfg.proc_root, server));
                    let record = OperationRecord::new(op, peers, effects, self.evaluator.policy(), &self.identifier);
                    self.metrics.operation(&record, &mut self.labels);
                    let mode = match (self.cfg.payloads, record.rule.as_ref().map(|m| m.rule())) {
                        (Some(max), _) => PayloadMode::Full { max },
                        (None, Some(rule)) if rule.capture_payloads => PayloadMode::Policy {
                            max: self.cfg.payload_max_bytes,
                            allow_keys: rule.payload_allow_keys.clone().into(),
                        },
                        _ => PayloadMode::Off,
                    };
                    let e = event::from_operation(&self.ctx_with(mode), &record);
                    self.sink.send(&e);
                    self.inventory.observe(&record, &e.time);
                    for alert in self.evaluator.check(&Facts::from(&record)) {
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
                Output::Evicted { what, why, tgid } => {
                    self.metrics.evicted.with_label_values(&[what, why]).inc();
                    if self.evictions.note() {
                        tracing::warn!(
                            what,
                            why,
                            pid = tgid,
                            since_last = self.evictions.since_last(),
                            "ended to make room (status evicted): a peer holds more requests or sessions than the agent keeps"
                        );
                    }
                }
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
                .and_then(|&(local, peer)| self.conns.watched_peer(local, peer));
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
        self.enricher.peers(key, via, self.stdio.in_fd(key.tgid()))
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

    /// The size of every table the pipeline keeps, named
    /// (`mcptap_table_entries{table}`): none may grow without bound.
    pub fn tables(&self) -> Vec<(&'static str, usize)> {
        let [sessions, pending, calls, tasks] = self.sessions.sizes();
        let mut t = vec![
            ("sessions", sessions),
            ("requests_in_flight", pending),
            ("calls_awaiting_input", calls),
            ("tasks", tasks),
            ("confirmed", self.confirmed.len()),
            ("effects_in_flight", self.effects.in_flight()),
            ("serving", self.serving.len()),
            ("effects_binds", self.resolver.len()),
        ];
        t.extend(self.stdio.tables());
        t.extend(self.conns.tables());
        t.extend(self.enricher.tables());
        t
    }

    /// Active sessions (for the log line at exit).
    pub fn active_sessions(&self) -> usize {
        self.sessions.active()
    }
}

/// A Host header naming this machine as an address (`localhost`, a
/// loopback IP), with its port.
fn host_addr(via: &crate::session::Via) -> Option<std::net::SocketAddr> {
    let (name, port) = parse_host(via.host.as_deref()?, via.conn.tls)?;
    let ip: std::net::IpAddr = match name.as_str() {
        "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
        other => other.parse().ok()?,
    };
    Some(std::net::SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod net_tests;
