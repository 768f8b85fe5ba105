//! The event schema (docs/events.md): one JSON object per finished operation,
//! notable notification, and session end. Attribute names follow the
//! OpenTelemetry MCP conventions where they exist (`mcp.method.name`,
//! `gen_ai.tool.name`, `jsonrpc.request.id`, `error.type`, ...).
//!
//! Versioned by `schema`: fields are only added within a version; a rename
//! or removal makes a new version.

use std::{borrow::Cow, sync::Arc};

use serde::Serialize;
use serde_json::Value;

use crate::{
    enrich::{
        ClientFoundBy, Clock, HostInfo, Peers, ProcessInfo,
        identity::Identity,
        operation::{Endpoints, OperationRecord},
    },
    mask,
    protocol::jsonrpc::{Implementation, Payload},
    session::{Notification, SessionInfo, SessionKey, Via},
};

pub const SCHEMA: &str = "mcptap.event/v1";

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub enum EventType {
    #[serde(rename = "mcp.operation")]
    Operation,
    #[serde(rename = "mcp.notification")]
    Notification,
    #[serde(rename = "mcp.session.end")]
    SessionEnd,
    /// A policy violation, a spike, a first use (see `alert`).
    #[serde(rename = "mcp.alert")]
    Alert,
    /// Someone read captured payloads through the API (see `audit`).
    #[serde(rename = "mcp.audit")]
    Audit,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub schema: &'static str,
    #[serde(rename = "event.id")]
    pub id: String,
    #[serde(rename = "event.type")]
    pub kind: EventType,
    /// When it happened: the request (operations), the message
    /// (notifications), the end (sessions). RFC 3339, UTC.
    pub time: String,
    pub host: Arc<HostInfo>,
    /// Which end the agent watched: `server` or `client`.
    pub observer: &'static str,
    #[serde(rename = "network.transport")]
    pub transport: &'static str,
    /// `http` for TCP sessions.
    #[serde(rename = "network.protocol.name", skip_serializing_if = "Option::is_none")]
    pub protocol: Option<&'static str>,
    /// Whether the connection was TLS (TCP sessions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    #[serde(rename = "server.address", skip_serializing_if = "Option::is_none")]
    pub server_address: Option<String>,
    #[serde(rename = "server.port", skip_serializing_if = "Option::is_none")]
    pub server_port: Option<u16>,
    #[serde(rename = "client.address", skip_serializing_if = "Option::is_none")]
    pub client_address: Option<String>,
    #[serde(rename = "client.port", skip_serializing_if = "Option::is_none")]
    pub client_port: Option<u16>,
    #[serde(rename = "http.request.method", skip_serializing_if = "Option::is_none")]
    pub http_method: Option<Arc<str>>,
    /// The path only: query strings can carry session ids and tokens.
    #[serde(rename = "url.path", skip_serializing_if = "Option::is_none")]
    pub url_path: Option<Arc<str>>,
    #[serde(rename = "http.response.status_code", skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Empty (and absent) only for audit events.
    #[serde(rename = "mcp.session.id", skip_serializing_if = "String::is_empty")]
    pub session_id: String,
    #[serde(rename = "mcp.protocol.version", skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    #[serde(rename = "mcp.method.name", skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(rename = "gen_ai.tool.name", skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(rename = "gen_ai.prompt.name", skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(rename = "mcp.resource.uri", skip_serializing_if = "Option::is_none")]
    pub resource_uri: Option<String>,
    #[serde(rename = "jsonrpc.request.id", skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    #[serde(rename = "error.type", skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    #[serde(rename = "rpc.jsonrpc.error_code", skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
    /// Only with payload capture: messages can echo secrets.
    #[serde(rename = "rpc.jsonrpc.error_message", skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(rename = "mcp.result.type", skip_serializing_if = "Option::is_none")]
    pub result_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<MessageFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<MessageFacts>,
    pub server: Side,
    pub client: Side,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification: Option<NotificationFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<PayloadOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<crate::policy::eval::Alert>,
    /// HTTP: who the call was for, from its credential (never the
    /// credential itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<Identity>,
    /// A `tools/list` answer: each tool offered, with a digest of its
    /// definition.
    #[serde(rename = "mcp.tools.offered", skip_serializing_if = "Option::is_none")]
    pub offered_tools: Option<Vec<crate::protocol::jsonrpc::ToolDef>>,
    /// `mcp.audit`: who read what through the API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<crate::api::audit::Audit>,
    /// What the server did while it handled the call: files, programs,
    /// connections, listeners (server view; see docs/events.md).
    #[serde(rename = "mcp.effects", skip_serializing_if = "Option::is_none")]
    pub effects: Option<crate::effects::EffectSummary>,
    /// CPU time the server spent on the call.
    #[serde(rename = "mcp.server.cpu", skip_serializing_if = "Option::is_none")]
    pub cpu: Option<crate::effects::CpuUse>,
    /// The logical call, task and trace it belongs to.
    #[serde(flatten)]
    pub links: EventLinks,
}

