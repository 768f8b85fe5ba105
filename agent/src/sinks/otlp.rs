//! OTLP/HTTP export (protobuf): operations become spans, named and
//! attributed per the OpenTelemetry MCP semantic conventions
//! (`{mcp.method.name} {target}`, kind SERVER or CLIENT by the side
//! observed, `error.type` and an error status when the call failed); every
//! other event (alerts, notifications, session ends) becomes a log record
//! whose `event_name` is the event type. Attributes are the event's fields,
//! flattened to dotted names.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::{
    collector::{logs::v1::ExportLogsServiceRequest, trace::v1::ExportTraceServiceRequest},
    common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span::SpanKind, status::StatusCode},
};
use prost::Message;
use serde_json::Value;

use super::{
    config::OtlpOptions,
    delivery::{DeliveryError, Transport},
    filter::lookup,
    spool::{Batch, Position},
};

pub struct OtlpTransport {
    client: reqwest::Client,
    endpoint: String,
    /// The batch whose spans the receiver already took while its logs
    /// failed: the retry sends only the logs.
    traces_done: Option<Position>,
}

impl OtlpTransport {
    pub fn new(opts: &OtlpOptions) -> anyhow::Result<OtlpTransport> {
        Ok(OtlpTransport {
            client: super::http::client(&opts.headers, opts.ca_file.as_deref(), opts.timeout)?,
            endpoint: opts.endpoint.clone(),
            traces_done: None,
        })
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> Result<(), DeliveryError> {
        let request = self
            .client
            .post(format!("{}{path}", self.endpoint))
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .body(body);
        super::http::post(request).await
    }
}

impl Transport for OtlpTransport {
    async fn send(&mut self, batch: &Batch) -> Result<(), DeliveryError> {
        let events: Vec<Value> = batch
            .lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let (traces, logs) = encode(&events);
        if let Some(traces) = traces
            && self.traces_done != Some(batch.start)
        {
            self.post("/v1/traces", traces.encode_to_vec()).await?;
            self.traces_done = Some(batch.start);
        }
        if let Some(logs) = logs {
            self.post("/v1/logs", logs.encode_to_vec()).await?;
        }
        Ok(())
    }
}

/// The events of a batch as OTLP requests (either may be absent).
pub fn encode(events: &[Value]) -> (Option<ExportTraceServiceRequest>, Option<ExportLogsServiceRequest>) {
    let mut spans = Vec::new();
    let mut logs = Vec::new();
    let mut resource = None;
    for e in events {
        resource.get_or_insert_with(|| resource_of(e));
        if lookup(e, "event.type").and_then(Value::as_str) == Some("mcp.operation") {
            spans.push(span(e));
        } else {
            logs.push(log_record(e));
        }
    }
    let scope = || {
        Some(InstrumentationScope {
            name: "mcptap".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    };
    let traces = (!spans.is_empty()).then(|| ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource.clone(),
            scope_spans: vec![ScopeSpans {
                scope: scope(),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    });
    let logs = (!logs.is_empty()).then(|| ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource,
            scope_logs: vec![ScopeLogs {
                scope: scope(),
                log_records: logs,
                ..Default::default()
            }],
            ..Default::default()
        }],
    });
    (traces, logs)
}

/// The agent and its host: `service.name` = mcptap.
fn resource_of(e: &Value) -> Resource {
    let mut attributes = vec![
        kv("service.name", string("mcptap")),
        kv("service.version", string(env!("CARGO_PKG_VERSION"))),
    ];
    for (key, field) in [("host.name", "host.name"), ("host.id", "host.id")] {
        if let Some(v) = lookup(e, field).and_then(Value::as_str) {
            attributes.push(kv(key, string(v)));
        }
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

fn span(e: &Value) -> Span {
    let text = |f: &str| lookup(e, f).and_then(Value::as_str);
    let method = text("mcp.method.name").unwrap_or("unknown");
    let name = match text("gen_ai.tool.name").or_else(|| text("gen_ai.prompt.name")) {
        Some(target) => format!("{method} {target}"),
        None => method.to_string(),
    };
    let start = text("time").map_or(0, unix_nanos);
    let duration = lookup(e, "duration_s").and_then(Value::as_f64).unwrap_or(0.0);
    let id = event_id_bytes(e);
    let status = match text("status") {
        Some("ok") | None => None,
        Some(status) => Some(Status {
            code: StatusCode::Error as i32,
            message: text("error.type").unwrap_or(status).to_string(),
        }),
    };
    let kind = match text("observer") {
        Some("client") => SpanKind::Client,
        _ => SpanKind::Server,
    };
    // The application's trace when the request carried one
    // (`_meta.traceparent`): mcptap's span joins it, as a child of the span
    // the request was sent from. Else a trace of its own, from the event id.
    let hex = |f: &str| text(f).and_then(decode_hex);
    let (trace_id, parent_span_id) = match (hex("trace.id"), hex("trace.parent_span_id")) {
        (Some(t), Some(p)) if t.len() == 16 && p.len() == 8 => (t, p),
        _ => (id.to_vec(), Vec::new()),
    };
    Span {
        trace_id,
        span_id: id[8..].to_vec(),
        parent_span_id,
        name,
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + (duration.max(0.0) * 1e9) as u64,
        attributes: attributes(e),
        status,
        ..Default::default()
    }
}

fn log_record(e: &Value) -> LogRecord {
    let text = |f: &str| lookup(e, f).and_then(Value::as_str);
    let kind = text("event.type").unwrap_or("mcp.event");
    let alert = kind == "mcp.alert";
    let body = text("alert.message")
        .or_else(|| text("notification.method"))
        .or_else(|| text("mcp.method.name"))
        .unwrap_or(kind);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    LogRecord {
        time_unix_nano: text("time").map_or(0, unix_nanos),
        observed_time_unix_nano: now,
        severity_number: if alert { 13 } else { 9 }, // WARN, INFO
        severity_text: if alert { "WARN" } else { "INFO" }.into(),
        event_name: kind.to_string(),
        body: Some(string(body)),
        attributes: attributes(e),
        trace_id: Vec::new(),
        span_id: Vec::new(),
        ..Default::default()
    }
}

/// Bytes of a hex string (`None` when not hex).
fn decode_hex(h: &str) -> Option<Vec<u8>> {
    if !h.len().is_multiple_of(2) {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The event's 16-byte id (a UUID): the trace id of its span.
fn event_id_bytes(e: &Value) -> [u8; 16] {
    lookup(e, "event.id")
        .and_then(Value::as_str)
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
        .map_or_else(|| *uuid::Uuid::new_v4().as_bytes(), |u| *u.as_bytes())
}

fn unix_nanos(rfc3339: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .map_or(0, |n| n.max(0) as u64)
}

/// Every field but the envelope (`schema`, `time`, `host`: the span's
/// times and the resource carry those), flattened.
fn attributes(e: &Value) -> Vec<KeyValue> {
    let mut flat = BTreeMap::new();
    if let Some(obj) = e.as_object() {
        for (k, v) in obj {
            if !matches!(k.as_str(), "schema" | "time" | "host") {
                flatten(k, v, &mut flat);
            }
        }
    }
    flat.into_iter().map(|(k, v)| kv(&k, v)).collect()
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, AnyValue>) {
    match v {
        Value::Object(obj) => {
            for (k, v) in obj {
                flatten(&format!("{prefix}.{k}"), v, out);
            }
        }
        Value::Null => {}
        other => {
            if let Some(v) = any_value(other) {
                out.insert(prefix.to_string(), v);
            }
        }
    }
}

fn any_value(v: &Value) -> Option<AnyValue> {
    let value = match v {
        Value::String(s) => any_value::Value::StringValue(s.clone()),
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64()?),
        },
        Value::Array(items) => any_value::Value::ArrayValue(ArrayValue {
            values: items.iter().filter_map(any_value).collect(),
        }),
        // Nested objects inside arrays (ancestry, payloads) stay readable as JSON.
        Value::Object(_) => any_value::Value::StringValue(v.to_string()),
        Value::Null => return None,
    };
    Some(AnyValue { value: Some(value) })
}

fn string(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.to_string())),
    }
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(value),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
        attrs.iter().find(|a| a.key == key)?.value.as_ref()?.value.as_ref()
    }

    #[test]
    fn operations_become_spans_and_the_rest_logs() {
        let events = vec![
            json!({
                "schema": "mcptap.event/v1",
                "event.id": "6f9619ff-8b86-d011-b42d-00c04fc964ff",
                "event.type": "mcp.operation",
                "time": "2026-11-22T08:00:00.250Z",
                "host": {"name": "node-1", "id": "abc"},
                "observer": "server",
                "mcp.method.name": "tools/call",
                "gen_ai.tool.name": "add",
                "status": "error",
                "error.type": "-32602",
                "duration_s": 0.5,
                "server": {"name": "demo", "process": {"pid": 42}},
                "client": {"ancestry": [{"pid": 1, "exe": "/sbin/init"}]}
            }),
            json!({
                "event.id": "7f9619ff-8b86-d011-b42d-00c04fc964ff",
                "event.type": "mcp.alert",
                "time": "2026-11-22T08:00:01Z",
                "alert": {"kind": "policy_violation", "message": "tool delete_repo is denied"}
            }),
        ];
        let (traces, logs) = encode(&events);
        let traces = traces.unwrap();
        let rs = &traces.resource_spans[0];
        let res = &rs.resource.as_ref().unwrap().attributes;
        assert_eq!(
            attr(res, "host.name"),
            Some(&any_value::Value::StringValue("node-1".into()))
        );
        assert_eq!(
            attr(res, "service.name"),
            Some(&any_value::Value::StringValue("mcptap".into()))
        );
        let span = &rs.scope_spans[0].spans[0];
        assert_eq!(span.name, "tools/call add");
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert_eq!(span.trace_id.len(), 16);
        assert_eq!(span.span_id.len(), 8);
        assert!(span.parent_span_id.is_empty(), "a trace of its own");
        // A request that carried the application's trace context: the span
        // joins that trace, under the span the request came from.
        let mut joined = events[0].clone();
        joined["trace.id"] = serde_json::json!("0af7651916cd43dd8448eb211c80319c");
        joined["trace.parent_span_id"] = serde_json::json!("b7ad6b7169203331");
        let child = super::span(&joined);
        assert_eq!(child.trace_id, decode_hex("0af7651916cd43dd8448eb211c80319c").unwrap());
        assert_eq!(child.parent_span_id, decode_hex("b7ad6b7169203331").unwrap());
        assert_eq!(child.span_id, span.span_id);
        assert_eq!(span.end_time_unix_nano - span.start_time_unix_nano, 500_000_000);
        assert_eq!(span.start_time_unix_nano % 1_000_000_000, 250_000_000);
        let status = span.status.as_ref().unwrap();
        assert_eq!(
            (status.code, status.message.as_str()),
            (StatusCode::Error as i32, "-32602")
        );
        assert_eq!(
            attr(&span.attributes, "server.process.pid"),
            Some(&any_value::Value::IntValue(42))
        );
        assert_eq!(
            attr(&span.attributes, "gen_ai.tool.name"),
            Some(&any_value::Value::StringValue("add".into()))
        );
        assert!(attr(&span.attributes, "schema").is_none());
        assert!(matches!(
            attr(&span.attributes, "client.ancestry"),
            Some(any_value::Value::ArrayValue(a)) if a.values.len() == 1
        ));
        let logs = logs.unwrap();
        let rec = &logs.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(rec.event_name, "mcp.alert");
        assert_eq!(rec.severity_text, "WARN");
        assert_eq!(
            rec.body.as_ref().unwrap().value,
            Some(any_value::Value::StringValue("tool delete_repo is denied".into()))
        );
        assert_eq!(
            attr(&rec.attributes, "alert.kind"),
            Some(&any_value::Value::StringValue("policy_violation".into()))
        );
    }

    #[test]
    fn an_empty_batch_sends_nothing() {
        let (t, l) = encode(&[]);
        assert!(t.is_none() && l.is_none());
    }
}
