//! The pipeline: capture → reassembly → protocol → sessions → enrichment →
//! sinks, one ring buffer record at a time. Data flows one way; the only
//! thing that flows back is the discovery decision (keep or stop tracking a
//! process), through the [`Control`] the caller passes in.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use crate::{
    capture::{CaptureRecord, Chunk, Io},
    enrich::{Clock, Enricher, HostInfo},
    event::{self, Event, EventContext},
    protocol::{
        jsonrpc::{self, Parsed},
        ndjson::{Dropped, FramerOutput, LineFramer},
    },
    reassembly::{Reassembler, StreamId},
    session::{ConnKey, Direction, Origin, Output, SessionConfig, SessionTable, Transport},
    sinks::metrics::{LabelLimiter, Metrics},
};

/// The kernel-side tracking decisions the pipeline makes.
pub trait Control {
    fn confirm(&mut self, tgid: u32);
    fn reject(&mut self, tgid: u32);
    fn is_selected(&self, tgid: u32) -> bool;
}

impl Control for crate::capture::Selection {
    fn confirm(&mut self, tgid: u32) {
        crate::capture::Selection::confirm(self, tgid)
    }
    fn reject(&mut self, tgid: u32) {
        crate::capture::Selection::reject(self, tgid)
    }
    fn is_selected(&self, tgid: u32) -> bool {
        crate::capture::Selection::is_selected(self, tgid)
    }
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub max_message_bytes: usize,
    /// `Some(max bytes per value)` when payloads are captured.
    pub payloads: Option<usize>,
    pub sessions: SessionConfig,
    pub max_label_values: usize,
    pub proc_root: std::path::PathBuf,
}

/// Where finished events go.
pub trait EventSink {
    fn send(&mut self, event: &Event);
}

impl EventSink for crate::sinks::jsonl::JsonlSink {
    fn send(&mut self, event: &Event) {
        match serde_json::to_string(event) {
            Ok(line) => crate::sinks::jsonl::JsonlSink::send(self, line),
            Err(err) => tracing::error!("event did not serialize: {err}"),
        }
    }
}

