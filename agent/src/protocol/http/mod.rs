//! HTTP/1.1 framing of one connection, as seen from one process: the bytes
//! it read and wrote (plain TCP, or TLS plaintext), turned into requests,
//! response heads, response bodies and server-sent events.
//!
//! Heads are parsed with `httparse`; bodies follow `Content-Length`,
//! chunked transfer coding or the connection's end; gzip and deflate
//! bodies are inflated (`flate2`). Keep-alive and pipelining pair responses
//! with requests in order. Which direction carries requests is learned from
//! the first message, so the same code serves the server's view (requests
//! read) and the client's (requests written).
//!
//! HTTP/2 (prior knowledge or `h2` over TLS) and upgrades (WebSocket) are
//! reported as unsupported rather than misparsed. After lost bytes or a
//! malformed message a direction resynchronises at the next message start.

use std::{collections::VecDeque, io::Read};

use super::{
    body::{BodyBuf, ChunkError, Chunked},
    bound,
    sse::{SseEvent, SseParser},
};
use crate::capture::Io;

/// Longest head accepted.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 96;

/// An `Authorization` header's value: kept only to derive who the call
/// was for (`enrich::identity`), never shown (its `Debug` is redacted, it
/// cannot be serialized).
#[derive(Clone, PartialEq, Eq)]
pub struct Credential(String);

impl Credential {
    pub fn new(value: String) -> Credential {
        Credential(value)
    }

    /// The secret itself, for `enrich::identity` only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential([REDACTED])")
    }
}

/// Header values the later stages use (names are matched case-blind).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    pub chunked: bool,
    pub content_encoding: Option<String>,
    pub mcp_session_id: Option<String>,
    pub mcp_protocol_version: Option<String>,
    pub mcp_method: Option<String>,
    pub mcp_name: Option<String>,
    pub accept: Option<String>,
    pub upgrade: Option<String>,
    pub user_agent: Option<String>,
    pub host: Option<String>,
    pub authorization: Option<Credential>,
    /// Every header, in order (masked before any of it is shown).
    pub all: Vec<(String, String)>,
}

impl Headers {
    fn from(raw: &[httparse::Header<'_>]) -> Headers {
        let mut h = Headers::default();
        for header in raw {
            let value = String::from_utf8_lossy(header.value).trim().to_string();
            let name = header.name.to_ascii_lowercase();
            match name.as_str() {
                "content-type" => h.content_type = Some(value.clone()),
                "content-length" => h.content_length = value.parse().ok(),
                "transfer-encoding" => h.chunked = value.to_ascii_lowercase().contains("chunked"),
                "content-encoding" => h.content_encoding = Some(value.to_ascii_lowercase()),
                // Kept as session names and compared with the body: cut to
                // their bounds (the head itself may be 64 KiB).
                "mcp-session-id" => h.mcp_session_id = Some(bound::cut_str(&value, bound::ID)),
                "mcp-protocol-version" => h.mcp_protocol_version = Some(bound::cut_str(&value, bound::NAME)),
                "mcp-method" => h.mcp_method = Some(bound::cut_str(&value, bound::NAME)),
                "mcp-name" => h.mcp_name = Some(bound::cut_str(&value, bound::NAME)),
                "accept" => h.accept = Some(value.clone()),
                "upgrade" => h.upgrade = Some(value.clone()),
                "user-agent" => h.user_agent = Some(value.clone()),
                "host" => h.host = Some(value.clone()),
                "authorization" => h.authorization = Some(Credential::new(value.clone())),
                _ => {}
            }
            h.all.push((header.name.to_string(), value));
        }
        h
    }

    /// The body is a server-sent event stream.
    pub fn is_event_stream(&self) -> bool {
        self.content_type
            .as_deref()
            .is_some_and(|t| t.to_ascii_lowercase().starts_with("text/event-stream"))
    }

    /// The message names MCP in its headers (Streamable HTTP).
    pub fn mentions_mcp(&self) -> bool {
        self.mcp_session_id.is_some() || self.mcp_protocol_version.is_some() || self.mcp_method.is_some()
    }
}

/// A complete body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub bytes: Vec<u8>,
    pub tail: Vec<u8>,
    pub len: usize,
    pub truncated: bool,
}

