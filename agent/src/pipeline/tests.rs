//! The whole userspace pipeline fed with records laid out as the kernel
//! writes them: what a capture replays, without the kernel.

use std::sync::{Arc, Mutex};

use mcptap_common::{chunk_flags, op, record};

use super::*;
use crate::{capture::record::tests::chunk_record, event::EventType, session::Status};

#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<serde_json::Value>>>);

impl EventSink for Recorded {
    fn send(&mut self, event: &Event) {
        self.0.lock().unwrap().push(serde_json::to_value(event).unwrap());
    }
}

#[derive(Default)]
struct FakeControl {
    confirmed: Vec<u32>,
    rejected: Vec<u32>,
    selected: Vec<u32>,
    released: Vec<(u32, Channel)>,
    ignored: Vec<(u32, Channel)>,
}

impl Control for FakeControl {
    fn confirm(&mut self, tgid: u32) {
        self.confirmed.push(tgid);
    }
    fn reject(&mut self, tgid: u32) {
        self.rejected.push(tgid);
    }
    fn is_selected(&self, tgid: u32) -> bool {
        self.selected.contains(&tgid)
    }
    fn release(&mut self, tgid: u32, channel: Channel) {
        self.released.push((tgid, channel));
    }
    fn ignore(&mut self, tgid: u32, channel: Channel) {
        self.ignored.push((tgid, channel));
    }
    fn forget_process(&mut self, _tgid: u32) {}
    fn serves(&mut self, _tgid: u32) {}
}

struct Harness {
    pipeline: Pipeline,
    events: Recorded,
    control: FakeControl,
    metrics: Arc<Metrics>,
}

impl Harness {
    fn new() -> Harness {
        let events = Recorded::default();
        let metrics = Arc::new(Metrics::new());
        let cfg = PipelineConfig {
            max_message_bytes: 1024,
            payloads: None,
            payload_max_bytes: 1024,
            policy: Arc::new(Policy::default()),
            state_dir: None,
            sessions: SessionConfig::default(),
            max_label_values: 100,
            proc_root: "/nonexistent-proc".into(),
            effects: crate::effects::EffectLimits::default(),
            exec_args: true,
            jwt_keys: None,
        };
        Harness {
            pipeline: Pipeline::new(cfg, metrics.clone(), Box::new(events.clone())),
            events,
            control: FakeControl::default(),
            metrics,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.pipeline.on_raw(bytes, &mut self.control);
    }

    fn read(&mut self, tgid: u32, flags: u8, data: &str) {
        let rec = chunk_record(tgid, 0, op::READ, 0, data.len() as u64, flags, data.as_bytes());
        self.feed(&rec);
    }

    fn write(&mut self, tgid: u32, data: &str) {
        let rec = chunk_record(tgid, 1, op::WRITE, 0, data.len() as u64, 0, data.as_bytes());
        self.feed(&rec);
    }

    fn exit(&mut self, tgid: u32) {
        let rec = mcptap_common::ProcessRecord {
            kind: record::PROCESS_EXIT,
            tgid,
            ts_ns: 99,
        };
        let mut bytes = vec![0u8; size_of::<mcptap_common::ProcessRecord>()];
        unsafe { std::ptr::write_unaligned(bytes.as_mut_ptr().cast(), rec) };
        self.feed(&bytes);
    }

    fn ops(&self) -> Vec<serde_json::Value> {
        self.events
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["event.type"] == "mcp.operation")
            .cloned()
            .collect()
    }

    fn metric(&self, needle: &str) -> bool {
        self.metrics.render().contains(needle)
    }
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test-client","version":"1.0"}}}"#;
const INIT_OK: &str = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"test-server","version":"2.0"}}}"#;

