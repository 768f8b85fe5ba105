//! The event schema (docs/events.md): one JSON object per finished operation,
//! notable notification, and session end. Attribute names follow the
//! OpenTelemetry MCP conventions where they exist (`mcp.method.name`,
//! `gen_ai.tool.name`, `jsonrpc.request.id`, `error.type`, ...).
//!
//! Versioned by `schema`: fields are only added within a version; a rename
//! or removal makes a new version.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::{
    enrich::{ClientFoundBy, Clock, HostInfo, Peers, ProcessInfo},
    mask,
    protocol::jsonrpc::{Implementation, Payload},
    session::{Notification, Observer, Operation, SessionInfo, SessionKey, Via},
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
    #[serde(rename = "mcp.session.id")]
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
        schema: SCHEMA,
        id: uuid::Uuid::new_v4().to_string(),
        kind,
        time: ctx.clock.rfc3339(time_ns),
        host: ctx.host.clone(),
        observer: key.observer().as_str(),
        transport: key.transport().as_str(),
        protocol: None,
        tls: None,
        server_address: None,
        server_port: None,
        client_address: None,
        client_port: None,
        http_method: None,
        url_path: None,
        http_status: None,
        session_id: session.id.clone(),
        protocol_version: session.protocol_version.clone(),
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
        server: side(session.server.as_ref(), peers.server.as_ref(), None),
        client: Side {
            app: peers.client_app,
            ancestry: peers.client_ancestry.clone(),
            ..side(session.client.as_ref(), peers.client.as_ref(), peers.client_found_by)
        },
        notification: None,
        payload: None,
        alert: None,
    }
}

/// Connection facts (TCP sessions): addresses by role, TLS, HTTP.
fn network(e: &mut Event, key: &SessionKey, request: Option<&Via>, response: Option<&Via>) {
    let Some(via) = request.or(response) else {
        return;
    };
    e.protocol = Some("http");
    e.tls = Some(via.conn.tls);
    let addrs = via
        .conn
        .addrs
        .get()
        .or_else(|| response.and_then(|r| r.conn.addrs.get()));
    if let Some((local, peer)) = addrs {
        let (server, client) = match key.observer() {
            Observer::Server => (local, peer),
            Observer::Client => (peer, local),
        };
        // Unspecified: not known (a connection gone before it was looked at).
        if server.port() != 0 {
            e.server_address = Some(server.ip().to_string());
            e.server_port = Some(server.port());
        }
        if client.port() != 0 {
            e.client_address = Some(client.ip().to_string());
            e.client_port = Some(client.port());
        }
    }
    if e.server_port.is_none() {
        // The connection was not tied to a socket (a TLS session whose
        // socket the agent could not tell): the server the client asked
        // for, from the request's Host header.
        if let Some((host, port)) = via.host.as_deref().and_then(|h| split_host(h, via.conn.tls)) {
            e.server_address = Some(host);
            e.server_port = Some(port);
        }
    }
    e.http_method.clone_from(&via.http_method);
    e.url_path.clone_from(&via.path);
    e.http_status = response.and_then(|r| r.status).or(via.status);
}

/// `host[:port]` or `[v6]:port` of a Host header; the scheme's port when
/// none is given.
fn split_host(h: &str, tls: bool) -> Option<(String, u16)> {
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

pub fn from_operation(ctx: &EventContext<'_>, op: &Operation, peers: &Peers) -> Event {
    let mut e = base(ctx, EventType::Operation, op.request_ts_ns, &op.key, &op.session, peers);
    network(&mut e, &op.key, op.request_via.as_ref(), op.response_via.as_ref());
    if let Some(client) = &op.request_client {
        e.client.name = Some(client.name.clone());
        e.client.version = client.version.clone();
    }
    e.tool = (op.method == "tools/call").then(|| op.name.clone()).flatten();
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
    network(&mut e, &n.key, n.via.as_ref(), None);
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
    network(&mut e, key, via, None);
    e.http_method = None;
    e.url_path = None;
    e.http_status = None;
    e
}

#[cfg(test)]
mod tests {
    use super::split_host;

    #[test]
    fn host_headers() {
        assert_eq!(split_host("127.0.0.1:8443", true), Some(("127.0.0.1".into(), 8443)));
        assert_eq!(
            split_host("mcp.example.com", true),
            Some(("mcp.example.com".into(), 443))
        );
        assert_eq!(
            split_host("mcp.example.com", false),
            Some(("mcp.example.com".into(), 80))
        );
        assert_eq!(split_host("[::1]:9000", false), Some(("::1".into(), 9000)));
        assert_eq!(split_host("x:notaport", false), None);
    }
}
