//! The sessions stage's typed output and the keys it works with: which
//! way a message went, on which transport, seen from which end; a
//! session's key and facts; the finished [`Operation`] and
//! [`Notification`]; and [`Output`], what the stage hands to the pipeline.

use std::{net::SocketAddr, sync::Arc, sync::OnceLock};

use crate::{
    capture::Channel,
    protocol::jsonrpc::{Facts, Implementation, Payload, RequestId},
};

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
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Pipe => "pipe",
            Transport::Tcp => "tcp",
        }
    }
}

/// Which end of the session the watched process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Observer {
    Server,
    Client,
}

impl Observer {
    pub fn as_str(self) -> &'static str {
        match self {
            Observer::Server => "server",
            Observer::Client => "client",
        }
    }
}

/// What names an MCP session over HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HttpScope {
    /// The server's `Mcp-Session-Id`.
    Session(Arc<str>),
    /// Legacy HTTP+SSE (2024-11-05): the message endpoint the server
    /// announced on the event stream.
    Legacy(Arc<str>),
    /// Neither (2026-07-28, stateless servers, an initialize not answered
    /// yet): the connection, by its serial number.
    Connection(u64),
}

/// Which session a message belongs to, from the watched process's view.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SessionKey {
    /// A stdio server process: both directions are seen on its stdio.
    Stdio { tgid: u32 },
    Http {
        tgid: u32,
        observer: Observer,
        scope: HttpScope,
    },
}

impl SessionKey {
    /// The process the agent watches for this session.
    pub fn tgid(&self) -> u32 {
        match self {
            SessionKey::Stdio { tgid } | SessionKey::Http { tgid, .. } => *tgid,
        }
    }

    pub fn observer(&self) -> Observer {
        match self {
            SessionKey::Stdio { .. } => Observer::Server,
            SessionKey::Http { observer, .. } => *observer,
        }
    }

    pub fn transport(&self) -> Transport {
        match self {
            SessionKey::Stdio { .. } => Transport::Pipe,
            SessionKey::Http { .. } => Transport::Tcp,
        }
    }

    /// The session id events show: random for stdio and connections; for
    /// named HTTP sessions derived from the name (never the name itself:
    /// an `Mcp-Session-Id` is a credential), so that the server's and the
    /// client's views of one session carry the same id.
    pub(super) fn event_id(&self) -> String {
        const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6d63_7074_6170_4d43_5053_6573_7369_6f6e);
        match self {
            SessionKey::Http {
                scope: HttpScope::Session(name) | HttpScope::Legacy(name),
                ..
            } => uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes()).to_string(),
            _ => uuid::Uuid::new_v4().to_string(),
        }
    }
}

/// A TCP connection (plain or TLS) as the watched process sees it. Shared
/// by the requests and responses that travelled on it; the addresses and
/// the peer process are found once, sometimes after the first bytes.
#[derive(Debug, Default)]
pub struct ConnFacts {
    pub serial: u64,
    pub tls: bool,
    /// (local, peer) addresses.
    pub addrs: OnceLock<(SocketAddr, SocketAddr)>,
    /// The process at the other end, when it is on this host.
    pub peer_pid: OnceLock<Option<u32>>,
}

/// Where a message travelled (HTTP only).
#[derive(Debug, Clone)]
pub struct Via {
    pub conn: Arc<ConnFacts>,
    /// The HTTP exchange (request/response pair) on the connection.
    pub exchange: Option<u64>,
    /// The HTTP method, path and Host header of the request of that exchange.
    pub http_method: Option<Arc<str>>,
    pub path: Option<Arc<str>>,
    pub host: Option<Arc<str>>,
    /// The status of the response that carried the message, once known.
    pub status: Option<u16>,
    /// The request's headers, only when payloads are captured.
    pub headers: Option<Arc<[(String, String)]>>,
    /// The request's credential (`Authorization`), for who the call was
    /// for (never recorded).
    pub credential: Option<Arc<crate::protocol::http::Credential>>,
}

