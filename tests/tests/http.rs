//! End-to-end over the network: the real agent and eBPF programs (socket
//! syscalls, OpenSSL uprobes), real MCP clients (the official Python SDK)
//! and servers (FastMCP over uvicorn, the official Node SDK behind Node's
//! HTTPS), over Streamable HTTP and the legacy HTTP+SSE transport, plain
//! and TLS, seen from the server's side and from the client's.

use std::time::Duration;

use mcptap_tests::{Agent, Cert, Env, Server, count, env, free_port, observed, summary};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn session(report: &Value, i: usize) -> &Value {
    let s = &report["sessions"][i];
    assert!(s.get("error").is_none(), "the client failed: {s}");
    s
}

fn pid(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// Client-side round trips of `tool`, in order.
fn rtts(session: &Value, tool: &str) -> Vec<f64> {
    session["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["tool"] == tool)
        .map(|s| s["rtt_s"].as_f64().unwrap())
        .collect()
}

fn steps() -> Value {
    json!([
        {"list_tools": true},
        {"call": "add", "args": {"a": 1, "b": 2}, "repeat": 5},
        {"call": "refuse", "args": {"reason": "not allowed"}, "repeat": 3},
        {"call": "explode", "args": {}, "repeat": 2},
        {"call": "sleep", "args": {"seconds": 0.2}, "repeat": 2},
        {"call": "blob", "args": {"mib": 2}},
        {"call": "no-such-tool", "args": {}},
        {"get_prompt": "greet", "args": {"name": "x"}},
        {"read_resource": "test://config"},
        {"ping": true}
    ])
}

/// The exact tool outcomes `steps()` produce, from one side's events.
/// `blob_status`: the 4 MiB result is `ok`, except over an event stream:
/// the Python SDK gives up on events over 1 MiB and drops the connection
/// mid-event, which is what the agent reports at the client; the server
/// finished writing first or not (`connection_closed`), by the race.
fn assert_every_outcome(ops: &[Value], what: &str, blob_status: &[&str]) {
    let call = |tool, status| count(ops, "tools/call", Some(tool), status);
    assert_eq!(call("whoami", "ok"), 1, "{what}:\n{}", summary(ops));
    assert_eq!(call("add", "ok"), 5, "{what}:\n{}", summary(ops));
    assert_eq!(call("refuse", "tool_error"), 3, "{what}");
    assert_eq!(call("explode", "tool_error"), 2, "{what}");
    assert_eq!(call("sleep", "ok"), 2, "{what}");
    let blob_ends: usize = blob_status.iter().map(|st| call("blob", st)).sum();
    assert_eq!(blob_ends, 1, "{what}:\n{}", summary(ops));
    assert_eq!(call("no-such-tool", "tool_error"), 1, "{what}");
    assert_eq!(count(ops, "prompts/get", None, "ok"), 1, "{what}");
    assert_eq!(count(ops, "resources/read", None, "ok"), 1, "{what}");
    assert!(count(ops, "tools/list", None, "ok") >= 1, "{what}");
    assert_eq!(
        ops.iter().filter(|e| e["mcp.method.name"] == "ping").count(),
        1,
        "{what}"
    );
    let blob = ops.iter().find(|e| e["gen_ai.tool.name"] == "blob").unwrap();
    if blob_status == ["ok"] {
        assert!(blob["response"]["bytes"].as_u64().unwrap() > 2 << 20, "{blob}");
    }
    for e in ops {
        assert_eq!(e["network.transport"], "tcp", "{e}");
        assert_eq!(e["network.protocol.name"], "http");
        assert!(e["jsonrpc.request.id"].is_string());
        assert!(e.get("payload").is_none(), "payloads are off by default");
    }
}

/// Durations: what the server measured lies within what the client
/// measured, which lies within the client program's own round trip.
fn assert_durations(server_ops: &[Value], client_ops: &[Value], s: &Value, tool: &str, at_least: f64) {
    let durations = |ops: &[Value]| -> Vec<f64> {
        ops.iter()
            .filter(|e| e["gen_ai.tool.name"] == tool)
            .map(|e| e["duration_s"].as_f64().unwrap_or_else(|| panic!("no duration: {e}")))
            .collect()
    };
    let (srv, cli, rtt) = (durations(server_ops), durations(client_ops), rtts(s, tool));
    assert_eq!((srv.len(), cli.len()), (rtt.len(), rtt.len()), "{tool}");
    for ((d_srv, d_cli), rtt) in srv.iter().zip(&cli).zip(&rtt) {
        assert!(*d_srv >= at_least, "{tool}: server {d_srv} < {at_least}");
        assert!(d_srv <= d_cli, "{tool}: server {d_srv} > client {d_cli}");
        assert!(*d_cli <= rtt + 0.001, "{tool}: client-side {d_cli} > round trip {rtt}");
    }
}

/// Runs `steps()` against each endpoint and checks both sides' events.
fn every_outcome_over(env: &Env, agent: &Agent, servers: &[(&Server, &str, bool)], cert: Option<&Cert>) {
    let sessions: Vec<Value> = servers
        .iter()
        .map(|(srv, name, _)| {
            let scheme = if cert.is_some() { "https" } else { "http" };
            let mut s = json!({"url": format!("{scheme}://127.0.0.1:{}/mcp", srv.port),
                               "client_name": format!("client-of-{name}"), "steps": steps()});
            if let Some(c) = cert {
                s["ca"] = json!(c.cert);
            }
            s
        })
        .collect();
    let report = env.drive(&json!({ "sessions": sessions }));
    for (i, (srv, name, json_mode)) in servers.iter().enumerate() {
        let s = session(&report, i);
        let client_pid = pid(s, "client_pid");
        assert_eq!(pid(s, "server_pid"), srv.pid());
        let events = agent.wait_events(name, WAIT, |ev| {
            let done = |ops: Vec<Value>| {
                ops.iter()
                    .any(|e| e["mcp.method.name"] == "ping" && e["server"]["name"] == *name)
            };
            done(observed(ev, "server", srv.pid())) && done(observed(ev, "client", client_pid))
        });
        let server_ops = observed(&events, "server", srv.pid());
        let client_ops: Vec<Value> = observed(&events, "client", client_pid)
            .into_iter()
            .filter(|e| e["server"]["name"] == *name)
            .collect();
        let server_blob: &[&str] = if *json_mode {
            &["ok"]
        } else {
            &["ok", "connection_closed"]
        };
        assert_every_outcome(&server_ops, &format!("{name}, server side"), server_blob);
        let blob_step = s["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|st| st["tool"] == "blob")
            .unwrap();
        let client_blob: &[&str] = if *json_mode {
            assert_eq!(blob_step["outcome"], "ok");
            &["ok"]
        } else {
            assert_eq!(blob_step["code"], -32000, "the SDK's own limit: {blob_step}");
            &["connection_closed"]
        };
        assert_every_outcome(&client_ops, &format!("{name}, client side"), client_blob);
        assert_eq!(server_ops.len(), client_ops.len(), "both sides saw every call");
        for e in server_ops.iter().chain(&client_ops) {
            assert_eq!(e["tls"], cert.is_some(), "{e}");
            assert_eq!(e["server"]["name"], *name, "{e}");
            assert_eq!(e["client"]["name"], format!("client-of-{name}"), "{e}");
            assert_eq!(e["server.port"], srv.port, "{e}");
            assert_eq!(e["http.response.status_code"], 200, "{e}");
            assert_eq!(e["url.path"], "/mcp");
            assert_eq!(e["server"]["process"]["pid"], srv.pid(), "{e}");
        }
        // Loopback: the agent found the process at the other end.
        assert!(
            server_ops
                .iter()
                .filter(|e| e["client"]["process"]["pid"] == client_pid)
                .count()
                >= server_ops.len() - 2
        );
        assert!(client_ops.iter().all(|e| e["client"]["process"]["pid"] == client_pid));
        let sessions_seen: std::collections::HashSet<_> =
            server_ops.iter().map(|e| e["mcp.session.id"].clone()).collect();
        assert_eq!(
            sessions_seen.len(),
            1,
            "one MCP session (named by Mcp-Session-Id): {sessions_seen:?}"
        );
        assert_eq!(
            client_ops[0]["mcp.session.id"], server_ops[0]["mcp.session.id"],
            "both sides name the session alike"
        );
        assert_durations(&server_ops, &client_ops, s, "sleep", 0.2);
        assert_durations(&server_ops, &client_ops, s, "add", 0.0);
        assert_durations(&server_ops, &client_ops, s, "refuse", 0.0);
        let m = agent.metrics();
        for (metric, side) in [
            ("mcp_server_operations_total", "server"),
            ("mcp_client_operations_total", "client"),
        ] {
            let series = |tool: &str, status: &str| {
                m.value(
                    metric,
                    &[
                        ("mcp_server_name", name),
                        ("gen_ai_tool_name", tool),
                        ("status", status),
                        ("network_transport", "tcp"),
                    ],
                )
            };
            assert_eq!(series("add", "ok"), 5.0, "{side} {name}");
            assert_eq!(series("refuse", "tool_error"), 3.0, "{side} {name}");
            assert_eq!(series("sleep", "ok"), 2.0, "{side} {name}");
        }
        assert_eq!(
            m.value(
                "mcp_client_operation_duration_seconds_count",
                &[("mcp_server_name", name), ("gen_ai_tool_name", "sleep")]
            ),
            2.0
        );
        assert_eq!(
            m.value(
                "mcp_server_operation_duration_seconds_bucket",
                &[("mcp_server_name", name), ("gen_ai_tool_name", "sleep"), ("le", "0.1")]
            ),
            0.0
        );
    }
    let m = agent.metrics();
    assert_eq!(m.value("mcptap_capture_lost_total", &[]), 0.0, "no capture loss");
    assert_eq!(m.value("mcptap_unmatched_responses_total", &[]), 0.0);
}

#[test]
fn streamable_http_plain_with_json_and_event_stream_responses() {
    let env = env();
    let agent = Agent::start(&env, "http_plain", &[]);
    let sse = env.http_server("e2e-http-sse", &[]);
    let json_mode = env.http_server("e2e-http-json", &["--json-response"]);
    every_outcome_over(
        &env,
        &agent,
        &[(&sse, "e2e-http-sse", false), (&json_mode, "e2e-http-json", true)],
        None,
    );
}

#[test]
fn streamable_http_over_tls_through_libssl() {
    let env = env();
    let cert = env.cert("tls");
    // Host-wide OpenSSL probes: both processes are discovered by what they
    // say inside TLS.
    let agent = Agent::start(&env, "http_tls", &["--tls-discovery"]);
    let tls = cert.server_args();
    let sse = env.http_server("e2e-https-sse", &tls);
    let json_args: Vec<&str> = tls.iter().copied().chain(["--json-response"]).collect();
    let json_mode = env.http_server("e2e-https-json", &json_args);
    every_outcome_over(
        &env,
        &agent,
        &[(&sse, "e2e-https-sse", false), (&json_mode, "e2e-https-json", true)],
        Some(&cert),
    );
    let m = agent.metrics();
    assert!(m.value("mcptap_tls_hooked_files", &[("kind", "shared_library")]) >= 1.0);
}

#[test]
fn stateless_2026_protocol_over_http() {
    let env = env();
    let agent = Agent::start(&env, "http_2026", &[]);
    let srv = env.http_server("e2e-http-2026", &[]);
    let report = env.drive(&json!({"sessions": [{
        "url": format!("http://127.0.0.1:{}/mcp", srv.port), "mode": "2026-07-28", "client_name": "modern-client",
        "steps": [{"call": "add", "args": {"a": 1, "b": 1}, "repeat": 4}, {"call": "refuse", "args": {"reason": "x"}}]
    }]}));
    let s = session(&report, 0);
    assert_eq!(s["protocol_version"], "2026-07-28");
    let events = agent.wait_events("2026 calls", WAIT, |ev| observed(ev, "server", srv.pid()).len() >= 6);
    let ops = observed(&events, "server", srv.pid());
    assert_eq!(count(&ops, "tools/call", Some("add"), "ok"), 4, "{}", summary(&ops));
    assert_eq!(count(&ops, "tools/call", Some("refuse"), "tool_error"), 1);
    for e in &ops {
        // No initialize: every request names its client and version.
        assert_eq!(e["client"]["name"], "modern-client", "{e}");
        assert_eq!(e["mcp.protocol.version"], "2026-07-28");
    }
    assert_eq!(count(&ops, "initialize", None, "ok"), 0);
}

#[test]
fn node_https_server_observed_from_node() {
    let env = env();
    let cert = env.cert("node");
    // Only node is watched: what is seen comes from probes on the node
    // executable (OpenSSL linked in statically), not from the Python client.
    let agent = Agent::start(&env, "node_https", &["--no-discovery", "--exe", "node"]);
    let port = free_port();
    let server = env.server_command(
        "node-https",
        &format!(
            "exec node node_https_server.mjs {port} {} {} e2e-node-https",
            cert.cert.display(),
            cert.key.display()
        ),
        port,
    );
    let report = env.drive(&json!({"sessions": [{
        "url": format!("https://127.0.0.1:{port}/mcp"), "ca": cert.cert, "client_name": "py-to-node",
        "steps": [{"call": "add", "args": {"a": 2, "b": 3}, "repeat": 4}, {"call": "refuse", "args": {"reason": "no"}, "repeat": 2},
                  {"call": "no-such-tool", "args": {}}]
    }]}));
    let s = session(&report, 0);
    let node_pid = server.pid();
    assert_eq!(pid(s, "server_pid"), node_pid);
    let events = agent.wait_events("node's calls", WAIT, |ev| {
        count(
            &observed(ev, "server", node_pid),
            "tools/call",
            Some("refuse"),
            "tool_error",
        ) == 2
    });
    let ops = observed(&events, "server", node_pid);
    assert_eq!(count(&ops, "tools/call", Some("add"), "ok"), 4, "{}", summary(&ops));
    assert_eq!(count(&ops, "tools/call", Some("whoami"), "ok"), 1);
    assert_eq!(count(&ops, "initialize", None, "ok"), 1);
    let unknown = ops
        .iter()
        .find(|e| e["gen_ai.tool.name"] == "no-such-tool")
        .expect("the unknown tool call");
    assert_ne!(unknown["status"], "ok");
    for e in &ops {
        assert_eq!(e["tls"], true);
        assert_eq!(e["server"]["name"], "e2e-node-https");
        assert_eq!(e["server"]["process"]["comm"], "node");
        assert_eq!(e["client"]["name"], "py-to-node");
        assert_eq!(e["server.port"], port);
    }
    assert!(
        events.iter().all(|e| e["observer"] != "client"),
        "the Python client was not selected: {}",
        summary(&events)
    );
    let m = agent.metrics();
    assert!(m.value("mcptap_tls_hooked_files", &[("kind", "executable")]) >= 1.0);
    assert_eq!(
        m.value(
            "mcp_server_operations_total",
            &[("mcp_server_name", "e2e-node-https"), ("gen_ai_tool_name", "add")]
        ),
        4.0
    );
}

#[test]
fn client_side_only_calling_an_https_server() {
    let env = env();
    let cert = env.cert("client_only");
    let tls = cert.server_args();
    let srv = env.http_server("e2e-remote-https", &tls);
    let go = env.artifacts.join("client_only-go");
    let _ = std::fs::remove_file(&go);
    let driver = env
        .drive_command(&json!({"sessions": [{
            "url": format!("https://127.0.0.1:{}/mcp", srv.port), "ca": cert.cert, "client_name": "lonely-client",
            "start_after": go,
            "steps": [{"call": "add", "args": {"a": 1, "b": 2}, "repeat": 3}, {"call": "sleep", "args": {"seconds": 0.2}},
                      {"call": "refuse", "args": {"reason": "x"}}]
        }]}))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let client_pid = u64::from(driver.id());
    // The agent watches the client process only; the server is unknown to it.
    let agent = Agent::start(
        &env,
        "client_only",
        &["--no-discovery", "--pid", &client_pid.to_string()],
    );
    std::fs::write(&go, b"").unwrap();
    let report = mcptap_tests::parse_report("drive.py", &driver.wait_with_output().unwrap());
    let s = session(&report, 0);
    let events = agent.wait_events("the client's calls", WAIT, |ev| {
        count(
            &observed(ev, "client", client_pid),
            "tools/call",
            Some("refuse"),
            "tool_error",
        ) == 1
    });
    let ops = observed(&events, "client", client_pid);
    assert_eq!(count(&ops, "tools/call", Some("add"), "ok"), 3, "{}", summary(&ops));
    assert_eq!(count(&ops, "tools/call", Some("sleep"), "ok"), 1);
    assert_eq!(count(&ops, "initialize", None, "ok"), 1);
    for e in &ops {
        assert_eq!(e["tls"], true);
        assert_eq!(e["server"]["name"], "e2e-remote-https");
        assert_eq!(e["client"]["name"], "lonely-client");
        assert_eq!(e["server.port"], srv.port);
    }
    let sleep = ops.iter().find(|e| e["gen_ai.tool.name"] == "sleep").unwrap();
    let d = sleep["duration_s"].as_f64().unwrap();
    assert!(d >= 0.2 && d <= rtts(s, "sleep")[0] + 0.001, "client-side duration {d}");
    assert!(events.iter().all(|e| e["observer"] == "client"), "{}", summary(&events));
    let m = agent.metrics();
    assert_eq!(
        m.value(
            "mcp_client_operation_duration_seconds_count",
            &[("gen_ai_tool_name", "add")]
        ),
        3.0
    );
    assert_eq!(m.value("mcp_server_operations_total", &[]), 0.0);
}

/// Only the clients are watched: the server at the other end of their
/// loopback connection is found from the socket tables. A server restarted
/// on the same port is the new process, not the one that listened there
/// before (the agent hears of neither's exit: it does not watch them).
#[test]
fn a_watched_clients_server_restarted_on_the_same_port_is_the_new_process() {
    let env = env();
    let port = free_port();
    let start_server = || {
        env.server_command(
            "restarted",
            &format!(
                "exec '{}' http_server.py --port {port} --name e2e-restarted",
                env.python.display()
            ),
            port,
        )
    };
    // Both clients exist before the agent starts, each waiting for its go.
    let gates: Vec<std::path::PathBuf> = (0..2)
        .map(|i| env.artifacts.join(format!("restarted-go-{i}")))
        .collect();
    let drivers: Vec<std::process::Child> = gates
        .iter()
        .map(|go| {
            let _ = std::fs::remove_file(go);
            env.drive_command(&json!({"sessions": [{
                "url": format!("http://127.0.0.1:{port}/mcp"), "client_name": "restart-client", "start_after": go,
                "steps": [{"call": "add", "args": {"a": 1, "b": 2}, "repeat": 2}]
            }]}))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let pids: Vec<String> = drivers.iter().map(|d| d.id().to_string()).collect();
    let agent = Agent::start(
        &env,
        "restarted_server",
        &["--no-discovery", "--pid", &pids[0], "--pid", &pids[1]],
    );
    let mut server: Option<Server> = None;
    for (driver, go) in drivers.into_iter().zip(&gates) {
        drop(server.take()); // the first server exits; the second listens on its port
        let srv = start_server();
        let client_pid = u64::from(driver.id());
        std::fs::write(go, b"").unwrap();
        mcptap_tests::parse_report("drive.py", &driver.wait_with_output().unwrap());
        let events = agent.wait_events("the client's calls", WAIT, |ev| {
            count(&observed(ev, "client", client_pid), "tools/call", Some("add"), "ok") == 2
        });
        let ops = observed(&events, "client", client_pid);
        assert_eq!(count(&ops, "initialize", None, "ok"), 1, "{}", summary(&ops));
        for e in &ops {
            assert_eq!(e["server.port"], port, "{e}");
            assert_eq!(
                e["server"]["process"]["pid"],
                srv.pid(),
                "the server listening now, not the one before: {e}"
            );
        }
        server = Some(srv);
    }
}

#[test]
fn legacy_http_sse_transport() {
    let env = env();
    let agent = Agent::start(&env, "legacy_sse", &[]);
    let srv = env.http_server("e2e-legacy-sse", &["--transport", "sse"]);
    let report = env.drive(&json!({"sessions": [{
        "url": format!("http://127.0.0.1:{}/sse", srv.port), "transport": "sse", "client_name": "legacy-client",
        "steps": [{"call": "add", "args": {"a": 1, "b": 2}, "repeat": 3}, {"call": "refuse", "args": {"reason": "r"}},
                  {"call": "sleep", "args": {"seconds": 0.2}}]
    }]}));
    let s = session(&report, 0);
    let client_pid = pid(s, "client_pid");
    let events = agent.wait_events("legacy calls", WAIT, |ev| {
        count(&observed(ev, "server", srv.pid()), "tools/call", Some("sleep"), "ok") == 1
            && count(&observed(ev, "client", client_pid), "tools/call", Some("sleep"), "ok") == 1
    });
    for (side, ops) in [
        ("server", observed(&events, "server", srv.pid())),
        ("client", observed(&events, "client", client_pid)),
    ] {
        assert_eq!(count(&ops, "initialize", None, "ok"), 1, "{side}: {}", summary(&ops));
        assert_eq!(count(&ops, "tools/call", Some("add"), "ok"), 3, "{side}");
        assert_eq!(count(&ops, "tools/call", Some("refuse"), "tool_error"), 1, "{side}");
        for e in &ops {
            // Requests were POSTed to the endpoint; answers came on the stream.
            assert_eq!(e["url.path"], "/messages/", "{e}");
            assert_eq!(e["server"]["name"], "e2e-legacy-sse");
            assert_eq!(e["client"]["name"], "legacy-client");
        }
        let ids: std::collections::HashSet<_> = ops.iter().map(|e| e["mcp.session.id"].clone()).collect();
        assert_eq!(ids.len(), 1, "{side}: one session across the stream and the posts");
    }
}

#[test]
fn tls_server_in_its_own_mount_namespace() {
    let env = env();
    let cert = env.cert("mntns");
    // The libssl Python's ssl module uses, and a copy of it: the server
    // sees the copy at the same path, in a mount namespace of its own.
    let out = std::process::Command::new(&env.python)
        .args([
            "-c",
            "import ssl; print([l.split()[-1] for l in open('/proc/self/maps') if 'libssl.so' in l][0])",
        ])
        .output()
        .unwrap();
    let libssl = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(libssl.starts_with('/'), "libssl of python: {libssl:?}");
    let copy = env.artifacts.join("libssl-copy.so");
    std::fs::copy(&libssl, &copy).unwrap();
    // The server is selected by its port; its probes are its own (scoped),
    // attached through its root once the agent sees it listen.
    let port = free_port();
    let agent = Agent::start(&env, "mount_namespace", &["--port", &port.to_string()]);
    let hooked_before = agent
        .metrics()
        .value("mcptap_tls_hooked_files", &[("kind", "shared_library")]);
    let server = env.server_command(
        "mntns-server",
        &format!(
            "exec unshare -m sh -c 'mount --bind {copy} {libssl} && exec {python} http_server.py --port {port} --name e2e-mntns --tls-cert {cert} --tls-key {key}'",
            copy = copy.display(),
            python = env.python.display(),
            cert = cert.cert.display(),
            key = cert.key.display(),
        ),
        port,
    );
    // The agent finds the copy in the new process's maps and hooks it.
    let deadline = std::time::Instant::now() + WAIT;
    while agent
        .metrics()
        .value("mcptap_tls_hooked_files", &[("kind", "shared_library")])
        <= hooked_before
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the copy of libssl was not hooked"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = env.drive(&json!({"sessions": [{
        "url": format!("https://127.0.0.1:{port}/mcp"), "ca": cert.cert, "client_name": "ns-client",
        "steps": [{"call": "add", "args": {"a": 1, "b": 2}, "repeat": 3}]
    }]}));
    let s = session(&report, 0);
    let server_pid = pid(s, "server_pid");
    // unshare and sh exec: the server is the process the test started.
    assert_eq!(server_pid, server.pid());
    let events = agent.wait_events("namespaced server's calls", WAIT, |ev| {
        count(&observed(ev, "server", server_pid), "tools/call", Some("add"), "ok") == 3
    });
    let ops = observed(&events, "server", server_pid);
    assert!(
        ops.iter()
            .all(|e| e["tls"] == true && e["server"]["name"] == "e2e-mntns"),
        "{}",
        summary(&ops)
    );
    // Hooked for that process, on the file it maps there (reached through
    // its map_files link: the copy, not the host's library at that path).
    let log = std::fs::read_to_string(agent.dir.join("agent.log")).unwrap();
    assert!(
        log.lines().any(|l| l.contains("hooked TLS for this process")
            && l.contains(&format!("pid={server_pid}"))
            && l.contains(&libssl)),
        "hooked for the namespaced server:\n{log}"
    );
}

