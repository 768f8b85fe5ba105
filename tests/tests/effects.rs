//! What each call did on the host, with the real agent and real servers
//! under the official SDK clients: files read, written and deleted, a
//! program run, a connection, a listener, the CPU a call burned, each
//! attributed to its call (exactly, or as overlap when calls ran
//! together); `@modelcontextprotocol/server-filesystem` reading inside and
//! outside a policy's allowed prefix (an alert only for the latter); a real
//! git server whose tool runs `git`.

use std::{net::TcpListener, path::Path, time::Duration};

use mcptap_tests::{Agent, dns_server, env, free_port, operations_of, serve, summary};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);

// No plan pauses before its first call: drive.py's handshake and first
// call come within a few ms of each other, well inside one drain of the
// agent (10 ms), and the kernel records a stdio server's effects from its
// first request on (it marks it as serving when discovery sees JSON on its
// stdin), so the first call's effects must be there.

/// The effects of kind `kind` of an operation event.
fn effects<'a>(op: &'a Value, kind: &str) -> Vec<&'a Value> {
    op["mcp.effects"]["items"]
        .as_array()
        .map(|items| items.iter().filter(|e| e["kind"] == kind).collect())
        .unwrap_or_default()
}

fn call<'a>(ops: &'a [Value], tool: &str) -> Vec<&'a Value> {
    ops.iter()
        .filter(|e| e["observer"] == "server" && e["gen_ai.tool.name"] == tool)
        .collect()
}

fn one<'a>(ops: &'a [Value], tool: &str) -> &'a Value {
    let found = call(ops, tool);
    assert_eq!(found.len(), 1, "one {tool} call:\n{}", summary(ops));
    found[0]
}