/// How a session came to be watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The kernel sniffed JSON on its stdin: confirm or reject it.
    Discovered,
    /// The operator selected the process, or it was confirmed already.
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
    ClientExited,
    ConnectionClosed,
    /// A round of a multi round-trip request (2026-07-28) answered
    /// `resultType: "input_required"`: not the call's end (see
    /// `CallLinks::call`).
    InputRequired,
    /// Ended to make room: its session held [`SessionConfig::max_pending`]
    /// requests in flight, or its session was ended for room
    /// (`max_sessions`, `max_sessions_per_process`). Counted in
    /// `mcptap_evicted_total` too.
    ///
    /// [`SessionConfig::max_pending`]: super::SessionConfig::max_pending
    Evicted,
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
            Status::ClientExited => "client_exited",
            Status::ConnectionClosed => "connection_closed",
            Status::Evicted => "evicted",
            Status::InputRequired => "input_required",
        }
    }
}

/// A finished request: what was asked, how it ended, and when.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Unique among the agent's requests (sessions may be re-keyed; this
    /// stays): what ties the request's start to its end in later stages.
    pub serial: u64,
    pub key: SessionKey,
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
    /// The HTTP status that failed the request (no JSON-RPC answer).
    pub http_error: Option<u16>,
    pub result_type: Option<String>,
    /// A `tools/list` answer: the tools offered and their digests.
    pub offered_tools: Option<Vec<crate::protocol::jsonrpc::ToolDef>>,
    pub request_bytes: usize,
    pub response_bytes: Option<usize>,
    pub request_truncated: bool,
    pub response_truncated: bool,
    pub request_payload: Option<Payload>,
    pub response_payload: Option<Payload>,
    pub request_via: Option<Via>,
    pub response_via: Option<Via>,
    /// What ties it to other operations and to the application's trace.
    pub links: CallLinks,
}

/// How an operation relates to others and to the application's trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallLinks {
    /// One round of a logical call (2026-07-28 multi round-trip requests).
    pub call: Option<LogicalCall>,
    /// The task it created or concerns.
    pub task: Option<TaskLink>,
    /// The W3C trace context its request carried (`_meta.traceparent`).
    pub trace: Option<crate::protocol::jsonrpc::TraceContext>,
    /// Its HTTP request's `Mcp-Method`/`Mcp-Name` disagreed with its body:
    /// what each said.
    pub header_mismatch: Option<String>,
}

/// A round of a logical call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalCall {
    /// Shared by every round of the call.
    pub call_id: String,
    /// 1 for the first.
    pub round: u32,
    /// The last round: from the first round's request to this answer.
    pub duration_ns: Option<u64>,
    /// The last round: time between each `input_required` answer and the
    /// next round's request (the user answering).
    pub input_wait_ns: Option<u64>,
}

/// The task an operation created or concerns, and the call that created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskLink {
    pub task_id: String,
    /// The creating call's id (empty: created before the agent looked).
    pub call_id: String,
    /// The creating call's tool.
    pub tool: Option<String>,
}

impl Operation {
    /// Seconds from request to answer, when there was an answer.
    pub fn duration_s(&self) -> Option<f64> {
        self.end_ts_ns
            .map(|end| end.saturating_sub(self.request_ts_ns) as f64 / 1e9)
    }

    /// `error.type` as OpenTelemetry names it: the JSON-RPC code, the HTTP
    /// status, or the kind of failure; `None` on success.
    pub fn error_type(&self) -> Option<String> {
        match self.status {
            Status::Ok | Status::InputRequired => None,
            Status::Error => Some(match (self.error_code, self.http_error) {
                (Some(c), _) => c.to_string(),
                (None, Some(h)) => h.to_string(),
                (None, None) => "error".into(),
            }),
            other => Some(other.as_str().to_string()),
        }
    }