/// What ties an operation to others and to the application's trace
/// (docs/events.md): the rounds of one logical call (2026-07-28 multi
/// round-trip requests), the task it created or concerns, the W3C trace
/// context its request carried, and whether its HTTP routing headers said
/// what its body did.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct EventLinks {
    /// Shared by the rounds of one call, and by a task's requests with the
    /// call that created it.
    #[serde(rename = "mcp.call.id", skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    #[serde(rename = "mcp.call.round", skip_serializing_if = "Option::is_none")]
    pub round: Option<u32>,
    /// The last round: the logical call's duration, first request to this
    /// answer.
    #[serde(rename = "mcp.call.duration_s", skip_serializing_if = "Option::is_none")]
    pub call_duration_s: Option<f64>,
    /// The last round: the time the call waited for input between rounds.
    #[serde(rename = "mcp.call.input_wait_s", skip_serializing_if = "Option::is_none")]
    pub input_wait_s: Option<f64>,
    #[serde(rename = "mcp.task.id", skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// W3C trace context of the request (`_meta.traceparent`).
    #[serde(rename = "trace.id", skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(rename = "trace.parent_span_id", skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    /// HTTP: `Mcp-Method`/`Mcp-Name` disagreed with the body.
    #[serde(rename = "mcp.header_mismatch", skip_serializing_if = "Option::is_none")]
    pub header_mismatch: Option<String>,
}

impl EventLinks {
    pub fn of(links: &crate::session::CallLinks) -> EventLinks {
        let call = links.call.as_ref();
        let task = links.task.as_ref();
        EventLinks {
            call_id: call
                .map(|c| c.call_id.clone())
                .or_else(|| task.map(|t| t.call_id.clone()).filter(|c| !c.is_empty())),
            round: call.map(|c| c.round),
            call_duration_s: call.and_then(|c| c.duration_ns).map(|ns| ns as f64 / 1e9),
            input_wait_s: call.and_then(|c| c.input_wait_ns).map(|ns| ns as f64 / 1e9),
            task_id: task.map(|t| t.task_id.clone()),
            trace_id: links.trace.as_ref().map(|t| t.trace_id.clone()),
            parent_span_id: links.trace.as_ref().map(|t| t.parent_span_id.clone()),
            header_mismatch: links.header_mismatch.clone(),
        }
    }
}

