//! End-to-end over stdio: the real agent and eBPF programs, real MCP clients
//! (the official Python SDK) and servers (FastMCP, server-everything).

use std::time::Duration;

use mcptap_tests::{Agent, count, env, operations_of, summary};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// The driver's account of one session.
fn session(report: &Value, i: usize) -> &Value {
    &report["sessions"][i]
}

fn server_pid(session: &Value) -> u64 {
    session["server_pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no server pid in {session}"))
}

/// Client-side round trips of the calls of `tool`, in order.
fn rtts(session: &Value, tool: &str) -> Vec<f64> {
    session["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["tool"] == tool)
        .map(|s| s["rtt_s"].as_f64().unwrap())
        .collect()
}

/// Every server-side duration lies within what the client measured around
/// it (same clock): the server reads the request after the client sent it
/// and writes the answer before the client reads it.
fn assert_durations_within(ops: &[Value], session: &Value, tool: &str, at_least: f64) {
    let events: Vec<f64> = ops
        .iter()
        .filter(|e| e["gen_ai.tool.name"] == tool)
        .map(|e| e["duration_s"].as_f64().unwrap_or_else(|| panic!("no duration: {e}")))
        .collect();
    let rtts = rtts(session, tool);
    assert_eq!(events.len(), rtts.len(), "{tool}: events vs calls");
    for (d, rtt) in events.iter().zip(&rtts) {
        assert!(*d >= at_least, "{tool}: server duration {d} < {at_least}");
        assert!(
            *d <= rtt + 0.001,
            "{tool}: server duration {d} > client round trip {rtt}"
        );
        assert!(*d > 0.0);
    }
}

fn steps_every_outcome() -> Value {
    json!([
        {"list_tools": true},
        {"call": "add", "args": {"a": 1, "b": 2}, "repeat": 5},
        {"call": "refuse", "args": {"reason": "not allowed"}, "repeat": 3},
        {"call": "explode", "args": {}, "repeat": 2},
        {"call": "sleep", "args": {"seconds": 0.25}, "repeat": 2},
        {"call": "blob", "args": {"mib": 4}},
        {"call": "no-such-tool", "args": {}},
        {"get_prompt": "greet", "args": {"name": "x"}},
        {"get_prompt": "no-such-prompt", "args": {}},
        {"read_resource": "test://config"},
        {"raw": "no/such_method"},
        {"ping": true}
    ])
}

#[test]
fn python_sdk_client_and_fastmcp_server_every_outcome() {
    let env = env();
    let agent = Agent::start(&env, "every_outcome", &[]);
    let plan = json!({"sessions": [
        {"server": env.test_server(), "env": {"MCPTAP_TEST_SERVER_NAME": "e2e-outcomes-legacy"},
         "mode": "legacy", "client_name": "e2e-client-legacy", "steps": steps_every_outcome()},
        {"server": env.test_server(), "env": {"MCPTAP_TEST_SERVER_NAME": "e2e-outcomes-2026"},
         "mode": "2026-07-28", "client_name": "e2e-client-2026", "steps": steps_every_outcome()},
    ]});
    let report = env.drive(&plan);

    for (i, (server_name, client_name, version)) in [
        ("e2e-outcomes-legacy", "e2e-client-legacy", "2025-11-25"),
        ("e2e-outcomes-2026", "e2e-client-2026", "2026-07-28"),
    ]
    .into_iter()
    .enumerate()
    {
        let s = session(&report, i);
        assert_eq!(s["protocol_version"], version, "{s}");
        let pid = server_pid(s);
        // 15 tool calls (whoami + 14), 2 prompts, 1 resource, 1 unknown
        // method, 1 ping, and the handshake (legacy); plus the tools/list
        // calls the SDK client makes on its own (at least the one asked for).
        let known = if i == 0 { 21 } else { 20 };
        let events = agent.wait_events(server_name, WAIT, |ev| {
            operations_of(ev, pid).iter().any(|e| e["mcp.method.name"] == "ping")
        });
        let ops = operations_of(&events, pid);
        let lists = count(&ops, "tools/list", None, "ok");
        assert!(lists >= 1);
        let expected = known + lists;
        assert_eq!(ops.len(), expected, "{}", summary(&ops));

        let call = |tool, status| count(&ops, "tools/call", Some(tool), status);
        assert_eq!(call("whoami", "ok"), 1);
        assert_eq!(call("add", "ok"), 5);
        assert_eq!(call("refuse", "tool_error"), 3);
        assert_eq!(call("explode", "tool_error"), 2);
        assert_eq!(call("sleep", "ok"), 2);
        assert_eq!(call("blob", "ok"), 1);
        assert_eq!(call("no-such-tool", "tool_error"), 1);
        assert_eq!(count(&ops, "prompts/get", None, "ok"), 1);
        assert_eq!(count(&ops, "prompts/get", None, "error"), 1);
        assert_eq!(count(&ops, "resources/read", None, "ok"), 1);
        assert_eq!(count(&ops, "no/such_method", None, "error"), 1);
        // What the client saw of ping (2026-07-28 servers reject it) is what
        // the agent reports.
        let ping = s["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|st| st["step"] == "ping")
            .unwrap();
        let ping_event = ops
            .iter()
            .find(|e| e["mcp.method.name"] == "ping")
            .expect("a ping event");
        match ping["outcome"].as_str().unwrap() {
            "ok" => assert_eq!(ping_event["status"], "ok"),
            _ => assert_eq!(ping_event["error.type"], ping["code"].to_string(), "{ping_event}"),
        }
        if i == 0 {
            assert_eq!(count(&ops, "initialize", None, "ok"), 1);
        } else {
            assert_eq!(
                count(&ops, "server/discover", None, "ok"),
                0,
                "a version pin sends no discover"
            );
        }

        for e in &ops {
            assert_eq!(e["network.transport"], "pipe");
            assert_eq!(e["schema"], "mcptap.event/v1");
            assert_eq!(e["client"]["name"], client_name, "{e}");
            assert_eq!(e["mcp.protocol.version"], version);
            assert_eq!(
                e["client"]["process"]["found_by"]
                    .as_str()
                    .or(e["client"]["found_by"].as_str()),
                Some("pipe_peer")
            );
            assert!(e.get("payload").is_none(), "payloads are off by default: {e}");
            assert!(e["jsonrpc.request.id"].is_string());
        }
        let named = ops.iter().filter(|e| e["server"]["name"] == server_name).count();
        assert!(
            named >= ops.len() - 2,
            "server name known once the server introduced itself"
        );
        let prompt_error = ops
            .iter()
            .find(|e| e["mcp.method.name"] == "prompts/get" && e["status"] == "error")
            .unwrap();
        assert_eq!(prompt_error["error.type"], "-32602");
        assert_eq!(prompt_error["gen_ai.prompt.name"], "no-such-prompt");
        let unknown = ops.iter().find(|e| e["mcp.method.name"] == "no/such_method").unwrap();
        // The JSON-RPC code the client received (-32601 method not found; a
        // 2026-07-28 server rejects the bare request earlier, -32602).
        let raw = s["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|st| st["step"] == "raw")
            .unwrap();
        let unknown_code = raw["code"].to_string();
        assert_eq!(unknown["error.type"], unknown_code.as_str());
        assert!(
            unknown.get("rpc.jsonrpc.error_message").is_none(),
            "messages only with payload capture"
        );
        let blob = ops.iter().find(|e| e["gen_ai.tool.name"] == "blob").unwrap();
        assert!(blob["response"]["bytes"].as_u64().unwrap() > 4 << 20, "{blob}");
        assert!(blob["response"].get("truncated").is_none());
        let resource = ops.iter().find(|e| e["mcp.method.name"] == "resources/read").unwrap();
        assert_eq!(resource["mcp.resource.uri"], "test://config");

        assert_durations_within(&ops, s, "add", 0.0);
        assert_durations_within(&ops, s, "sleep", 0.25);
        assert_durations_within(&ops, s, "blob", 0.0);

        // The same figures over HTTP.
        let m = agent.metrics();
        let series = |tool: &str, status: &str| {
            m.value(
                "mcp_server_operations_total",
                &[
                    ("mcp_server_name", server_name),
                    ("gen_ai_tool_name", tool),
                    ("status", status),
                    ("network_transport", "pipe"),
                ],
            )
        };
        assert_eq!(series("add", "ok"), 5.0);
        assert_eq!(series("refuse", "tool_error"), 3.0);
        assert_eq!(series("explode", "tool_error"), 2.0);
        assert_eq!(series("sleep", "ok"), 2.0);
        assert_eq!(
            m.value(
                "mcp_server_operation_duration_seconds_count",
                &[("mcp_server_name", server_name), ("gen_ai_tool_name", "sleep")]
            ),
            2.0
        );
        assert_eq!(
            m.value(
                "mcp_server_operation_duration_seconds_bucket",
                &[
                    ("mcp_server_name", server_name),
                    ("gen_ai_tool_name", "sleep"),
                    ("le", "0.2")
                ]
            ),
            0.0,
            "sleeps of 0.25 s are not under 0.2 s"
        );
        assert_eq!(
            m.value(
                "mcp_server_operations_total",
                &[
                    ("mcp_server_name", server_name),
                    ("mcp_method_name", "no/such_method"),
                    ("error_type", unknown_code.as_str())
                ]
            ),
            1.0
        );
        assert_eq!(
            m.value("mcp_server_operations_total", &[("mcp_client_name", client_name)]),
            expected as f64
        );
    }
    let m = agent.metrics();
    assert_eq!(m.value("mcptap_capture_lost_total", &[]), 0.0, "no capture loss");
    assert_eq!(m.value("mcptap_unmatched_responses_total", &[]), 0.0);
    assert!(m.value("mcptap_messages_total", &[("direction", "client_to_server")]) >= 38.0);
    let events = agent.stop();
    let ends = events.iter().filter(|e| e["event.type"] == "mcp.session.end").count();
    assert_eq!(ends, 2, "{}", summary(&events));
}

#[test]
fn server_everything_with_server_requests_and_progress() {
    let env = env();
    let agent = Agent::start(&env, "server_everything", &[]);
    let plan = json!({"sessions": [{
        "server": env.server_everything(), "mode": "auto", "client_name": "e2e-everything",
        "sampling": true, "roots": true,
        "steps": [
            {"list_tools": true},
            {"call": "echo", "args": {"message": "hi"}, "repeat": 3},
            {"call": "get-sum", "args": {"a": 2, "b": 3}, "repeat": 2},
            {"call": "trigger-long-running-operation", "args": {"duration": 1, "steps": 4}, "progress": true},
            {"call": "trigger-sampling-request", "args": {"prompt": "hello"}},
            {"call": "get-roots-list", "args": {}},
            {"list_prompts": true}, {"list_resources": true}
        ]
    }]});
    let report = env.drive(&plan);
    let s = session(&report, 0);
    assert!(s.get("error").is_none(), "{s}");
    let progress = s["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|st| st["progress_notifications"].as_u64())
        .unwrap();
    assert_eq!(progress, 4);

    let events = agent.wait_events("server-everything operations", WAIT, |ev| {
        ev.iter()
            .filter(|e| e["client"]["name"] == "e2e-everything" && e["event.type"] == "mcp.operation")
            .count()
            >= 14
    });
    let ops: Vec<Value> = events
        .iter()
        .filter(|e| e["client"]["name"] == "e2e-everything" && e["event.type"] == "mcp.operation")
        .cloned()
        .collect();
    let call = |tool, status| count(&ops, "tools/call", Some(tool), status);
    assert_eq!(call("echo", "ok"), 3, "{}", summary(&ops));
    assert_eq!(call("get-sum", "ok"), 2);
    assert_eq!(call("trigger-long-running-operation", "ok"), 1);
    assert_eq!(call("trigger-sampling-request", "ok"), 1);
    assert_eq!(call("get-roots-list", "ok"), 1);
    // Requests the server sent to the client, correlated the other way.
    let sampling: Vec<_> = ops
        .iter()
        .filter(|e| e["mcp.method.name"] == "sampling/createMessage")
        .collect();
    assert_eq!(sampling.len(), 1, "{}", summary(&ops));
    assert_eq!(sampling[0]["direction"], "server_to_client");
    assert_eq!(sampling[0]["status"], "ok");
    assert_eq!(count(&ops, "roots/list", None, "ok"), 1);
    let long = ops
        .iter()
        .find(|e| e["gen_ai.tool.name"] == "trigger-long-running-operation")
        .unwrap();
    assert!(long["duration_s"].as_f64().unwrap() >= 0.9, "{long}");
    // The client probed server/discover first (2026-07-28); this server
    // only speaks the handshake era, refused it, and the client fell back
    // to initialize, which is where the server introduced itself.
    let discover = ops
        .iter()
        .find(|e| e["mcp.method.name"] == "server/discover")
        .expect("the discover probe");
    assert_eq!(discover["error.type"], "-32601");
    assert_eq!(count(&ops, "initialize", None, "ok"), 1);
    for e in ops.iter().filter(|e| e["mcp.method.name"] != "server/discover") {
        assert_eq!(e["server"]["name"], "mcp-servers/everything", "{e}");
        assert_eq!(e["mcp.protocol.version"], "2025-11-25");
    }
    assert!(ops.iter().all(|e| e["server"]["process"]["comm"] == "node"));
    let notes: Vec<_> = events
        .iter()
        .filter(|e| e["event.type"] == "mcp.notification" && e["mcp.method.name"] == "notifications/progress")
        .filter(|e| e["client"]["name"] == "e2e-everything")
        .collect();
    assert_eq!(notes.len(), 4);
    assert_eq!(notes[3]["notification"]["progress"], 4.0);
    let m = agent.metrics();
    assert_eq!(
        m.value(
            "mcp_notifications_total",
            &[
                ("mcp_method_name", "notifications/progress"),
                ("direction", "server_to_client")
            ]
        ),
        4.0
    );
    assert_eq!(
        m.value(
            "mcp_server_operations_total",
            &[
                ("mcp_server_name", "mcp-servers/everything"),
                ("gen_ai_tool_name", "echo")
            ]
        ),
        3.0
    );
    drop(agent);
}

#[test]
fn server_started_before_the_agent_is_picked_up() {
    let env = env();
    let dir = env.artifacts.join("started_before");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (ready_a, ready_b, go) = (dir.join("ready-a"), dir.join("ready-b"), dir.join("go"));
    let steps = |ready: &std::path::Path| {
        json!([{"touch": ready}, {"wait_for_file": go}, {"call": "add", "args": {"a": 1, "b": 1}, "repeat": 3},
               {"call": "refuse", "args": {"reason": "x"}}])
    };
    // The servers start and finish their handshakes before the agent exists.
    let plan = json!({"sessions": [
        {"server": env.test_server(), "mode": "legacy", "client_name": "early-legacy", "steps": steps(&ready_a)},
        {"server": env.test_server(), "mode": "2026-07-28", "client_name": "early-2026", "steps": steps(&ready_b)},
    ]});
    let driver = env
        .drive_command(&plan)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !(ready_a.exists() && ready_b.exists()) {
        assert!(t0.elapsed() < WAIT, "servers did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let agent = Agent::start(&env, "started_before_agent", &[]);
    std::fs::write(&go, b"").unwrap();
    let report = mcptap_tests::parse_report("drive.py", &driver.wait_with_output().unwrap());

    for (i, client) in [(0, None), (1, Some("early-2026"))] {
        let pid = server_pid(session(&report, i));
        let events = agent.wait_events("calls of servers started earlier", WAIT, |ev| {
            operations_of(ev, pid).len() >= 4
        });
        let ops = operations_of(&events, pid);
        assert_eq!(count(&ops, "tools/call", Some("add"), "ok"), 3, "{}", summary(&ops));
        assert_eq!(count(&ops, "tools/call", Some("refuse"), "tool_error"), 1);
        assert_eq!(ops.len(), 4);
        for e in &ops {
            // Legacy: the handshake was missed, the client stays unknown.
            // 2026-07-28: every request names its client.
            assert_eq!(e["client"]["name"].as_str(), client, "{e}");
        }
    }
    assert_eq!(
        agent
            .metrics()
            .value("mcptap_discovery_total", &[("outcome", "confirmed")]),
        2.0
    );
}

#[test]
fn concurrent_sessions_reuse_request_ids() {
    let env = env();
    let agent = Agent::start(&env, "concurrent_sessions", &[]);
    let steps = json!([{"call": "add", "args": {"a": 1, "b": 2}, "repeat": 20},
                       {"call": "sleep", "args": {"seconds": 0.05}, "repeat": 5},
                       {"call": "refuse", "args": {"reason": "r"}, "repeat": 4}]);
    let plan = json!({"sessions": [
        {"server": env.test_server(), "env": {"MCPTAP_TEST_SERVER_NAME": "e2e-concurrent-a"}, "steps": steps},
        {"server": env.test_server(), "env": {"MCPTAP_TEST_SERVER_NAME": "e2e-concurrent-b"}, "steps": steps},
        {"server": env.test_server(), "env": {"MCPTAP_TEST_SERVER_NAME": "e2e-concurrent-c"}, "steps": steps},
    ]});
    let report = env.drive(&plan);
    let pids: Vec<u64> = (0..3).map(|i| server_pid(session(&report, i))).collect();
    let events = agent.wait_events("three sessions", WAIT, |ev| {
        pids.iter().all(|p| operations_of(ev, *p).len() >= 32)
    });
    let mut ids = std::collections::HashSet::new();
    for (i, pid) in pids.iter().enumerate() {
        let ops = operations_of(&events, *pid);
        assert_eq!(ops.len(), 32, "{}", summary(&ops));
        assert_eq!(count(&ops, "tools/call", Some("add"), "ok"), 20);
        assert_eq!(count(&ops, "tools/call", Some("sleep"), "ok"), 5);
        assert_eq!(count(&ops, "tools/call", Some("refuse"), "tool_error"), 4);
        let session_ids: std::collections::HashSet<_> = ops.iter().map(|e| e["mcp.session.id"].clone()).collect();
        assert_eq!(session_ids.len(), 1);
        assert_durations_within(&ops, session(&report, i), "sleep", 0.05);
        for e in &ops {
            ids.insert((i, e["jsonrpc.request.id"].as_str().unwrap().to_string()));
        }
    }
    // The sessions used the same request ids: correlation kept them apart.
    let per_session: Vec<std::collections::HashSet<String>> = (0..3)
        .map(|i| ids.iter().filter(|(s, _)| *s == i).map(|(_, id)| id.clone()).collect())
        .collect();
    assert!(
        per_session[0].intersection(&per_session[1]).count() >= 30,
        "ids overlap across sessions"
    );
    assert_eq!(agent.metrics().value("mcptap_unmatched_responses_total", &[]), 0.0);
    assert_eq!(agent.metrics().value("mcptap_duplicate_request_ids_total", &[]), 0.0);
}

#[test]
fn cancelled_and_killed_mid_request() {
    let env = env();
    let agent = Agent::start(&env, "cancel_and_kill", &[]);
    let plan = json!({"sessions": [{"server": env.test_server(), "env": {"MCPTAP_TEST_SERVER_NAME": "e2e-cancel"}, "steps": [
        {"call": "add", "args": {"a": 1, "b": 2}},
        {"call": "sleep", "args": {"seconds": 5}, "cancel_after": 0.3},
        {"call": "add", "args": {"a": 1, "b": 2}},
        {"call": "sleep", "args": {"seconds": 30}, "kill_server_after": 0.5}
    ]}]});
    let report = env.drive(&plan);
    let s = session(&report, 0);
    let pid = server_pid(s);
    let events = agent.wait_events("cancelled and exited", WAIT, |ev| {
        operations_of(ev, pid).iter().any(|e| e["status"] == "server_exited")
    });
    let ops = operations_of(&events, pid);
    assert_eq!(count(&ops, "tools/call", Some("add"), "ok"), 2, "{}", summary(&ops));
    let cancelled: Vec<_> = ops.iter().filter(|e| e["status"] == "cancelled").collect();
    assert_eq!(cancelled.len(), 1, "{}", summary(&ops));
    assert_eq!(cancelled[0]["gen_ai.tool.name"], "sleep");
    assert_eq!(cancelled[0]["error.type"], "cancelled");
    let d = cancelled[0]["duration_s"].as_f64().unwrap();
    assert!(
        (0.25..1.5).contains(&d),
        "cancelled after {d} s (client gave up at 0.3 s)"
    );
    let exited: Vec<_> = ops.iter().filter(|e| e["status"] == "server_exited").collect();
    assert_eq!(exited.len(), 1);
    assert_eq!(exited[0]["gen_ai.tool.name"], "sleep");
    assert!(exited[0].get("duration_s").is_none());
    assert!(exited[0].get("response").is_none());
    let cancel_note = events
        .iter()
        .filter(|e| e["event.type"] == "mcp.notification" && e["server"]["process"]["pid"].as_u64() == Some(pid))
        .find(|e| e["mcp.method.name"] == "notifications/cancelled")
        .expect("a notifications/cancelled event");
    assert_eq!(
        cancel_note["notification"]["cancelled_request_id"],
        cancelled[0]["jsonrpc.request.id"]
    );
    let end = events
        .iter()
        .find(|e| e["event.type"] == "mcp.session.end" && e["server"]["process"]["pid"].as_u64() == Some(pid))
        .expect("session end");
    assert_eq!(end["server"]["name"], "e2e-cancel");
    let m = agent.metrics();
    assert_eq!(
        m.value(
            "mcp_server_operations_total",
            &[("mcp_server_name", "e2e-cancel"), ("error_type", "server_exited")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "mcp_server_operations_total",
            &[("mcp_server_name", "e2e-cancel"), ("status", "cancelled")]
        ),
        1.0
    );
    assert_eq!(m.value("mcp_active_sessions", &[]), 0.0);
}

#[test]
fn bad_input_over_a_real_pipe() {
    let env = env();
    let agent = Agent::start(&env, "bad_input", &[]);
    let server = env.peers.join("stdio_server.py").display().to_string();
    let report = env.run_peer("raw_client.py", &[&env.python.display().to_string(), &server]);
    assert_eq!(report["answered"], report["valid_calls"], "{report}");
    assert_eq!(report["echo_answered"], true);
    let pid = report["server_pid"].as_u64().unwrap();
    let events = agent.wait_events("the server's end", WAIT, |ev| {
        ev.iter()
            .any(|e| e["event.type"] == "mcp.session.end" && e["server"]["process"]["pid"].as_u64() == Some(pid))
    });
    let ops = operations_of(&events, pid);
    // Every valid call around the junk was seen.
    assert_eq!(
        count(&ops, "tools/call", Some("add"), "ok") as u64,
        report["valid_calls"].as_u64().unwrap(),
        "{}",
        summary(&ops)
    );
    assert_eq!(count(&ops, "initialize", None, "ok"), 1);
    // The 20 MiB line: over the 16 MiB cap, still correlated by its prefix.
    let echo = ops
        .iter()
        .find(|e| e["gen_ai.tool.name"] == "echo")
        .expect("the 20 MiB call");
    assert_eq!(echo["status"], "ok");
    assert_eq!(echo["request"]["truncated"], true);
    assert!(echo["request"]["bytes"].as_u64().unwrap() > 20 << 20);
    assert_eq!(echo["jsonrpc.request.id"], report["echo_id"].to_string());
    let m = agent.metrics();
    assert_eq!(m.value("mcptap_parse_errors_total", &[("kind", "invalid_json")]), 1.0);
    assert_eq!(m.value("mcptap_parse_errors_total", &[("kind", "invalid_utf8")]), 2.0);
    assert_eq!(
        m.value("mcptap_parse_errors_total", &[("kind", "exited_mid_message")]),
        1.0
    );
    assert_eq!(m.value("mcptap_truncated_messages_total", &[]), 1.0);
    assert_eq!(m.value("mcptap_capture_lost_total", &[]), 0.0);
    // Still running and still seeing new traffic.
    let again = env.drive(
        &json!({"sessions": [{"server": env.test_server(), "steps": [{"call": "add", "args": {"a": 1, "b": 1}}]}]}),
    );
    let pid2 = server_pid(session(&again, 0));
    agent.wait_events("a call after the junk", WAIT, |ev| {
        count(&operations_of(ev, pid2), "tools/call", Some("add"), "ok") == 1
    });
}

#[test]
fn payloads_are_opt_in_and_masked() {
    let env = env();
    let agent = Agent::start(&env, "payloads", &["--capture-payloads"]);
    let secret = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789";
    let plan = json!({"sessions": [{"server": env.test_server(), "steps": [
        {"call": "echo", "args": {"text": format!("my key is {secret}")}},
        {"call": "refuse", "args": {"reason": "password=hunter2"}},
        {"call": "blob", "args": {"mib": 1}}
    ]}]});
    let report = env.drive(&plan);
    let pid = server_pid(session(&report, 0));
    let events = agent.wait_events("payload events", WAIT, |ev| operations_of(ev, pid).len() >= 4);
    let ops = operations_of(&events, pid);
    let text = serde_json::to_string(&ops).unwrap();
    assert!(!text.contains(secret), "the API key leaked");
    assert!(!text.contains("hunter2"), "the password leaked");
    let echo = ops.iter().find(|e| e["gen_ai.tool.name"] == "echo").unwrap();
    assert_eq!(echo["payload"]["params"]["name"], "echo");
    assert!(
        echo["payload"]["params"]["arguments"]["text"]
            .as_str()
            .unwrap()
            .contains("[REDACTED:openai_key]")
    );
    assert!(echo["payload"]["result"].is_object());
    let blob = ops.iter().find(|e| e["gen_ai.tool.name"] == "blob").unwrap();
    assert_eq!(
        blob["payload"]["result"]["mcptap.truncated"], true,
        "1 MiB result over the 64 KiB payload cap"
    );
}

#[test]
fn selection_by_pid_and_exe_and_exclusion() {
    let env = env();
    // --exe with discovery off: only node processes are watched.
    let agent = Agent::start(&env, "select_exe", &["--no-discovery", "--exe", "node"]);
    let both = json!({"sessions": [
        {"server": env.server_everything(), "client_name": "sel-node", "steps": [{"call": "echo", "args": {"message": "a"}}]},
        {"server": env.test_server(), "client_name": "sel-python", "steps": [{"call": "add", "args": {"a": 1, "b": 1}}]},
    ]});
    let report = env.drive(&both);
    let python_pid = server_pid(session(&report, 1));
    let events = agent.wait_events("node's call", WAIT, |ev| {
        ev.iter().any(|e| e["gen_ai.tool.name"] == "echo")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        operations_of(&agent.events(), python_pid).is_empty(),
        "python was not selected"
    );
    assert!(events.iter().any(|e| e["client"]["name"] == "sel-node"));
    drop(agent);

    // Discovery on, node excluded.
    let agent = Agent::start(&env, "exclude_exe", &["--exclude-exe", "node"]);
    let report = env.drive(&both);
    let python_pid = server_pid(session(&report, 1));
    agent.wait_events("python's call", WAIT, |ev| !operations_of(ev, python_pid).is_empty());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !agent.events().iter().any(|e| e["client"]["name"] == "sel-node"),
        "node was excluded"
    );
    drop(agent);

    // --pid of a server that started first, with discovery off.
    let dir = env.artifacts.join("select_pid");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (ready, go) = (dir.join("ready"), dir.join("go"));
    let plan = json!({"sessions": [{"server": env.test_server(), "client_name": "sel-pid", "steps": [
        {"touch": ready}, {"wait_for_file": go}, {"call": "add", "args": {"a": 1, "b": 1}, "repeat": 2}]}]});
    let driver = env
        .drive_command(&plan)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !ready.exists() {
        assert!(t0.elapsed() < WAIT);
        std::thread::sleep(Duration::from_millis(50));
    }
    // The server is the driver's child.
    let server = std::fs::read_to_string(format!("/proc/{}/task/{}/children", driver.id(), driver.id())).unwrap();
    let selected: u64 = server.split_whitespace().next().unwrap().parse().unwrap();
    let agent = Agent::start(&env, "select_pid", &["--no-discovery", "--pid", &selected.to_string()]);
    std::fs::write(&go, b"").unwrap();
    let report = mcptap_tests::parse_report("drive.py", &driver.wait_with_output().unwrap());
    assert_eq!(server_pid(session(&report, 0)), selected);
    agent.wait_events("selected pid's calls", WAIT, |ev| {
        count(&operations_of(ev, selected), "tools/call", Some("add"), "ok") == 2
    });
}

#[test]
fn clear_errors_and_graceful_shutdown() {
    let env = env();
    // Unknown flag.
    let out = std::process::Command::new(&env.agent)
        .args(["run", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
    // Port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = std::process::Command::new(&env.agent)
        .args(["run", "--metrics-addr", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("address is in use") && err.contains("--metrics-addr"),
        "{err}"
    );
    // Not root.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(&env.agent)
        .args(["check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs root"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // SIGTERM right after traffic: everything already captured is written.
    let mut agent = Agent::start(&env, "graceful", &[]);
    let report = env.drive(&json!({"sessions": [{"server": env.test_server(), "steps": [
        {"call": "add", "args": {"a": 1, "b": 1}, "repeat": 50}]}]}));
    let pid = server_pid(session(&report, 0));
    agent.shutdown(libc::SIGTERM);
    let events = agent.events();
    assert_eq!(
        count(&operations_of(&events, pid), "tools/call", Some("add"), "ok"),
        50,
        "{}",
        summary(&events)
    );
}