#[test]
fn bad_input_over_http_sockets() {
    let env = env();
    // A 1 MiB cap so that an accepted 3.5 MiB call exercises truncation.
    let agent = Agent::start(&env, "http_bad_input", &["--max-message-bytes", "1048576"]);
    let json_srv = env.http_server("e2e-raw-json", &["--json-response"]);
    let sse_srv = env.http_server("e2e-raw-sse", &[]);
    let report = env.run_peer(
        "http_raw_client.py",
        &[&json_srv.port.to_string(), &sse_srv.port.to_string()],
    );
    assert_eq!(report["answered"], report["valid_calls"], "{report}");
    assert_eq!(report["sse_answered"], report["sse_valid_calls"], "{report}");
    assert_eq!(report["echo_answered"], true);
    let valid = report["valid_calls"].as_u64().unwrap() as usize;
    let events = agent.wait_events("the calls around the junk", WAIT, |ev| {
        count(&observed(ev, "server", json_srv.pid()), "tools/call", Some("add"), "ok") == valid
            && count(&observed(ev, "server", sse_srv.pid()), "tools/call", Some("add"), "ok") == 2
    });
    let ops = observed(&events, "server", json_srv.pid());
    // Every valid call around the junk was seen, nothing else was invented.
    assert_eq!(count(&ops, "tools/call", Some("add"), "ok"), valid, "{}", summary(&ops));
    assert_eq!(count(&ops, "initialize", None, "ok"), 1);
    let echo = ops
        .iter()
        .find(|e| e["gen_ai.tool.name"] == "echo")
        .expect("the 3.5 MiB call");
    assert_eq!(echo["status"], "ok");
    assert_eq!(echo["request"]["truncated"], true, "{echo}");
    assert!(echo["request"]["bytes"].as_u64().unwrap() > 3 << 20);
    assert_eq!(echo["jsonrpc.request.id"], report["echo_id"].to_string());
    // The reset mid-stream ends that call, on the server's side too.
    let sse_ops = observed(&events, "server", sse_srv.pid());
    let reset = sse_ops
        .iter()
        .find(|e| e["gen_ai.tool.name"] == "sleep")
        .expect("the reset call");
    assert_eq!(reset["status"], "connection_closed", "{reset}");
    assert_eq!(reset["jsonrpc.request.id"], report["sse_reset_id"].to_string());
    let m = agent.metrics();
    for kind in ["bad_chunk_size", "bad_request_head", "closed_mid_message"] {
        assert!(
            m.value("mcptap_parse_errors_total", &[("kind", kind)]) >= 1.0,
            "{kind} not counted"
        );
    }
    assert!(
        m.value("mcptap_connections_not_http_total", &[]) >= 1.0,
        "binary junk not counted"
    );
    assert!(m.value("mcptap_truncated_messages_total", &[]) >= 1.0);
    assert_eq!(m.value("mcptap_capture_lost_total", &[("reason", "ringbuf_full")]), 0.0);
    // Still running, still seeing new traffic.
    let again = env.drive(
        &json!({"sessions": [{"url": format!("http://127.0.0.1:{}/mcp", json_srv.port),
        "steps": [{"call": "refuse", "args": {"reason": "after"}}]}]}),
    );
    session(&again, 0);
    agent.wait_events("a call after the junk", WAIT, |ev| {
        count(
            &observed(ev, "server", json_srv.pid()),
            "tools/call",
            Some("refuse"),
            "tool_error",
        ) == 1
    });
}

