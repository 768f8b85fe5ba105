//! HTTPS reach from **first contact**, with the agent run without flags:
//! each TLS stack, server side and client side, with real peers, every
//! program started fresh (a new process, a port the agent never saw, an
//! agent with a new state directory, no warm-up run). The very first run
//! of each pairing must be seen whole, from both sides, exactly: every
//! call, its status, its addresses. What makes it possible: the exec gate
//! reads a compiled program before it first runs, and an interpreter's
//! import of an MCP SDK is seen before its first TLS byte (docs/tls.md).

use std::time::Duration;

use std::process::Command;

use mcptap_tests::{Agent, Cert, Env, Server, assert_exactly, env, now_seconds, observed, parse_report, unix_seconds};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// The client's pid in a driver's or the Go client's report.
fn client_pid(report: &Value) -> u64 {
    report["client_pid"]
        .as_u64()
        .or_else(|| report["sessions"][0]["client_pid"].as_u64())
        .unwrap_or_else(|| panic!("no client pid: {report}"))
}

/// The Python SDK client's plan against `url`.
fn python_plan(url: &str, cert: &Cert, client: &str) -> Value {
    json!({"sessions": [{
        "url": url, "ca": cert.cert, "client_name": client,
        "steps": [{"call": "add", "args": {"a": 1, "b": 2}, "repeat": 3},
                  {"call": "refuse", "args": {"reason": "no"}}]
    }]})
}

/// What the Python SDK client does with `python_plan`: initialize, `whoami`
/// (the driver learns the server's pid), `tools/list` (the SDK reads the
/// tools' output schemas), three `add`, one `refuse`.
const PYTHON_PLAN_OPS: &[(&str, Option<&str>, &str, usize)] = &[
    ("initialize", None, "ok", 1),
    ("tools/call", Some("whoami"), "ok", 1),
    ("tools/list", None, "ok", 1),
    ("tools/call", Some("add"), "ok", 3),
    ("tools/call", Some("refuse"), "tool_error", 1),
];

/// What the Go client does with `-calls 3`.
const GO_CLIENT_OPS: &[(&str, Option<&str>, &str, usize)] = &[
    ("initialize", None, "ok", 1),
    ("tools/call", Some("whoami"), "ok", 1),
    ("tools/list", None, "ok", 1),
    ("tools/call", Some("add"), "ok", 3),
    ("tools/call", Some("refuse"), "tool_error", 1),
    ("ping", None, "ok", 1),
];

/// One client run seen from both sides: the client's operations (by its
/// pid) and the server's (by its pid, those since `since`: the run's
/// start), exactly `expected` on each side, with the same names and
/// addresses.
#[allow(clippy::too_many_arguments)]
fn assert_both_sides(
    agent: &Agent,
    what: &str,
    since: f64,
    client_pid: u64,
    server_pid: u64,
    port: u16,
    server_name: &str,
    client_name: &str,
    expected: &[(&str, Option<&str>, &str, usize)],
) {
    let total: usize = expected.iter().map(|e| e.3).sum();
    let in_session = |events: &[Value], side: &str, pid: u64| -> Vec<Value> {
        observed(events, side, pid)
            .into_iter()
            .filter(|e| side == "client" || e["time"].as_str().and_then(unix_seconds).is_some_and(|t| t >= since))
            .collect()
    };
    agent.wait_events(what, WAIT, |ev| {
        in_session(ev, "client", client_pid).len() >= total && in_session(ev, "server", server_pid).len() >= total
    });
    // Late duplicates would show up here.
    std::thread::sleep(Duration::from_millis(300));
    for side in ["client", "server"] {
        let pid = if side == "client" { client_pid } else { server_pid };
        let ops = in_session(&agent.events(), side, pid);
        assert_exactly(&ops, expected, &format!("{what}, {side} side"));
        for e in &ops {
            assert_eq!(e["tls"], true, "{e}");
            assert_eq!(e["server.port"], port, "{e}");
            assert_eq!(e["server"]["name"], server_name, "{e}");
            assert_eq!(e["client"]["name"], client_name, "{e}");
            assert_eq!(e["server"]["process"]["pid"], server_pid, "{e}");
            assert_eq!(e["http.response.status_code"], 200, "{e}");
            if side == "client" || !e["client"]["process"]["pid"].is_null() {
                assert_eq!(e["client"]["process"]["pid"], client_pid, "{e}");
            }
        }
        // On loopback the agent names the process at the other end; the
        // server may answer a new connection before the client's end of it
        // is known (the first request of each connection).
        let named = ops
            .iter()
            .filter(|e| e["client"]["process"]["pid"] == client_pid)
            .count();
        assert!(
            named + 2 >= ops.len(),
            "{what}, {side} side: the client process named on {named} of {}",
            ops.len()
        );
    }
}

