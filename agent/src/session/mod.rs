//! Sessions stage: groups messages into sessions, decides whether a newly
//! discovered stdio process speaks MCP, and correlates requests with their
//! responses into operations.
//!
//! Correlation is on (session, direction of the request, id): ids are only
//! unique per requester within a session, so the same id may be in flight
//! from the client and from the server at once, and in every other session.
//!
//! A session is a stdio server process, or an MCP session over HTTP as one
//! process sees it (its `Mcp-Session-Id`, its legacy SSE endpoint, or its
//! connection when there is neither); `http` maps HTTP exchanges onto them.
//!
//! An operation ends in one of these ways: a result (`ok`), a result with
//! `isError: true` (`tool_error`), a JSON-RPC or HTTP error (`error`), a
//! `notifications/cancelled` from the requester (`cancelled`), no answer
//! within the timeout (`timeout`), the server process ending first
//! (`server_exited`), the observed client ending first (`client_exited`),
//! or the connection that was to carry the answer closing
//! (`connection_closed`).

pub mod conns;
mod discovery;
pub mod http;
mod rounds;
pub mod stdio;
mod types;

use std::collections::HashMap;

use crate::protocol::jsonrpc::{Body, Implementation, Message, Outcome, Payload, RequestId};

pub use discovery::looks_like_mcp;
pub use types::*;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// A request with no answer after this long ends as `timeout`.
    pub request_timeout_ns: u64,
    /// An HTTP session without messages for this long is over.
    pub idle_timeout_ns: u64,
    /// Most requests in flight per session (junk must not grow memory).
    pub max_pending: usize,
    /// Messages of an undecided session held until it is decided.
    pub max_held: usize,
    /// Most sessions; the least recently active ones end to make room.
    pub max_sessions: usize,
    /// Most sessions of one process (a client that names a new session id
    /// in every request must not push other processes' sessions out).
    pub max_sessions_per_process: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            request_timeout_ns: 300 * 1_000_000_000,
            idle_timeout_ns: 3600 * 1_000_000_000,
            max_pending: 4096,
            max_held: 64,
            max_sessions: 65536,
            max_sessions_per_process: 1024,
        }
    }
}

#[derive(Debug)]
struct Pending {
    /// The request's serial number (see [`Operation::serial`]).
    serial: u64,
    method: String,
    name: Option<String>,
    uri: Option<String>,
    client: Option<Implementation>,
    ts_ns: u64,
    bytes: usize,
    truncated: bool,
    payload: Option<Payload>,
    via: Option<Via>,
    /// What ties it to earlier operations, and its trace context.
    links: rounds::RequestLinks,
    trace: Option<crate::protocol::jsonrpc::TraceContext>,
    header_mismatch: Option<String>,
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
    state: State,
    /// A message was seen: the session exists as far as events go (a
    /// selected process that never speaks JSON-RPC has no session).
    started: bool,
    pending: HashMap<(Direction, RequestId), Pending>,
    /// Requests in the order they came (serial, key): the oldest is the
    /// first one still pending (answered ones are skipped, and dropped
    /// when they outnumber the pending).
    order: std::collections::VecDeque<(u64, (Direction, RequestId))>,
    last_ts_ns: u64,
    /// The connection the session's last message came on (HTTP).
    last_via: Option<Via>,
}

/// All sessions of the host.
#[derive(Debug, Default)]
pub struct SessionTable {
    config: SessionConfig,
    /// The last request serial given.
    next_serial: u64,
    sessions: HashMap<SessionKey, Session>,
    /// Sessions per process.
    per_process: HashMap<u32, usize>,
    /// Rounds of logical calls and tasks (they outlive sessions: 2026-07-28
    /// has none).
    rounds: rounds::Rounds,
}

impl SessionTable {
    pub fn new(config: SessionConfig) -> Self {
        SessionTable {
            config,
            next_serial: 0,
            sessions: HashMap::new(),
            per_process: HashMap::new(),
            rounds: rounds::Rounds::default(),
        }
    }

