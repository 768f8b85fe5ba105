//! MCP over HTTP: maps one connection's HTTP exchanges (from
//! `protocol::http`) onto sessions and JSON-RPC messages.
//!
//! - Streamable HTTP (2025-03-26 and later): a POST carries a message or a
//!   batch from the client; the response carries the answers, as JSON or as
//!   an event stream that may first carry the server's own requests and
//!   notifications; 202 acknowledges notifications and responses; a GET
//!   opens a stream of server messages; DELETE ends the session. The
//!   session is the `Mcp-Session-Id` when there is one (an initialize
//!   exchange gets it from its response and is re-keyed), the connection
//!   otherwise (2026-07-28 and stateless servers).
//! - Legacy HTTP+SSE (2024-11-05): a GET stream whose first event
//!   (`endpoint`) names where the client POSTs; the answers come on the
//!   stream. The endpoint names the session on both connections.
//!
//! Discovery of untracked processes happens here too: an exchange is MCP
//! when its headers name MCP or its body is an MCP request; a GET event
//! stream is MCP when its first event is a legacy `endpoint`.

use std::{collections::HashMap, collections::HashSet, sync::Arc};

use super::{
    ConnFacts, Direction, ExchangeEnd, HttpScope, Observer, Origin, Output, SessionKey, SessionTable, Status, Via,
};
use crate::protocol::{
    http::{Body, HttpEvent},
    jsonrpc::{self, Message, ParseError},
};

/// Where an undecided connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The process is tracked (selected or confirmed): everything counts.
    Tracked,
    /// Sniffed from an untracked process: the first exchange decides.
    Undecided,
}

/// What the caller must do after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    None,
    /// The process speaks MCP: track it.
    Confirm,
    /// This connection is not MCP: stop capturing it.
    Release,
    /// The connection speaks what mcptap does not follow (HTTP/2...).
    Ignore(&'static str),
}

#[derive(Debug)]
struct Exchange {
    key: SessionKey,
    via: Via,
    /// A GET opening a server stream.
    stream: bool,
    /// The stream of a legacy HTTP+SSE session (its end ends the session).
    legacy_stream: bool,
    /// A DELETE ending the session.
    delete: bool,
}

/// One connection's MCP state.
#[derive(Debug)]
pub struct McpConn {
    pub facts: Arc<ConnFacts>,
    pub verdict: Verdict,
    exchanges: HashMap<u64, Exchange>,
    /// Session of the connection's latest exchange: where answers to
    /// requests the capture did not see are filed.
    last_key: Option<SessionKey>,
}

impl McpConn {
    pub fn new(facts: Arc<ConnFacts>, verdict: Verdict) -> Self {
        McpConn {
            facts,
            verdict,
            exchanges: HashMap::new(),
            last_key: None,
        }
    }
}

/// What the adapter met that the metrics count.
#[derive(Debug, Default)]
pub struct Problems {
    pub parse_errors: Vec<&'static str>,
    pub truncated: usize,
    pub utf8_replaced: usize,
}

pub struct HttpMcp {
    payloads: bool,
    /// Legacy endpoints announced, per watched process and side.
    legacy: HashSet<(u32, Observer, Arc<str>)>,
}

impl HttpMcp {
    /// Legacy endpoints held (the soak test watches them).
    pub fn size(&self) -> usize {
        self.legacy.len()
    }

    /// Whether payload trees (and request headers) are kept.
    pub fn set_payloads(&mut self, payloads: bool) {
        self.payloads = payloads;
    }