/// One run of the Python SDK client's `plan` against `srv` (named
/// `name`), as `client`: seen whole from both sides.
fn python_run_seen_whole(env: &Env, agent: &Agent, plan: &Value, srv: &Server, name: &str, client: &str, what: &str) {
    let since = now_seconds();
    let report = env.drive(plan);
    let s = &report["sessions"][0];
    assert!(s.get("error").is_none(), "the client failed: {s}");
    assert_eq!(s["server_pid"].as_u64(), Some(srv.pid()));
    assert_both_sides(
        agent,
        what,
        since,
        client_pid(&report),
        srv.pid(),
        srv.port,
        name,
        client,
        PYTHON_PLAN_OPS,
    );
}

#[test]
fn go_https_server_plain_stripped_and_pie_seen_from_both_sides() {
    let env = env();
    let agent = Agent::start(&env, "tls_go_server", &[]);
    let cert = env.cert("go_server");
    for build in ["server", "server-stripped", "server-pie"] {
        let name = format!("e2e-go-{build}");
        let srv = env.go_server(build, &name, &cert);
        let url = format!("https://127.0.0.1:{}/mcp", srv.port);
        let plan = python_plan(&url, &cert, &format!("py-to-{build}"));
        python_run_seen_whole(
            &env,
            &agent,
            &plan,
            &srv,
            &name,
            &format!("py-to-{build}"),
            &format!("Go {build} called by the Python SDK"),
        );
    }
    let m = agent.metrics();
    assert_eq!(
        m.value("mcptap_tls_hooked_files", &[("library", "go")]),
        3.0,
        "each Go server's executable carries the probes"
    );
    assert_eq!(m.value("mcptap_tls_unsupported_binaries", &[]), 0.0);
    assert_eq!(m.value("mcptap_capture_lost_total", &[]), 0.0);
}

/// A Go server's executable rewritten in place between two runs (`cp` of
/// another build over it: same device and inode, another program). The
/// probes on it for every process that runs it (pinned by discovery, or
/// host-wide) were at the first build's offsets: they go as soon as the
/// agent sees the change, the file is read again, and the second build's
/// run is seen whole. (With the old
/// probes left in place, the second build panics in crypto/tls: a probe at
/// an offset of the other build breaks the program.)
#[test]
fn a_go_server_rewritten_in_place_is_read_again() {
    let env = env();
    rewritten_in_place(&env, "tls_go_rewritten", &[]);
    // The host-wide mode: probes on every TLS file for every process.
    rewritten_in_place(&env, "tls_go_rewritten_host_wide", &["--tls-discovery"]);
}

fn rewritten_in_place(env: &Env, label: &str, args: &[&str]) {
    use std::os::unix::fs::MetadataExt;
    let agent = Agent::start(env, label, args);
    let cert = env.cert(label);
    let exe = env.artifacts.join(format!("{label}-server"));
    let _ = std::fs::remove_file(&exe);
    let mut inode = None;
    for build in ["server", "server-pie"] {
        // std::fs::copy truncates and writes an existing file: same inode.
        std::fs::copy(env.go_peers.join(build), &exe).expect("copy the Go server");
        let ino = std::fs::metadata(&exe).unwrap().ino();
        assert_eq!(*inode.get_or_insert(ino), ino, "rewritten in place");
        if build == "server-pie" {
            // The old probes are gone before the new build runs (a run
            // that starts sooner meets them: see docs/tls.md).
            agent.wait_log("a probed file changed on disk", WAIT);
            agent.wait_log("probes detached", WAIT);
        }
        let name = format!("e2e-{label}-{build}");
        let srv = env.go_server_from(&exe, &name, &cert);
        let url = format!("https://127.0.0.1:{}/mcp", srv.port);
        let plan = python_plan(&url, &cert, "py-to-rewritten");
        python_run_seen_whole(
            env,
            &agent,
            &plan,
            &srv,
            &name,
            "py-to-rewritten",
            &format!("Go {build} ({label}), copied over the previous build"),
        );
        if build == "server-pie" {
            // Its times change while it runs (chmod to the same mode). An
            // executable being run cannot be written: the same program,
            // probed again at the agent's next rescan of what it tracks.
            let hooked = |agent: &Agent| agent.log_text().matches("hooked TLS for every process").count();
            let before = hooked(&agent);
            let mode = std::fs::metadata(&exe).unwrap().permissions();
            std::fs::set_permissions(&exe, mode).expect("chmod");
            mcptap_tests::wait_until("the running server's program to be probed again", WAIT, || {
                hooked(&agent) > before
            });
            python_run_seen_whole(
                env,
                &agent,
                &plan,
                &srv,
                &name,
                "py-to-rewritten",
                &format!("Go {build} ({label}), after a chmod while it runs"),
            );
        }
    }
    let m = agent.metrics();
    assert_eq!(m.value("mcptap_tls_hook_errors", &[]), 0.0);
    assert_eq!(m.value("mcptap_capture_lost_total", &[]), 0.0);
}

