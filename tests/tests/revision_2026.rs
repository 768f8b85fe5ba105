//! The 2026-07-28 revision to the letter, with the official Python SDK 2.x
//! on both ends (tests/peers/mrtr_server.py, drive.py in mode 2026-07-28):
//! multi round-trip requests counted as one call with its rounds; the
//! application's `traceparent` carried into events; `Mcp-Method`/`Mcp-Name`
//! headers that disagree with the body counted and alerted.

use std::{
    io::{Read, Write},
    time::Duration,
};

use mcptap_tests::{Agent, Env, Server, env, free_port, observed, summary};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn mrtr_server(env: &Env) -> Server {
    let port = free_port();
    env.server_command(
        "e2e-mrtr",
        &format!(
            "MCPTAP_TEST_SERVER_NAME=e2e-mrtr exec {} mrtr_server.py --port {port}",
            env.python.display()
        ),
        port,
    )
}

/// A `tools/call` answered `input_required`, retried under a new id with
/// the user's answer: two operations, one call. The first round's status is
/// `input_required` (not a completed call), both share `mcp.call.id` with
/// their round number, and the last carries the call's whole duration and
/// the time it waited for the user; the metrics count each call once as
/// `ok`. A request's `_meta.traceparent` is in its event.
#[test]
fn multi_round_trip_calls_are_one_call_with_its_rounds() {
    let env = env();
    let agent = Agent::start(&env, "mrtr", &[]);
    let srv = mrtr_server(&env);
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let report = env.drive(&json!({"sessions": [{
    "url": format!("http://127.0.0.1:{}/mcp", srv.port), "mode": "2026-07-28", "client_name": "mrtr-client",
    "elicit": {"action": "accept", "content": {"environment": "staging"}, "delay": 0.5},
    "steps": [
        {"call": "deploy", "args": {"service": "api"}},
        {"call": "deploy", "args": {"service": "web"}},
        {"call": "add", "args": {"a": 1, "b": 2}, "meta": {"traceparent": traceparent}}
    ]}]}));
    let s = &report["sessions"][0];
    assert!(s.get("error").is_none(), "{s}");
    assert_eq!(s["protocol_version"], "2026-07-28");
    let events = agent.wait_events("both deploy calls and add", WAIT, |ev| {
        let ops = observed(ev, "server", srv.pid());
        ops.iter().filter(|e| e["gen_ai.tool.name"] == "deploy").count() == 4
            && ops.iter().any(|e| e["gen_ai.tool.name"] == "add")
    });
    let ops = observed(&events, "server", srv.pid());
    let deploys: Vec<&Value> = ops.iter().filter(|e| e["gen_ai.tool.name"] == "deploy").collect();
    let calls: std::collections::BTreeSet<&str> = deploys
        .iter()
        .map(|e| e["mcp.call.id"].as_str().expect("a call id on every round"))
        .collect();
    assert_eq!(calls.len(), 2, "two calls:\n{}", summary(&ops));
    for call in calls {
        let mut rounds: Vec<&&Value> = deploys.iter().filter(|e| e["mcp.call.id"] == call).collect();
        rounds.sort_by_key(|e| e["mcp.call.round"].as_u64());
        assert_eq!(rounds.len(), 2, "{call}: {rounds:?}");
        let (first, last) = (rounds[0], rounds[1]);
        assert_eq!(first["mcp.call.round"], 1);
        assert_eq!(first["status"], "input_required", "{first}");
        assert_eq!(first["mcp.result.type"], "input_required");
        assert!(first.get("error.type").is_none(), "not a failure: {first}");
        assert_ne!(
            first["jsonrpc.request.id"], last["jsonrpc.request.id"],
            "a new id per round"
        );
        assert_eq!(last["mcp.call.round"], 2);
        assert_eq!(last["status"], "ok", "{last}");
        let (total, wait) = (
            last["mcp.call.duration_s"].as_f64().expect("the call's duration"),
            last["mcp.call.input_wait_s"].as_f64().expect("the wait for input"),
        );
        assert!(
            wait >= 0.45 && wait < total,
            "waited {wait} s of {total} s (the user took 0.5 s)"
        );
        assert!(
            total > last["duration_s"].as_f64().unwrap(),
            "the call outlasts its last round"
        );
    }
    let add = ops.iter().find(|e| e["gen_ai.tool.name"] == "add").unwrap();
    assert_eq!(add["trace.id"], "0af7651916cd43dd8448eb211c80319c", "{add}");
    assert_eq!(add["trace.parent_span_id"], "b7ad6b7169203331");
    assert!(add.get("mcp.call.id").is_none(), "one round, no call id: {add}");
    let m = agent.metrics();
    let deploy = |status: &str| {
        m.value(
            "mcp_server_operations_total",
            &[("gen_ai_tool_name", "deploy"), ("status", status)],
        )
    };
    assert_eq!(deploy("ok"), 2.0, "each call counted once as ok");
    assert_eq!(deploy("input_required"), 2.0);
}

/// A request whose `Mcp-Method` says `tools/list` and whose body calls a
/// tool (what gets past a gateway that routes and authorizes on the
/// header): counted, an alert, and the event says what each said.
#[test]
fn routing_headers_that_disagree_with_the_body_are_an_alert() {
    let env = env();
    let agent = Agent::start(&env, "header_mismatch", &[]);
    let srv = mrtr_server(&env);
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "add", "arguments": {"a": 1, "b": 2}, "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "crafted", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {}}}})
    .to_string();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    write!(
        s,
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/list\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        srv.port,
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let events = agent.wait_events("the alert", WAIT, |ev| {
        ev.iter()
            .any(|e| e["event.type"] == "mcp.alert" && e["alert"]["kind"] == "header_body_mismatch")
    });
    let op = observed(&events, "server", srv.pid())
        .into_iter()
        .find(|e| e["mcp.method.name"] == "tools/call")
        .expect("the crafted call");
    assert_eq!(
        op["mcp.header_mismatch"], "Mcp-Method \"tools/list\", body \"tools/call\"",
        "{op}\n(the server answered: {answer})"
    );
    let alert = events
        .iter()
        .find(|e| e["alert"]["kind"] == "header_body_mismatch")
        .unwrap();
    assert_eq!(alert["server"]["process"]["pid"].as_u64(), Some(srv.pid()));
    // One per operation seen: the server's, and the client's when the
    // sending process (this test) is watched too.
    let seen = agent
        .events()
        .iter()
        .filter(|e| e["event.type"] == "mcp.operation" && e.get("mcp.header_mismatch").is_some())
        .count();
    assert!(seen >= 1);
    assert_eq!(
        agent.metrics().value("mcptap_header_body_mismatch_total", &[]),
        seen as f64
    );
}
