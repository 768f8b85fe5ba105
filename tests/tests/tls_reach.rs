//! HTTPS reach with the agent run **without flags** (HTTPS discovery by
//! default): each TLS stack, server side and client side, with real peers.
//!
//! Each pairing runs its client twice with the same command line. The
//! first exchange of a program never seen before is how it is discovered
//! (its first requests may pass before its probes land); from then on the
//! program is known, and the second run must be seen whole, from both
//! sides, exactly: every call, its status, its addresses.

use std::time::Duration;

use mcptap_tests::{Agent, Cert, Env, Metrics, assert_exactly, env, observed};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// Verdicts HTTPS discovery reached so far (a program found to speak MCP,
/// or one that ended before anything could be decided).
fn verdicts(m: &Metrics) -> f64 {
    m.value("mcptap_tls_discovery_total", &[("outcome", "mcp")])
        + m.value("mcptap_tls_discovery_total", &[("outcome", "undecided")])
}

/// Waits until discovery has reached `n` verdicts.
fn wait_verdicts(agent: &Agent, n: f64) {
    let deadline = std::time::Instant::now() + WAIT;
    while verdicts(&agent.metrics()) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "HTTPS discovery reached {} verdicts, not {n}:\n{}",
            verdicts(&agent.metrics()),
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a client until HTTPS discovery knows both programs: the server is
/// tracked, and the client's program has a verdict (it spoke MCP, or it
/// ended before its probes landed: then it is probed from its exec next
/// time). Each run of the client ends with one verdict.
fn warm_up(agent: &Agent, server_pid: u64, mut run: impl FnMut()) {
    let discovered = format!("discovered an MCP peer pid={server_pid}");
    for _ in 0..5 {
        let known = agent.log_text().contains(&discovered);
        let before = verdicts(&agent.metrics());
        run();
        wait_verdicts(agent, before + 1.0);
        if agent.log_text().contains(&discovered) {
            if !known {
                wait_verdicts(agent, before + 2.0); // the server's, and the client's
            }
            return;
        }
    }
    panic!(
        "the server was not discovered in 5 runs of its client:\n{}",
        agent.log_text()
    );
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

/// One MCP session seen from both sides: the client's operations (by its
/// pid) and the server's (by its pid, in the client's session), exactly
/// `expected` on each side, with the same names and addresses.
#[allow(clippy::too_many_arguments)]
fn assert_both_sides(
    agent: &Agent,
    what: &str,
    client_pid: u64,
    server_pid: u64,
    port: u16,
    server_name: &str,
    client_name: &str,
    expected: &[(&str, Option<&str>, &str, usize)],
) {
    let total: usize = expected.iter().map(|e| e.3).sum();
    let session_of = |events: &[Value]| {
        observed(events, "client", client_pid)
            .iter()
            .find_map(|e| e["mcp.session.id"].as_str().map(String::from))
    };
    let in_session = |events: &[Value], side: &str, pid: u64| -> Vec<Value> {
        let session = session_of(events);
        observed(events, side, pid)
            .into_iter()
            .filter(|e| side == "client" || e["mcp.session.id"].as_str().map(String::from) == session)
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
        warm_up(&agent, srv.pid(), || {
            env.drive(&plan);
        });
        let report = env.drive(&plan);
        let s = &report["sessions"][0];
        assert!(s.get("error").is_none(), "the client failed: {s}");
        let client_pid = s["client_pid"].as_u64().expect("client pid");
        assert_eq!(s["server_pid"].as_u64(), Some(srv.pid()));
        assert_both_sides(
            &agent,
            &format!("Go {build} called by the Python SDK"),
            client_pid,
            srv.pid(),
            srv.port,
            &name,
            &format!("py-to-{build}"),
            PYTHON_PLAN_OPS,
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

#[test]
fn go_https_client_seen_from_both_sides() {
    let env = env();
    let agent = Agent::start(&env, "tls_go_client", &[]);
    let cert = env.cert("go_client");
    let tls = [
        "--tls-cert",
        cert.cert.to_str().unwrap(),
        "--tls-key",
        cert.key.to_str().unwrap(),
    ];
    let srv = env.http_server("e2e-py-for-go", &tls);
    let url = format!("https://127.0.0.1:{}/mcp", srv.port);
    for build in ["client", "client-stripped"] {
        warm_up(&agent, srv.pid(), || {
            env.go_client(build, &url, &cert, "go-client", 3);
        });
        let report = env.go_client(build, &url, &cert, "go-client", 3);
        assert_eq!(report["server_pid"].as_u64(), Some(srv.pid()), "{report}");
        assert_both_sides(
            &agent,
            &format!("Go {build} calling the Python SDK server"),
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
#[test]
fn an_altered_go_binary_is_reported_not_probed() {
    let env = env();
    let altered = altered_go_server(&env);
    let agent = Agent::start(&env, "tls_go_altered", &[]);
    let cert = env.cert("go_altered");
    let port = mcptap_tests::free_port();
    let srv = env.server_command(
        "go-altered",
        &format!(
            "exec {} -port {port} -cert {} -key {} -name e2e-go-altered",
            altered.display(),
            cert.cert.display(),
            cert.key.display()
        ),
        port,
    );
    let url = format!("https://127.0.0.1:{port}/mcp");
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
    let m = agent.metrics();
    assert_eq!(
        m.value("mcptap_tls_unsupported_binaries", &[("reason", "go_code_shape")]),
        1.0,
        "reported once"
    );
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