#[test]
fn discovered_session_produces_tool_call_events() {
    let mut h = Harness::new();
    h.read(10, chunk_flags::DISCOVERY, &format!("{INIT}\n"));
    h.write(10, &format!("{INIT_OK}\n"));
    h.read(10, 0, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"add\",\"arguments\":{\"a\":1}}}\n");
    h.write(
        10,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[],\"isError\":false}}\n",
    );
    assert_eq!(h.control.confirmed, vec![10]);
    let ops = h.ops();
    assert_eq!(ops.len(), 2);
    let call = &ops[1];
    assert_eq!(call["mcp.method.name"], "tools/call");
    assert_eq!(call["gen_ai.tool.name"], "add");
    assert_eq!(call["status"], "ok");
    assert_eq!(call["jsonrpc.request.id"], "1");
    assert_eq!(call["network.transport"], "pipe");
    assert_eq!(call["client"]["name"], "test-client");
    assert_eq!(call["server"]["name"], "test-server");
    assert!(call.get("payload").is_none(), "payloads are off by default");
    assert!(h.metric("mcp_server_operations_total{error_type=\"\",gen_ai_tool_name=\"add\",mcp_client_name=\"test-client\",mcp_method_name=\"tools/call\",mcp_server_name=\"test-server\",network_transport=\"pipe\",status=\"ok\"} 1"));
}

#[test]
fn non_mcp_json_is_rejected_and_its_stragglers_ignored() {
    let mut h = Harness::new();
    h.read(11, chunk_flags::DISCOVERY, "{\"some\":\"json\"}\n");
    assert_eq!(h.control.rejected, vec![11]);
    h.read(11, 0, &format!("{INIT}\n"));
    assert!(h.control.confirmed.is_empty());
    assert!(h.metric("mcptap_discovery_total{outcome=\"rejected\"} 1"));
}

#[test]
fn bad_lines_are_counted_and_good_ones_around_them_kept() {
    let mut h = Harness::new();
    h.control.selected.push(12);
    h.read(12, 0, &format!("{INIT}\n"));
    h.read(12, 0, "this is not json\n");
    h.feed(&chunk_record(12, 0, op::READ, 0, 4, 0, b"\xff\xfe\x00{\n"));
    h.read(
        12,
        0,
        &format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{{\"name\":\"big\",\"x\":\"{}\"}}}}\n",
            "y".repeat(5000)
        ),
    );
    h.read(12, 0, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\"}\n");
    h.write(12, &format!("{INIT_OK}\n"));
    h.write(
        12,
        "{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"content\":[]}}\n{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}\n",
    );
    let ops = h.ops();
    let methods: Vec<_> = ops
        .iter()
        .map(|o| o["mcp.method.name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(methods, vec!["initialize", "tools/call", "ping"]);
    assert_eq!(
        ops[1]["request"]["truncated"], true,
        "the 5000-byte line exceeded the 1024-byte cap"
    );
    assert_eq!(ops[1]["gen_ai.tool.name"], "big");
    assert!(h.metric("mcptap_parse_errors_total{kind=\"invalid_json\"} 1"));
    assert!(h.metric("mcptap_parse_errors_total{kind=\"invalid_utf8\"} 1"));
    assert!(h.metric("mcptap_truncated_messages_total 1"));
    assert!(h.control.rejected.is_empty(), "selected processes are never rejected");
}

#[test]
fn exit_mid_request_and_mid_message() {
    let mut h = Harness::new();
    h.control.selected.push(13);
    h.read(
        13,
        0,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"slow\"}}\n",
    );
    h.write(13, "{\"jsonrpc\":\"2.0\",\"id\":1,\"res");
    h.exit(13);
    let ops = h.ops();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0]["status"], "server_exited");
    assert_eq!(ops[0]["error.type"], "server_exited");
    assert!(ops[0].get("duration_s").is_none());
    assert!(h.metric("mcptap_parse_errors_total{kind=\"exited_mid_message\"} 1"));
    let ends: Vec<_> = h
        .events
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["event.type"] == "mcp.session.end")
        .cloned()
        .collect();
    assert_eq!(ends.len(), 1);
    assert!(h.metric("mcp_active_sessions{network_transport=\"pipe\"} 0"));
}

#[test]
fn garbage_records_do_not_crash() {
    let mut h = Harness::new();
    h.feed(&[]);
    h.feed(&[1, 0, 0, 0, 200, 0]);
    h.feed(&[7; 64]);
    assert!(h.metric("mcptap_record_decode_errors_total 3"));
    let _ = (EventType::Operation, Status::Ok);
}
