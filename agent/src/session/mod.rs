//! Sessions stage: groups messages into sessions, decides whether a newly
//! discovered process speaks MCP, and correlates requests with their
//! responses into operations.
//!
//! Correlation is on (session, direction of the request, id): ids are only
//! unique per requester within a session, so the same id may be in flight
//! from the client and from the server at once, and in every other session.
//!
//! An operation ends in one of six ways: a result (`ok`), a result with
//! `isError: true` (`tool_error`), a JSON-RPC error (`error`), a
//! `notifications/cancelled` from the requester (`cancelled`), no answer
//! within the timeout (`timeout`), or the server process ending first
//! (`server_exited`).

mod discovery;

use std::collections::HashMap;

use crate::protocol::jsonrpc::{Body, Facts, Implementation, Message, Outcome, Payload, RequestId};

pub use discovery::looks_like_mcp;

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

impl Direction {
    pub fn opposite(self) -> Direction {
        match self {
            Direction::ClientToServer => Direction::ServerToClient,
            Direction::ServerToClient => Direction::ClientToServer,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ClientToServer => "client_to_server",
            Direction::ServerToClient => "server_to_client",
        }
    }
}

/// How the session's bytes travel (`network.transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Pipe,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Pipe => "pipe",
        }
    }
}

/// What identifies the channel a session runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConnKey {
    /// A stdio server process: both directions are seen on its stdio.
    Stdio { tgid: u32 },
}

impl ConnKey {
    /// The process the agent watches for this connection.
    pub fn tgid(self) -> u32 {
        match self {
            ConnKey::Stdio { tgid } => tgid,
        }
    }
}

/// How a session came to be watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The kernel sniffed JSON on its stdin: confirm or reject it.
    Discovered,
    /// The operator selected the process: never rejected.
    Selected,
}

/// The identity a session has gathered so far.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SessionInfo {
    pub id: String,
    pub client: Option<Implementation>,
    pub server: Option<Implementation>,
    pub protocol_version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Error,
    ToolError,
    Cancelled,
    Timeout,
    ServerExited,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::ToolError => "tool_error",
            Status::Cancelled => "cancelled",
            Status::Timeout => "timeout",
            Status::ServerExited => "server_exited",
        }
    }
}

/// A finished request: what was asked, how it ended, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub conn: ConnKey,
    pub transport: Transport,
    pub session: SessionInfo,
    /// Direction of the request.
    pub direction: Direction,
    pub method: String,
    pub request_id: RequestId,
    /// `params.name` (tool, prompt) and `params.uri` (resource).
    pub name: Option<String>,
    pub uri: Option<String>,
    /// Client identity stated by the request itself (2026-07-28 `_meta`).
    pub request_client: Option<Implementation>,
    pub request_ts_ns: u64,
    /// When the answer (or cancellation) was seen; `None` for timeouts and
    /// exits.
    pub end_ts_ns: Option<u64>,
    pub status: Status,
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
    pub result_type: Option<String>,
    pub request_bytes: usize,
    pub response_bytes: Option<usize>,
    pub request_truncated: bool,
    pub response_truncated: bool,
    pub request_payload: Option<Payload>,
    pub response_payload: Option<Payload>,
}

impl Operation {
    /// Seconds from request to answer, when there was an answer.
    pub fn duration_s(&self) -> Option<f64> {
        self.end_ts_ns
            .map(|end| end.saturating_sub(self.request_ts_ns) as f64 / 1e9)
    }

    /// `error.type` as OpenTelemetry names it: the JSON-RPC code, or the
    /// kind of failure; `None` on success.
    pub fn error_type(&self) -> Option<String> {
        match self.status {
            Status::Ok => None,
            Status::Error => Some(self.error_code.map_or_else(|| "error".into(), |c| c.to_string())),
            other => Some(other.as_str().to_string()),
        }
    }
}

