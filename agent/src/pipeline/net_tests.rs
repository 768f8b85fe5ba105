//! The network and TLS paths, fed with records laid out as the kernel
//! writes them (sockets accepted and connected, their bytes, TLS plaintext
//! tied to its socket, closes): what a capture replays, without the kernel.

use std::{
    mem::size_of,
    sync::{Arc, Mutex},
};

use mcptap_common::{SocketRecord, TlsCloseRecord, channel, chunk_flags, op, record, sock_role};

use super::*;
use crate::{capture::record::tests::chunk_record_on, session::SessionConfig};

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
    released: Vec<(u32, Channel)>,
    ignored: Vec<(u32, Channel)>,
}

impl Control for FakeControl {
    fn confirm(&mut self, tgid: u32) {
        self.confirmed.push(tgid);
    }
    fn reject(&mut self, _: u32) {}
    fn is_selected(&self, _: u32) -> bool {
        false
    }
    fn release(&mut self, tgid: u32, channel: Channel) {
        self.released.push((tgid, channel));
    }
    fn ignore(&mut self, tgid: u32, channel: Channel) {
        self.ignored.push((tgid, channel));
    }
    fn forget_process(&mut self, _: u32) {}
    fn serves(&mut self, _tgid: u32) {}
}

struct Net {
    pipeline: Pipeline,
    events: Recorded,
    control: FakeControl,
    metrics: Arc<Metrics>,
}

fn raw<T>(rec: T) -> Vec<u8> {
    let mut bytes = vec![0u8; size_of::<T>()];
    // SAFETY: the records are repr(C) plain data of size_of::<T>() bytes.
    unsafe { std::ptr::write_unaligned(bytes.as_mut_ptr().cast::<T>(), rec) };
    bytes
}

impl Net {
    fn new() -> Net {
        let events = Recorded::default();
        let metrics = Arc::new(Metrics::new());
        let cfg = PipelineConfig {
            max_message_bytes: 1 << 20,
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
        Net {
            pipeline: Pipeline::new(cfg, metrics.clone(), Box::new(events.clone())),
            events,
            control: FakeControl::default(),
            metrics,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.pipeline.on_raw(bytes, &mut self.control);
    }

    /// accept() (server) or connect() (client) of socket `fd`, the peer at
    /// 127.0.0.1:`port`.
    fn open(&mut self, tgid: u32, fd: i32, server: bool, port: u16) {
        let mut rec = SocketRecord {
            kind: record::SOCKET_OPEN,
            tgid,
            ts_ns: 1,
            fd,
            family: 2,
            port,
            role: if server { sock_role::SERVER } else { sock_role::CLIENT },
            listen_fd: -1,
            ..SocketRecord::default()
        };
        rec.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        self.feed(&raw(rec));
    }

    fn close(&mut self, tgid: u32, fd: i32) {
        self.feed(&raw(SocketRecord {
            kind: record::SOCKET_CLOSE,
            tgid,
            ts_ns: 50,
            fd,
            ..SocketRecord::default()
        }));
    }

    /// Bytes on a socket (`ssl` 0) or in a TLS session tied to `fd`.
    fn bytes(&mut self, tgid: u32, fd: i32, ssl: u64, io: u8, flags: u8, data: &str) {
        let chan = if ssl == 0 { channel::SOCKET } else { channel::TLS };
        let rec = chunk_record_on(chan, ssl, tgid, fd, io, 0, data.len() as u64, flags, data.as_bytes());
        self.feed(&rec);
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
}

fn post(body: &str) -> String {
    format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:8443\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn ok(body: &str, session: Option<&str>) -> String {
    let sid = session.map_or(String::new(), |s| format!("Mcp-Session-Id: {s}\r\n"));
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{sid}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"net-client","version":"1"}}}"#;
const INIT_OK: &str = r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"net-server","version":"2"}}}"#;
const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":1}}}"#;
const CALL_OK: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":false}}"#;