#[test]
fn go_https_client_seen_from_both_sides() {
    let env = env();
    let agent = Agent::start(&env, "tls_go_client", &[]);
    let cert = env.cert("go_client");
    let tls = cert.server_args();
    let srv = env.http_server("e2e-py-for-go", &tls);
    let url = format!("https://127.0.0.1:{}/mcp", srv.port);
    for build in ["client", "client-stripped"] {
        let since = now_seconds();
        let report = env.go_client(build, &url, &cert, "go-client", 3);
        assert_eq!(report["server_pid"].as_u64(), Some(srv.pid()), "{report}");
        assert_both_sides(
            &agent,
            &format!("Go {build} calling the Python SDK server"),
            since,
            report["client_pid"].as_u64().expect("client pid"),
            srv.pid(),
            srv.port,
            "e2e-py-for-go",
            "go-client",
            GO_CLIENT_OPS,
        );
    }
    assert!(agent.metrics().value("mcptap_tls_hooked_files", &[("library", "go")]) >= 1.0);
}

/// A Go executable whose `crypto/tls.(*Conn).Read` does not start like
/// register-ABI Go code (its stack check overwritten) is reported once and
/// never probed: its calls are not seen, and nothing else breaks.
/// The TypeScript SDK's HTTPS server (tests/peers/node_https_server.mjs,
/// `node:https`) under Node (OpenSSL linked into `node`) and under Bun
/// (BoringSSL inside the stripped `bun` executable), found by discovery
/// alone and called by the Python SDK client: the second run seen whole
/// from both sides.
#[test]
fn node_and_bun_https_servers_seen_from_both_sides() {
    let env = env();
    let agent = Agent::start(&env, "tls_js_servers", &[]);
    let cert = env.cert("js_servers");
    for (runtime, label) in [(std::path::PathBuf::from("node"), "node"), (bun(&env), "bun")] {
        let name = format!("e2e-{label}-https");
        let port = mcptap_tests::free_port();
        let srv = env.server_command(
            &name,
            &format!(
                "exec '{}' node_https_server.mjs {port} '{}' '{}' {name}",
                runtime.display(),
                cert.cert.display(),
                cert.key.display()
            ),
            port,
        );
        let url = format!("https://127.0.0.1:{port}/mcp");
        let client = format!("py-to-{label}");
        let plan = python_plan(&url, &cert, &client);
        python_run_seen_whole(
            &env,
            &agent,
            &plan,
            &srv,
            &name,
            &client,
            &format!("the TypeScript SDK's HTTPS server under {label}, called by the Python SDK"),
        );
    }
    let m = agent.metrics();
    assert_eq!(m.value("mcptap_tls_unsupported_binaries", &[]), 0.0);
    assert_eq!(m.value("mcptap_capture_lost_total", &[]), 0.0);
}