/// A notification worth an event of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub conn: ConnKey,
    pub transport: Transport,
    pub session: SessionInfo,
    pub direction: Direction,
    pub method: String,
    pub ts_ns: u64,
    pub facts: Facts,
    pub bytes: usize,
    pub payload: Option<Payload>,
}

/// Notifications that get an event (all are counted in metrics).
const NOTABLE_NOTIFICATIONS: &[&str] = &[
    "notifications/cancelled",
    "notifications/progress",
    "notifications/tools/list_changed",
    "notifications/prompts/list_changed",
    "notifications/resources/list_changed",
    "notifications/resources/updated",
    "notifications/roots/list_changed",
];

/// What the sessions stage hands on.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Operation(Box<Operation>),
    Notification(Box<Notification>),
    /// A message of a counted kind (metrics), with its size.
    Message {
        conn: ConnKey,
        transport: Transport,
        direction: Direction,
        bytes: usize,
        notification: Option<String>,
    },
    SessionStarted {
        conn: ConnKey,
        transport: Transport,
        session: SessionInfo,
        ts_ns: u64,
    },
    SessionEnded {
        conn: ConnKey,
        transport: Transport,
        session: SessionInfo,
        ts_ns: u64,
    },
    /// The discovered process speaks MCP: keep tracking it.
    Confirm(ConnKey),
    /// The discovered process does not speak MCP: stop tracking it.
    Reject(ConnKey),
    /// A response with no request in flight (late after a cancel, or the
    /// request was never seen).
    Unmatched {
        conn: ConnKey,
    },
    /// A request replaced one in flight with the same id.
    DuplicateId {
        conn: ConnKey,
    },
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// A request with no answer after this long ends as `timeout`.
    pub request_timeout_ns: u64,
    /// Most requests in flight per session (junk must not grow memory).
    pub max_pending: usize,
    /// Messages of an undecided session held until it is decided.
    pub max_held: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            request_timeout_ns: 300 * 1_000_000_000,
            max_pending: 4096,
            max_held: 64,
        }
    }
}

#[derive(Debug)]
struct Pending {
    method: String,
    name: Option<String>,
    uri: Option<String>,
    client: Option<Implementation>,
    ts_ns: u64,
    bytes: usize,
    truncated: bool,
    payload: Option<Payload>,
}

#[derive(Debug)]
enum State {
    /// Discovered; the first message decides. Messages the server wrote
    /// meanwhile wait in `held`.
    Undecided {
        held: Vec<(Direction, u64, Message)>,
    },
    Confirmed,
}

#[derive(Debug)]
struct Session {
    info: SessionInfo,
    transport: Transport,
    state: State,
    pending: HashMap<(Direction, RequestId), Pending>,
}

/// All sessions of the host.
#[derive(Debug, Default)]
pub struct SessionTable {
    config: SessionConfig,
    sessions: HashMap<ConnKey, Session>,
}

impl SessionTable {
    pub fn new(config: SessionConfig) -> Self {
        SessionTable {
            config,
            sessions: HashMap::new(),
        }
    }

    pub fn contains(&self, conn: ConnKey) -> bool {
        self.sessions.contains_key(&conn)
    }