fn dir(name: &str) -> std::path::PathBuf {
    let d = env().artifacts.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn each_calls_files_program_connection_listener_and_cpu_are_its_own() {
    let env = env();
    let d = dir("effects-calls-files");
    let input = d.join("input.txt");
    std::fs::write(&input, "hello").unwrap();
    let output = d.join("output.txt");
    let doomed = d.join("doomed.txt");
    std::fs::write(&doomed, "x").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let agent = Agent::start(&env, "effects-calls", &[]);
    let plan = json!({"sessions": [{"server": env.test_server(), "env": {"MCPTAP_TEST_EFFECTS": "1"},
    "steps": [
        {"call": "whoami", "args": {}},
        {"call": "read_file", "args": {"path": path(&input)}},
        {"call": "write_file", "args": {"path": path(&output), "text": "out"}},
        {"call": "remove_file", "args": {"path": path(&doomed)}},
        {"call": "run", "args": {"argv": ["/usr/bin/env", "true"]}},
        {"call": "connect", "args": {"port": port}},
        {"call": "listen", "args": {}},
        {"call": "burn", "args": {"ms": 200}},
        {"call": "burn_in_child", "args": {"ms": 200}},
        {"call": "add", "args": {"a": 1, "b": 2}}
    ]}]});
    let report = env.drive(&plan);
    let session = &report["sessions"][0];
    assert!(session.get("error").is_none(), "{report}");
    let pid = session["server_pid"].as_u64().expect("server pid");
    let events = agent.wait_events("the calls", WAIT, |ev| {
        operations_of(ev, pid).iter().any(|e| e["gen_ai.tool.name"] == "add")
    });
    let ops = operations_of(&events, pid);

    let read = one(&ops, "read_file");
    let reads = effects(read, "file_read");
    assert!(
        reads
            .iter()
            .any(|e| e["path"] == path(&input) && e["attribution"] == "exact" && e["pid"] == pid),
        "read_file read its file:\n{read}"
    );
    assert!(effects(read, "file_write").is_empty(), "{read}");
    let write = one(&ops, "write_file");
    assert!(
        effects(write, "file_write").iter().any(|e| e["path"] == path(&output)),
        "{write}"
    );
    assert!(
        !effects(write, "file_read").iter().any(|e| e["path"] == path(&input)),
        "{write}"
    );
    let remove = one(&ops, "remove_file");
    assert!(
        effects(remove, "file_delete")
            .iter()
            .any(|e| e["path"] == path(&doomed)),
        "{remove}"
    );

    // The program the tool ran, in a process of its own, is the call's.
    let run = one(&ops, "run");
    let execs = effects(run, "exec");
    assert!(
        execs
            .iter()
            .any(|e| e["path"] == "/usr/bin/env" && e["pid"] != pid && e["args"] == json!(["true"])),
        "run ran env:\n{run}"
    );
    assert!(effects(read, "exec").is_empty(), "{read}");

    let connect = one(&ops, "connect");
    assert!(
        effects(connect, "connect")
            .iter()
            .any(|e| e["address"] == format!("127.0.0.1:{port}")),
        "{connect}"
    );
    let listen = one(&ops, "listen");
    let listeners = effects(listen, "listen");
    assert_eq!(listeners.len(), 1, "{listen}");
    assert!(
        listeners[0]["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:") && !a.ends_with(":0")),
        "{listen}"
    );

    // ~200 ms of CPU, within ±20 %; nothing else much.
    let burn = one(&ops, "burn");
    let cpu = burn["mcp.server.cpu"]["seconds"].as_f64().expect("cpu seconds");
    assert!((0.16..=0.24).contains(&cpu), "burn spent {cpu} s:\n{burn}");
    assert_eq!(burn["mcp.server.cpu"]["attribution"], "exact");
    // The CPU of a program the call ran (and waited for) is the call's too:
    // its 200 ms, and the interpreter's start.
    let child = one(&ops, "burn_in_child");
    let cpu = child["mcp.server.cpu"]["seconds"].as_f64().expect("cpu seconds");
    assert!((0.16..=0.6).contains(&cpu), "burn_in_child spent {cpu} s:\n{child}");
    let add = one(&ops, "add");
    assert!(add["mcp.server.cpu"]["seconds"].as_f64().unwrap_or(1.0) < 0.1, "{add}");
    assert!(add["mcp.effects"].is_null(), "add does nothing on the host:\n{add}");
    // Every effect listed is the call's alone: one call at a time.
    for op in call(&ops, "read_file").iter().chain(call(&ops, "run").iter()) {
        assert_eq!(op["mcp.effects"]["attribution"], "exact", "{op}");
    }

    let m = agent.metrics();
    let server = "mcptap-test-server";
    assert!(
        m.value(
            "mcp_server_operation_effects_total",
            &[
                ("mcp_server_name", server),
                ("gen_ai_tool_name", "run"),
                ("kind", "exec")
            ]
        ) >= 1.0
    );
    assert!(
        m.value(
            "mcp_server_operation_cpu_seconds_count",
            &[("mcp_server_name", server), ("gen_ai_tool_name", "burn")]
        ) == 1.0
    );

    // The store and API: calls filtered by effect kind, CPU and effects in
    // the rankings (what the dashboard shows).
    let api = |path: &str| -> Value {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let out = std::process::Command::new("curl")
                .args(["-sf", "--unix-socket"])
                .arg(agent.api_socket())
                .arg(format!("http://mcptap{path}"))
                .output()
                .expect("curl");
            if out.status.success() {
                let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
                if v["calls"].as_array().is_none_or(|c| !c.is_empty()) {
                    return v;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{path}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let execs = api("/api/calls?window=1h&effect=exec");
    let tools: Vec<&str> = execs["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["tool"].as_str())
        .collect();
    assert!(tools.contains(&"run") && !tools.contains(&"read_file"), "{execs}");
    let summary = api("/api/summary?window=1h");
    let burn_rank = summary["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "burn")
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(burn_rank["cpu_s"].as_f64().unwrap() >= 0.16, "{burn_rank}");
    drop(listener);
    agent.stop();
}

#[test]
fn effects_of_calls_in_flight_together_are_marked_overlap() {
    let env = env();
    let d = dir("effects-overlap-files");
    let (first, second) = (d.join("first.txt"), d.join("second.txt"));
    std::fs::write(&first, "1").unwrap();
    std::fs::write(&second, "2").unwrap();
    let agent = Agent::start(&env, "effects-overlap", &[]);
    let port = free_port();
    let srv = env.server_command(
        "e2e-overlap",
        &format!(
            "MCPTAP_TEST_EFFECTS=1 exec '{}' http_server.py --port {port} --name e2e-overlap",
            env.python.display()
        ),
        port,
    );
    let url = format!("http://127.0.0.1:{port}/mcp");
    let (started, done) = (d.join("started"), d.join("done"));
    // A reads its file, then waits 3 s; B, once A is in flight, reads its
    // own: B's read happens while both are in flight.
    let plan = json!({"sessions": [
        {"url": url, "client_name": "slow", "steps": [
            {"touch": path(&started)},
            {"call": "read_slowly", "args": {"path": path(&first), "seconds": 3.0}},
            {"touch": path(&done)}]},
        {"url": url, "client_name": "quick", "steps": [
            {"wait_for_file": path(&started)}, {"sleep": 1.0},
            {"call": "read_slowly", "args": {"path": path(&second), "seconds": 0.0}}]}
    ]});
    let report = env.drive(&plan);
    for s in report["sessions"].as_array().unwrap() {
        assert!(s.get("error").is_none(), "{report}");
    }
    let events = agent.wait_events("both calls", WAIT, |ev| {
        call(&operations_of(ev, srv.pid()), "read_slowly").len() >= 2
    });
    let ops = operations_of(&events, srv.pid());
    let of = |client: &str| -> &Value {
        call(&ops, "read_slowly")
            .into_iter()
            .find(|e| e["client"]["name"] == client)
            .unwrap_or_else(|| panic!("no {client} call:\n{}", summary(&ops)))
    };
    let (slow, quick) = (of("slow"), of("quick"));
    let reads_of = |op: &Value, p: &Path| -> Vec<String> {
        effects(op, "file_read")
            .iter()
            .filter(|e| e["path"] == path(p))
            .map(|e| e["attribution"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(reads_of(slow, &first), ["exact"], "{slow}");
    assert_eq!(
        reads_of(slow, &second),
        ["overlap"],
        "the quick call's read happened during the slow one:\n{slow}"
    );
    assert_eq!(reads_of(quick, &second), ["overlap"], "{quick}");
    assert!(reads_of(quick, &first).is_empty(), "{quick}");
    assert_eq!(slow["mcp.effects"]["attribution"], "overlap");
    assert_eq!(slow["mcp.server.cpu"]["attribution"], "overlap");
    agent.stop();
}

#[test]
fn the_filesystem_server_alerts_only_outside_the_policy_prefix() {
    let env = env();
    let d = dir("effects-filesystem-files");
    let (inside, outside) = (d.join("inside"), d.join("outside"));
    std::fs::create_dir_all(&inside).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(inside.join("ok.txt"), "fine").unwrap();
    std::fs::write(outside.join("secret.txt"), "not for this server").unwrap();
    let policy = d.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[[server]]\nname = \"secure-filesystem-server\"\nowner = \"platform\"\n[server.effects]\nread = [\"{}\"]\nexec = []\n",
            inside.display()
        ),
    )
    .unwrap();
    let agent = Agent::start(&env, "effects-filesystem", &["--policy", path(&policy)]);
    let server = env
        .peers
        .join("node_modules/@modelcontextprotocol/server-filesystem/dist/index.js");
    let plan = json!({"sessions": [{"server": ["node", path(&server), path(&inside), path(&outside)],
    "client_name": "fs-client",
    "steps": [
        {"call": "list_allowed_directories", "args": {}},
        {"call": "read_text_file", "args": {"path": path(&inside.join("ok.txt"))}},
        {"call": "read_text_file", "args": {"path": path(&outside.join("secret.txt"))}}
    ]}]});
    let report = env.drive(&plan);
    let session = &report["sessions"][0];
    assert!(session.get("error").is_none(), "{report}");
    let outcomes: Vec<&str> = session["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["outcome"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(outcomes, ["ok", "ok", "ok"], "{report}");
    let events = agent.wait_events("the reads and the alert", WAIT, |ev| {
        ev.iter().any(|e| e["alert"]["kind"] == "effect_outside_scope")
            && ev
                .iter()
                .filter(|e| e["gen_ai.tool.name"] == "read_text_file" && e["observer"] == "server")
                .count()
                >= 2
    });
    let reads: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["event.type"] == "mcp.operation" && e["observer"] == "server" && e["gen_ai.tool.name"] == "read_text_file"
        })
        .collect();
    assert_eq!(reads.len(), 2, "{}", summary(&events));
    let read_paths = |op: &Value| -> Vec<String> {
        effects(op, "file_read")
            .iter()
            .filter_map(|e| e["path"].as_str().map(str::to_string))
            .collect()
    };
    let inside_file = inside.join("ok.txt").display().to_string();
    let outside_file = outside.join("secret.txt").display().to_string();
    let inside_op = reads
        .iter()
        .find(|e| read_paths(e).contains(&inside_file))
        .unwrap_or_else(|| panic!("no read of {inside_file}: {reads:?}"));
    let outside_op = reads
        .iter()
        .find(|e| read_paths(e).contains(&outside_file))
        .unwrap_or_else(|| panic!("no read of {outside_file}: {reads:?}"));
    let alerts: Vec<&Value> = events
        .iter()
        .filter(|e| e["event.type"] == "mcp.alert" && e["alert"]["kind"] == "effect_outside_scope")
        .collect();
    assert_eq!(alerts.len(), 1, "one alert, for the read outside:\n{alerts:?}");
    let a = alerts[0];
    assert_eq!(a["jsonrpc.request.id"], outside_op["jsonrpc.request.id"], "{a}");
    assert_ne!(a["jsonrpc.request.id"], inside_op["jsonrpc.request.id"], "{a}");
    assert_eq!(a["alert"]["effect"]["path"], outside_file, "{a}");
    assert_eq!(
        a["alert"]["rule"], "server[1] secure-filesystem-server effects.read",
        "{a}"
    );
    assert_eq!(a["alert"]["owner"], "platform");
    assert_eq!(a["client"]["name"], "fs-client");
    let message = a["alert"]["message"].as_str().unwrap();
    assert!(
        message.contains("read_text_file") && message.contains("fs-client") && message.contains("secret.txt"),
        "{message}"
    );
    agent.stop();
}

#[test]
fn a_git_servers_tool_runs_git_and_the_call_shows_it() {
    let env = env();
    let d = dir("effects-git-files");
    let repo = d.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        let status = std::process::Command::new("git")
            .args(args)
            .current_dir(&repo)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", &d)
            .status()
            .expect("git");
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    std::fs::write(repo.join("README"), "hi").unwrap();
    let agent = Agent::start(&env, "effects-git", &[]);
    // The agent is stopped (SIGSTOP) from before the server starts until
    // after its first call: the server's first request, that call and its
    // effects all wait in the ring buffer, so the kernel alone must have
    // known the server's effects are worth recording (the race of a call
    // that follows the first request within one drain, made certain).
    let (called, resumed) = (d.join("called"), d.join("resumed"));
    let plan = json!({"sessions": [{"server": [env.python.display().to_string(), "-m", "mcp_server_git", "--repository", path(&repo)],
        "env": {"HOME": path(&d)},
        "steps": [{"call": "git_status", "args": {"repo_path": path(&repo)}},
                  {"touch": path(&called)}, {"wait_for_file": path(&resumed)}, {"sleep": 0.5}]}]});
    agent.signal(libc::SIGSTOP);
    let report = std::thread::scope(|s| {
        s.spawn(|| {
            let deadline = std::time::Instant::now() + WAIT;
            while !called.exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            agent.signal(libc::SIGCONT);
            std::fs::write(&resumed, "").unwrap();
        });
        env.drive(&plan)
    });
    let session = &report["sessions"][0];
    assert!(session.get("error").is_none(), "{report}");
    assert_eq!(session["steps"][0]["outcome"], "ok", "{report}");
    let events = agent.wait_events("git_status", WAIT, |ev| {
        ev.iter()
            .any(|e| e["gen_ai.tool.name"] == "git_status" && e["observer"] == "server")
    });
    let op = events
        .iter()
        .find(|e| e["gen_ai.tool.name"] == "git_status" && e["observer"] == "server")
        .unwrap();
    let execs = effects(op, "exec");
    assert!(
        execs
            .iter()
            .any(|e| e["path"].as_str().is_some_and(|p| p.ends_with("/git"))
                && e["args"].as_array().is_some_and(|a| a.iter().any(|x| x == "status"))),
        "git_status ran git status:\n{op}"
    );
    assert_eq!(op["server"]["name"], "mcp-git");
    agent.stop();
}

#[test]
fn connections_carry_the_host_name_resolved_or_sent_and_the_policy_checks_it() {
    let env = env();
    let d = dir("effects-hosts-files");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dns = dns_server([127, 0, 0, 88], stop.clone());
    let db = TcpListener::bind("127.0.0.88:0").unwrap();
    let db_port = db.local_addr().unwrap().port();
    serve(db, b"");
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let web_port = web.local_addr().unwrap().port();
    serve(web, b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
    let tls = TcpListener::bind("127.0.0.1:0").unwrap();
    let tls_port = tls.local_addr().unwrap().port();
    serve(tls, b"");
    // Names under mcptap.test and the DNS server are the server's
    // destinations: only the call to another name is outside.
    let policy = d.join("policy.toml");
    std::fs::write(
        &policy,
        "[[server]]\nname = \"mcptap-test-server\"\n[server.effects]\nconnect = [\"127.0.0.77:53\", \"*.mcptap.test\"]\n",
    )
    .unwrap();
    let agent = Agent::start(&env, "effects-hosts", &["--policy", path(&policy)]);
    let plan = json!({"sessions": [{"server": env.test_server(), "env": {"MCPTAP_TEST_EFFECTS": "1"},
    "client_name": "hosts-client",
    "steps": [
        {"call": "resolve_and_connect", "args": {"resolver": "127.0.0.77", "name": "db.mcptap.test", "port": db_port}},
        {"call": "http_get", "args": {"port": web_port, "host": "api.mcptap.test"}},
        {"call": "tls_hello", "args": {"port": tls_port, "host": "tls.mcptap.test"}},
        {"call": "http_get", "args": {"port": web_port, "host": "elsewhere.example"}},
        {"call": "add", "args": {"a": 1, "b": 2}}
    ]}]});
    let report = env.drive(&plan);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(dns.join().unwrap(), 1, "the DNS server answered once");
    let session = &report["sessions"][0];
    assert!(session.get("error").is_none(), "{report}");
    let pid = session["server_pid"].as_u64().expect("server pid");
    let events = agent.wait_events("the calls and the alert", WAIT, |ev| {
        operations_of(ev, pid).iter().any(|e| e["gen_ai.tool.name"] == "add")
            && ev.iter().any(|e| e["alert"]["kind"] == "effect_outside_scope")
    });
    let ops = operations_of(&events, pid);
    let connects = |op: &Value| -> Vec<(String, String, String)> {
        effects(op, "connect")
            .iter()
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                (s("address"), s("host"), s("host_from"))
            })
            .collect()
    };
    let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());

    // Resolved: the DNS server's socket, then the address it answered,
    // named after the question.
    let resolved = one(&ops, "resolve_and_connect");
    assert_eq!(
        connects(resolved),
        [
            s("127.0.0.77:53", "", ""),
            s(&format!("127.0.0.88:{db_port}"), "db.mcptap.test", "dns")
        ],
        "{resolved}"
    );
    // Sent: the HTTP Host (port left out), the TLS server name.
    let gets = call(&ops, "http_get");
    assert_eq!(gets.len(), 2, "{}", summary(&ops));
    let web_addr = format!("127.0.0.1:{web_port}");
    assert_eq!(
        connects(gets[0]),
        [s(&web_addr, "api.mcptap.test", "http")],
        "{}",
        gets[0]
    );
    assert_eq!(
        connects(gets[1]),
        [s(&web_addr, "elsewhere.example", "http")],
        "{}",
        gets[1]
    );
    let hello = one(&ops, "tls_hello");
    assert_eq!(
        connects(hello),
        [s(&format!("127.0.0.1:{tls_port}"), "tls.mcptap.test", "sni")],
        "{hello}"
    );

    // The policy reads the names: one alert, for the other name.
    let alerts: Vec<&Value> = events
        .iter()
        .filter(|e| e["event.type"] == "mcp.alert" && e["alert"]["kind"] == "effect_outside_scope")
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        alerts[0]["jsonrpc.request.id"], gets[1]["jsonrpc.request.id"],
        "{}",
        alerts[0]
    );
    assert_eq!(
        alerts[0]["alert"]["effect"]["host"], "elsewhere.example",
        "{}",
        alerts[0]
    );
    assert_eq!(alerts[0]["client"]["name"], "hosts-client");

    // Counted (the counters follow the agent's tick).
    agent.wait_metric("mcptap_effect_names_total", &[("outcome", "dns_answer")], 1.0, WAIT);
    agent.wait_metric("mcptap_effect_names_total", &[("outcome", "hello_named")], 3.0, WAIT);
    assert_eq!(
        agent
            .metrics()
            .value("mcptap_effect_names_total", &[("outcome", "hello_late")]),
        0.0
    );
    agent.stop();
}