/// HTTPS discovery's verdicts outlive the agent, and a known server that
/// sits idle is still seen when its first client comes.
///
/// 1. Agent A sees the Python SDK's HTTPS server's first client run whole
///    (the server was probed when it loaded the SDK).
/// 2. A stops; its verdicts are in the state directory, without the
///    server's command line. Agent B starts on that state directory while
///    the server runs: it probes the server at once, so the very first
///    client run after the restart is seen whole, from both sides.
/// 3. The server restarts on another port and waits longer than the
///    discovery window before its first client: that silence says nothing
///    against it, and its first client run is seen whole.
#[test]
fn https_verdicts_survive_an_agent_restart_and_an_idle_server_is_still_seen() {
    let env = env();
    let cert = env.cert("tls_verdicts");
    let name = "e2e-py-verdicts";
    let start_server = |port: u16| {
        env.server_command(
            name,
            &format!(
                "exec '{}' http_server.py --port {port} --name {name} --tls-cert '{}' --tls-key '{}'",
                env.python.display(),
                cert.cert.display(),
                cert.key.display()
            ),
            port,
        )
    };
    let measured_run = |agent: &Agent, srv: &Server, what: &str| {
        let url = format!("https://127.0.0.1:{}/mcp", srv.port);
        let plan = python_plan(&url, &cert, "py-verdicts");
        python_run_seen_whole(&env, agent, &plan, srv, name, "py-verdicts", what);
    };

    let a = Agent::start(&env, "tls_verdicts_a", &[]);
    let mut srv = start_server(mcptap_tests::free_port());
    measured_run(&a, &srv, "the server's first client run");
    let state = a.dir.join("state");
    a.stop();
    let kept = std::fs::read_to_string(state.join("tls_programs.json")).expect("the verdicts file");
    assert!(kept.contains("\"verdict\":\"mcp\""), "{kept}");
    assert!(
        !kept.contains(name),
        "a command line is kept as its digest only: {kept}"
    );

    let b = Agent::start(&env, "tls_verdicts_b", &["--state-dir", state.to_str().unwrap()]);
    b.wait_log("HTTPS discovery verdicts restored", WAIT);
    measured_run(&b, &srv, "the first client run after the agent restarted");

    drop(srv);
    srv = start_server(mcptap_tests::free_port());
    let idle = mcptap_tests::PROBE_WINDOW + Duration::from_secs(5);
    std::thread::sleep(idle);
    measured_run(
        &b,
        &srv,
        "a known server's first client after sitting idle, on another port",
    );
    let m = b.metrics();
    assert_eq!(m.value("mcptap_capture_lost_total", &[]), 0.0);
}

#[test]
fn an_altered_go_binary_is_reported_not_probed() {
    let env = env();
    let altered = altered_go_server(&env);
    let agent = Agent::start(&env, "tls_go_altered", &[]);
    let cert = env.cert("go_altered");
    let srv = env.go_server_from(&altered, "e2e-go-altered", &cert);
    let url = format!("https://127.0.0.1:{}/mcp", srv.port);
    let plan = python_plan(&url, &cert, "py-to-altered");
    env.drive(&plan);
    let report = env.drive(&plan);
    let client_pid = report["sessions"][0]["client_pid"].as_u64().expect("client pid");
    agent.wait_log("TLS not captured", WAIT);
    // The Python client's side is seen; the altered server's never is.
    let events = agent.wait_events("the client's side", WAIT, |ev| {
        observed(ev, "client", client_pid).len() >= PYTHON_PLAN_OPS.iter().map(|e| e.3).sum()
    });
    assert!(
        observed(&events, "server", srv.pid()).is_empty(),
        "the altered server was probed"
    );
    agent.wait_metric(
        "mcptap_tls_unsupported_binaries",
        &[("reason", "go_code_shape")],
        1.0,
        WAIT,
    );
    let m = agent.metrics();
    assert_eq!(m.value("mcptap_tls_hooked_files", &[("library", "go")]), 0.0);
    let log = agent.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("TLS not captured"))
        .expect("the log line");
    assert!(
        line.contains("does not start like register-ABI Go code") && line.contains(&*altered.to_string_lossy()),
        "{line}"
    );
    assert_eq!(log.matches("TLS not captured").count(), 1, "said once:\n{log}");
}