    pub fn active(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| matches!(s.state, State::Confirmed))
            .count()
    }

    /// Starts watching a connection. Selected ones start confirmed.
    pub fn open(&mut self, conn: ConnKey, transport: Transport, origin: Origin, ts_ns: u64, out: &mut Vec<Output>) {
        if self.sessions.contains_key(&conn) {
            return;
        }
        let info = SessionInfo {
            id: uuid::Uuid::new_v4().to_string(),
            ..SessionInfo::default()
        };
        let state = match origin {
            Origin::Discovered => State::Undecided { held: Vec::new() },
            Origin::Selected => {
                out.push(Output::SessionStarted {
                    conn,
                    transport,
                    session: info.clone(),
                    ts_ns,
                });
                State::Confirmed
            }
        };
        self.sessions.insert(
            conn,
            Session {
                info,
                transport,
                state,
                pending: HashMap::new(),
            },
        );
    }

    /// A frame that was not a usable message arrived on the connection. An
    /// undecided session that starts with junk is rejected.
    pub fn on_malformed(&mut self, conn: ConnKey, direction: Direction, out: &mut Vec<Output>) {
        let Some(session) = self.sessions.get(&conn) else {
            return;
        };
        if matches!(session.state, State::Undecided { .. }) && direction == Direction::ClientToServer {
            self.sessions.remove(&conn);
            out.push(Output::Reject(conn));
        }
    }

    pub fn on_message(&mut self, conn: ConnKey, direction: Direction, ts_ns: u64, msg: Message, out: &mut Vec<Output>) {
        let max_held = self.config.max_held;
        let Some(session) = self.sessions.get_mut(&conn) else {
            return;
        };
        if let State::Undecided { held } = &mut session.state {
            if direction == Direction::ServerToClient {
                // Decided by what the client sends; keep the server's words.
                if held.len() < max_held {
                    held.push((direction, ts_ns, msg));
                }
                return;
            }
            if !looks_like_mcp(&msg) {
                self.sessions.remove(&conn);
                out.push(Output::Reject(conn));
                return;
            }
            let State::Undecided { held } = std::mem::replace(&mut session.state, State::Confirmed) else {
                unreachable!("matched above")
            };
            out.push(Output::Confirm(conn));
            out.push(Output::SessionStarted {
                conn,
                transport: session.transport,
                session: session.info.clone(),
                ts_ns,
            });
            self.handle(conn, direction, ts_ns, msg, out);
            for (direction, ts_ns, msg) in held {
                self.handle(conn, direction, ts_ns, msg, out);
            }
            return;
        }
        self.handle(conn, direction, ts_ns, msg, out);
    }

    fn handle(&mut self, conn: ConnKey, direction: Direction, ts_ns: u64, msg: Message, out: &mut Vec<Output>) {
        let max_pending = self.config.max_pending;
        let Some(session) = self.sessions.get_mut(&conn) else {
            return;
        };
        let transport = session.transport;
        let notification = match &msg.body {
            Body::Notification { method } => Some(method.clone()),
            _ => None,
        };
        out.push(Output::Message {
            conn,
            transport,
            direction,
            bytes: msg.size,
            notification,
        });
        learn_identity(&mut session.info, &msg);

        match msg.body {
            Body::Request { id, method } => {
                if session.pending.len() >= max_pending {
                    // Drop the oldest: a peer that never answers must not
                    // grow memory without bound.
                    if let Some(oldest) = session
                        .pending
                        .iter()
                        .min_by_key(|(_, p)| p.ts_ns)
                        .map(|(k, _)| k.clone())
                    {
                        session.pending.remove(&oldest);
                    }
                }
                let pending = Pending {
                    method,
                    name: msg.facts.name,
                    uri: msg.facts.uri,
                    client: msg.facts.client_info,
                    ts_ns,
                    bytes: msg.size,
                    truncated: msg.truncated,
                    payload: msg.payload,
                };
                if session.pending.insert((direction, id), pending).is_some() {
                    out.push(Output::DuplicateId { conn });
                }
            }
            Body::Notification { method } => {
                if method == "notifications/cancelled" {
                    if let Some(id) = msg.facts.cancelled_id.clone() {
                        // The requester cancels its own request: same direction.
                        if let Some(p) = session.pending.remove(&(direction, id.clone())) {
                            let op = finish(conn, session, direction, id, p, Some(ts_ns), Status::Cancelled);
                            out.push(Output::Operation(Box::new(op)));
                        }
                    }
                }
                if NOTABLE_NOTIFICATIONS.contains(&method.as_str()) {
                    out.push(Output::Notification(Box::new(Notification {
                        conn,
                        transport,
                        session: session.info.clone(),
                        direction,
                        method,
                        ts_ns,
                        facts: msg.facts,
                        bytes: msg.size,
                        payload: msg.payload,
                    })));
                }
            }
            Body::Response { id, outcome } => {
                let request_direction = direction.opposite();
                let Some(p) = session.pending.remove(&(request_direction, id.clone())) else {
                    out.push(Output::Unmatched { conn });
                    return;
                };
                let (status, code, message, result_type) = match outcome {
                    Outcome::Error { code, message } => (Status::Error, Some(code), Some(message), None),
                    Outcome::Result {
                        is_error: true,
                        result_type,
                    } => (Status::ToolError, None, None, result_type),
                    Outcome::Result {
                        is_error: false,
                        result_type,
                    } => (Status::Ok, None, None, result_type),
                };
                let mut op = finish(conn, session, request_direction, id, p, Some(ts_ns), status);
                op.error_code = code;
                op.error_message = message;
                op.result_type = result_type;
                op.response_bytes = Some(msg.size);
                op.response_truncated = msg.truncated;
                op.response_payload = msg.payload;
                out.push(Output::Operation(Box::new(op)));
            }
        }
    }

    /// Ends requests that waited longer than the timeout.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<Output>) {
        let timeout = self.config.request_timeout_ns;
        for (&conn, session) in &mut self.sessions {
            let expired: Vec<_> = session
                .pending
                .iter()
                .filter(|(_, p)| now_ns.saturating_sub(p.ts_ns) > timeout)
                .map(|(k, _)| k.clone())
                .collect();
            for key in expired {
                if let Some(p) = session.pending.remove(&key) {
                    let op = finish(conn, session, key.0, key.1, p, None, Status::Timeout);
                    out.push(Output::Operation(Box::new(op)));
                }
            }
        }
    }

    /// The connection ended (the server process exited): what was in
    /// flight ends as `server_exited`.
    pub fn close(&mut self, conn: ConnKey, ts_ns: u64, out: &mut Vec<Output>) {
        let Some(mut session) = self.sessions.remove(&conn) else {
            return;
        };
        if matches!(session.state, State::Undecided { .. }) {
            return;
        }
        let mut pending: Vec<_> = session.pending.drain().collect();
        pending.sort_by_key(|(_, p)| p.ts_ns);
        for ((direction, id), p) in pending {
            let op = finish(conn, &session, direction, id, p, None, Status::ServerExited);
            out.push(Output::Operation(Box::new(op)));
        }
        out.push(Output::SessionEnded {
            conn,
            transport: session.transport,
            session: session.info,
            ts_ns,
        });
    }

    /// Forgets every session (agent shutting down); returns how many
    /// requests were still in flight.
    pub fn abandon_all(&mut self) -> usize {
        let n = self.sessions.values().map(|s| s.pending.len()).sum();
        self.sessions.clear();
        n
    }
}

/// Client and server identity, from whichever message states it.
fn learn_identity(info: &mut SessionInfo, msg: &Message) {
    if let Some(client) = &msg.facts.client_info {
        info.client = Some(client.clone());
    }
    if let Some(server) = &msg.facts.server_info {
        info.server = Some(server.clone());
    }
    if let Some(version) = &msg.facts.protocol_version {
        info.protocol_version = Some(version.clone());
    }
}

fn finish(
    conn: ConnKey,
    session: &Session,
    direction: Direction,
    request_id: RequestId,
    p: Pending,
    end_ts_ns: Option<u64>,
    status: Status,
) -> Operation {
    Operation {
        conn,
        transport: session.transport,
        session: session.info.clone(),
        direction,
        method: p.method,
        request_id,
        name: p.name,
        uri: p.uri,
        request_client: p.client,
        request_ts_ns: p.ts_ns,
        end_ts_ns,
        status,
        error_code: None,
        error_message: None,
        result_type: None,
        request_bytes: p.bytes,
        response_bytes: None,
        request_truncated: p.truncated,
        response_truncated: false,
        request_payload: p.payload,
        response_payload: None,
    }
}

#[cfg(test)]
mod tests;