    pub fn contains(&self, key: &SessionKey) -> bool {
        self.sessions.contains_key(key)
    }

    /// Sessions and requests in flight held (the soak test watches them).
    pub fn sizes(&self) -> [usize; 4] {
        let [calls, tasks] = self.rounds.sizes();
        [
            self.sessions.len(),
            self.sessions.values().map(|s| s.pending.len()).sum(),
            calls,
            tasks,
        ]
    }

    pub fn active(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| matches!(s.state, State::Confirmed))
            .count()
    }

    /// Starts watching a session. Selected ones start confirmed.
    pub fn open(&mut self, key: &SessionKey, origin: Origin, ts_ns: u64, out: &mut Vec<Output>) {
        if self.sessions.contains_key(key) {
            return;
        }
        if self
            .per_process
            .get(&key.tgid())
            .is_some_and(|n| *n >= self.config.max_sessions_per_process)
        {
            let tgid = key.tgid();
            self.evict(ts_ns, "max_sessions_per_process", |k| k.tgid() == tgid, out);
        }
        if self.sessions.len() >= self.config.max_sessions {
            self.evict(ts_ns, "max_sessions", |_| true, out);
        }
        let info = SessionInfo {
            id: key.event_id(),
            ..SessionInfo::default()
        };
        let state = match origin {
            Origin::Discovered => State::Undecided { held: Vec::new() },
            Origin::Selected => State::Confirmed,
        };
        let _ = out;
        self.insert(
            key.clone(),
            Session {
                info,
                state,
                started: false,
                pending: HashMap::new(),
                order: Default::default(),
                last_ts_ns: ts_ns,
                last_via: None,
            },
        );
    }

    fn insert(&mut self, key: SessionKey, session: Session) {
        if self.sessions.insert(key.clone(), session).is_none() {
            *self.per_process.entry(key.tgid()).or_default() += 1;
        }
    }

    fn remove(&mut self, key: &SessionKey) -> Option<Session> {
        let session = self.sessions.remove(key)?;
        if let Some(n) = self.per_process.get_mut(&key.tgid()) {
            *n -= 1;
            if *n == 0 {
                self.per_process.remove(&key.tgid());
            }
        }
        Some(session)
    }

    /// Ends the least recently active sessions among those `which` picks,
    /// an eighth of them at once (so that a table kept full costs one sort
    /// per many sessions, not a scan per session): what they had in flight
    /// ends as `evicted`, each counted (`Output::Evicted`).
    fn evict(&mut self, ts_ns: u64, why: &'static str, which: impl Fn(&SessionKey) -> bool, out: &mut Vec<Output>) {
        let mut candidates: Vec<(u64, SessionKey)> = self
            .sessions
            .iter()
            .filter(|(k, _)| which(k))
            .map(|(k, s)| (s.last_ts_ns, k.clone()))
            .collect();
        candidates.sort();
        let n = (candidates.len() / 8).max(1);
        for (_, key) in candidates.into_iter().take(n) {
            out.push(Output::Evicted {
                what: "session",
                why,
                tgid: key.tgid(),
            });
            self.close(&key, ts_ns, Status::Evicted, out);
        }
    }

    /// A frame that was not a usable message arrived. An undecided session
    /// that starts with junk is rejected.
    pub fn on_malformed(&mut self, key: &SessionKey, direction: Direction, out: &mut Vec<Output>) {
        let Some(session) = self.sessions.get(key) else {
            return;
        };
        if matches!(session.state, State::Undecided { .. }) && direction == Direction::ClientToServer {
            self.remove(key);
            out.push(Output::Discovery {
                tgid: key.tgid(),
                found: Discovered::NotMcp,
            });
        }
    }

    pub fn on_message(
        &mut self,
        key: &SessionKey,
        direction: Direction,
        ts_ns: u64,
        msg: Message,
        via: Option<Via>,
        out: &mut Vec<Output>,
    ) {
        let max_held = self.config.max_held;
        if !self.sessions.contains_key(key) && matches!(key, SessionKey::Http { .. }) {
            // HTTP sessions are opened by the adapter's verdict: known MCP.
            self.open(key, Origin::Selected, ts_ns, out);
        }
        let Some(session) = self.sessions.get_mut(key) else {
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
                self.remove(key);
                out.push(Output::Discovery {
                    tgid: key.tgid(),
                    found: Discovered::NotMcp,
                });
                return;
            }
            let State::Undecided { held } = std::mem::replace(&mut session.state, State::Confirmed) else {
                unreachable!("matched above")
            };
            out.push(Output::Discovery {
                tgid: key.tgid(),
                found: Discovered::Mcp,
            });
            self.handle(key, direction, ts_ns, msg, via, out);
            for (direction, ts_ns, msg) in held {
                self.handle(key, direction, ts_ns, msg, None, out);
            }
            return;
        }
        self.handle(key, direction, ts_ns, msg, via, out);
    }

    fn handle(
        &mut self,
        key: &SessionKey,
        direction: Direction,
        ts_ns: u64,
        msg: Message,
        via: Option<Via>,
        out: &mut Vec<Output>,
    ) {
        let max_pending = self.config.max_pending;
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        session.last_ts_ns = session.last_ts_ns.max(ts_ns);
        if !session.started {
            session.started = true;
            out.push(Output::SessionStarted { key: key.clone() });
        }
        if via.is_some() {
            session.last_via.clone_from(&via);
        }
        let notification = match &msg.body {
            Body::Notification { method } => Some(method.clone()),
            _ => None,
        };
        out.push(Output::Message {
            transport: key.transport(),
            direction,
            bytes: msg.size,
            notification,
            cuts: msg.cuts.clone(),
        });
        learn_identity(&mut session.info, &msg);

        match msg.body {
            Body::Request { id, method } => {
                if session.pending.len() >= max_pending {
                    // The oldest ends as `evicted`: a peer that never
                    // answers must not grow memory without bound, and a
                    // request pushed out is still recorded.
                    while let Some((serial, k)) = session.order.pop_front() {
                        if session.pending.get(&k).is_some_and(|p| p.serial == serial)
                            && let Some(p) = session.pending.remove(&k)
                        {
                            let op = finish(key, session, k.0, k.1, p, None, Status::Evicted);
                            out.push(Output::Evicted {
                                what: "request",
                                why: "max_pending",
                                tgid: key.tgid(),
                            });
                            out.push(Output::Operation(Box::new(op)));
                            break;
                        }
                    }
                }
                self.next_serial += 1;
                let serial = self.next_serial;
                if direction == Direction::ClientToServer && key.observer() == Observer::Server {
                    out.push(Output::RequestStarted {
                        server_tgid: key.tgid(),
                        serial,
                    });
                }
                let links = &msg.facts.links;
                let pending = Pending {
                    serial,
                    method,
                    name: msg.facts.name,
                    uri: msg.facts.uri,
                    client: msg.facts.client_info,
                    ts_ns,
                    bytes: msg.size,
                    truncated: msg.truncated,
                    payload: msg.payload,
                    via,
                    links: rounds::RequestLinks {
                        request_state: links.request_state.clone(),
                        input_keys: links.input_keys.clone(),
                        task_id: links.task_id.clone(),
                    },
                    trace: msg.facts.links.trace.clone(),
                    header_mismatch: msg.facts.header_mismatch.clone(),
                };
                session.order.push_back((serial, (direction, id.clone())));
                if session.order.len() > 2 * session.pending.len() + 64 {
                    let pending = &session.pending;
                    session
                        .order
                        .retain(|(serial, k)| pending.get(k).is_some_and(|p| p.serial == *serial));
                }
                if session.pending.insert((direction, id), pending).is_some() {
                    out.push(Output::DuplicateId);
                }
            }
            Body::Notification { method } => {
                if method == "notifications/cancelled"
                    && let Some(id) = msg.facts.cancelled_id.clone()
                {
                    // The requester cancels its own request: same direction.
                    if let Some(p) = session.pending.remove(&(direction, id.clone())) {
                        let op = finish(key, session, direction, id, p, Some(ts_ns), Status::Cancelled);
                        out.push(Output::Operation(Box::new(op)));
                    }
                }
                if NOTABLE_NOTIFICATIONS.contains(&method.as_str()) {
                    out.push(Output::Notification(Box::new(Notification {
                        key: key.clone(),
                        session: session.info.clone(),
                        direction,
                        method,
                        ts_ns,
                        facts: msg.facts,
                        bytes: msg.size,
                        payload: msg.payload,
                        via,
                    })));
                }
            }
            Body::Response { id, outcome } => {
                let request_direction = direction.opposite();
                let Some(p) = session.pending.remove(&(request_direction, id.clone())) else {
                    out.push(Output::Unmatched);
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
                let request_links = p.links.clone();
                let mut op = finish(key, session, request_direction, id, p, Some(ts_ns), status);
                op.error_code = code;
                op.error_message = message;
                op.result_type = result_type;
                if op.method == "tools/list" {
                    op.offered_tools = msg.facts.tools;
                }
                op.response_bytes = Some(msg.size);
                op.response_truncated = msg.truncated;
                op.response_payload = msg.payload;
                op.response_via = via;
                let l = msg.facts.links;
                let answer = rounds::AnswerLinks {
                    input_required: l.input_required,
                    request_state: l.request_state,
                    input_keys: l.input_keys,
                    task_id: l.task_id,
                };
                self.rounds.link(&mut op, &request_links, &answer);
                out.push(Output::Operation(Box::new(op)));
            }
        }
    }

    /// Requests sent in one HTTP exchange that its response will not
    /// answer (an HTTP error, or the connection died): they end now.
    pub fn end_exchange(&mut self, key: &SessionKey, end: ExchangeEnd, out: &mut Vec<Output>) {
        let ExchangeEnd {
            conn_serial,
            exchange,
            status,
            via,
            ts_ns,
        } = end;
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let mut ended: Vec<_> = session
            .pending
            .iter()
            .filter(|(_, p)| {
                p.via
                    .as_ref()
                    .is_some_and(|v| v.conn.serial == conn_serial && v.exchange == Some(exchange))
            })
            .map(|(k, _)| k.clone())
            .collect();
        ended.sort();
        for k in ended {
            if let Some(p) = session.pending.remove(&k) {
                let mut op = finish(key, session, k.0, k.1, p, Some(ts_ns), status);
                if status == Status::Error {
                    op.http_error = via.as_ref().and_then(|v| v.status);
                }
                if status == Status::ConnectionClosed {
                    op.end_ts_ns = None;
                }
                op.response_via.clone_from(&via);
                out.push(Output::Operation(Box::new(op)));
            }
        }
    }

    /// A session got its name late (the `Mcp-Session-Id` of an initialize
    /// response, the endpoint of a legacy stream): what was keyed under
    /// the connection moves to the name, merging with what is there.
    pub fn rekey(&mut self, from: &SessionKey, to: &SessionKey, out: &mut Vec<Output>) {
        if from == to {
            return;
        }
        let Some(old) = self.remove(from) else {
            return;
        };
        match self.sessions.get_mut(to) {
            Some(existing) => {
                existing.pending.extend(old.pending);
                existing.order.extend(old.order);
                if existing.info.client.is_none() {
                    existing.info.client = old.info.client;
                }
                if existing.info.server.is_none() {
                    existing.info.server = old.info.server;
                }
                if existing.info.protocol_version.is_none() {
                    existing.info.protocol_version = old.info.protocol_version;
                }
                existing.last_ts_ns = existing.last_ts_ns.max(old.last_ts_ns);
                if old.started && !existing.started {
                    existing.started = true;
                } else if old.started {
                    // Two started sessions became one: one fewer is active.
                    out.push(Output::SessionMerged {
                        transport: to.transport(),
                    });
                }
            }
            None => {
                let mut moved = old;
                moved.info.id = to.event_id();
                let _ = out;
                self.insert(to.clone(), moved);
            }
        }
    }

    /// Ends requests that waited longer than the timeout, and HTTP sessions
    /// idle for longer than the idle timeout.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<Output>) {
        let timeout = self.config.request_timeout_ns;
        self.rounds.expire(now_ns, timeout);
        for (key, session) in &mut self.sessions {
            let expired: Vec<_> = session
                .pending
                .iter()
                .filter(|(_, p)| now_ns.saturating_sub(p.ts_ns) > timeout)
                .map(|(k, _)| k.clone())
                .collect();
            for k in expired {
                if let Some(p) = session.pending.remove(&k) {
                    let op = finish(key, session, k.0, k.1, p, None, Status::Timeout);
                    out.push(Output::Operation(Box::new(op)));
                }
            }
        }
        let idle = self.config.idle_timeout_ns;
        let stale: Vec<_> = self
            .sessions
            .iter()
            .filter(|(k, s)| {
                matches!(k, SessionKey::Http { .. })
                    && s.pending.is_empty()
                    && now_ns.saturating_sub(s.last_ts_ns) > idle
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            self.close(&key, now_ns, Status::Timeout, out);
        }
    }

    /// The session is over: what was in flight ends with `status`.
    pub fn close(&mut self, key: &SessionKey, ts_ns: u64, status: Status, out: &mut Vec<Output>) {
        let Some(session) = self.remove(key) else {
            return;
        };
        if matches!(session.state, State::Undecided { .. }) || !session.started {
            return;
        }
        let mut pending: Vec<_> = session.pending.iter().map(|(k, p)| (k.clone(), p.ts_ns)).collect();
        pending.sort_by_key(|(_, ts)| *ts);
        let mut session = session;
        for (k, _) in pending {
            if let Some(p) = session.pending.remove(&k) {
                let op = finish(key, &session, k.0, k.1, p, None, status);
                out.push(Output::Operation(Box::new(op)));
            }
        }
        out.push(Output::SessionEnded {
            key: key.clone(),
            via: session.last_via.clone(),
            session: Box::new(session.info),
            ts_ns,
        });
    }

    /// The process ended: its sessions end; what was in flight ends as
    /// `server_exited` or `client_exited`, by the side it was.
    pub fn close_process(&mut self, tgid: u32, ts_ns: u64, out: &mut Vec<Output>) {
        self.rounds.forget(tgid);
        let mut keys: Vec<_> = self.sessions.keys().filter(|k| k.tgid() == tgid).cloned().collect();
        keys.sort();
        for key in keys {
            let status = match key.observer() {
                Observer::Server => Status::ServerExited,
                Observer::Client => Status::ClientExited,
            };
            self.close(&key, ts_ns, status, out);
        }
    }

    /// Forgets every session (agent shutting down); returns how many
    /// requests were still in flight.
    pub fn abandon_all(&mut self) -> usize {
        let n = self.sessions.values().map(|s| s.pending.len()).sum();
        self.sessions.clear();
        self.per_process.clear();
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
    key: &SessionKey,
    session: &Session,
    direction: Direction,
    request_id: RequestId,
    p: Pending,
    end_ts_ns: Option<u64>,
    status: Status,
) -> Operation {
    Operation {
        serial: p.serial,
        key: key.clone(),
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
        http_error: None,
        result_type: None,
        offered_tools: None,
        request_bytes: p.bytes,
        response_bytes: None,
        request_truncated: p.truncated,
        response_truncated: false,
        request_payload: p.payload,
        response_payload: None,
        request_via: p.via,
        response_via: None,
        links: CallLinks {
            trace: p.trace,
            header_mismatch: p.header_mismatch,
            ..CallLinks::default()
        },
    }
}

#[cfg(test)]
mod tests;