/// A copy of the Go server whose `crypto/tls.(*Conn).Read` has its stack
/// check (`cmp rsp, [r14+0x10]; jbe morestack`) replaced by NOPs: it still
/// runs (the function's frame is small), but no longer looks like what
/// mcptap knows how to probe.
fn altered_go_server(env: &Env) -> std::path::PathBuf {
    use object::{Object, ObjectSection, ObjectSymbol};
    let original = std::fs::read(env.go_peers.join("server")).expect("the Go server");
    let elf = object::File::parse(&*original).expect("ELF");
    let read = elf
        .symbols()
        .find(|s| s.name() == Ok("crypto/tls.(*Conn).Read"))
        .expect("the unstripped build names its functions");
    let text = elf
        .section_by_index(read.section_index().expect("section"))
        .expect("text");
    let offset = (read.address() - text.address() + text.file_range().expect("in the file").0) as usize;
    // `cmp rsp, [r14+0x10]` (49 3b 66 10), then `jbe rel32` (0f 86 ..).
    assert_eq!(
        &original[offset..offset + 6],
        &[0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86],
        "Go's prologue"
    );
    let mut altered = original.clone();
    altered[offset..offset + 10].copy_from_slice(&[0x90; 10]);
    let path = env.artifacts.join("go-server-altered");
    std::fs::write(&path, &altered).expect("write the altered copy");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// What the TypeScript SDK client (tests/peers/ts_http_client.mjs) does
/// with 3 calls, under Node or Bun, two sessions in one process.
const TS_CLIENT_OPS_TWICE: [(&str, Option<&str>, &str, usize); 4] = [
    ("initialize", None, "ok", 2),
    ("tools/call", Some("whoami"), "ok", 2),
    ("tools/call", Some("add"), "ok", 6),
    ("tools/call", Some("refuse"), "tool_error", 2),
];

/// What `claude mcp list` does to check an HTTP server's health (Claude
/// Code 2.1.332 speaks the 2026 protocol: discovery, no initialize).
const CLAUDE_LIST_OPS: &[(&str, Option<&str>, &str, usize)] =
    &[("server/discover", None, "ok", 1), ("tools/list", None, "ok", 1)];

/// The TypeScript SDK client script under `runtime` (node, or Bun's
/// executable), `sessions` sessions in one process; returns its report.
fn ts_client(env: &Env, runtime: &std::path::Path, url: &str, cert: &Cert, name: &str, sessions: u32) -> Value {
    let out = Command::new(runtime)
        .env("NODE_EXTRA_CA_CERTS", &cert.ca)
        .arg("ts_http_client.mjs")
        .args([url, name, "3", &sessions.to_string()])
        .current_dir(&env.peers)
        .output()
        .expect("start the TypeScript client");
    let report = parse_report("ts_http_client.mjs", &out);
    assert_eq!(report["outcomes"]["add:ok"], 3 * sessions, "{report}");
    report
}

/// `claude mcp list` with the server configured (HOME of its own); returns
/// its pid.
fn claude_list(exe: &std::path::Path, home: &std::path::Path, cert: &Cert) -> u64 {
    let child = Command::new(exe)
        .args(["mcp", "list"])
        .env("HOME", home)
        .env("NODE_EXTRA_CA_CERTS", &cert.ca)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start claude");
    let pid = u64::from(child.id());
    let out = child.wait_with_output().expect("claude mcp list");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Connected"),
        "claude mcp list: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pid
}

/// `claude mcp add` of the server at `url`, in `home`.
fn claude_add(exe: &std::path::Path, home: &std::path::Path, url: &str) {
    let added = Command::new(exe)
        .args([
            "mcp",
            "add",
            "--transport",
            "http",
            "--scope",
            "user",
            "e2e-py-https",
            url,
        ])
        .env("HOME", home)
        .output()
        .expect("claude mcp add");
    assert!(
        added.status.success(),
        "claude mcp add: {}",
        String::from_utf8_lossy(&added.stderr)
    );
}

fn claude(env: &Env) -> std::path::PathBuf {
    env.peers.join("node_modules/@anthropic-ai/claude-code/bin/claude.exe")
}

fn bun(env: &Env) -> std::path::PathBuf {
    env.peers.join("node_modules/bun/bin/bun.exe")
}

/// The Python SDK's HTTPS server (OpenSSL) called by each client that
/// matters: the TypeScript SDK under Node (OpenSSL inside node) and under
/// Bun (BoringSSL inside a stripped executable), Claude Code (a program
/// Bun compiled: BoringSSL again, another build), and a Go client. Each
/// seen whole from both sides.
#[test]
fn python_https_server_called_by_node_bun_claude_code_and_go() {
    let env = env();
    let agent = Agent::start(&env, "tls_clients", &[]);
    let cert = env.cert_with_ca("tls_clients");
    let tls = cert.server_args();
    let srv = env.http_server("e2e-py-https", &tls);
    let url = format!("https://127.0.0.1:{}/mcp", srv.port);

    // Runtimes (node, bun) run any program: their probes are attached per
    // process, when it loads the MCP SDK. Each run is two sessions in one
    // process: both seen whole.
    for (runtime, name) in [(std::path::PathBuf::from("node"), "ts-node"), (bun(&env), "ts-bun")] {
        let since = now_seconds();
        let report = ts_client(&env, &runtime, &url, &cert, name, 2);
        assert_both_sides(
            &agent,
            &format!("TypeScript SDK under {runtime:?}, its first run (two sessions)"),
            since,
            client_pid(&report),
            srv.pid(),
            srv.port,
            "e2e-py-https",
            name,
            &TS_CLIENT_OPS_TWICE,
        );
    }

    let home = env.artifacts.join("tls_clients-claude-home");
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    claude_add(&claude(&env), &home, &url);
    let since = now_seconds();
    let pid = claude_list(&claude(&env), &home, &cert);
    assert_both_sides(
        &agent,
        "Claude Code (claude mcp list)",
        since,
        pid,
        srv.pid(),
        srv.port,
        "e2e-py-https",
        "claude-code",
        CLAUDE_LIST_OPS,
    );

    let since = now_seconds();
    let report = env.go_client("client", &url, &cert, "go-client", 3);
    let pid = report["client_pid"].as_u64().expect("client pid");
    assert_both_sides(
        &agent,
        "Go client",
        since,
        pid,
        srv.pid(),
        srv.port,
        "e2e-py-https",
        "go-client",
        GO_CLIENT_OPS,
    );

    // Bun's probes went with its processes (the runtime runs any
    // program); Claude Code's executable keeps them (it is the program).
    let log = agent.log_text();
    for exe in ["bun.exe", "claude.exe"] {
        assert!(
            log.lines()
                .any(|l| l.contains("hooked TLS") && l.contains("library=\"boringssl\"") && l.contains(exe)),
            "BoringSSL found in {exe}:\n{log}"
        );
    }
    let m = agent.metrics();
    assert_eq!(m.value("mcptap_tls_hooked_files", &[("library", "boringssl")]), 1.0);
    assert_eq!(m.value("mcptap_tls_unsupported_binaries", &[]), 0.0);
}

/// Released Bun-built executables nobody here built, pinned in
/// tests/peers/package.json, each matched and seen from its first run:
/// Claude Code 2.1.110 (BoringSSL's four-argument `ERR_put_error`),
/// 2.1.157 (`SSL_write` right after a jump, no padding) and 2.1.218 (the
/// last build before the five-argument form), Bun 1.2.0 and 1.3.8 (no
/// `.bun` section: known as Bun by its symbols' version). The server side (the
/// Python SDK over OpenSSL) is the reference: each client's run is seen on
/// its side exactly as the server saw it.
#[test]
fn released_claude_code_and_bun_builds_seen_from_their_first_run() {
    let env = env();
    let agent = Agent::start(&env, "tls_releases", &[]);
    let cert = env.cert_with_ca("tls_releases");
    let tls = cert.server_args();
    let srv = env.http_server("e2e-py-https", &tls);
    let url = format!("https://127.0.0.1:{}/mcp", srv.port);

    for version in ["1.2.0", "1.3.8"] {
        let runtime = env.peers.join(format!("node_modules/bun-{version}/bin/bun"));
        let name = format!("ts-bun-{version}");
        let since = now_seconds();
        let report = ts_client(&env, &runtime, &url, &cert, &name, 2);
        assert_both_sides(
            &agent,
            &format!("TypeScript SDK under Bun {version}, its first run"),
            since,
            client_pid(&report),
            srv.pid(),
            srv.port,
            "e2e-py-https",
            &name,
            &TS_CLIENT_OPS_TWICE,
        );
    }

    for version in ["2.1.110", "2.1.157", "2.1.218"] {
        let exe = env.peers.join(format!("node_modules/claude-code-{version}/claude"));
        let home = env.artifacts.join(format!("tls_releases-claude-{version}"));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        claude_add(&exe, &home, &url);
        let since = now_seconds();
        let pid = claude_list(&exe, &home, &cert);
        let what = format!("Claude Code {version} (claude mcp list), its first run");
        let server_ops = |ev: &[Value]| -> Vec<Value> {
            observed(ev, "server", srv.pid())
                .into_iter()
                .filter(|e| e["time"].as_str().and_then(unix_seconds).is_some_and(|t| t >= since))
                .collect()
        };
        agent.wait_events(&what, WAIT, |ev| {
            let server = server_ops(ev).len();
            server > 0 && observed(ev, "client", pid).len() >= server
        });
        std::thread::sleep(Duration::from_millis(300));
        let events = agent.events();
        let summary = |ops: &[Value]| {
            let mut s: Vec<String> = ops
                .iter()
                .map(|e| format!("{} {} {}", e["mcp.method.name"], e["gen_ai.tool.name"], e["status"]))
                .collect();
            s.sort();
            s
        };
        let client = observed(&events, "client", pid);
        let server = server_ops(&events);
        assert_eq!(summary(&client), summary(&server), "{what}: both sides");
        // Its health check: initialize (2025 builds), or discovery and
        // tools/list (2026 builds).
        assert!(
            server
                .iter()
                .any(|e| e["mcp.method.name"] == "initialize" || e["mcp.method.name"] == "server/discover"),
            "{what}: the health check: {server:?}"
        );
        for e in &client {
            assert_eq!(e["tls"], true, "{e}");
            assert_eq!(e["server.port"], srv.port, "{e}");
            assert_eq!(e["client"]["name"], "claude-code", "{e}");
        }
    }

    let m = agent.metrics();
    assert_eq!(m.value("mcptap_tls_unsupported_binaries", &[]), 0.0);
}

/// A copy of Bun whose `SSL_write` no longer starts as BoringSSL's does
/// (its QUIC check overwritten) is reported once and never probed, though
/// its build id is one mcptap knows: the known offsets are checked too.
#[test]
fn an_altered_bun_is_reported_not_probed() {
    let env = env();
    let altered = altered_bun(&env);
    let agent = Agent::start(&env, "tls_bun_altered", &[]);
    let cert = env.cert_with_ca("bun_altered");
    let tls = cert.server_args();
    let srv = env.http_server("e2e-py-for-altered-bun", &tls);
    let url = format!("https://127.0.0.1:{}/mcp", srv.port);
    // Its writes now fail; what matters is what the agent makes of it.
    let _ = Command::new(&altered)
        .arg("ts_http_client.mjs")
        .args([url.as_str(), "altered-bun", "1"])
        .current_dir(&env.peers)
        .env("NODE_EXTRA_CA_CERTS", &cert.ca)
        .output()
        .expect("start the altered bun");
    agent.wait_log("TLS not captured", WAIT);
    let log = agent.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("TLS not captured"))
        .expect("the log line");
    assert!(
        line.contains("BoringSSL inside") && line.contains("bun-altered"),
        "{line}"
    );
    assert_eq!(log.matches("TLS not captured").count(), 1, "said once:\n{log}");
    assert!(
        !log.lines()
            .any(|l| l.contains("hooked TLS") && l.contains("bun-altered")),
        "{log}"
    );
    agent.wait_metric(
        "mcptap_tls_unsupported_binaries",
        &[("reason", "boringssl_no_match")],
        1.0,
        WAIT,
    );
    let m = agent.metrics();
    assert_eq!(m.value("mcptap_tls_hooked_files", &[("library", "boringssl")]), 0.0);
}