    pub fn new(payloads: bool) -> Self {
        HttpMcp {
            payloads,
            legacy: HashSet::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn on_event(
        &mut self,
        conn: &mut McpConn,
        tgid: u32,
        observer: Observer,
        event: HttpEvent,
        sessions: &mut SessionTable,
        problems: &mut Problems,
        out: &mut Vec<Output>,
    ) -> Decision {
        match event {
            HttpEvent::Request(r) => {
                let path: Arc<str> = r.target.split('?').next().unwrap_or_default().into();
                let legacy = self.legacy.contains(&(tgid, observer, Arc::from(r.target.as_str())));
                let key = if legacy {
                    http_key(tgid, observer, HttpScope::Legacy(r.target.as_str().into()))
                } else if let Some(sid) = &r.headers.mcp_session_id {
                    http_key(tgid, observer, HttpScope::Session(sid.as_str().into()))
                } else {
                    http_key(tgid, observer, HttpScope::Connection(conn.facts.serial))
                };
                let mut messages = if r.method == "POST" {
                    self.messages(&r.body, problems)
                } else {
                    Vec::new()
                };
                if let [only] = messages.as_mut_slice() {
                    only.facts.header_mismatch = header_mismatch(&r.headers, only);
                }
                let stream = r.method == "GET"
                    && r.headers
                        .accept
                        .as_deref()
                        .is_some_and(|a| a.contains("text/event-stream"));
                let mut decision = Decision::None;
                if conn.verdict == Verdict::Undecided {
                    let mcp = legacy
                        || r.headers.mentions_mcp()
                        || messages.iter().any(|m| m.facts.mcp_meta || super::looks_like_mcp(m));
                    if mcp {
                        conn.verdict = Verdict::Tracked;
                        decision = Decision::Confirm;
                    } else if !stream {
                        return Decision::Release;
                    }
                    // A bare event stream: its first event decides.
                }
                let via = Via {
                    conn: conn.facts.clone(),
                    exchange: Some(r.exchange),
                    http_method: Some(r.method.as_str().into()),
                    path: Some(path),
                    host: r.headers.host.as_deref().map(Arc::from),
                    status: None,
                    headers: self.payloads.then(|| Arc::from(r.headers.all.clone())),
                    credential: r.headers.authorization.clone().map(Arc::new),
                };
                if conn.verdict == Verdict::Tracked {
                    for m in messages {
                        sessions.on_message(&key, Direction::ClientToServer, r.ts_ns, m, Some(via.clone()), out);
                    }
                }
                conn.last_key = Some(key.clone());
                conn.exchanges.insert(
                    r.exchange,
                    Exchange {
                        key,
                        via,
                        stream,
                        legacy_stream: false,
                        delete: r.method == "DELETE",
                    },
                );
                decision
            }
            HttpEvent::ResponseHead(h) => {
                let Some(e) = h.exchange else { return Decision::None };
                let Some(ex) = conn.exchanges.get_mut(&e) else {
                    return Decision::None;
                };
                ex.via.status = Some(h.status);
                let named = matches!(
                    &ex.key,
                    SessionKey::Http {
                        scope: HttpScope::Connection(_),
                        ..
                    }
                );
                if let (true, Some(sid)) = (named, &h.headers.mcp_session_id) {
                    // The server named the session (initialize answered).
                    let old = ex.key.clone();
                    let new = http_key(tgid, observer, HttpScope::Session(sid.as_str().into()));
                    if conn.verdict == Verdict::Tracked {
                        sessions.rekey(&old, &new, out);
                    }
                    for other in conn.exchanges.values_mut() {
                        if other.key == old {
                            other.key = new.clone();
                        }
                    }
                    conn.last_key = Some(new);
                }
                Decision::None
            }
            HttpEvent::ResponseBody { exchange, body, ts_ns } => {
                if conn.verdict != Verdict::Tracked || body.len == 0 {
                    return Decision::None;
                }
                let Some((key, via)) = self.target(conn, exchange) else {
                    return Decision::None;
                };
                let looks_json = matches!(first_non_space(&body.bytes), Some(b'{') | Some(b'['));
                if !looks_json {
                    return Decision::None; // an HTML error page, plain text...
                }
                for m in self.messages(&body, problems) {
                    sessions.on_message(&key, Direction::ServerToClient, ts_ns, m, via.clone(), out);
                }
                Decision::None
            }
            HttpEvent::Event { exchange, event, ts_ns } => {
                let mut decision = Decision::None;
                if event.event.as_deref() == Some("endpoint") {
                    let endpoint = normalize_endpoint(&String::from_utf8_lossy(&event.data.bytes));
                    let endpoint: Arc<str> = endpoint.into();
                    self.legacy.insert((tgid, observer, endpoint.clone()));
                    if conn.verdict == Verdict::Undecided {
                        conn.verdict = Verdict::Tracked;
                        decision = Decision::Confirm;
                    }
                    let new = http_key(tgid, observer, HttpScope::Legacy(endpoint));
                    if let Some(ex) = exchange.and_then(|e| conn.exchanges.get_mut(&e)) {
                        let old = std::mem::replace(&mut ex.key, new.clone());
                        ex.legacy_stream = true;
                        sessions.rekey(&old, &new, out);
                    }
                    sessions.open(&new, Origin::Selected, ts_ns, out);
                    conn.last_key = Some(new);
                    return decision;
                }
                if conn.verdict == Verdict::Undecided {
                    return Decision::Release; // an event stream that is not MCP
                }
                let Some((key, via)) = self.target(conn, exchange) else {
                    return Decision::None;
                };
                let data = Body {
                    truncated: event.data.truncated(),
                    len: event.data.len,
                    bytes: event.data.bytes,
                    tail: event.data.tail,
                };
                if data.len == 0 {
                    return Decision::None; // priming events of resumable streams
                }
                for m in self.messages(&data, problems) {
                    sessions.on_message(&key, Direction::ServerToClient, ts_ns, m, via.clone(), out);
                }
                decision
            }
            HttpEvent::ResponseEnd {
                exchange,
                complete,
                ts_ns,
            } => {
                let Some(ex) = exchange.and_then(|e| conn.exchanges.remove(&e)) else {
                    return Decision::None;
                };
                if conn.verdict != Verdict::Tracked {
                    return Decision::None;
                }
                self.end(conn.facts.serial, exchange, ex, complete, ts_ns, sessions, out);
                Decision::None
            }
            HttpEvent::Unsupported(kind) => Decision::Ignore(kind),
            HttpEvent::Dropped { kind, .. } => {
                problems.parse_errors.push(kind);
                Decision::None
            }
        }
    }

    /// The connection closed: exchanges still open end with it, and so do
    /// sessions scoped to it.
    pub fn on_close(
        &mut self,
        conn: &mut McpConn,
        tgid: u32,
        observer: Option<Observer>,
        ts_ns: u64,
        sessions: &mut SessionTable,
        out: &mut Vec<Output>,
    ) {
        let mut open: Vec<_> = conn.exchanges.drain().collect();
        open.sort_by_key(|(e, _)| *e);
        if conn.verdict == Verdict::Tracked {
            for (e, ex) in open {
                self.end(conn.facts.serial, Some(e), ex, false, ts_ns, sessions, out);
            }
            if let Some(observer) = observer {
                let key = http_key(tgid, observer, HttpScope::Connection(conn.facts.serial));
                sessions.close(&key, ts_ns, Status::ConnectionClosed, out);
            }
        }
    }

    /// An exchange is over.
    #[allow(clippy::too_many_arguments)]
    fn end(
        &mut self,
        serial: u64,
        exchange: Option<u64>,
        ex: Exchange,
        complete: bool,
        ts_ns: u64,
        sessions: &mut SessionTable,
        out: &mut Vec<Output>,
    ) {
        let Some(e) = exchange else { return };
        let status = ex.via.status.unwrap_or(0);
        let end = |status| ExchangeEnd {
            conn_serial: serial,
            exchange: e,
            status,
            via: Some(ex.via.clone()),
            ts_ns,
        };
        if status >= 400 {
            sessions.end_exchange(&ex.key, end(Status::Error), out);
        } else if !complete && !ex.legacy_stream {
            sessions.end_exchange(&ex.key, end(Status::ConnectionClosed), out);
        }
        if ex.legacy_stream {
            if let SessionKey::Http {
                tgid,
                observer,
                scope: HttpScope::Legacy(endpoint),
            } = &ex.key
            {
                self.legacy.remove(&(*tgid, *observer, endpoint.clone()));
            }
            sessions.close(&ex.key, ts_ns, Status::ConnectionClosed, out);
        } else if ex.delete && (200..300).contains(&status) {
            sessions.close(&ex.key, ts_ns, Status::ConnectionClosed, out);
        }
        let _ = ex.stream;
    }

    /// The session and connection facts an answer is filed under.
    fn target(&self, conn: &McpConn, exchange: Option<u64>) -> Option<(SessionKey, Option<Via>)> {
        match exchange.and_then(|e| conn.exchanges.get(&e)) {
            Some(ex) => Some((ex.key.clone(), Some(ex.via.clone()))),
            None => conn.last_key.clone().map(|k| (k, None)),
        }
    }

    fn messages(&self, body: &Body, problems: &mut Problems) -> Vec<Message> {
        if body.len == 0 {
            return Vec::new();
        }
        if body.truncated {
            problems.truncated += 1;
            return match jsonrpc::parse_truncated(&body.bytes, &body.tail, body.len) {
                Ok(m) => vec![m],
                Err(e) => {
                    problems.parse_errors.push(e.kind());
                    Vec::new()
                }
            };
        }
        let parsed = jsonrpc::parse(&body.bytes, self.payloads);
        if parsed.utf8_replaced {
            problems.utf8_replaced += 1;
        }
        for e in &parsed.errors {
            tracing::debug!(bytes = body.len, "HTTP body is not JSON-RPC: {e}");
            problems.parse_errors.push(ParseError::kind(e));
        }
        parsed.messages
    }
}

fn http_key(tgid: u32, observer: Observer, scope: HttpScope) -> SessionKey {
    SessionKey::Http { tgid, observer, scope }
}

fn first_non_space(b: &[u8]) -> Option<u8> {
    b.iter().copied().find(|c| !c.is_ascii_whitespace())
}

/// Whether a request's `Mcp-Method` and `Mcp-Name` headers (2026-07-28:
/// what proxies and gateways route and authorize on) say what its body
/// does: `Mcp-Method` the method, `Mcp-Name` the tool or prompt name, or
/// the resource URI. A disagreement is what a request crafted to pass a
/// gateway's check on the header and act otherwise on the server looks
/// like: what each said.
fn header_mismatch(headers: &crate::protocol::http::Headers, msg: &Message) -> Option<String> {
    let method = match &msg.body {
        jsonrpc::Body::Request { method, .. } | jsonrpc::Body::Notification { method } => method.as_str(),
        jsonrpc::Body::Response { .. } => return None,
    };
    if let Some(h) = &headers.mcp_method
        && h != method
    {
        return Some(format!("Mcp-Method {h:?}, body {method:?}"));
    }
    let body_name = msg.facts.name.as_deref().or(msg.facts.uri.as_deref());
    match (&headers.mcp_name, body_name) {
        (Some(h), Some(b)) if h != b => Some(format!("Mcp-Name {h:?}, body {b:?}")),
        (Some(h), None) => Some(format!("Mcp-Name {h:?}, body names nothing")),
        _ => None,
    }
}

/// `http://host:port/messages/?session_id=x` → `/messages/?session_id=x`,
/// cut as request targets are (so that the two still match).
fn normalize_endpoint(data: &str) -> String {
    let data = data.trim();
    let path = match data.split_once("://") {
        Some((_, rest)) => match rest.find('/') {
            Some(i) => &rest[i..],
            None => "/",
        },
        None => data,
    };
    crate::protocol::bound::cut_str(path, crate::protocol::bound::URI)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        capture::Io,
        protocol::http::HttpConn,
        session::{Operation, SessionConfig},
    };

    struct Conn {
        http: HttpConn,
        mcp: McpConn,
    }

    struct World {
        adapter: HttpMcp,
        sessions: SessionTable,
        out: Vec<Output>,
        decisions: Vec<Decision>,
    }

    impl World {
        fn new() -> World {
            World {
                adapter: HttpMcp::new(false),
                sessions: SessionTable::new(SessionConfig::default()),
                out: Vec::new(),
                decisions: Vec::new(),
            }
        }

        fn conn(serial: u64, verdict: Verdict) -> Conn {
            Conn {
                http: HttpConn::new(1 << 20),
                mcp: McpConn::new(
                    Arc::new(ConnFacts {
                        serial,
                        ..ConnFacts::default()
                    }),
                    verdict,
                ),
            }
        }

        /// The server's view: it reads requests, writes responses.
        fn feed(&mut self, c: &mut Conn, io: Io, data: &str, ts: u64) {
            let mut events = Vec::new();
            c.http.push(io, data.as_bytes(), ts, false, &mut events);
            let mut problems = Problems::default();
            for e in events {
                let d = self.adapter.on_event(
                    &mut c.mcp,
                    7,
                    Observer::Server,
                    e,
                    &mut self.sessions,
                    &mut problems,
                    &mut self.out,
                );
                if d != Decision::None {
                    self.decisions.push(d);
                }
            }
        }

        fn ops(&self) -> Vec<&Operation> {
            self.out
                .iter()
                .filter_map(|o| match o {
                    Output::Operation(op) => Some(&**op),
                    _ => None,
                })
                .collect()
        }
    }

    fn post(sid: Option<&str>, body: &str) -> String {
        let sid = sid.map(|s| format!("Mcp-Session-Id: {s}\r\n")).unwrap_or_default();
        format!(
            "POST /mcp HTTP/1.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{sid}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn json_response(sid: Option<&str>, body: &str) -> String {
        let sid = sid.map(|s| format!("mcp-session-id: {s}\r\n")).unwrap_or_default();
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{sid}content-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn sse_response(events: &[&str]) -> String {
        let mut body = String::new();
        for e in events {
            body.push_str(&format!("event: message\r\ndata: {e}\r\n\r\n"));
        }
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        )
    }

    const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}"#;
    const INIT_OK: &str = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"s","version":"2"}}}"#;

    #[test]
    fn streamable_http_session_named_by_initialize_response() {
        let mut w = World::new();
        let mut c = World::conn(1, Verdict::Tracked);
        w.feed(&mut c, Io::Read, &post(None, INIT), 1);
        w.feed(&mut c, Io::Write, &json_response(Some("abc"), INIT_OK), 2);
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add"}}"#;
        w.feed(&mut c, Io::Read, &post(Some("abc"), call), 3);
        // The answer on an event stream, after a progress notification and
        // a server request.
        w.feed(
            &mut c,
            Io::Write,
            &sse_response(&[
                r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}"#,
                r#"{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{}}"#,
                r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#,
            ]),
            5,
        );
        // The client answers the server's request in a new POST: 202.
        w.feed(
            &mut c,
            Io::Read,
            &post(Some("abc"), r#"{"jsonrpc":"2.0","id":"s1","result":{"model":"m"}}"#),
            6,
        );
        w.feed(
            &mut c,
            Io::Write,
            "HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n",
            7,
        );
        let ops = w.ops();
        assert_eq!(ops.len(), 3, "{ops:#?}");
        assert_eq!((ops[0].method.as_str(), ops[0].status), ("initialize", Status::Ok));
        assert_eq!(
            (ops[1].method.as_str(), ops[1].status),
            ("tools/call", Status::ToolError)
        );
        assert_eq!(ops[1].end_ts_ns.unwrap() - ops[1].request_ts_ns, 2);
        assert_eq!(
            ops[1].session.client.as_ref().unwrap().name,
            "c",
            "identity survives the re-key"
        );
        assert_eq!(ops[1].session.server.as_ref().unwrap().name, "s");
        assert_eq!(ops[2].method, "sampling/createMessage");
        assert_eq!(ops[2].direction, Direction::ServerToClient);
        assert_eq!(ops[0].session.id, ops[1].session.id, "one session");
        assert_eq!(ops[1].request_via.as_ref().unwrap().path.as_deref(), Some("/mcp"));
    }

    #[test]
    fn http_errors_end_the_requests_of_their_exchange() {
        let mut w = World::new();
        let mut c = World::conn(1, Verdict::Tracked);
        let call = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"x"}}"#;
        w.feed(&mut c, Io::Read, &post(Some("gone"), call), 1);
        w.feed(
            &mut c,
            Io::Write,
            "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: 9\r\n\r\nnot found",
            2,
        );
        let ops = w.ops();
        assert_eq!(ops.len(), 1);
        assert_eq!(
            (ops[0].status, ops[0].error_type().as_deref()),
            (Status::Error, Some("404"))
        );
    }

    #[test]
    fn connection_closed_mid_stream_ends_its_requests() {
        let mut w = World::new();
        let mut c = World::conn(3, Verdict::Tracked);
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow"}}"#;
        w.feed(&mut c, Io::Read, &post(None, call), 1);
        w.feed(
            &mut c,
            Io::Write,
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
            2,
        );
        let mut events = Vec::new();
        c.http.close(3, &mut events);
        let mut p = Problems::default();
        for e in events {
            w.adapter
                .on_event(&mut c.mcp, 7, Observer::Server, e, &mut w.sessions, &mut p, &mut w.out);
        }
        w.adapter
            .on_close(&mut c.mcp, 7, Some(Observer::Server), 3, &mut w.sessions, &mut w.out);
        let ops = w.ops();
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].status, Status::ConnectionClosed);
        assert!(w.out.iter().any(|o| matches!(o, Output::SessionEnded { .. })));
    }

    #[test]
    fn legacy_sse_endpoint_joins_two_connections() {
        let mut w = World::new();
        let mut stream = World::conn(1, Verdict::Undecided);
        let mut posts = World::conn(2, Verdict::Tracked);
        w.feed(
            &mut stream,
            Io::Read,
            "GET /sse HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n",
            1,
        );
        assert!(w.decisions.is_empty(), "a bare event stream waits for its first event");
        let endpoint = "event: endpoint\r\ndata: /messages/?session_id=0123456789abcdef\r\n\r\n";
        w.feed(
            &mut stream,
            Io::Write,
            &format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{endpoint}\r\n",
                endpoint.len()
            ),
            2,
        );
        assert_eq!(w.decisions, vec![Decision::Confirm]);
        w.feed(
            &mut posts,
            Io::Read,
            &post(None, INIT).replace("POST /mcp", "POST /messages/?session_id=0123456789abcdef"),
            3,
        );
        w.feed(
            &mut posts,
            Io::Write,
            "HTTP/1.1 202 Accepted\r\ncontent-length: 8\r\n\r\nAccepted",
            4,
        );
        let event = format!("event: message\r\ndata: {INIT_OK}\r\n\r\n");
        w.feed(&mut stream, Io::Write, &format!("{:x}\r\n{event}\r\n", event.len()), 5);
        let ops = w.ops();
        assert_eq!(ops.len(), 1, "{:#?}", w.out);
        assert_eq!((ops[0].method.as_str(), ops[0].status), ("initialize", Status::Ok));
        assert_eq!(ops[0].request_via.as_ref().unwrap().path.as_deref(), Some("/messages/"));
    }

    #[test]
    fn discovery_releases_plain_http_and_confirms_mcp() {
        let mut w = World::new();
        let mut c = World::conn(1, Verdict::Undecided);
        w.feed(
            &mut c,
            Io::Read,
            "POST /api/orders HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
            1,
        );
        assert_eq!(w.decisions, vec![Decision::Release]);
        let mut w = World::new();
        let mut c = World::conn(1, Verdict::Undecided);
        w.feed(&mut c, Io::Read, &post(None, INIT), 1);
        assert_eq!(w.decisions, vec![Decision::Confirm]);
        w.feed(&mut c, Io::Write, &json_response(Some("z"), INIT_OK), 2);
        assert_eq!(w.ops().len(), 1);
    }

    #[test]
    fn endpoint_urls_are_normalized() {
        assert_eq!(normalize_endpoint("/messages/?session_id=1"), "/messages/?session_id=1");
        assert_eq!(
            normalize_endpoint("http://127.0.0.1:8000/messages/?session_id=1\n"),
            "/messages/?session_id=1"
        );
    }
}