impl Body {
    fn from(buf: BodyBuf) -> Body {
        let truncated = buf.truncated();
        Body {
            bytes: buf.bytes,
            tail: buf.tail,
            len: buf.len,
            truncated,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub exchange: u64,
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    pub headers: Headers,
    pub body: Body,
    /// When the last byte moved.
    pub ts_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// `None` when the request was not seen (capture started mid-stream).
    pub exchange: Option<u64>,
    pub status: u16,
    pub headers: Headers,
    pub ts_ns: u64,
}

/// What the connection said, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpEvent {
    Request(Request),
    ResponseHead(ResponseHead),
    /// The whole body of a response that is not an event stream.
    ResponseBody {
        exchange: Option<u64>,
        body: Body,
        ts_ns: u64,
    },
    /// One event of an event-stream response.
    Event {
        exchange: Option<u64>,
        event: SseEvent,
        ts_ns: u64,
    },
    /// A response ended; `complete` is false when the connection ended it
    /// before its framing said so.
    ResponseEnd {
        exchange: Option<u64>,
        complete: bool,
        ts_ns: u64,
    },
    /// The connection speaks something this parser does not follow.
    Unsupported(&'static str),
    /// Bytes that were not usable, with why (counted by the caller).
    Dropped {
        kind: &'static str,
        bytes: usize,
    },
}

#[derive(Debug)]
enum Framing {
    None,
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

#[derive(Debug)]
enum BodySink {
    Buffer(BodyBuf),
    Events(SseParser),
}

#[derive(Debug)]
enum State {
    /// Between messages, or in a head: `buf` holds the head so far.
    Head,
    Body {
        framing: Framing,
        /// Boxed: a body sink is large, and most of the time a side is in
        /// `Head`.
        sink: Box<BodySink>,
        /// Request parts kept until the body is complete.
        request: Option<Box<(String, String, Headers)>>,
        exchange: Option<u64>,
        encoding: Option<String>,
    },
    /// After lost bytes or a malformed message: skipping to a message start.
    Resync { skipped: usize },
}

/// One direction's parser.
#[derive(Debug)]
struct Side {
    state: State,
    buf: Vec<u8>,
}

impl Side {
    fn new() -> Side {
        Side {
            state: State::Head,
            buf: Vec::new(),
        }
    }

    fn pending(&self) -> usize {
        match &self.state {
            State::Head => self.buf.len(),
            State::Body { sink, .. } => match &**sink {
                BodySink::Buffer(b) => b.len,
                BodySink::Events(p) => p.pending(),
            },
            _ => 0,
        }
    }
}

pub struct HttpConn {
    max_body: usize,
    /// Which of the process's directions carries requests.
    requests_on: Option<Io>,
    requests: Side,
    responses: Side,
    /// Requests whose responses have not started: exchange and method.
    waiting: VecDeque<(u64, String)>,
    next_exchange: u64,
    unsupported: bool,
    /// First bytes, held until there are enough to tell what they are.
    first: Vec<u8>,
}

const METHODS: &[&[u8]] = &[b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"OPTIONS ", b"PATCH "];

fn starts_request(b: &[u8]) -> bool {
    METHODS.iter().any(|m| b.starts_with(m))
}

fn starts_response(b: &[u8]) -> bool {
    b.starts_with(b"HTTP/1.")
}

fn starts_http2(b: &[u8]) -> bool {
    b.starts_with(b"PRI * HTTP/2")
}

/// Whether a few bytes are the start of a request, a status line or the
/// HTTP/2 preface (more bytes will tell which).
fn could_start_http(b: &[u8]) -> bool {
    let prefix_of = |word: &[u8]| word.starts_with(&b[..b.len().min(word.len())]);
    METHODS.iter().any(|m| prefix_of(m)) || prefix_of(b"HTTP/1.") || prefix_of(b"PRI * HTTP/2")
}

impl HttpConn {
    pub fn new(max_body: usize) -> HttpConn {
        HttpConn {
            max_body,
            requests_on: None,
            requests: Side::new(),
            responses: Side::new(),
            waiting: VecDeque::new(),
            next_exchange: 0,
            unsupported: false,
            first: Vec::new(),
        }
    }

    /// The direction requests travel, once known.
    pub fn requests_on(&self) -> Option<Io> {
        self.requests_on
    }

    /// Bytes held for unfinished messages.
    pub fn pending(&self) -> usize {
        self.requests.pending() + self.responses.pending()
    }

    pub fn push(&mut self, io: Io, data: &[u8], ts_ns: u64, gap_before: bool, out: &mut Vec<HttpEvent>) {
        if self.unsupported || data.is_empty() {
            return;
        }
        let held;
        let mut data = data;
        let requests_on = match self.requests_on {
            Some(d) => d,
            None => {
                // Too few bytes to tell a method or status line yet.
                if data.len() < 8 && could_start_http(&[&self.first[..], data].concat()) {
                    self.first.extend_from_slice(data);
                    if self.first.len() < 8 {
                        return;
                    }
                }
                if !self.first.is_empty() {
                    if self.first.len() < 8 {
                        self.first.extend_from_slice(data);
                    }
                    held = std::mem::take(&mut self.first);
                    data = &held;
                }
                if starts_http2(data) {
                    self.unsupported = true;
                    out.push(HttpEvent::Unsupported("http2"));
                    return;
                }
                let d = if starts_request(data) {
                    io
                } else if starts_response(data) {
                    opposite(io)
                } else {
                    out.push(HttpEvent::Dropped {
                        kind: "not_http",
                        bytes: data.len(),
                    });
                    return;
                };
                self.requests_on = Some(d);
                d
            }
        };
        let is_request = io == requests_on;
        if gap_before {
            let side = if is_request {
                &mut self.requests
            } else {
                &mut self.responses
            };
            let cut = side.pending();
            if !matches!(side.state, State::Head if side.buf.is_empty()) {
                out.push(HttpEvent::Dropped {
                    kind: "capture_gap",
                    bytes: cut,
                });
                side.state = State::Resync { skipped: 0 };
                side.buf.clear();
                if !is_request {
                    // Which request the next response answers is lost too.
                    self.waiting.clear();
                }
            }
        }
        while !data.is_empty() && !self.unsupported {
            let used = if is_request {
                self.feed_request(data, ts_ns, out)
            } else {
                self.feed_response(data, ts_ns, out)
            };
            data = &data[used.min(data.len())..];
        }
    }

    /// The connection ended: finish what its end completes (bodies read to
    /// the close), drop the rest.
    pub fn close(&mut self, ts_ns: u64, out: &mut Vec<HttpEvent>) {
        let responses = std::mem::replace(&mut self.responses.state, State::Head);
        match responses {
            State::Body {
                framing: Framing::UntilClose,
                sink,
                exchange,
                encoding,
                ..
            } => {
                self.finish_response_body(*sink, exchange, encoding, true, ts_ns, out);
            }
            State::Body { sink, exchange, .. } => {
                if let BodySink::Buffer(b) = &*sink
                    && !b.is_empty()
                {
                    out.push(HttpEvent::Dropped {
                        kind: "closed_mid_message",
                        bytes: b.len,
                    });
                }
                out.push(HttpEvent::ResponseEnd {
                    exchange,
                    complete: false,
                    ts_ns,
                });
            }
            State::Head if !self.responses.buf.is_empty() => out.push(HttpEvent::Dropped {
                kind: "closed_mid_message",
                bytes: self.responses.buf.len(),
            }),
            _ => {}
        }
        let pending = self.requests.pending();
        if pending > 0 {
            out.push(HttpEvent::Dropped {
                kind: "closed_mid_message",
                bytes: pending,
            });
        }
        self.requests = Side::new();
        self.responses = Side::new();
    }

    fn feed_request(&mut self, data: &[u8], ts_ns: u64, out: &mut Vec<HttpEvent>) -> usize {
        match &mut self.requests.state {
            State::Resync { skipped } => {
                if starts_request(data) {
                    let skipped = *skipped;
                    self.requests.state = State::Head;
                    if skipped > 0 {
                        out.push(HttpEvent::Dropped {
                            kind: "capture_gap",
                            bytes: skipped,
                        });
                    }
                    0
                } else {
                    *skipped += data.len();
                    data.len()
                }
            }
            State::Head => {
                let Some((head_len, used)) = accumulate_head(&mut self.requests.buf, data) else {
                    if self.requests.buf.len() > MAX_HEAD {
                        self.fail_request("head_too_large", out);
                    }
                    return data.len();
                };
                let head = std::mem::take(&mut self.requests.buf);
                let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut raw);
                match req.parse(&head[..head_len]) {
                    Ok(httparse::Status::Complete(_)) => {}
                    _ => {
                        if starts_http2(&head) {
                            self.unsupported = true;
                            out.push(HttpEvent::Unsupported("http2"));
                        } else {
                            self.fail_request("bad_request_head", out);
                        }
                        return used;
                    }
                }
                let method = req.method.unwrap_or_default().to_string();
                // Kept as a legacy session's name and a path in events.
                let target = bound::cut_str(req.path.unwrap_or_default(), bound::URI);
                let headers = Headers::from(req.headers);
                if headers.upgrade.is_some() {
                    // WebSocket or h2c: the server may accept it; either way
                    // this connection is no longer plain HTTP/1.1 for us.
                    self.unsupported = true;
                    out.push(HttpEvent::Unsupported("upgrade"));
                    return used;
                }
                let exchange = self.next_exchange;
                self.next_exchange += 1;
                self.waiting.push_back((exchange, method.clone()));
                let framing = if headers.chunked {
                    Framing::Chunked(Chunked::default())
                } else {
                    match headers.content_length {
                        Some(0) | None => Framing::None,
                        Some(n) => Framing::Length(n),
                    }
                };
                let encoding = headers.content_encoding.clone();
                if matches!(framing, Framing::None) {
                    out.push(HttpEvent::Request(Request {
                        exchange,
                        method,
                        target,
                        headers,
                        body: Body::from(BodyBuf::new(0)),
                        ts_ns,
                    }));
                    return used;
                }
                self.requests.state = State::Body {
                    framing,
                    sink: Box::new(BodySink::Buffer(BodyBuf::new(self.max_body))),
                    request: Some(Box::new((method, target, headers))),
                    exchange: Some(exchange),
                    encoding,
                };
                used
            }
            State::Body { framing, sink, .. } => {
                let (used, done) = match feed_body(framing, sink, data, ts_ns, &mut Vec::new()) {
                    Ok(r) => r,
                    Err(e) => {
                        self.fail_request(chunk_error_kind(e), out);
                        return data.len();
                    }
                };
                if done {
                    let State::Body {
                        sink,
                        request,
                        exchange,
                        encoding,
                        ..
                    } = std::mem::replace(&mut self.requests.state, State::Head)
                    else {
                        unreachable!("matched above")
                    };
                    let (method, target, headers) = request.map(|r| *r).unwrap_or_default();
                    let BodySink::Buffer(buf) = *sink else {
                        unreachable!("requests are buffered")
                    };
                    match decode(buf, encoding.as_deref(), self.max_body) {
                        Ok(body) => out.push(HttpEvent::Request(Request {
                            exchange: exchange.unwrap_or_default(),
                            method,
                            target,
                            headers,
                            body,
                            ts_ns,
                        })),
                        Err(kind) => out.push(HttpEvent::Dropped { kind, bytes: 0 }),
                    }
                }
                used
            }
        }
    }

    fn fail_request(&mut self, kind: &'static str, out: &mut Vec<HttpEvent>) {
        out.push(HttpEvent::Dropped {
            kind,
            bytes: self.requests.pending(),
        });
        self.requests.buf.clear();
        self.requests.state = State::Resync { skipped: 0 };
    }

    fn fail_response(&mut self, kind: &'static str, out: &mut Vec<HttpEvent>) {
        out.push(HttpEvent::Dropped {
            kind,
            bytes: self.responses.pending(),
        });
        self.responses.buf.clear();
        self.responses.state = State::Resync { skipped: 0 };
        self.waiting.clear();
    }

    fn feed_response(&mut self, data: &[u8], ts_ns: u64, out: &mut Vec<HttpEvent>) -> usize {
        match &mut self.responses.state {
            State::Resync { skipped } => {
                if starts_response(data) {
                    let skipped = *skipped;
                    self.responses.state = State::Head;
                    if skipped > 0 {
                        out.push(HttpEvent::Dropped {
                            kind: "capture_gap",
                            bytes: skipped,
                        });
                    }
                    0
                } else {
                    *skipped += data.len();
                    data.len()
                }
            }
            State::Head => {
                let Some((head_len, used)) = accumulate_head(&mut self.responses.buf, data) else {
                    if self.responses.buf.len() > MAX_HEAD {
                        self.fail_response("head_too_large", out);
                    }
                    return data.len();
                };
                let head = std::mem::take(&mut self.responses.buf);
                let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut resp = httparse::Response::new(&mut raw);
                match resp.parse(&head[..head_len]) {
                    Ok(httparse::Status::Complete(_)) => {}
                    _ => {
                        self.fail_response("bad_response_head", out);
                        return used;
                    }
                }
                let status = resp.code.unwrap_or_default();
                let headers = Headers::from(resp.headers);
                if status == 101 {
                    self.unsupported = true;
                    out.push(HttpEvent::Unsupported("upgrade"));
                    return used;
                }
                if (100..200).contains(&status) {
                    return used; // 100 Continue and friends: the real head follows
                }
                let (exchange, method) = match self.waiting.pop_front() {
                    Some((e, m)) => (Some(e), m),
                    None => (None, String::new()),
                };
                let framing = if method == "HEAD" || status == 204 || status == 304 {
                    Framing::None
                } else if headers.chunked {
                    Framing::Chunked(Chunked::default())
                } else {
                    match headers.content_length {
                        Some(0) => Framing::None,
                        Some(n) => Framing::Length(n),
                        None => Framing::UntilClose,
                    }
                };
                let events = headers.is_event_stream();
                let encoding = headers.content_encoding.clone();
                out.push(HttpEvent::ResponseHead(ResponseHead {
                    exchange,
                    status,
                    headers,
                    ts_ns,
                }));
                if matches!(framing, Framing::None) {
                    out.push(HttpEvent::ResponseEnd {
                        exchange,
                        complete: true,
                        ts_ns,
                    });
                    return used;
                }
                let sink = if events {
                    if encoding.as_deref().is_some_and(|e| e != "identity") {
                        out.push(HttpEvent::Unsupported("compressed_event_stream"));
                    }
                    Box::new(BodySink::Events(SseParser::new(self.max_body)))
                } else {
                    Box::new(BodySink::Buffer(BodyBuf::new(self.max_body)))
                };
                self.responses.state = State::Body {
                    framing,
                    sink,
                    request: None,
                    exchange,
                    encoding,
                };
                used
            }
            State::Body {
                framing,
                sink,
                exchange,
                ..
            } => {
                let exchange = *exchange;
                let mut events = Vec::new();
                let result = feed_body(framing, sink, data, ts_ns, &mut events);
                for event in events {
                    out.push(HttpEvent::Event { exchange, event, ts_ns });
                }
                let (used, done) = match result {
                    Ok(r) => r,
                    Err(e) => {
                        out.push(HttpEvent::ResponseEnd {
                            exchange,
                            complete: false,
                            ts_ns,
                        });
                        self.fail_response(chunk_error_kind(e), out);
                        return data.len();
                    }
                };
                if done {
                    let State::Body {
                        sink,
                        exchange,
                        encoding,
                        ..
                    } = std::mem::replace(&mut self.responses.state, State::Head)
                    else {
                        unreachable!("matched above")
                    };
                    self.finish_response_body(*sink, exchange, encoding, true, ts_ns, out);
                }
                used
            }
        }
    }

    fn finish_response_body(
        &mut self,
        sink: BodySink,
        exchange: Option<u64>,
        encoding: Option<String>,
        complete: bool,
        ts_ns: u64,
        out: &mut Vec<HttpEvent>,
    ) {
        if let BodySink::Buffer(buf) = sink {
            match decode(buf, encoding.as_deref(), self.max_body) {
                Ok(body) => out.push(HttpEvent::ResponseBody { exchange, body, ts_ns }),
                Err(kind) => out.push(HttpEvent::Dropped { kind, bytes: 0 }),
            }
        }
        out.push(HttpEvent::ResponseEnd {
            exchange,
            complete,
            ts_ns,
        });
    }
}

fn opposite(io: Io) -> Io {
    match io {
        Io::Read => Io::Write,
        Io::Write => Io::Read,
    }
}

/// Appends `data` to a head buffer; once the head is complete returns its
/// length within the buffer and how many bytes of `data` it took.
fn accumulate_head(buf: &mut Vec<u8>, data: &[u8]) -> Option<(usize, usize)> {
    let before = buf.len();
    // Look for the blank line across the boundary too.
    let search_from = before.saturating_sub(3);
    let take = data.len().min(MAX_HEAD + 4 - before.min(MAX_HEAD + 4));
    buf.extend_from_slice(&data[..take]);
    let end = memchr::memmem::find(&buf[search_from..], b"\r\n\r\n")? + search_from + 4;
    let used = end - before;
    buf.truncate(end);
    Some((end, used))
}

/// Feeds body bytes; returns (bytes used, body complete).
fn feed_body(
    framing: &mut Framing,
    sink: &mut BodySink,
    data: &[u8],
    _ts_ns: u64,
    events: &mut Vec<SseEvent>,
) -> Result<(usize, bool), ChunkError> {
    let mut put = |bytes: &[u8]| match sink {
        BodySink::Buffer(b) => b.push(bytes),
        BodySink::Events(p) => p.feed(bytes, events),
    };
    match framing {
        Framing::None => Ok((0, true)),
        Framing::Length(left) => {
            let n = (data.len() as u64).min(*left) as usize;
            put(&data[..n]);
            *left -= n as u64;
            Ok((n, *left == 0))
        }
        Framing::Chunked(c) => {
            let used = c.feed(data, put)?;
            Ok((used, c.done()))
        }
        Framing::UntilClose => {
            put(data);
            Ok((data.len(), false))
        }
    }
}

fn chunk_error_kind(e: ChunkError) -> &'static str {
    match e {
        ChunkError::BadSize | ChunkError::LongLine => "bad_chunk_size",
        ChunkError::MissingCrlf => "bad_chunk_framing",
    }
}

/// Undoes the content coding of a complete body (bounded: a compressed
/// bomb stops at `max` bytes and is marked truncated).
fn decode(buf: BodyBuf, encoding: Option<&str>, max: usize) -> Result<Body, &'static str> {
    let encoding = encoding.unwrap_or("identity");
    let reader: Box<dyn Read> = match encoding {
        "identity" | "" => return Ok(Body::from(buf)),
        _ if buf.truncated() => return Err("compressed_body_too_large"),
        "gzip" | "x-gzip" => Box::new(flate2::read::GzDecoder::new(std::io::Cursor::new(buf.bytes))),
        "deflate" => Box::new(flate2::read::ZlibDecoder::new(std::io::Cursor::new(buf.bytes))),
        _ => return Err("unsupported_content_encoding"),
    };
    let mut out = BodyBuf::new(max);
    let mut reader = reader;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.push(&chunk[..n]),
            Err(_) => return Err("bad_compressed_body"),
        }
        if out.len > max.saturating_mul(8) {
            break; // a decompression bomb: keep what fits, mark truncated
        }
    }
    Ok(Body::from(out))
}

/// `host[:port]` or `[v6]:port` of a Host header; the scheme's port when
/// none is given. The one place a Host header is read (events, the
/// loopback peer lookup, tying TLS sessions to sockets).
pub fn parse_host(h: &str, tls: bool) -> Option<(String, u16)> {
    let default = if tls { 443 } else { 80 };
    if let Some(rest) = h.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default,
        };
        return Some((ip.to_string(), port));
    }
    match h.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None => Some((h.to_string(), default)),
    }
}

#[cfg(test)]
mod tests;