/// A copy of Bun's executable with `SSL_write`'s QUIC check (`cmp qword
/// [rbx+0x98], 0; je`) replaced by NOPs.
fn altered_bun(env: &Env) -> std::path::PathBuf {
    let original = bun(env);
    let info = Command::new(&env.agent)
        .arg("tls-info")
        .arg(&original)
        .output()
        .expect("mcptap tls-info");
    let info = String::from_utf8_lossy(&info.stdout);
    let write = info
        .split_whitespace()
        .find_map(|w| w.strip_prefix("SSL_write@0x"))
        .and_then(|h| usize::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| panic!("mcptap tls-info found no SSL_write in Bun: {info}"));
    let mut bytes = std::fs::read(&original).expect("read bun");
    let window = &bytes[write..write + 128];
    let at = window
        .windows(9)
        .position(|w| w == [0x48, 0x83, 0xbb, 0x98, 0, 0, 0, 0, 0x74])
        .expect("SSL_write's QUIC check in this Bun build");
    bytes[write + at..write + at + 10].copy_from_slice(&[0x90; 10]);
    let path = env.artifacts.join("bun-altered");
    std::fs::write(&path, &bytes).expect("write the altered copy");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// What the Rust SDK client does with `CALLS` = 3: initialize, `whoami`,
/// three `add`, one `refuse`.
const RUST_CLIENT_OPS: &[(&str, Option<&str>, &str, usize)] = &[
    ("initialize", None, "ok", 1),
    ("tools/call", Some("whoami"), "ok", 1),
    ("tools/call", Some("add"), "ok", 3),
    ("tools/call", Some("refuse"), "tool_error", 1),
];

/// The official Rust SDK (rmcp) on rustls, server and client, both
/// keeping their symbols: each side sees the whole run. The server's first
/// request of each connection is decrypted inside the handshake, before
/// rustls' connection moves into the stream: the session still is one.
#[test]
fn rust_sdk_https_server_and_client_seen_from_both_sides() {
    let env = env();
    let agent = Agent::start(&env, "tls_rust", &[]);
    let cert = env.cert_with_ca("rust");
    let srv = env.rust_server("rmcp-server", "e2e-rmcp", &cert);
    let url = format!("https://127.0.0.1:{}/mcp", srv.port);
    // Twice (the first run is the client's first contact): a new connection to the same server reuses what the last one
    // left (addresses, descriptors).
    for _ in 0..2 {
        let since = now_seconds();
        let report = env.rust_client("rmcp-client", &url, &cert, "rmcp-client", 3);
        assert_eq!(report["server_pid"].as_u64(), Some(srv.pid()), "{report}");
        assert_both_sides(
            &agent,
            "the Rust SDK client calling the Rust SDK server",
            since,
            client_pid(&report),
            srv.pid(),
            srv.port,
            "e2e-rmcp",
            "rmcp-client",
            RUST_CLIENT_OPS,
        );
    }
    let m = agent.metrics();
    assert_eq!(
        m.value("mcptap_tls_hooked_files", &[("library", "rustls")]),
        2.0,
        "the server's and the client's executables carry the probes"
    );
    assert_eq!(m.value("mcptap_tls_unsupported_binaries", &[]), 0.0);
    assert_eq!(m.value("mcptap_capture_lost_total", &[]), 0.0);
}

/// A stripped rmcp server: rustls inside (its source paths say so), its
/// functions nameless. Reported once, never probed; the client's side is
/// still seen whole.
#[test]
fn a_stripped_rust_program_is_reported_not_probed() {
    let env = env();
    let agent = Agent::start(&env, "tls_rust_stripped", &[]);
    let cert = env.cert_with_ca("rust_stripped");
    let srv = env.rust_server("rmcp-server-stripped", "e2e-rmcp-stripped", &cert);
    let url = format!("https://127.0.0.1:{}/mcp", srv.port);
    let first = client_pid(&env.rust_client("rmcp-client", &url, &cert, "rmcp-client", 3));
    agent.wait_log(&format!("HTTPS discovery verdict pid={first} "), WAIT);
    let since = now_seconds();
    let report = env.rust_client("rmcp-client", &url, &cert, "rmcp-client", 3);
    let pid = client_pid(&report);
    let total: usize = RUST_CLIENT_OPS.iter().map(|e| e.3).sum();
    let events = agent.wait_events("the client's side", WAIT, |ev| {
        observed(ev, "client", pid).len() >= total
    });
    std::thread::sleep(Duration::from_millis(300));
    let ops: Vec<Value> = observed(&agent.events(), "client", pid)
        .into_iter()
        .filter(|e| e["time"].as_str().and_then(unix_seconds).is_some_and(|t| t >= since))
        .collect();
    assert_exactly(&ops, RUST_CLIENT_OPS, "the Rust client calling a stripped Rust server");
    assert!(
        observed(&events, "server", srv.pid()).is_empty(),
        "the stripped server was probed"
    );
    agent.wait_metric(
        "mcptap_tls_unsupported_binaries",
        &[("reason", "rustls_stripped")],
        1.0,
        WAIT,
    );
    let log = agent.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("TLS not captured"))
        .expect("the log line");
    assert!(
        line.contains("rustls inside a stripped executable") && line.contains("rmcp-server-stripped"),
        "{line}"
    );
    assert_eq!(log.matches("TLS not captured").count(), 1, "said once:\n{log}");
}