#[test]
fn payloads_over_http_are_opt_in_and_masked() {
    let env = env();
    let agent = Agent::start(&env, "http_payloads", &["--capture-payloads"]);
    let srv = env.http_server("e2e-http-payloads", &["--json-response"]);
    let token = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789";
    let report = env.drive(&json!({"sessions": [{
        "url": format!("http://127.0.0.1:{}/mcp", srv.port), "client_name": "payload-client",
        "headers": {"Authorization": format!("Bearer {token}"), "X-Trace": "trace-42"},
        "steps": [{"call": "echo", "args": {"text": format!("use {token} please")}},
                  {"call": "add", "args": {"a": 40, "b": 2}}]
    }]}));
    session(&report, 0);
    let events = agent.wait_events("payload events", WAIT, |ev| {
        count(&observed(ev, "server", srv.pid()), "tools/call", Some("add"), "ok") == 1
    });
    let ops = observed(&events, "server", srv.pid());
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(token), "the token leaked: {text}");
    let add = ops.iter().find(|e| e["gen_ai.tool.name"] == "add").unwrap();
    let headers = &add["payload"]["http.request.headers"];
    assert_eq!(headers["authorization"], "[REDACTED]", "{add}");
    assert_eq!(headers["mcp-session-id"], "[REDACTED]");
    assert_eq!(headers["x-trace"], "trace-42");
    assert_eq!(add["payload"]["params"]["arguments"]["a"], 40);
    let echo = ops.iter().find(|e| e["gen_ai.tool.name"] == "echo").unwrap();
    assert!(
        echo["payload"]["params"]["arguments"]["text"]
            .as_str()
            .unwrap()
            .contains("[REDACTED:anthropic_key]"),
        "{echo}"
    );
}