    pub fn transport(&self) -> Transport {
        self.key.transport()
    }
}

/// A notification worth an event of its own.
#[derive(Debug, Clone)]
pub struct Notification {
    pub key: SessionKey,
    pub session: SessionInfo,
    pub direction: Direction,
    pub method: String,
    pub ts_ns: u64,
    pub facts: Facts,
    pub bytes: usize,
    pub payload: Option<Payload>,
    pub via: Option<Via>,
}

/// Notifications that get an event (all are counted in metrics).
pub(super) const NOTABLE_NOTIFICATIONS: &[&str] = &[
    "notifications/cancelled",
    "notifications/progress",
    "notifications/tools/list_changed",
    "notifications/prompts/list_changed",
    "notifications/resources/list_changed",
    "notifications/resources/updated",
    "notifications/roots/list_changed",
];

/// One HTTP exchange whose response will not answer its requests.
#[derive(Debug, Clone)]
pub struct ExchangeEnd {
    /// The connection (its serial) and the exchange on it.
    pub conn_serial: u64,
    pub exchange: u64,
    /// How its requests end.
    pub status: Status,
    pub via: Option<Via>,
    pub ts_ns: u64,
}

/// What discovery decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovered {
    /// The process speaks MCP: track everything of it.
    Mcp,
    /// A process discovered on its stdio does not speak MCP: never look
    /// at it again (until it exits).
    NotMcp,
    /// A connection is not MCP: capture it no more. `sniffed`: the process
    /// is not tracked, and its next request is sniffed again (budgeted);
    /// otherwise the connection is something else a tracked process talks
    /// to (an API it calls), ignored for good.
    NotMcpConnection { channel: Channel, sniffed: bool },
    /// A connection speaks what mcptap does not parse (HTTP/2, WebSocket):
    /// never capture it.
    Unparsed { channel: Channel, kind: &'static str },
}

/// What could not be used, to count (`mcptap_parse_errors_total`,
/// `mcptap_truncated_messages_total`, `mcptap_capture_gaps_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A frame or bytes of this kind were not usable.
    Parse(&'static str),
    /// A message longer than the limit (correlated from its first bytes).
    Truncated,
    /// Bytes were missing before the next ones (the parser resyncs).
    Gap,
}

/// What the sessions stage hands on.
#[derive(Debug, Clone)]
pub enum Output {
    /// A server process the agent watches received a request: what it does
    /// from now on may be this request's doing (side effects, CPU).
    RequestStarted {
        server_tgid: u32,
        serial: u64,
    },
    Operation(Box<Operation>),
    Notification(Box<Notification>),
    /// A message of a counted kind (metrics), with its size.
    Message {
        transport: Transport,
        direction: Direction,
        bytes: usize,
        notification: Option<String>,
        /// Fields of it cut to their bound.
        cuts: crate::protocol::bound::Cuts,
    },
    SessionStarted {
        key: SessionKey,
    },
    /// A request in flight or a session was ended to make room (counted,
    /// logged; the request's event says `evicted`).
    Evicted {
        /// `request` or `session`.
        what: &'static str,
        /// The bound: `max_pending`, `max_sessions`,
        /// `max_sessions_per_process`.
        why: &'static str,
        tgid: u32,
    },
    /// A started session was merged into another (re-keyed onto a name
    /// that already had one).
    SessionMerged {
        transport: Transport,
    },
    SessionEnded {
        key: SessionKey,
        session: Box<SessionInfo>,
        ts_ns: u64,
        via: Option<Via>,
    },
    /// What discovery decided about a process or one of its connections,
    /// for the kernel side (stdio and network alike).
    Discovery {
        tgid: u32,
        found: Discovered,
    },
    /// Bytes or frames that could not be used, to count.
    Problem(Problem),
    /// A response with no request in flight (late after a cancel, or the
    /// request was never seen).
    Unmatched,
    /// A request replaced one in flight with the same id.
    DuplicateId,
}