#[test]
fn plain_http_server_side_discovered_by_its_first_request() {
    let mut n = Net::new();
    n.open(20, 7, true, 40000);
    // The kernel sniffed the request of an untracked process.
    n.bytes(20, 7, 0, op::READ, chunk_flags::DISCOVERY, &post(INIT));
    n.bytes(20, 7, 0, op::WRITE, chunk_flags::DISCOVERY, &ok(INIT_OK, Some("s-1")));
    assert_eq!(n.control.confirmed, vec![20], "one confirmation");
    n.bytes(20, 7, 0, op::READ, 0, &post(CALL));
    n.bytes(20, 7, 0, op::WRITE, 0, &ok(CALL_OK, Some("s-1")));
    n.close(20, 7);
    let ops = n.ops();
    assert_eq!(ops.len(), 2, "{ops:?}");
    let call = &ops[1];
    assert_eq!(call["observer"], "server");
    assert_eq!(call["network.transport"], "tcp");
    assert_eq!(call["tls"], false);
    assert_eq!(call["gen_ai.tool.name"], "add");
    assert_eq!(call["status"], "ok");
    assert_eq!(call["client.port"], 40000, "the peer accept() saw");
    assert_eq!(call["server"]["name"], "net-server");
    assert_eq!(call["client"]["name"], "net-client");
    assert_eq!(call["http.response.status_code"], 200);
    assert_eq!(call["mcp.session.id"], ops[0]["mcp.session.id"]);
    assert_eq!(n.pipeline.conns.sizes(), [0, 0, 0, 0], "the close let go of everything");
}

#[test]
fn a_connection_that_is_not_mcp_is_released_in_the_kernel() {
    let mut n = Net::new();
    n.open(21, 5, false, 80);
    let get = "GET /health HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n";
    n.bytes(21, 5, 0, op::WRITE, chunk_flags::DISCOVERY, get);
    n.bytes(
        21,
        5,
        0,
        op::READ,
        chunk_flags::DISCOVERY,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
    );
    assert_eq!(n.control.released, vec![(21, Channel::Socket(5))]);
    assert!(n.control.confirmed.is_empty());
    // Stragglers of the released connection are ignored.
    n.bytes(21, 5, 0, op::READ, chunk_flags::DISCOVERY, "more bytes");
    assert!(n.ops().is_empty());
    assert!(
        n.metrics
            .render()
            .contains("mcptap_discovery_total{outcome=\"released\"} 1")
    );
}

#[test]
fn http2_is_left_alone() {
    let mut n = Net::new();
    n.open(22, 9, true, 40001);
    n.bytes(
        22,
        9,
        0,
        op::READ,
        chunk_flags::DISCOVERY,
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    );
    assert_eq!(n.control.ignored, vec![(22, Channel::Socket(9))]);
}

#[test]
fn tls_plaintext_tied_to_its_socket_client_side() {
    let mut n = Net::new();
    // A tracked client connects to 127.0.0.1:8443; its TLS session 0xab
    // runs on that socket (fd 4).
    n.open(23, 4, false, 8443);
    n.bytes(23, 4, 0xab, op::WRITE, chunk_flags::DISCOVERY, &post(INIT));
    n.bytes(23, 4, 0xab, op::READ, chunk_flags::DISCOVERY, &ok(INIT_OK, Some("t-1")));
    assert_eq!(n.control.confirmed, vec![23]);
    n.bytes(23, 4, 0xab, op::WRITE, 0, &post(CALL));
    n.bytes(23, 4, 0xab, op::READ, 0, &ok(CALL_OK, Some("t-1")));
    n.feed(&raw(TlsCloseRecord {
        kind: record::TLS_CLOSE,
        tgid: 23,
        ts_ns: 60,
        ssl: 0xab,
    }));
    let ops = n.ops();
    assert_eq!(ops.len(), 2, "{ops:?}");
    let call = &ops[1];
    assert_eq!(call["observer"], "client");
    assert_eq!(call["tls"], true);
    assert_eq!(call["server.port"], 8443, "the socket's peer");
    assert_eq!(call["server.address"], "127.0.0.1");
    assert_eq!(call["gen_ai.tool.name"], "add");
    assert_eq!(call["status"], "ok");
}

#[test]
fn a_reply_cut_by_a_close_ends_its_request() {
    let mut n = Net::new();
    n.open(24, 6, true, 40002);
    n.bytes(24, 6, 0, op::READ, chunk_flags::DISCOVERY, &post(INIT));
    n.bytes(24, 6, 0, op::WRITE, chunk_flags::DISCOVERY, &ok(INIT_OK, None));
    n.bytes(24, 6, 0, op::READ, 0, &post(CALL));
    n.close(24, 6);
    let ops = n.ops();
    let call = ops.iter().find(|e| e["gen_ai.tool.name"] == "add").unwrap();
    assert_eq!(call["status"], "connection_closed");
}