pub struct Pipeline {
    cfg: PipelineConfig,
    reassembler: Reassembler,
    framers: HashMap<StreamId, LineFramer>,
    sessions: SessionTable,
    enricher: Enricher,
    /// Processes the agent stopped tracking: their records still in the
    /// ring buffer are ignored.
    rejected: HashSet<u32>,
    /// Per server process, the descriptor its client's messages arrive on.
    in_fds: HashMap<u32, i32>,
    host: Arc<HostInfo>,
    clock: Clock,
    metrics: Arc<Metrics>,
    labels: LabelLimiter,
    sink: Box<dyn EventSink + Send>,
    framed: Vec<FramerOutput>,
    outputs: Vec<Output>,
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
            enricher: Enricher::new(cfg.proc_root.clone()),
            rejected: HashSet::new(),
            in_fds: HashMap::new(),
            host: Arc::new(HostInfo::detect()),
            clock: Clock::new(),
            labels: LabelLimiter::new(cfg.max_label_values),
            metrics,
            sink,
            framed: Vec::new(),
            outputs: Vec::new(),
            cfg,
        }
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
            CaptureRecord::Chunk(chunk) => self.on_chunk(&chunk, control),
            CaptureRecord::ProcessExit { tgid, ts_ns } => self.on_exit(tgid, ts_ns, control),
            CaptureRecord::ProcessExec { tgid, .. } => self.enricher.refresh(ConnKey::Stdio { tgid }),
        }
    }

    fn on_chunk(&mut self, chunk: &Chunk<'_>, control: &mut dyn Control) {
        if self.rejected.contains(&chunk.tgid) {
            return;
        }
        let direction = stdio_direction(chunk.direction);
        let conn = ConnKey::Stdio { tgid: chunk.tgid };
        if direction == Direction::ClientToServer {
            self.in_fds.insert(chunk.tgid, chunk.fd);
        }
        if !self.sessions.contains(conn) {
            let origin = if !chunk.discovery && control.is_selected(chunk.tgid) {
                Origin::Selected
            } else {
                Origin::Discovered
            };
            self.sessions
                .open(conn, Transport::Pipe, origin, chunk.ts_ns, &mut self.outputs);
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
                        jsonrpc::parse(&frame.bytes, self.cfg.payloads.is_some())
                    };
                    if parsed.utf8_replaced {
                        self.metrics
                            .parse_errors
                            .with_label_values(&["invalid_utf8_replaced"])
                            .inc();
                    }
                    for err in &parsed.errors {
                        self.metrics.parse_errors.with_label_values(&[err.kind()]).inc();
                        tracing::debug!(
                            pid = conn.tgid(),
                            direction = direction.as_str(),
                            "dropped a frame: {err}"
                        );
                        self.sessions.on_malformed(conn, direction, &mut self.outputs);
                    }
                    for msg in parsed.messages {
                        self.sessions
                            .on_message(conn, direction, frame.ts_ns, msg, &mut self.outputs);
                    }
                }
                FramerOutput::Dropped(Dropped::Gap { bytes }) => {
                    self.metrics.parse_errors.with_label_values(&["capture_gap"]).inc();
                    tracing::debug!(pid = conn.tgid(), bytes, "dropped bytes cut by a capture gap");
                }
            }
        }
        self.framed = framed;
        self.framed.clear();
        self.dispatch(control);
    }

    fn on_exit(&mut self, tgid: u32, ts_ns: u64, control: &mut dyn Control) {
        self.rejected.remove(&tgid);
        self.in_fds.remove(&tgid);
        for (id, framer) in self.framers.iter().filter(|(id, _)| id.tgid == tgid) {
            if framer.pending() > 0 {
                self.metrics
                    .parse_errors
                    .with_label_values(&["exited_mid_message"])
                    .inc();
                tracing::debug!(
                    pid = tgid,
                    fd = id.fd,
                    bytes = framer.pending(),
                    "process exited mid-message"
                );
            }
        }
        self.framers.retain(|id, _| id.tgid != tgid);
        self.reassembler.forget_process(tgid);
        let conn = ConnKey::Stdio { tgid };
        self.sessions.close(conn, ts_ns, &mut self.outputs);
        self.dispatch(control);
        self.enricher.forget(conn);
    }

    /// Periodic work: request timeouts.
    pub fn tick(&mut self, now_ns: u64, control: &mut dyn Control) {
        self.clock.resync();
        self.sessions.expire(now_ns, &mut self.outputs);
        self.dispatch(control);
    }

    /// Agent stopping: returns the number of requests still in flight.
    pub fn finish(&mut self) -> usize {
        self.sessions.abandon_all()
    }

    fn dispatch(&mut self, control: &mut dyn Control) {
        let outputs = std::mem::take(&mut self.outputs);
        for out in outputs {
            match out {
                Output::Confirm(conn) => {
                    control.confirm(conn.tgid());
                    self.metrics.discovery.with_label_values(&["confirmed"]).inc();
                    tracing::info!(pid = conn.tgid(), "discovered an MCP server");
                }
                Output::Reject(conn) => {
                    let tgid = conn.tgid();
                    control.reject(tgid);
                    self.rejected.insert(tgid);
                    self.in_fds.remove(&tgid);
                    self.framers.retain(|id, _| id.tgid != tgid);
                    self.reassembler.forget_process(tgid);
                    self.metrics.discovery.with_label_values(&["rejected"]).inc();
                    tracing::debug!(pid = tgid, "not an MCP peer: stopped tracking it");
                }
                Output::SessionStarted { conn, transport, .. } => {
                    self.metrics.session_started(transport);
                    // Read the processes now, while they surely exist.
                    let in_fd = self.in_fds.get(&conn.tgid()).copied().unwrap_or(0);
                    let _ = self.enricher.peers(conn, in_fd);
                }
                Output::SessionEnded {
                    conn,
                    transport,
                    session,
                    ts_ns,
                } => {
                    self.metrics.session_ended(transport);
                    let peers = self.enricher.known_peers(conn);
                    let e = event::session_end(&self.ctx(), transport, &session, ts_ns, &peers);
                    self.sink.send(&e);
                }
                Output::Message {
                    transport,
                    direction,
                    bytes,
                    notification,
                    ..
                } => {
                    self.metrics
                        .message(transport, direction, bytes, notification.as_deref(), &mut self.labels);
                }
                Output::Operation(op) => {
                    let peers = self.enricher.known_peers(op.conn);
                    let client = op
                        .request_client
                        .as_ref()
                        .or(op.session.client.as_ref())
                        .map(|c| c.name.as_str());
                    let server = op.session.server.as_ref().map(|s| s.name.as_str());
                    self.metrics
                        .operation(&op, client.unwrap_or(""), server.unwrap_or(""), &mut self.labels);
                    let e = event::from_operation(&self.ctx(), &op, &peers);
                    self.sink.send(&e);
                }
                Output::Notification(n) => {
                    let peers = self.enricher.known_peers(n.conn);
                    let e = event::from_notification(&self.ctx(), &n, &peers);
                    self.sink.send(&e);
                }
                Output::Unmatched { .. } => self.metrics.unmatched_responses.inc(),
                Output::DuplicateId { .. } => self.metrics.duplicate_request_ids.inc(),
            }
        }
    }

    fn ctx(&self) -> EventContext<'_> {
        EventContext {
            host: &self.host,
            clock: &self.clock,
            payloads: self.cfg.payloads,
        }
    }

    /// Active sessions (for the log line at exit).
    pub fn active_sessions(&self) -> usize {
        self.sessions.active()
    }

    #[cfg(test)]
    fn peers_of(&mut self, conn: ConnKey) -> Arc<crate::enrich::Peers> {
        self.enricher.peers(conn, 0)
    }
}

#[cfg(test)]
mod tests;
