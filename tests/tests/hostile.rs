//! What an unprivileged local user can do to mcptap (issue 18; the threat
//! model is in docs/deploy.md). Each test creates a user with no
//! privileges, runs the attack as that user (tests/peers/hostile.py, the
//! standard library only), and asserts after it: the agent alive, its
//! `/healthz` 200, a canary MCP exchange by root recorded whole, its memory
//! within bounds, nothing readable that should not be.

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use mcptap_tests::{Agent, Env, count, env, free_port, operations_of, summary, wait_until};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// The attacker: a system account with no privileges and no groups,
/// created for these tests (kept for the next ones; removed by nobody: it
/// owns nothing but its scratch folders in /tmp).
struct Attacker {
    uid: u32,
    gid: u32,
    /// Its scratch folder, holding a copy of tests/peers/hostile.py (the
    /// repository may sit where it cannot read).
    dir: PathBuf,
}

const ATTACKER: &str = "mcptap-attacker";

fn attacker(env: &Env, test: &str) -> Attacker {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, ATTACKER]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let out = Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", ATTACKER])
            .output()
            .expect("useradd");
        // Another test may have created it meanwhile.
        assert!(
            out.status.success() || id("-u").is_some(),
            "useradd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (uid, gid) = (id("-u").expect("uid"), id("-g").expect("gid"));
    assert_ne!(uid, 0);
    let dir = PathBuf::from(format!("/tmp/mcptap-hostile-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(env.peers.join("hostile.py"), dir.join("hostile.py")).unwrap();
    std::fs::set_permissions(dir.join("hostile.py"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
    Attacker { uid, gid, dir }
}

impl Attacker {
    /// `hostile.py ARGS` as the attacker, in its folder, with Debian's
    /// Python (the tests' own sits in root's home).
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={}", self.uid),
            &format!("--regid={}", self.gid),
            "--clear-groups",
            "--inh-caps=-all",
            "/usr/bin/python3",
            "hostile.py",
        ])
        .args(args)
        .current_dir(&self.dir);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run as the attacker")
    }

    /// Runs the hostile client with `plan`; returns its report.
    fn client(&self, plan: &Value) -> Value {
        let out = self.run(&["client", &plan.to_string()]);
        mcptap_tests::parse_report("hostile.py client", &out)
    }

    /// Whether the attacker can read `path`.
    fn can_read(&self, path: &Path) -> bool {
        Command::new("setpriv")
            .args([
                &format!("--reuid={}", self.uid),
                &format!("--regid={}", self.gid),
                "--clear-groups",
                "cat",
            ])
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `curl` as the attacker; returns the HTTP status.
    fn http_status(&self, url: &str, headers: &[&str]) -> String {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={}", self.uid),
            &format!("--regid={}", self.gid),
            "--clear-groups",
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ]);
        for h in headers {
            c.args(["-H", h]);
        }
        let out = c.arg(url).output().expect("curl");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// The agent's resident memory, in MiB.
fn rss_mib(agent: &Agent) -> f64 {
    let pid = agent.pid().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("agent status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    kb / 1024.0
}

/// `/healthz` answers 200.
fn healthy(agent: &Agent) -> bool {
    ureq::get(&format!("http://{}/healthz", agent.metrics_addr))
        .call()
        .is_ok_and(|r| r.status() == 200)
}

/// Root's canary: a stdio session with the tests' FastMCP server, every
/// call recorded whole.
fn canary(env: &Env, agent: &Agent, calls: usize) {
    // drive.py calls `whoami` first (the server's pid).
    let report = env.drive(
        &json!({"sessions": [{"server": env.test_server(), "client_name": "canary",
        "steps": [{"call": "add", "args": {"a": 1, "b": 2}, "repeat": calls}]}]}),
    );
    let pid = report["sessions"][0]["server_pid"].as_u64().expect("canary server pid");
    let events = agent.wait_events("the canary's calls", WAIT, |ev| {
        count(&operations_of(ev, pid), "tools/call", Some("add"), "ok") == calls
    });
    let ops = operations_of(&events, pid);
    assert_eq!(count(&ops, "initialize", None, "ok"), 1, "{}", summary(&ops));
    assert_eq!(count(&ops, "tools/call", Some("whoami"), "ok"), 1, "{}", summary(&ops));
    assert!(ops.iter().all(|e| e["status"] == "ok"), "{}", summary(&ops));
}

/// After an attack: alive, healthy, the canary whole, memory bounded, and
/// nothing lost in the kernel.
fn still_fine(env: &Env, agent: &mut Agent, baseline_mib: f64, what: &str) {
    assert!(agent.is_running(), "{what}: the agent died:\n{}", agent.log_text());
    assert!(healthy(agent), "{what}: /healthz is not 200");
    canary(env, agent, 5);
    let rss = rss_mib(agent);
    assert!(
        rss < 512.0 && rss < baseline_mib + 96.0,
        "{what}: the agent's memory went from {baseline_mib:.0} to {rss:.0} MiB"
    );
    let m = agent.metrics();
    assert_eq!(m.value("mcptap_capture_lost_total", &[]), 0.0, "{what}: capture lost");
}

/// A crafted file a server maps: 20 GiB (sparse) is refused unread; a
/// sparse ELF whose `.dynsym` claims 8 GiB, truncated and regrown in a loop
/// while the agent reads it, is read by bounded `pread`s (never mapped: its
/// owner could truncate it) and refused as changed. Before: SIGBUS, the
/// agent dead in seconds; or its capture loop busy ~20 s.
#[test]
fn a_crafted_library_truncated_while_read_neither_crashes_nor_stalls_the_agent() {
    let env = env();
    let a = attacker(&env, "crafted_library");
    let mut agent = Agent::start(&env, "hostile_crafted_library", &[]);
    let baseline = rss_mib(&agent);
    let (huge, looping) = (a.dir.join("libssl.so.10"), a.dir.join("libssl.so.9"));
    for (path, size) in [(&huge, 20u64 << 30), (&looping, 200 << 20)] {
        let out = a.run(&["sparse-elf", path.to_str().unwrap(), &size.to_string()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let started = Instant::now();
    let report = a.client(&json!({
        "server": ["--map", huge, "--map", looping, "--truncate-loop", looping],
        "steps": [{"initialize": {}}, {"sleep": 3}, {"call": "add", "repeat": 3}]
    }));
    // The attacker's own calls are recorded too.
    let server = report["server_pid"].as_u64().unwrap();
    agent.wait_events("the attacker's calls", WAIT, |ev| {
        count(&operations_of(ev, server), "tools/call", Some("add"), "ok") == 4
    });
    agent.wait_metric("mcptap_tls_unsupported_binaries", &[("reason", "too_large")], 1.0, WAIT);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the attack took {:?}",
        started.elapsed()
    );
    still_fine(&env, &mut agent, baseline, "crafted library");
}

/// In a user and mount namespace of its own, a server maps a copy of
/// libssl and bind-mounts a FIFO over that path. The agent reaches the
/// file the process maps through /proc/PID/map_files and never opens the
/// FIFO (the server watches: a writer's non-blocking open succeeds only
/// while someone reads). Before: the capture loop blocked on the FIFO
/// until someone wrote to it; 84 MB lost in the kernel.
#[test]
fn a_fifo_over_a_mapped_librarys_path_is_never_opened() {
    let env = env();
    let a = attacker(&env, "fifo");
    let mut agent = Agent::start(&env, "hostile_fifo", &[]);
    let baseline = rss_mib(&agent);
    let libssl = [
        "/usr/lib/x86_64-linux-gnu/libssl.so.3",
        "/lib/x86_64-linux-gnu/libssl.so.3",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("libssl.so.3");
    let copy = a.dir.join("libssl.so.3");
    std::fs::copy(libssl, &copy).unwrap();
    std::os::unix::fs::chown(&copy, Some(a.uid), Some(a.gid)).unwrap();
    let observed = a.dir.join("observed.json");
    let report = a.client(&json!({
        "server": ["--map", copy, "--fifo-over", "--report", observed],
        "steps": [{"initialize": {}}, {"call": "add", "repeat": 2}, {"sleep": 2}, {"call": "add", "repeat": 2}]
    }));
    let server = report["server_pid"].as_u64().unwrap();
    let events = agent.wait_events("the attacker's calls", WAIT, |ev| {
        count(&operations_of(ev, server), "tools/call", Some("add"), "ok") == 5
    });
    // Its library was looked at (the copy it maps, a real libssl: probed).
    let log = agent.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("hooked TLS for this process") && l.contains(&format!("pid={server}"))),
        "the mapped copy was not probed:\n{log}"
    );
    let seen: Value = serde_json::from_slice(&std::fs::read(&observed).expect("the server's report")).unwrap();
    assert_eq!(seen["fifo_opened_by_someone"], false, "the agent opened the FIFO");
    assert!(!operations_of(&events, server).is_empty());
    still_fine(&env, &mut agent, baseline, "FIFO over a library");
}

/// Names a peer chooses are cut, once, at their bound (counted); requests
/// nobody answers end as `evicted` events when they pass the bound of a
/// session, never silently; a user's names take the label values of that
/// user only. Before: 1 MB names made a 381 MB /metrics page and +156 MiB;
/// 79,520 requests vanished with no event; root's tools became "other".
#[test]
fn what_a_peer_names_and_leaves_unanswered_is_bounded_and_recorded() {
    let env = env();
    let a = attacker(&env, "bloat");
    let mut agent = Agent::start(&env, "hostile_bloat", &[]);
    let baseline = rss_mib(&agent);
    let report = a.client(&json!({
        "server": ["--server-name-bytes", "1000000"],
        "steps": [
            {"initialize": {"client_name_bytes": 1_000_000}},
            {"tool_name_bytes": 100_000, "repeat": 150},
            {"unanswered": "secret_exfil", "repeat": 1},
            {"unanswered": "junk", "repeat": 4200, "name_bytes": 2000}
        ]
    }));
    let server = report["server_pid"].as_u64().unwrap();
    // initialize, 150 long names, 1 add at the end: answered. 4096 requests
    // are kept in flight per session: secret_exfil, the first 104 junk
    // requests and one more for the last add were pushed out.
    let events = agent.wait_events("the evicted requests", WAIT, |ev| {
        operations_of(ev, server)
            .iter()
            .filter(|e| e["status"] == "evicted")
            .count()
            == 106
    });
    let ops = operations_of(&events, server);
    let exfil: Vec<&Value> = ops
        .iter()
        .filter(|e| {
            e["gen_ai.tool.name"]
                .as_str()
                .is_some_and(|t| t.starts_with("secret_exfil"))
        })
        .collect();
    assert_eq!(exfil.len(), 1, "{}", summary(&ops));
    assert_eq!(exfil[0]["status"], "evicted");
    for e in &ops {
        let line = e.to_string();
        assert!(line.len() < 8 * 1024, "an event of {} bytes", line.len());
    }
    let long_tool = ops
        .iter()
        .find(|e| e["gen_ai.tool.name"].as_str().is_some_and(|t| t.starts_with("t0T")))
        .unwrap();
    assert!(long_tool["gen_ai.tool.name"].as_str().unwrap().len() <= 256 + 11);
    assert!(long_tool["server"]["name"].as_str().unwrap().len() <= 256 + 11);
    let m = agent.metrics();
    assert_eq!(
        m.value("mcptap_evicted_total", &[("what", "request"), ("why", "max_pending")]),
        106.0
    );
    assert!(m.value("mcptap_fields_cut_total", &[("field", "gen_ai.tool.name")]) >= 150.0);
    assert!(m.value("mcptap_fields_cut_total", &[("field", "client.name")]) >= 1.0);
    // Root's tools keep their names though the attacker took its 100.
    canary(&env, &agent, 1);
    let m = agent.metrics();
    assert!(m.value("mcptap_label_overflow_total", &[("label", "gen_ai_tool_name")]) >= 1.0);
    assert!(
        m.value("mcp_server_operations_total", &[("gen_ai_tool_name", "whoami")]) >= 1.0,
        "root's tool became other"
    );
    // The attacker's share: 100 values per label, 200 label sets, each
    // value at most 96 bytes (and the histograms' buckets).
    assert!(m.0.len() < 4 << 20, "a /metrics page of {} bytes", m.0.len());
    // The local API's largest answer.
    let out = Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(agent.api_socket())
        .arg("http://mcptap/api/calls?limit=1000")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        out.stdout.len() < 2 << 20,
        "/api/calls answered {} bytes",
        out.stdout.len()
    );
    still_fine(&env, &mut agent, baseline, "long names and unanswered requests");
}

/// What the agent writes is root's only, whatever the umask it started
/// with; the dashboard on loopback wants its token from every local user,
/// and answers to its own address only (DNS rebinding). Before: events
/// file and store 0644, a root call's payload read by the user; the
/// dashboard open to any local user and any Host.
#[test]
fn what_the_agent_records_is_read_only_as_the_operator_allows() {
    let env = env();
    let a = attacker(&env, "read");
    let out_dir = a.dir.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::set_permissions(&out_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let events = out_dir.join("events.jsonl");
    let state = out_dir.join("state");
    let port = free_port();
    // SAFETY: umask has no preconditions; the agent inherits 022.
    let old = unsafe { libc::umask(0o022) };
    let agent = Agent::start(
        &env,
        "hostile_read",
        &[
            "--capture-payloads",
            "--events",
            events.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--ui",
            &format!("127.0.0.1:{port}"),
        ],
    );
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let report = env.drive(
        &json!({"sessions": [{"server": env.test_server(), "client_name": "root-client",
        "steps": [{"call": "echo", "args": {"text": "root's secret payload"}}]}]}),
    );
    let pid = report["sessions"][0]["server_pid"].as_u64().unwrap();
    wait_until("root's call in the events file", WAIT, || {
        std::fs::read_to_string(&events)
            .is_ok_and(|t| t.contains("root's secret payload") && t.contains(&format!("\"pid\":{pid}")))
    });
    wait_until("the store", WAIT, || state.join("events.db").exists());
    for file in [
        &events,
        &state.join("events.db"),
        &state.join("ui.token"),
        &state.join("ui.url"),
    ] {
        let mode = std::fs::metadata(file).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", file.display());
        assert!(!a.can_read(file), "the attacker read {}", file.display());
    }
    assert_eq!(std::fs::metadata(&state).unwrap().mode() & 0o777, 0o700);
    // The dashboard on loopback: the token, and its own Host.
    let api = format!("http://127.0.0.1:{port}/api/calls");
    assert_eq!(a.http_status(&api, &[]), "401");
    let url = Command::new(&env.agent)
        .args(["ui-url", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    let url = String::from_utf8_lossy(&url.stdout).trim().to_string();
    let token = url
        .split_once("#token=")
        .expect("ui-url prints the token")
        .1
        .to_string();
    assert!(url.starts_with(&format!("http://127.0.0.1:{port}/")), "{url}");
    let bearer = format!("Authorization: Bearer {token}");
    assert_eq!(a.http_status(&api, &[&bearer]), "200", "with the token");
    assert_eq!(
        a.http_status(&api, &[&bearer, "Host: rebound.attacker.example"]),
        "421",
        "another Host"
    );
    // The attacker cannot run ui-url for it.
    assert!(!a.can_read(&state.join("ui.url")));
    drop(agent);
}

/// The events file deleted, or moved away and the agent told (SIGHUP):
/// events go on to a new file at the path. Before: a deleted file kept
/// receiving events, counted as delivered.
#[test]
fn a_deleted_or_rotated_events_file_is_opened_again() {
    let env = env();
    let agent = Agent::start(&env, "hostile_events_file", &[]);
    let path = agent.events_path.clone();
    canary(&env, &agent, 1);
    std::fs::remove_file(&path).unwrap();
    // Reopened within a second of the next check, without a signal.
    std::thread::sleep(Duration::from_millis(1500));
    canary(&env, &agent, 2);
    std::fs::rename(&path, path.with_extension("jsonl.1")).unwrap();
    agent.signal(libc::SIGHUP);
    agent.wait_log("SIGHUP", WAIT);
    canary(&env, &agent, 3);
    // The rotated file kept what came before the signal.
    let rotated = std::fs::read_to_string(path.with_extension("jsonl.1")).unwrap();
    assert!(rotated.lines().count() >= 4, "{rotated}");
}

/// A tool name with a newline, escape sequences and a C1 control, through
/// `mcptap tail`: shown escaped, one line per event. Before: newlines
/// forged lines, `ESC[2J` cleared the screen.
#[test]
fn tail_shows_what_peers_named_without_obeying_it() {
    let env = env();
    let a = attacker(&env, "tail");
    let agent = Agent::start(&env, "hostile_tail", &[]);
    let tail = Command::new(&env.agent)
        .args(["tail", "--socket"])
        .arg(agent.api_socket())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let forged = "x\n12:00:00.000 ok         tools/call forged\u{1b}[2J\u{9b}31m";
    a.client(&json!({"steps": [{"initialize": {}}, {"call": forged}]}));
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(tail.id() as i32, libc::SIGINT) };
    let out = tail.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains('\u{1b}') && !text.contains('\u{9b}'), "{text:?}");
    assert!(
        !text.lines().any(|l| l.starts_with("12:00:00.000")),
        "a forged line: {text}"
    );
    assert!(text.contains("\\u{1b}[2J"), "{text}");
}

/// A client that says it is Claude Code, and argv[0] set to Claude Code's
/// script: the event's application is what the process is (python-agent),
/// and a policy that allows only Claude Code raises a violation. Before:
/// the declared name passed `allowed_clients`, argv[0] made it claude-code.
#[test]
fn a_client_is_what_it_runs_not_what_it_says() {
    let env = env();
    let a = attacker(&env, "claims");
    let policy = a.dir.join("policy.toml");
    std::fs::write(
        &policy,
        "[[server]]\nname = \"hostile\"\nallowed_clients = [\"claude-code\"]\n",
    )
    .unwrap();
    let agent = Agent::start(&env, "hostile_claims", &["--policy", policy.to_str().unwrap()]);
    // argv[0] as Claude Code's script, clientInfo as Claude Code.
    let plan = json!({"steps": [{"initialize": {"client_name": "claude-code"}}, {"call": "add"}]});
    let mut c = a.command(&["client", &plan.to_string()]);
    let args: Vec<String> = std::iter::once(c.get_program().to_string_lossy().into_owned())
        .chain(c.get_args().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    let shell = format!(
        "exec -a /usr/lib/node_modules/@anthropic-ai/claude-code/cli.js {}",
        args.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(" ")
    );
    c = Command::new("bash");
    c.args(["-c", &shell]).current_dir(&a.dir);
    let report = mcptap_tests::parse_report("hostile.py client", &c.output().unwrap());
    let server = report["server_pid"].as_u64().unwrap();
    let events = agent.wait_events("the violation", WAIT, |ev| {
        ev.iter()
            .any(|e| e["event.type"] == "mcp.alert" && e["server"]["process"]["pid"].as_u64() == Some(server))
    });
    let ops = operations_of(&events, server);
    assert!(!ops.is_empty());
    for e in &ops {
        assert_eq!(e["client"]["name"], "claude-code", "it says so");
        assert_eq!(e["client"]["app"], "python-agent", "it is not: {e}");
    }
    let alert = events
        .iter()
        .find(|e| e["event.type"] == "mcp.alert" && e["server"]["process"]["pid"].as_u64() == Some(server))
        .unwrap();
    assert_eq!(alert["alert"]["kind"], "policy_violation");
    assert!(
        alert["alert"]["message"]
            .as_str()
            .unwrap()
            .contains("\"python-agent\" (declares \"claude-code\")"),
        "{alert}"
    );
}