impl Event {
    /// The alert an operation raised: the operation's facts, a new id, and
    /// what the alert says.
    pub fn alert_from(op: &Event, alert: crate::policy::eval::Alert) -> Event {
        let mut e = op.clone();
        e.id = uuid::Uuid::new_v4().to_string();
        e.kind = EventType::Alert;
        e.payload = None;
        e.alert = Some(alert);
        e
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MessageFacts {
    pub time: String,
    pub bytes: usize,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// One end of the session: its self-description and its process.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Side {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<Arc<ProcessInfo>>,
    /// How the client process was identified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found_by: Option<ClientFoundBy>,
    /// The application behind the client process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<&'static str>,
    /// The client process's ancestors, nearest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ancestry: Vec<crate::enrich::clients::Ancestor>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct NotificationFacts {
    pub bytes: usize,
    #[serde(rename = "cancelled_request_id", skip_serializing_if = "Option::is_none")]
    pub cancelled_request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct PayloadOut {
    /// HTTP sessions: the request's headers, masked.
    #[serde(rename = "http.request.headers", skip_serializing_if = "Option::is_none")]
    pub http_request_headers: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

/// Whether and how payloads go into an event.
#[derive(Debug, Clone)]
pub enum PayloadMode {
    Off,
    /// `--capture-payloads`: values kept, secrets masked.
    Full {
        max: usize,
    },
    /// A policy rule allows capture: structure kept, values masked except
    /// under the allow-listed argument keys (secrets masked there too).
    Policy {
        max: usize,
        allow_keys: Arc<[String]>,
    },
}

/// What events are built with besides the stage outputs.
pub struct EventContext<'a> {
    pub host: &'a Arc<HostInfo>,
    pub clock: &'a Clock,
    pub payloads: PayloadMode,
}

fn side(info: Option<&Implementation>, process: Option<&Arc<ProcessInfo>>, found_by: Option<ClientFoundBy>) -> Side {
    Side {
        name: info.map(|i| i.name.clone()),
        version: info.and_then(|i| i.version.clone()),
        process: process.cloned(),
        found_by,
        ..Side::default()
    }
}

fn payload_out(p: Option<&Payload>, mode: &PayloadMode) -> Option<PayloadOut> {
    let p = p?;
    let prep = |v: &Option<Value>, arguments_only: bool| {
        v.clone().map(|mut v| match mode {
            PayloadMode::Off => Value::Null,
            PayloadMode::Full { max } => {
                mask::mask_json(&mut v);
                mask::cap_json(v, *max)
            }
            PayloadMode::Policy { max, allow_keys } => {
                if arguments_only {
                    // The tool/prompt name and _meta stay; the arguments'
                    // values are masked but for the allowed keys.
                    mask::mask_json(&mut v);
                    if let Some(args) = v.get_mut("arguments") {
                        mask::mask_values_except(args, allow_keys);
                    }
                } else {
                    mask::mask_values_except(&mut v, allow_keys);
                }
                mask::cap_json(v, *max)
            }
        })
    };
    if matches!(mode, PayloadMode::Off) {
        return None;
    }
    Some(PayloadOut {
        http_request_headers: None,
        params: prep(&p.params, true),
        result: prep(&p.result, false),
        error: prep(&p.error, false),
    })
}

fn base(
    ctx: &EventContext<'_>,
    kind: EventType,
    time_ns: u64,
    key: &SessionKey,
    session: &SessionInfo,
    peers: &Peers,
) -> Event {
    Event {
        protocol_version: session.protocol_version.clone(),
        server: side(session.server.as_ref(), peers.server.as_ref(), None),
        client: Side {
            app: peers.client_app,
            ancestry: peers.client_ancestry.clone(),
            ..side(session.client.as_ref(), peers.client.as_ref(), peers.client_found_by)
        },
        ..blank(
            kind,
            ctx.clock.rfc3339(time_ns),
            ctx.host,
            (key.observer().as_str(), key.transport().as_str()),
            session.id.clone(),
        )
    }
}

/// An event with only its identity, time and observer set: what `base`
/// and `audit` fill in.
fn blank(
    kind: EventType,
    time: String,
    host: &Arc<HostInfo>,
    (observer, transport): (&'static str, &'static str),
    session_id: String,
) -> Event {
    Event {
        schema: SCHEMA,
        id: uuid::Uuid::new_v4().to_string(),
        kind,
        time,
        host: host.clone(),
        observer,
        transport,
        protocol: None,
        tls: None,
        server_address: None,
        server_port: None,
        client_address: None,
        client_port: None,
        http_method: None,
        url_path: None,
        http_status: None,
        session_id,
        protocol_version: None,
        method: None,
        tool: None,
        prompt: None,
        resource_uri: None,
        request_id: None,
        direction: None,
        status: None,
        error_type: None,
        error_code: None,
        error_message: None,
        result_type: None,
        duration_s: None,
        request: None,
        response: None,
        server: Side::default(),
        client: Side::default(),
        notification: None,
        payload: None,
        alert: None,
        user: None,
        offered_tools: None,
        audit: None,
        effects: None,
        cpu: None,
        links: EventLinks::default(),
    }
}

/// Connection facts (TCP sessions): where each end is, TLS, HTTP.
fn network(e: &mut Event, endpoints: Option<&Endpoints>, request: Option<&Via>, response: Option<&Via>) {
    let (Some(via), Some(ends)) = (request.or(response), endpoints) else {
        return;
    };
    e.protocol = Some("http");
    e.tls = Some(via.conn.tls);
    e.server_address.clone_from(&ends.server_address);
    e.server_port = ends.server_port;
    e.client_address.clone_from(&ends.client_address);
    e.client_port = ends.client_port;
    e.http_method.clone_from(&via.http_method);
    e.url_path.clone_from(&via.path);
    e.http_status = response.and_then(|r| r.status).or(via.status);
}

pub fn from_operation(ctx: &EventContext<'_>, record: &OperationRecord) -> Event {
    let op = &record.op;
    let mut e = base(
        ctx,
        EventType::Operation,
        op.request_ts_ns,
        &op.key,
        &op.session,
        &record.peers,
    );
    network(
        &mut e,
        record.endpoints.as_ref(),
        op.request_via.as_ref(),
        op.response_via.as_ref(),
    );
    e.user.clone_from(&record.identity);
    e.offered_tools.clone_from(&op.offered_tools);
    if let Some(fx) = &record.effects {
        e.effects = (!fx.effects.is_empty()).then(|| fx.effects.clone());
        e.cpu = fx.cpu;
    }
    e.client.name.clone_from(&record.client_name);
    e.client.version.clone_from(&record.client_version);
    e.server.name.clone_from(&record.server_name);
    e.tool.clone_from(&record.tool);
    e.prompt = (op.method == "prompts/get").then(|| op.name.clone()).flatten();
    e.resource_uri = op.uri.as_deref().map(|u| mask::mask_text(u).into_owned());
    e.method = Some(op.method.clone());
    e.request_id = Some(op.request_id.display());
    e.direction = Some(op.direction.as_str());
    e.status = Some(op.status.as_str());
    e.error_type = op.error_type();
    e.error_code = op.error_code;
    e.result_type = op.result_type.clone();
    e.duration_s = op.duration_s();
    e.links = EventLinks::of(&op.links);
    e.request = Some(MessageFacts {
        time: ctx.clock.rfc3339(op.request_ts_ns),
        bytes: op.request_bytes,
        truncated: op.request_truncated,
    });
    e.response = match (op.end_ts_ns, op.response_bytes) {
        (Some(end), Some(bytes)) => Some(MessageFacts {
            time: ctx.clock.rfc3339(end),
            bytes,
            truncated: op.response_truncated,
        }),
        _ => None,
    };
    if !matches!(ctx.payloads, PayloadMode::Off) {
        if matches!(ctx.payloads, PayloadMode::Full { .. }) {
            e.error_message = op.error_message.as_deref().map(|m| mask::mask_text(m).into_owned());
        }
        let request = payload_out(op.request_payload.as_ref(), &ctx.payloads);
        let response = payload_out(op.response_payload.as_ref(), &ctx.payloads);
        let headers = op
            .request_via
            .as_ref()
            .and_then(|v| v.headers.as_deref())
            .map(mask::mask_headers);
        if request.is_some() || response.is_some() || headers.is_some() {
            e.payload = Some(PayloadOut {
                http_request_headers: headers,
                params: request.and_then(|p| p.params),
                result: response.as_ref().and_then(|p| p.result.clone()),
                error: response.and_then(|p| p.error),
            });
        }
    }
    e
}

pub fn from_notification(ctx: &EventContext<'_>, n: &Notification, peers: &Peers) -> Event {
    let mut e = base(ctx, EventType::Notification, n.ts_ns, &n.key, &n.session, peers);
    let ends = Endpoints::of(&n.key, n.via.as_ref(), None);
    network(&mut e, ends.as_ref(), n.via.as_ref(), None);
    e.method = Some(n.method.clone());
    e.direction = Some(n.direction.as_str());
    e.notification = Some(NotificationFacts {
        bytes: n.bytes,
        cancelled_request_id: n.facts.cancelled_id.as_ref().map(|id| id.display()),
        progress_token: n.facts.progress.as_ref().and_then(|p| p.token.clone()),
        progress: n.facts.progress.as_ref().and_then(|p| p.progress),
        total: n.facts.progress.as_ref().and_then(|p| p.total),
    });
    if matches!(ctx.payloads, PayloadMode::Full { .. }) {
        e.payload = payload_out(n.payload.as_ref(), &ctx.payloads);
    }
    e
}

pub fn session_end(
    ctx: &EventContext<'_>,
    key: &SessionKey,
    session: &SessionInfo,
    ts_ns: u64,
    via: Option<&Via>,
    peers: &Peers,
) -> Event {
    let mut e = base(ctx, EventType::SessionEnd, ts_ns, key, session, peers);
    let ends = Endpoints::of(key, via, None);
    network(&mut e, ends.as_ref(), via, None);
    e.http_method = None;
    e.url_path = None;
    e.http_status = None;
    e
}

/// An audit: someone read captured payloads through the API. Its own
/// kind of event: no session, no processes; the agent observed it.
pub fn audit(host: &Arc<HostInfo>, a: crate::api::audit::Audit) -> Event {
    let time = chrono::DateTime::from_timestamp_millis(a.at_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    Event {
        audit: Some(a),
        ..blank(EventType::Audit, time, host, ("agent", "api"), String::new())
    }
}

/// The names a sink filter may use (docs/configuration.md): every scalar
/// field of the schema, by its JSON name. [`Event::field`] reads each from
/// the typed event; a unit test holds them to the serialized names.
pub const FIELDS: &[&str] = &[
    "schema",
    "event.id",
    "event.type",
    "time",
    "host.name",
    "host.id",
    "observer",
    "network.transport",
    "network.protocol.name",
    "tls",
    "server.address",
    "server.port",
    "client.address",
    "client.port",
    "http.request.method",
    "url.path",
    "http.response.status_code",
    "mcp.session.id",
    "mcp.protocol.version",
    "mcp.method.name",
    "gen_ai.tool.name",
    "gen_ai.prompt.name",
    "mcp.resource.uri",
    "jsonrpc.request.id",
    "direction",
    "status",
    "error.type",
    "rpc.jsonrpc.error_code",
    "mcp.result.type",
    "duration_s",
    "request.bytes",
    "response.bytes",
    "server.name",
    "server.version",
    "server.process.pid",
    "server.process.exe",
    "server.process.comm",
    "server.process.user",
    "server.process.cgroup",
    "server.process.container.id",
    "server.process.pod.namespace",
    "server.process.pod.name",
    "server.process.systemd_unit",
    "client.name",
    "client.version",
    "client.app",
    "client.found_by",
    "client.process.pid",
    "client.process.exe",
    "client.process.comm",
    "client.process.user",
    "client.process.cgroup",
    "client.process.container.id",
    "client.process.pod.namespace",
    "client.process.pod.name",
    "client.process.systemd_unit",
    "alert.kind",
    "alert.rule",
    "alert.owner",
    "user.source",
    "user.id",
    "user.name",
    "user.email",
    "user.client_id",
    "user.scope",
    "user.issuer",
    "user.fingerprint",
    "mcp.call.id",
    "mcp.call.round",
    "mcp.task.id",
    "trace.id",
    "mcp.header_mismatch",
];

impl Event {
    /// A field by its JSON name ([`FIELDS`]), as text: read from the typed
    /// event, never from its serialized form. `None` when the event lacks
    /// it (or the name is not a field).
    pub fn field(&self, name: &str) -> Option<Cow<'_, str>> {
        fn text<T: ToString>(v: Option<T>) -> Option<Cow<'static, str>> {
            v.map(|v| Cow::Owned(v.to_string()))
        }
        fn borrowed(v: Option<&str>) -> Option<Cow<'_, str>> {
            v.map(Cow::Borrowed)
        }
        if let Some(rest) = name.strip_prefix("server.")
            && !matches!(rest, "address" | "port")
        {
            return self.server.field(rest);
        }
        if let Some(rest) = name.strip_prefix("client.")
            && !matches!(rest, "address" | "port")
        {
            return self.client.field(rest);
        }
        match name {
            "schema" => Some(Cow::Borrowed(self.schema)),
            "event.id" => Some(Cow::Borrowed(&self.id)),
            "event.type" => Some(Cow::Borrowed(self.kind.as_str())),
            "time" => Some(Cow::Borrowed(&self.time)),
            "host.name" => Some(Cow::Borrowed(&self.host.name)),
            "host.id" => borrowed(self.host.id.as_deref()),
            "observer" => Some(Cow::Borrowed(self.observer)),
            "network.transport" => Some(Cow::Borrowed(self.transport)),
            "network.protocol.name" => borrowed(self.protocol),
            "tls" => text(self.tls),
            "server.address" => borrowed(self.server_address.as_deref()),
            "server.port" => text(self.server_port),
            "client.address" => borrowed(self.client_address.as_deref()),
            "client.port" => text(self.client_port),
            "http.request.method" => borrowed(self.http_method.as_deref()),
            "url.path" => borrowed(self.url_path.as_deref()),
            "http.response.status_code" => text(self.http_status),
            "mcp.session.id" => (!self.session_id.is_empty()).then_some(Cow::Borrowed(self.session_id.as_str())),
            "mcp.protocol.version" => borrowed(self.protocol_version.as_deref()),
            "mcp.method.name" => borrowed(self.method.as_deref()),
            "gen_ai.tool.name" => borrowed(self.tool.as_deref()),
            "gen_ai.prompt.name" => borrowed(self.prompt.as_deref()),
            "mcp.resource.uri" => borrowed(self.resource_uri.as_deref()),
            "jsonrpc.request.id" => borrowed(self.request_id.as_deref()),
            "direction" => borrowed(self.direction),
            "status" => borrowed(self.status),
            "error.type" => borrowed(self.error_type.as_deref()),
            "rpc.jsonrpc.error_code" => text(self.error_code),
            "mcp.result.type" => borrowed(self.result_type.as_deref()),
            "duration_s" => text(self.duration_s),
            "request.bytes" => text(self.request.as_ref().map(|m| m.bytes)),
            "response.bytes" => text(self.response.as_ref().map(|m| m.bytes)),
            "alert.kind" => borrowed(self.alert.as_ref().map(|a| a.kind)),
            "alert.rule" => borrowed(self.alert.as_ref().map(|a| a.rule.as_str())),
            "alert.owner" => borrowed(self.alert.as_ref().and_then(|a| a.owner.as_deref())),
            "user.source" => self
                .user
                .as_ref()
                .and_then(|u| u.source)
                .map(|s| Cow::Borrowed(s.as_str())),
            "user.id" => borrowed(self.user.as_ref().and_then(|u| u.id.as_deref())),
            "user.name" => borrowed(self.user.as_ref().and_then(|u| u.name.as_deref())),
            "user.email" => borrowed(self.user.as_ref().and_then(|u| u.email.as_deref())),
            "user.client_id" => borrowed(self.user.as_ref().and_then(|u| u.client_id.as_deref())),
            "user.scope" => borrowed(self.user.as_ref().and_then(|u| u.scope.as_deref())),
            "user.issuer" => borrowed(self.user.as_ref().and_then(|u| u.issuer.as_deref())),
            "user.fingerprint" => borrowed(self.user.as_ref().and_then(|u| u.fingerprint.as_deref())),
            "mcp.call.id" => borrowed(self.links.call_id.as_deref()),
            "mcp.call.round" => text(self.links.round),
            "mcp.task.id" => borrowed(self.links.task_id.as_deref()),
            "trace.id" => borrowed(self.links.trace_id.as_deref()),
            "mcp.header_mismatch" => borrowed(self.links.header_mismatch.as_deref()),
            _ => None,
        }
    }
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Operation => "mcp.operation",
            EventType::Notification => "mcp.notification",
            EventType::SessionEnd => "mcp.session.end",
            EventType::Alert => "mcp.alert",
            EventType::Audit => "mcp.audit",
        }
    }
}

