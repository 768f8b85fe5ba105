//! The smoke suite: what must work on every kernel mcptap supports. `cargo
//! xtask test` runs it on this host's kernel with the other end-to-end
//! tests, and inside each stock kernel of the matrix (5.10, 6.1, 6.12,
//! booted under QEMU) twice: with the hook family the kernel allows (fexit)
//! and forced onto the fallback (the raw `sys_exit` tracepoint). Real agent,
//! real eBPF programs, real peers; exact counts and statuses.
//!
//! Its client is the official Python SDK's (drive.py); its servers are
//! light (the standard-library stdio server tests/peers/lean_server.py,
//! the Go server of tests/peers/go): under software emulation the SDK's
//! import alone takes 15-25 s, and what the matrix tests is the kernel
//! side. The SDKs' servers are exercised on this host by the other suites.

use std::{path::Path, process::Command, time::Duration};

use mcptap_tests::{
    Agent, count, dns_server, env, expected_hook_family, hooks_under_test, observed, operations_of, parse_report,
    serve, summary,
};
use serde_json::{Value, json};

/// Generous: everything runs ~10× slower under software emulation.
const WAIT: Duration = Duration::from_secs(120);

fn session(report: &Value, i: usize) -> &Value {
    let s = &report["sessions"][i];
    assert!(s.get("error").is_none(), "the client failed: {s}");
    s
}