impl Side {
    /// `name`, `version`, `app`, `found_by`, `process.*` of one end.
    fn field(&self, name: &str) -> Option<Cow<'_, str>> {
        match name {
            "name" => self.name.as_deref().map(Cow::Borrowed),
            "version" => self.version.as_deref().map(Cow::Borrowed),
            "app" => self.app.map(Cow::Borrowed),
            "found_by" => self.found_by.map(|f| Cow::Borrowed(f.as_str())),
            _ => {
                let p = self.process.as_deref()?;
                let placement = p.placement.as_ref();
                match name.strip_prefix("process.")? {
                    "pid" => Some(Cow::Owned(p.pid.to_string())),
                    "exe" => p.exe.as_deref().map(Cow::Borrowed),
                    "comm" => Some(Cow::Borrowed(&p.comm)),
                    "user" => p.user.as_deref().map(Cow::Borrowed),
                    "cgroup" => placement.map(|pl| Cow::Borrowed(pl.cgroup.as_str())),
                    "container.id" => placement?.container.as_ref().map(|c| Cow::Borrowed(c.id.as_str())),
                    "pod.namespace" => placement?.pod.as_ref()?.namespace.as_deref().map(Cow::Borrowed),
                    "pod.name" => placement?.pod.as_ref()?.name.as_deref().map(Cow::Borrowed),
                    "systemd_unit" => placement?.systemd_unit.as_deref().map(Cow::Borrowed),
                    _ => None,
                }
            }
        }
    }
}