fn pid(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// The agent runs the hook family the kernel matrix expects, and says so.
fn assert_hook_family(agent: &Agent) {
    let m = agent.metrics();
    let family = ["fexit", "tracepoint"]
        .into_iter()
        .find(|f| m.value("mcptap_capture_hooks_info", &[("family", f)]) == 1.0)
        .unwrap_or_else(|| panic!("no mcptap_capture_hooks_info series:\n{}", m.0));
    if let Some(expected) = expected_hook_family() {
        assert_eq!(family, expected, "hook family (--hooks {:?})", hooks_under_test());
    }
    if hooks_under_test().as_deref() == Some("tracepoint") {
        assert_eq!(
            m.value(
                "mcptap_capture_hooks_info",
                &[("family", "tracepoint"), ("reason", "forced")]
            ),
            1.0
        );
    }
}

fn steps() -> Value {
    json!([
        {"list_tools": true},
        {"call": "add", "args": {"a": 1, "b": 2}, "repeat": 3},
        {"call": "refuse", "args": {"reason": "not allowed"}, "repeat": 2},
        {"call": "blob", "args": {"mib": 4}},
        {"ping": true}
    ])
}

/// The exact outcomes of `steps()` (after the driver's own `whoami`).
fn assert_outcomes(ops: &[Value], what: &str) {
    let call = |tool, status| count(ops, "tools/call", Some(tool), status);
    assert_eq!(call("whoami", "ok"), 1, "{what}:\n{}", summary(ops));
    assert_eq!(call("add", "ok"), 3, "{what}:\n{}", summary(ops));
    assert_eq!(call("refuse", "tool_error"), 2, "{what}:\n{}", summary(ops));
    assert_eq!(call("blob", "ok"), 1, "{what}:\n{}", summary(ops));
    assert_eq!(count(ops, "ping", None, "ok"), 1, "{what}:\n{}", summary(ops));
    let lists = count(ops, "tools/list", None, "ok");
    assert!(lists >= 1, "{what}");
    let handshake = count(ops, "initialize", None, "ok");
    assert_eq!(handshake, 1, "{what}:\n{}", summary(ops));
    assert_eq!(
        ops.len(),
        8 + lists + handshake,
        "{what}: nothing else:\n{}",
        summary(ops)
    );
    // The 4 MiB result arrived whole: several wide chunks on kernels without
    // bpf_loop, hundreds of chunks with it.
    let blob = ops.iter().find(|e| e["gen_ai.tool.name"] == "blob").unwrap();
    assert!(blob["response"]["bytes"].as_u64().unwrap() > 4 << 20, "{blob}");
}

/// Every transport at once, one agent (each agent start is the slowest
/// step under software emulation: the verifier): two stdio servers side
/// by side, Streamable HTTP on loopback, and the same over TLS (the
/// client's OpenSSL, the Go server's crypto/tls), each driven by the
/// official Python SDK client; both ends of the HTTP ones.
#[test]
fn stdio_http_and_tls_with_the_python_sdk() {
    let env = env();
    let agent = Agent::start(&env, "smoke_transports", &["--tls-discovery"]);
    assert_hook_family(&agent);
    let cert = env.cert("smoke-https");
    let http = env.go_server_plain("smoke-http");
    let https = env.go_server("server", "smoke-https", &cert);
    let plan = json!({"sessions": [
        {"server": env.lean_server(), "env": {"MCPTAP_TEST_SERVER_NAME": "smoke-stdio-a"},
         "client_name": "smoke-client-a", "steps": steps()},
        {"server": env.lean_server(), "env": {"MCPTAP_TEST_SERVER_NAME": "smoke-stdio-b"},
         "client_name": "smoke-client-b", "steps": steps()},
        {"url": format!("http://127.0.0.1:{}/mcp", http.port),
         "client_name": "client-of-smoke-http", "steps": steps()},
        {"url": format!("https://127.0.0.1:{}/mcp", https.port), "ca": cert.cert,
         "client_name": "client-of-smoke-https", "steps": steps()},
    ]});
    let report = env.drive(&plan);

    for (i, name) in ["smoke-stdio-a", "smoke-stdio-b"].into_iter().enumerate() {
        let server = pid(session(&report, i), "server_pid");
        let events = agent.wait_events(name, WAIT, |ev| {
            operations_of(ev, server).iter().any(|e| e["mcp.method.name"] == "ping")
        });
        let ops = operations_of(&events, server);
        assert_outcomes(&ops, name);
        for e in &ops {
            assert_eq!(e["network.transport"], "pipe", "{e}");
            assert_eq!(e["server"]["name"], name, "{e}");
        }
    }
    for (i, (server, name, tls)) in [(&http, "smoke-http", false), (&https, "smoke-https", true)]
        .into_iter()
        .enumerate()
    {
        let s = session(&report, 2 + i);
        assert_eq!(pid(s, "server_pid"), server.pid());
        let client = pid(s, "client_pid");
        let events = agent.wait_events(name, WAIT, |ev| {
            let done = |ops: Vec<Value>| {
                ops.iter()
                    .any(|e| e["mcp.method.name"] == "ping" && e["server"]["name"] == name)
            };
            done(observed(ev, "server", server.pid())) && done(observed(ev, "client", client))
        });
        // One client process drives both HTTP sessions: its events are
        // told apart by the server they name.
        let of = |side: &str, pid: u64| -> Vec<Value> {
            observed(&events, side, pid)
                .into_iter()
                .filter(|e| e["server"]["name"] == name)
                .collect()
        };
        let (server_ops, client_ops) = (of("server", server.pid()), of("client", client));
        assert_outcomes(&server_ops, &format!("{name}, server side"));
        assert_outcomes(&client_ops, &format!("{name}, client side"));
        for e in server_ops.iter().chain(&client_ops) {
            assert_eq!(e["network.transport"], "tcp", "{e}");
            assert_eq!(e["tls"], tls, "{e}");
            assert_eq!(e["server.port"], server.port, "{e}");
            assert_eq!(e["http.response.status_code"], 200, "{e}");
        }
    }
    let m = agent.metrics();
    assert_eq!(m.value("mcptap_capture_lost_total", &[]), 0.0, "no capture loss");
    assert!(m.value("mcptap_tls_hooked_files", &[("kind", "shared_library")]) >= 1.0);
    agent.stop();
}

/// What a call did on the host, on this kernel's hooks: the file a tool
/// read and the program it ran (in a process of its own), each the call's.
/// The compat object's raw tracepoint (Linux 5.10 to 5.16, forced onto the
/// fallback) records no syscall effects: there the test checks that none
/// are claimed, and the program run is still seen (exec tracepoint).
#[test]
fn a_calls_file_and_program_are_its_own() {
    let env = env();
    let agent = Agent::start(&env, "smoke_effects", &[]);
    assert_hook_family(&agent);
    let m = agent.metrics();
    let syscall_effects = m.value(
        "mcptap_capture_hooks_info",
        &[("family", "tracepoint"), ("kernel_object", "compat")],
    ) != 1.0;
    let dir = env.artifacts.join("smoke-effects-files");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("input.txt");
    std::fs::write(&input, "hello").unwrap();
    let python = env.python.display().to_string();
    // A DNS server and a web server on loopback: the connection's host
    // name, resolved and sent.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dns = dns_server([127, 0, 0, 1], stop.clone());
    let web = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let web_port = web.local_addr().unwrap().port();
    serve(web, b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
    let plan = json!({"sessions": [{"server": env.lean_server(),
    "steps": [
        {"call": "read_file", "args": {"path": input}},
        {"call": "run", "args": {"argv": [python, "-c", "pass"]}},
        {"call": "resolve_and_connect", "args": {"resolver": "127.0.0.77", "name": "web.mcptap.test", "port": web_port}},
        {"call": "http_get", "args": {"port": web_port, "host": "api.mcptap.test"}},
        {"call": "add", "args": {"a": 1, "b": 2}}
    ]}]});
    let report = env.drive(&plan);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = dns.join();
    let server = pid(session(&report, 0), "server_pid");
    let events = agent.wait_events("the calls", WAIT, |ev| {
        operations_of(ev, server).iter().any(|e| e["gen_ai.tool.name"] == "add")
    });
    let ops = operations_of(&events, server);
    let op = |tool: &str| -> Value {
        ops.iter()
            .find(|e| e["gen_ai.tool.name"] == tool)
            .cloned()
            .unwrap_or_else(|| panic!("no {tool}:\n{}", summary(&ops)))
    };
    let items = |e: &Value, kind: &str| -> Vec<Value> {
        e["mcp.effects"]["items"]
            .as_array()
            .map(|v| v.iter().filter(|i| i["kind"] == kind).cloned().collect())
            .unwrap_or_default()
    };
    let (read, run) = (op("read_file"), op("run"));
    let input = input.display().to_string();
    let execs = items(&run, "exec");
    assert!(
        execs.iter().any(|e| e["pid"] != server
            && e["attribution"] == "exact"
            && e["path"].as_str().is_some_and(|p| p.contains("python"))),
        "run ran python:\n{run}"
    );
    if syscall_effects {
        assert!(
            items(&read, "file_read")
                .iter()
                .any(|e| e["path"] == input.as_str() && e["attribution"] == "exact"),
            "read_file read {input}:\n{read}"
        );
        assert!(
            execs.iter().any(|e| e["args"] == json!(["-c", "pass"])),
            "the program's arguments:\n{run}"
        );
        let web = format!("127.0.0.1:{web_port}");
        let named = |tool: &str| -> Vec<(String, String)> {
            items(&op(tool), "connect")
                .iter()
                .filter(|e| e["address"] == web.as_str())
                .map(|e| {
                    let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                    (s("host"), s("host_from"))
                })
                .collect()
        };
        assert_eq!(
            named("resolve_and_connect"),
            [("web.mcptap.test".to_string(), "dns".to_string())],
            "{}",
            op("resolve_and_connect")
        );
        assert_eq!(
            named("http_get"),
            [("api.mcptap.test".to_string(), "http".to_string())],
            "{}",
            op("http_get")
        );
    } else {
        assert!(items(&read, "file_read").is_empty(), "{read}");
    }
    assert!(
        items(&run, "file_read").iter().all(|e| e["path"] != input.as_str()),
        "{run}"
    );
    agent.stop();
}

/// A process whose first stdin read is not JSON is not looked at again
/// until it execs: what keeps processes that read stdin all day from
/// paying for discovery. The program it execs is looked at afresh.
#[test]
fn stdin_is_looked_at_once_per_program() {
    let env = env();
    let agent = Agent::start(&env, "smoke_first_read", &[]);
    let server_script = env.peers.join("lean_server.py");
    let report = env.run_peer(
        "stdin_first_read.py",
        &[env.python.to_str().unwrap(), server_script.to_str().unwrap()],
    );
    assert_eq!(report["answered"], 3, "{report}");
    let (stays, execs) = (pid(&report, "stays_pid"), pid(&report, "execs_pid"));
    let events = agent.wait_events("the exec'd server's calls", WAIT, |ev| {
        operations_of(ev, execs).iter().any(|e| e["mcp.method.name"] == "ping")
    });
    let ops = operations_of(&events, execs);
    assert_eq!(count(&ops, "initialize", None, "ok"), 1, "{}", summary(&ops));
    assert_eq!(count(&ops, "tools/call", Some("add"), "ok"), 1, "{}", summary(&ops));
    assert_eq!(count(&ops, "ping", None, "ok"), 1, "{}", summary(&ops));
    assert_eq!(ops.len(), 3, "{}", summary(&ops));
    let events = agent.stop();
    // Tracked, the first process's unanswered initialize would have ended
    // as server_exited when it exited.
    let stayed: Vec<&Value> = events
        .iter()
        .filter(|e| e["server"]["process"]["pid"].as_u64() == Some(stays))
        .collect();
    assert!(stayed.is_empty(), "the ruled-out process was tracked: {stayed:?}");
}

/// With the agent stopped, a 4 MiB result cannot fit a 1 MiB ring buffer:
/// the loss is counted, and the calls after it are whole again.
#[test]
fn ring_buffer_losses_are_counted_and_survived() {
    let env = env();
    let agent = Agent::start(&env, "smoke_loss", &["--ring-buffer-mib", "1"]);
    let dir = agent.dir.clone();
    let (go, blob_done, resume) = (dir.join("go"), dir.join("blob-done"), dir.join("resume"));
    let plan = json!({"sessions": [{
    "server": env.lean_server(), "env": {"MCPTAP_TEST_SERVER_NAME": "smoke-loss"},
    "client_name": "smoke-loss-client",
    "steps": [
        {"wait_for_file": go},
        {"call": "blob", "args": {"mib": 4}},
        {"touch": blob_done},
        {"wait_for_file": resume},
        {"call": "add", "args": {"a": 1, "b": 2}, "repeat": 2},
        {"ping": true}
    ]}]});
    let driver = env
        .drive_command(&plan)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("drive.py");
    // The server is tracked once its handshake and whoami are events.
    let events = agent.wait_events("smoke-loss whoami", WAIT, |ev| {
        ev.iter()
            .any(|e| e["server"]["name"] == "smoke-loss" && e["gen_ai.tool.name"] == "whoami")
    });
    let server = events
        .iter()
        .find(|e| e["server"]["name"] == "smoke-loss")
        .and_then(|e| e["server"]["process"]["pid"].as_u64())
        .unwrap();
    agent.signal(libc::SIGSTOP);
    std::fs::write(&go, "").unwrap();
    wait_for(&blob_done);
    agent.signal(libc::SIGCONT);
    std::fs::write(&resume, "").unwrap();
    let out = driver.wait_with_output().expect("drive.py");
    let report = parse_report("drive.py", &out);
    session(&report, 0);
    let events = agent.wait_events("the calls after the loss", WAIT, |ev| {
        operations_of(ev, server).iter().any(|e| e["mcp.method.name"] == "ping")
    });
    let ops = operations_of(&events, server);
    assert_eq!(count(&ops, "tools/call", Some("add"), "ok"), 2, "{}", summary(&ops));
    assert_eq!(count(&ops, "ping", None, "ok"), 1, "{}", summary(&ops));
    // The kernel's counters are exported on a timer: the loss shows within
    // a few of its ticks.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = agent.metrics();
        if m.value("mcptap_capture_lost_total", &[("reason", "ringbuf_full")]) > 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the loss was never counted:\n{}",
            m.0
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    agent.stop();
}

fn wait_for(path: &Path) {
    let deadline = std::time::Instant::now() + WAIT;
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A kernel mcptap cannot run on is reported in one line that says what
/// is missing: here, a kernel without BTF (hidden from mcptap by a tmpfs
/// over /sys/kernel/btf in a mount namespace of its own).
#[test]
fn a_kernel_without_btf_is_one_clear_line() {
    let env = env();
    for command in [
        "check",
        "run --metrics-addr off --events /dev/null --api-socket off --state-dir /tmp/mcptap-nobtf",
    ] {
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs none /sys/kernel/btf && exec '{}' {command}",
                env.agent.display()
            ))
            .output()
            .expect("unshare");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command}: {stderr}");
        // The error is one line; anything else is the agent's own log lines
        // from before it touched the kernel (timestamped).
        let (errors, others): (Vec<&str>, Vec<&str>) = stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .partition(|l| l.starts_with("mcptap: "));
        assert_eq!(errors.len(), 1, "{command}: one error line:\n{stderr}");
        assert!(
            errors[0].contains("exposes no BTF") && errors[0].contains("CONFIG_DEBUG_INFO_BTF"),
            "{command}: {stderr}"
        );
        assert!(others.iter().all(|l| l.starts_with("20")), "{command}: {stderr}");
    }
}