/// Events for other modules' tests.
#[cfg(test)]
pub mod testing {
    use super::*;
    use crate::{
        enrich::cgroup::{Container, Placement, Pod},
        policy::eval::Alert,
    };

    /// A tools/call at `1_800_000_000 + i` seconds (ms after the epoch:
    /// 1_800_000_000_000 + i * 1000), of server `demo` by user alice.
    pub fn operation(i: i64, tool: &str, client: &str, status: &'static str, ms: f64) -> Event {
        let mut e = full();
        e.id = format!("id-{i}");
        e.kind = EventType::Operation;
        e.alert = None;
        e.user = None;
        e.time = chrono::DateTime::from_timestamp_millis(1_800_000_000_000 + i * 1000)
            .unwrap()
            .to_rfc3339();
        e.method = Some("tools/call".into());
        e.tool = Some(tool.into());
        e.status = Some(status);
        e.duration_s = Some(ms / 1000.0);
        e.server.name = Some("demo".into());
        e.client.name = Some(client.into());
        e
    }

    /// An event with every field set.
    pub fn full() -> Event {
        let process = |pid: u32, user: &str| {
            Arc::new(ProcessInfo {
                pid,
                ppid: 1,
                comm: "python3".into(),
                exe: Some("/usr/bin/python3.11".into()),
                cmdline: vec!["python3".into(), "server.py".into()],
                uid: Some(1000),
                user: Some(user.into()),
                start_time: Some("2026-12-01T00:00:00Z".into()),
                placement: Some(Placement {
                    cgroup: "/system.slice/x.service".into(),
                    container: Some(Container {
                        id: "abc123".into(),
                        runtime: "containerd",
                    }),
                    pod: Some(Pod {
                        uid: "u-1".into(),
                        namespace: Some("ns".into()),
                        name: Some("pod-1".into()),
                    }),
                    systemd_unit: Some("x.service".into()),
                }),
                start_ticks: Some(1000),
            })
        };
        Event {
            schema: SCHEMA,
            id: "id-1".into(),
            kind: EventType::Alert,
            time: "2026-12-01T00:00:01Z".into(),
            host: Arc::new(HostInfo {
                name: "node-1".into(),
                id: Some("m-1".into()),
            }),
            observer: "server",
            transport: "tcp",
            protocol: Some("http"),
            tls: Some(true),
            server_address: Some("127.0.0.1".into()),
            server_port: Some(8443),
            client_address: Some("127.0.0.2".into()),
            client_port: Some(40000),
            http_method: Some("POST".into()),
            url_path: Some("/mcp".into()),
            http_status: Some(200),
            session_id: "s-1".into(),
            protocol_version: Some("2025-11-25".into()),
            method: Some("tools/call".into()),
            tool: Some("add".into()),
            prompt: Some("greet".into()),
            resource_uri: Some("test://x".into()),
            request_id: Some("7".into()),
            direction: Some("client_to_server"),
            status: Some("tool_error"),
            error_type: Some("tool_error".into()),
            error_code: Some(-32000),
            error_message: None,
            result_type: Some("tool".into()),
            duration_s: Some(0.25),
            request: Some(MessageFacts {
                time: "t".into(),
                bytes: 111,
                truncated: false,
            }),
            response: Some(MessageFacts {
                time: "t".into(),
                bytes: 222,
                truncated: false,
            }),
            server: Side {
                name: Some("srv".into()),
                version: Some("1.0".into()),
                process: Some(process(10, "root")),
                ..Side::default()
            },
            client: Side {
                name: Some("cli".into()),
                version: Some("2.0".into()),
                process: Some(process(11, "alice")),
                found_by: Some(ClientFoundBy::SocketPeer),
                app: Some("claude-code"),
                ancestry: Vec::new(),
            },
            notification: None,
            payload: None,
            alert: Some(Alert {
                kind: "policy_violation",
                rule: "server[1] srv".into(),
                message: "m".into(),
                owner: Some("team".into()),
                effect: None,
            }),
            user: Some(crate::enrich::identity::Identity {
                source: Some(crate::enrich::identity::Source::Jwt),
                id: Some("u-1".into()),
                name: Some("ada".into()),
                email: Some("ada@example.com".into()),
                client_id: Some("cursor".into()),
                scope: Some("mcp".into()),
                issuer: Some("https://idp".into()),
                expires: Some(1_900_000_000),
                verified: Some(false),
                fingerprint: Some("hmac-sha256:0011223344556677".into()),
            }),
            offered_tools: None,
            audit: None,
            effects: None,
            cpu: None,
            links: EventLinks {
                call_id: Some("c-1".into()),
                round: Some(2),
                call_duration_s: Some(3.5),
                input_wait_s: Some(3.0),
                task_id: Some("t-1".into()),
                trace_id: Some("0af7651916cd43dd8448eb211c80319c".into()),
                parent_span_id: Some("b7ad6b7169203331".into()),
                header_mismatch: Some("Mcp-Method \"tools/list\", body \"tools/call\"".into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{testing::full, *};
    use crate::sinks::filter::lookup;

    #[test]
    fn typed_fields_are_the_serialized_ones() {
        let e = full();
        let json = serde_json::to_value(&e).unwrap();
        for name in FIELDS {
            let serialized = lookup(&json, name).map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            let typed = e.field(name).map(Cow::into_owned);
            assert!(typed.is_some(), "{name}: not read from the typed event");
            assert_eq!(typed, serialized, "{name}");
        }
        assert_eq!(e.field("no.such.field"), None);
    }
}
