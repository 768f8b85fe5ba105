//! The operators' views of a running agent, on real traffic: the web
//! dashboard in real headless Chromium (numbers, drill-down, live tail,
//! history across a restart), `mcptap top` under tmux, `mcptap tail`.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use mcptap_tests::{Agent, Env, env, free_port, operations_of, parse_report, same_json, summary};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "e2e-dashboard-token-0123456789";

fn text<'a>(e: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(e, |v, k| v.get(*k)).and_then(Value::as_str)
}

/// The names the store ranks by, as agent/src/store.rs takes them.
fn client_of(e: &Value) -> Option<&str> {
    text(e, &["client", "name"]).or_else(|| text(e, &["client", "app"]))
}
fn server_of(e: &Value) -> Option<&str> {
    text(e, &["server", "name"]).or_else(|| text(e, &["server", "process", "exe"]))
}

/// Drives one stdio session against the tests' FastMCP server; returns its pid.
fn session(env: &Env, client: &str, steps: Value) -> u64 {
    let report =
        env.drive(&json!({"sessions": [{"server": env.test_server(), "client_name": client, "steps": steps}]}));
    report["sessions"][0]["server_pid"].as_u64().expect("server pid")
}

/// Waits until `pid`'s operations include `n` tools/call events.
fn wait_calls(agent: &Agent, pid: u64, n: usize) -> Vec<Value> {
    let events = agent.wait_events("every tools/call", WAIT, |ev| {
        operations_of(ev, pid)
            .iter()
            .filter(|e| e["mcp.method.name"] == "tools/call")
            .count()
            >= n
    });
    operations_of(&events, pid)
}

fn get_json(url: &str, token: Option<&str>) -> Result<Value, u16> {
    let mut req = ureq::get(url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Ok(r) => Ok(serde_json::from_str(&r.into_string().expect("body")).expect("JSON")),
        Err(ureq::Error::Status(code, _)) => Err(code),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

fn rate(errors: usize, calls: usize) -> String {
    format!(
        "{:.1}%",
        if calls == 0 {
            0.0
        } else {
            errors as f64 * 100.0 / calls as f64
        }
    )
}

#[test]
fn dashboard_in_chromium_matches_events_and_keeps_history_across_restart() {
    let env = env();
    let files = env.artifacts.join("dashboard-files");
    let _ = std::fs::remove_dir_all(&files);
    std::fs::create_dir_all(&files).unwrap();
    let state = files.join("state");
    let token_file = files.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();

    // Before the restart: an agent without the dashboard records calls.
    let before = Agent::start(
        &env,
        "dashboard-before-restart",
        &["--state-dir", state.to_str().unwrap()],
    );
    let pid_a = session(
        &env,
        "dash-client-a",
        json!([
            {"call": "add", "args": {"a": 1, "b": 2}, "repeat": 5},
            {"call": "refuse", "args": {"reason": "no"}, "repeat": 2},
            {"call": "explode", "args": {}}
        ]),
    );
    wait_calls(&before, pid_a, 9); // whoami (drive.py's own) + 8
    let mut ops = operations_of(&before.stop(), pid_a);

    // After: a new agent on the same state directory, with the dashboard.
    let ui = format!("127.0.0.1:{}", free_port());
    let agent = Agent::start(
        &env,
        "dashboard",
        &[
            "--state-dir",
            state.to_str().unwrap(),
            "--ui",
            &ui,
            "--ui-token-file",
            token_file.to_str().unwrap(),
        ],
    );
    let pid_b = session(
        &env,
        "dash-client-b",
        json!([
            {"call": "add", "args": {"a": 2, "b": 2}, "repeat": 2},
            {"call": "sleep", "args": {"seconds": 0.05}}
        ]),
    );
    ops.extend(wait_calls(&agent, pid_b, 4));

    // What the dashboard must show, from the events themselves.
    let calls = ops.len();
    let failed = ops.iter().filter(|e| e["status"] != "ok").count();
    let clients: BTreeSet<&str> = ops.iter().filter_map(client_of).collect();
    let servers: BTreeSet<&str> = ops.iter().filter_map(server_of).collect();
    let mut tools: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut by_client: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for e in &ops {
        let bad = usize::from(e["status"] != "ok");
        if let Some(t) = e["gen_ai.tool.name"].as_str() {
            let c = tools.entry(t).or_default();
            c.0 += 1;
            c.1 += bad;
        }
        if let Some(c) = client_of(e) {
            let c = by_client.entry(c).or_default();
            c.0 += 1;
            c.1 += bad;
        }
    }
    assert_eq!(tools.get("add"), Some(&(7, 0)), "{}", summary(&ops));
    assert_eq!(tools.get("refuse"), Some(&(2, 2)), "{}", summary(&ops));

    // The API refuses requests without the token, and has caught up.
    let base = format!("http://{ui}");
    assert_eq!(get_json(&format!("{base}/api/summary"), None), Err(401));
    let deadline = Instant::now() + WAIT;
    loop {
        let s = get_json(&format!("{base}/api/summary?window=7d"), Some(TOKEN)).expect("summary");
        if s["calls"].as_u64() == Some(calls as u64) {
            break;
        }
        assert!(Instant::now() < deadline, "the store never reached {calls} calls: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The browser, then live calls for its tail once it says it is connected.
    let tail_ready = files.join("tail-ready");
    let plan = json!({
        "url": base, "token": TOKEN, "shots": agent.dir,
        "drill_tool": "refuse", "tail_ready": tail_ready, "tail_tool": "echo", "tail_count": 3,
    });
    let browser = Command::new("node")
        .arg(env.peers.join("dashboard.mjs"))
        .arg(plan.to_string())
        .current_dir(&env.peers)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node dashboard.mjs");
    let t0 = Instant::now();
    let mut browser = Some(browser);
    while !tail_ready.exists() {
        if t0.elapsed() > Duration::from_secs(90) || browser.as_mut().unwrap().try_wait().unwrap().is_some() {
            let out = browser.take().unwrap().wait_with_output().unwrap();
            panic!(
                "the browser run ended before its live tail connected:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid_c = session(
        &env,
        "dash-client-c",
        json!([{"call": "echo", "args": {"text": "hi"}, "repeat": 3}]),
    );
    let report = parse_report("dashboard.mjs", &browser.take().unwrap().wait_with_output().unwrap());
    std::fs::write(agent.dir.join("dashboard-report.json"), report.to_string()).unwrap();

    // Without the token the page shows no figures, and says why.
    assert!(
        report["without_token"].as_str().unwrap().contains("unauthorized"),
        "{report}"
    );
    assert_eq!(report["without_token_calls"], "…");
    assert!(!report["url_after_load"].as_str().unwrap().contains(TOKEN));

    // Headline: every window holds every call, from both agent runs.
    for w in ["15m", "24h", "7d"] {
        let h = &report["headline"][w];
        assert_eq!(h["calls"], calls.to_string(), "{w}: {report}");
        assert_eq!(h["clients"], clients.len().to_string(), "{w}: {report}");
        assert_eq!(h["servers"], servers.len().to_string(), "{w}: {report}");
        assert_eq!(h["error_rate"], rate(failed, calls), "{w}: {report}");
    }
    assert_eq!(report["chart_total"], calls, "{report}");

    // Rankings: the same counts and error rates per tool and per client.
    let rows = |d: &str| -> BTreeMap<String, (String, String, String)> {
        report["ranks"][d]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap().to_string(),
                    (
                        r["calls"].as_str().unwrap().to_string(),
                        r["errors"].as_str().unwrap().to_string(),
                        r["error_rate"].as_str().unwrap().to_string(),
                    ),
                )
            })
            .collect()
    };
    let want = |m: &BTreeMap<&str, (usize, usize)>| -> BTreeMap<String, (String, String, String)> {
        m.iter()
            .map(|(k, (n, bad))| (k.to_string(), (n.to_string(), bad.to_string(), rate(*bad, *n))))
            .collect()
    };
    assert_eq!(rows("tool"), want(&tools), "{report}");
    assert_eq!(rows("client"), want(&by_client), "{report}");
    // p50/p95/p99 are shown for every ranked tool.
    for r in report["ranks"]["tool"].as_array().unwrap() {
        let cells = r["cells"].as_array().unwrap();
        assert!(
            cells[4..7]
                .iter()
                .all(|c| c.as_str().unwrap().ends_with(" ms") || c.as_str().unwrap().ends_with(" s")),
            "{r}"
        );
    }

    // Drill-down: the refuse row lists exactly the refuse calls...
    let refuse_ids: BTreeSet<&str> = ops
        .iter()
        .filter(|e| e["gen_ai.tool.name"] == "refuse")
        .map(|e| e["event.id"].as_str().unwrap())
        .collect();
    let drilled: BTreeSet<&str> = report["drill"]["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(drilled, refuse_ids, "{report}");
    assert_eq!(report["drill"]["headline_15m_calls"], "2");
    assert_eq!(report["drill"]["tool_rows"], json!(["refuse"]));
    // ...and a call opens to its full event, as the agent wrote it.
    let opened = &report["event"];
    let written = ops
        .iter()
        .find(|e| e["event.id"] == opened["event.id"])
        .unwrap_or_else(|| panic!("the opened event is not one of the refuse calls: {opened}"));
    assert!(same_json(opened, written), "opened {opened}\nwritten {written}");
    // Its key fields first, as the event has them.
    let key = &report["event_summary"];
    assert_eq!(key["tool"], "refuse", "{key}");
    assert_eq!(key["status"], "tool_error", "{key}");
    assert_eq!(key["client"], "dash-client-a", "{key}");
    assert_eq!(key["time"], written["time"], "{key}");

    // Live tail: the calls made while the page was open, as they happened.
    let echo_ids: BTreeSet<String> = wait_calls(&agent, pid_c, 4)
        .iter()
        .filter(|e| e["gen_ai.tool.name"] == "echo")
        .map(|e| e["event.id"].as_str().unwrap().to_string())
        .collect();
    let tailed: BTreeSet<String> = report["tail"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["cells"][2] == "echo")
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tailed, echo_ids, "{report}");
    for shot in [
        "dashboard-overview.png",
        "dashboard-drill.png",
        "dashboard-event.png",
        "dashboard-tail.png",
    ] {
        assert!(agent.dir.join(shot).exists(), "screenshot {shot} missing");
    }
    agent.stop();
}

/// The pane's text (`tmux capture-pane -p`).
fn capture(session: &str) -> String {
    let out = Command::new("tmux")
        .args(["capture-pane", "-p", "-t", session])
        .output()
        .expect("tmux capture-pane");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_pane(session: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pane = capture(session);
        if pred(&pane) {
            return pane;
        }
        assert!(Instant::now() < deadline, "top never showed {what}:\n{pane}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn keys(session: &str, keys: &[&str]) {
    let ok = Command::new("tmux")
        .args(["send-keys", "-t", session])
        .args(keys)
        .status()
        .expect("tmux send-keys")
        .success();
    assert!(ok, "tmux send-keys {keys:?}");
}

/// The figure after `label` in top's header line (`calls 12`).
fn header_figure(pane: &str, label: &str) -> Option<String> {
    let line = pane.lines().find(|l| l.contains("mcptap top"))?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == label)?;
    words.next().map(str::to_string)
}

/// A ranked row's calls column in one of top's tables (`│add   3  0% ...`).
fn rank_calls(pane: &str, name: &str) -> Vec<String> {
    pane.lines()
        .flat_map(|l| l.split('│'))
        .filter_map(|cell| {
            let mut w = cell.split_whitespace();
            (w.next() == Some(name)).then(|| w.next().map(str::to_string)).flatten()
        })
        .collect()
}

#[test]
fn top_under_tmux_shows_live_figures_and_filters() {
    let env = env();
    let agent = Agent::start(&env, "top", &[]);
    let pid = session(
        &env,
        "top-client",
        json!([
            {"call": "add", "args": {"a": 1, "b": 2}, "repeat": 3},
            {"call": "refuse", "args": {"reason": "no"}}
        ]),
    );
    let ops = wait_calls(&agent, pid, 5);
    let session_name = format!("mcptap-top-e2e-{}", std::process::id());
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", &session_name])
        .status();
    let top = format!(
        "{} top --socket {} ; echo top-exited-$? ; sleep 30",
        env.agent.display(),
        agent.api_socket().display()
    );
    let ok = Command::new("tmux")
        .args(["new-session", "-d", "-s", &session_name, "-x", "200", "-y", "50", &top])
        .status()
        .expect("tmux new-session")
        .success();
    assert!(ok, "tmux new-session failed");
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("tmux").args(["kill-session", "-t", &self.0]).status();
        }
    }
    let _kill = Kill(session_name.clone());
    let save = |name: &str, pane: &str| std::fs::write(agent.dir.join(name), pane).unwrap();

    // Every operation of the session, ranked per tool.
    let total = ops.len().to_string();
    let pane = wait_pane(&session_name, "every call", |p| {
        header_figure(p, "calls").as_deref() == Some(total.as_str()) && p.contains("refuse")
    });
    save("top-1-overview.txt", &pane);
    assert_eq!(rank_calls(&pane, "add"), vec!["3"], "{pane}");
    assert_eq!(rank_calls(&pane, "refuse"), vec!["1"], "{pane}");
    assert!(rank_calls(&pane, "top-client").contains(&total), "{pane}");
    assert!(pane.contains("Recent calls") && pane.contains("tool_error"), "{pane}");

    // `/` filter by tool: only refuse's call remains.
    keys(&session_name, &["/"]);
    keys(&session_name, &["-l", "tool=refuse"]);
    keys(&session_name, &["Enter"]);
    let pane = wait_pane(&session_name, "the filter", |p| {
        p.contains("filter: tool=refuse") && header_figure(p, "calls").as_deref() == Some("1")
    });
    save("top-2-filtered.txt", &pane);
    assert!(rank_calls(&pane, "add").is_empty(), "{pane}");
    assert_eq!(header_figure(&pane, "errors").as_deref(), Some("100.0%"), "{pane}");

    // New calls show up live; `s` sorts by errors; `c` clears; `w` widens.
    keys(&session_name, &["c"]);
    let pid2 = session(
        &env,
        "top-client",
        json!([{"call": "add", "args": {"a": 5, "b": 5}, "repeat": 2}]),
    );
    let total2 = (ops.len() + wait_calls(&agent, pid2, 3).len()).to_string();
    let pane = wait_pane(&session_name, "the new calls", |p| {
        header_figure(p, "calls").as_deref() == Some(total2.as_str())
    });
    assert_eq!(rank_calls(&pane, "add"), vec!["5"], "{pane}");
    keys(&session_name, &["s"]);
    keys(&session_name, &["w"]);
    let pane = wait_pane(&session_name, "sort and window", |p| {
        p.contains("sort: errors") && p.contains("window 1h")
    });
    save("top-3-sorted.txt", &pane);
    // Sorted by errors, refuse (1 error) comes before add (none).
    let refuse_at = pane.find("│refuse").unwrap_or(usize::MAX);
    let add_at = pane.find("│add").unwrap_or(0);
    assert!(refuse_at < add_at, "{pane}");

    keys(&session_name, &["q"]);
    let pane = wait_pane(&session_name, "its exit", |p| p.contains("top-exited-"));
    assert!(pane.contains("top-exited-0"), "{pane}");
    agent.stop();
}

/// Reads lines from a running `mcptap tail` until `n` arrived.
fn read_lines(child: &mut std::process::Child, n: usize) -> Vec<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + WAIT;
    while lines.len() < n {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => lines.push(l),
            Err(_) => panic!("tail printed {} of {n} lines: {lines:#?}", lines.len()),
        }
    }
    // Anything more within a second would be a line that should not be there.
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(1)) {
        lines.push(l);
    }
    lines
}

fn start_tail(env: &Env, socket: &Path, args: &[&str], stderr: &Path) -> std::process::Child {
    Command::new(&env.agent)
        .arg("tail")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .expect("start mcptap tail")
}

#[test]
fn tail_streams_filtered_live_events() {
    let env = env();
    let agent = Agent::start(&env, "tail", &[]);
    let socket = agent.api_socket();
    let json_err = agent.dir.join("tail-json.stderr");
    let pretty_err = agent.dir.join("tail-pretty.stderr");
    let mut json_tail = start_tail(&env, &socket, &["--tool", "add", "--json"], &json_err);
    let mut pretty_tail = start_tail(
        &env,
        &socket,
        &["--status", "tool_error", "--client", "tail-client"],
        &pretty_err,
    );
    for f in [&json_err, &pretty_err] {
        let deadline = Instant::now() + WAIT;
        while !std::fs::read_to_string(f)
            .unwrap_or_default()
            .contains("following live events")
        {
            assert!(
                Instant::now() < deadline,
                "tail never connected: {}",
                std::fs::read_to_string(f).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let pid = session(
        &env,
        "tail-client",
        json!([
            {"call": "add", "args": {"a": 1, "b": 2}, "repeat": 3},
            {"call": "refuse", "args": {"reason": "no"}, "repeat": 2},
            {"call": "echo", "args": {"text": "x"}}
        ]),
    );
    let ops = wait_calls(&agent, pid, 7);

    // --json: the events themselves, exactly the add calls.
    let lines = read_lines(&mut json_tail, 3);
    let got: BTreeSet<String> = lines
        .iter()
        .map(|l| {
            let e: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert_eq!(e["gen_ai.tool.name"], "add", "{l}");
            e["event.id"].as_str().unwrap().to_string()
        })
        .collect();
    let want: BTreeSet<String> = ops
        .iter()
        .filter(|e| e["gen_ai.tool.name"] == "add")
        .map(|e| e["event.id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, want, "{lines:#?}");

    // Pretty: one line per failed call, with its tool, status and client.
    let lines = read_lines(&mut pretty_tail, 2);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    for l in &lines {
        assert!(
            l.contains("tool_error") && l.contains("tools/call refuse") && l.contains("client=tail-client"),
            "{l}"
        );
        assert!(!l.contains('\x1b'), "colours on a pipe: {l:?}");
    }
    for mut c in [json_tail, pretty_tail] {
        let _ = c.kill();
        let _ = c.wait();
    }
    agent.stop();
}

/// Reading captured payloads through the API leaves a trace: each stored
/// event with payloads read (`/api/events/{id}`), on the unix socket or on
/// the dashboard's port, and each live tail opened, is an `mcp.audit`
/// event naming who read (the socket peer's uid, user and pid from the
/// kernel; the dashboard client's address) and what.
#[test]
fn payload_reads_through_the_api_are_audited() {
    let env = env();
    let dir = env.artifacts.join("audit-files");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("ui-token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let ui = format!("127.0.0.1:{}", free_port());
    let agent = Agent::start(
        &env,
        "audit",
        &[
            "--capture-payloads",
            "--ui",
            &ui,
            "--ui-token-file",
            token_file.to_str().unwrap(),
        ],
    );
    let pid = session(&env, "audit-client", json!([{"call": "add", "args": {"a": 1, "b": 2}}]));
    let ops = wait_calls(&agent, pid, 2);
    let add = ops
        .iter()
        .find(|e| e["gen_ai.tool.name"] == "add")
        .expect("the add call");
    assert!(add.get("payload").is_some(), "payloads are captured: {add}");
    let id = add["event.id"].as_str().unwrap().to_string();

    // On the unix socket (curl: its pid is the reader's).
    let deadline = Instant::now() + WAIT;
    let curl_pid = loop {
        let child = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "--unix-socket"])
            .arg(agent.api_socket())
            .arg(format!("http://mcptap/api/events/{id}"))
            .spawn()
            .expect("curl");
        let curl_pid = child.id();
        if child.wait_with_output().expect("curl").status.success() {
            break curl_pid;
        }
        assert!(Instant::now() < deadline, "the event never reached the store");
        std::thread::sleep(Duration::from_millis(200));
    };
    // On the dashboard's port, with its token.
    get_json(&format!("http://{ui}/api/events/{id}"), Some(TOKEN)).expect("the event over TCP");
    let audits = |events: &[Value]| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e["event.type"] == "mcp.audit")
            .cloned()
            .collect()
    };
    let events = agent.wait_events("two audits", WAIT, |ev| audits(ev).len() >= 2);
    std::thread::sleep(Duration::from_millis(300));
    let found = audits(&agent.events());
    assert_eq!(found.len(), 2, "{}", summary(&found));
    let _ = events;
    let local = found
        .iter()
        .find(|a| a["audit"]["viewer"]["via"] == "unix_socket")
        .expect("the socket read");
    assert_eq!(local["audit"]["route"], "event");
    assert_eq!(local["audit"]["viewed_event_id"], id.as_str());
    assert_eq!(local["audit"]["viewer"]["uid"], 0);
    assert_eq!(local["audit"]["viewer"]["user"], "root");
    assert_eq!(local["audit"]["viewer"]["pid"], curl_pid);
    assert!(
        local.get("mcp.session.id").is_none() && local.get("payload").is_none(),
        "{local}"
    );
    let remote = found
        .iter()
        .find(|a| a["audit"]["viewer"]["via"] == "dashboard")
        .expect("the dashboard read");
    assert_eq!(remote["audit"]["viewed_event_id"], id.as_str());
    assert_eq!(remote["audit"]["viewer"]["token"], true);
    assert!(
        remote["audit"]["viewer"]["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{remote}"
    );
}

/// What a call did on the host, in the dashboard in real Chromium: the
/// calls filtered by an effect kind, a call's effects (with its
/// connection's host name), identity and CPU in its event view, its alert
/// in the alerts panel under the same filter, and the tools the server
/// offered that no one called.
#[test]
fn dashboard_shows_what_a_call_did_its_alert_and_the_tools_never_called() {
    let env = env();
    let files = env.artifacts.join("dashboard-effects-files");
    let _ = std::fs::remove_dir_all(&files);
    std::fs::create_dir_all(&files).unwrap();
    let token_file = files.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let policy = files.join("policy.toml");
    std::fs::write(
        &policy,
        "[[server]]\nname = \"mcptap-test-server\"\n[server.effects]\nconnect = [\"*.mcptap.test\"]\n",
    )
    .unwrap();
    let input = files.join("input.txt");
    std::fs::write(&input, "hello").unwrap();
    let web = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let web_port = web.local_addr().unwrap().port();
    mcptap_tests::serve(web, b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
    let ui = format!("127.0.0.1:{}", free_port());
    let agent = Agent::start(
        &env,
        "dashboard-effects",
        &[
            "--state-dir",
            files.join("state").to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            "--ui",
            &ui,
            "--ui-token-file",
            token_file.to_str().unwrap(),
        ],
    );
    let report = env.drive(
        &json!({"sessions": [{"server": env.test_server(), "client_name": "effects-dash-client",
        "env": {"MCPTAP_TEST_EFFECTS": "1"},
        "steps": [
            {"list_tools": true},
            {"call": "read_file", "args": {"path": input}},
            {"call": "http_get", "args": {"port": web_port, "host": "api.mcptap.test"}},
            {"call": "http_get", "args": {"port": web_port, "host": "elsewhere.example"}},
            {"call": "add", "args": {"a": 1, "b": 2}}
        ]}]}),
    );
    assert!(report["sessions"][0].get("error").is_none(), "{report}");
    let pid = report["sessions"][0]["server_pid"].as_u64().expect("server pid");
    let events = agent.wait_events("the calls and the alert", WAIT, |ev| {
        operations_of(ev, pid).iter().any(|e| e["gen_ai.tool.name"] == "add")
            && ev.iter().any(|e| e["alert"]["kind"] == "effect_outside_scope")
    });
    let gets: Vec<&Value> = events
        .iter()
        .filter(|e| e["event.type"] == "mcp.operation" && e["gen_ai.tool.name"] == "http_get")
        .collect();
    assert_eq!(gets.len(), 2, "{}", summary(&events));
    // The store has caught up with both.
    let base = format!("http://{ui}");
    let deadline = Instant::now() + WAIT;
    while get_json(&format!("{base}/api/calls?window=1h&effect=connect"), Some(TOKEN))
        .ok()
        .and_then(|v| v["calls"].as_array().map(Vec::len))
        != Some(2)
    {
        assert!(Instant::now() < deadline, "the store never had the two connect calls");
        std::thread::sleep(Duration::from_millis(200));
    }

    let out = Command::new("node")
        .arg(env.peers.join("dashboard_effects.mjs"))
        .arg(json!({"url": base, "token": TOKEN, "shots": agent.dir, "effect": "connect"}).to_string())
        .current_dir(&env.peers)
        .output()
        .expect("node dashboard_effects.mjs");
    let page = parse_report("dashboard_effects.mjs", &out);
    std::fs::write(agent.dir.join("dashboard-effects-report.json"), page.to_string()).unwrap();

    // Filtered by `connect`: the two http_get calls, nothing else.
    let calls = page["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{page}");
    assert!(calls.iter().all(|c| c["cells"][2] == "http_get"), "{page}");
    // The opened call, as the agent wrote it; its effects as the page lists
    // them: the connection, with the host name the call sent.
    let opened = &page["event"];
    let written = gets
        .iter()
        .find(|e| e["event.id"] == opened["event.id"])
        .unwrap_or_else(|| panic!("the opened event is not an http_get call: {opened}"));
    assert!(same_json(opened, written), "opened {opened}\nwritten {written}");
    let host = written["mcp.effects"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "connect")
        .and_then(|i| i["host"].as_str())
        .unwrap_or_else(|| panic!("no named connection: {written}"))
        .to_string();
    let rows = page["effects"].as_array().unwrap();
    assert!(
        rows.iter().any(|r| r["kind"] == "connect"
            && r["cells"][1].as_str().is_some_and(
                |t| t.contains(&format!("127.0.0.1:{web_port}")) && t.contains(&format!("({host}, from http)"))
            )
            && r["cells"][3] == "exact"),
        "{page}"
    );
    // Identity and cost in its summary.
    assert_eq!(page["summary"]["client"], "effects-dash-client", "{page}");
    assert_eq!(page["summary"]["user (process)"], "root", "{page}");
    assert!(page["summary"]["server CPU (s)"].is_string(), "{page}");
    assert_eq!(page["summary"]["CPU attribution"], "exact", "{page}");
    // The alert, under the same filter: the call to the other name.
    let alerts = page["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{page}");
    assert_eq!(alerts[0]["cells"][2], "http_get", "{page}");
    // Tools offered and never called: this server's, `burn` among them,
    // the ones called not.
    let unused = page["unused"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["server"] == "mcptap-test-server")
        .and_then(|r| r["unused"].as_str())
        .unwrap_or_else(|| panic!("{page}"))
        .to_string();
    let unused: Vec<&str> = unused.split(", ").collect();
    assert!(unused.contains(&"burn"), "{unused:?}");
    assert!(!unused.contains(&"http_get") && !unused.contains(&"add"), "{unused:?}");
    agent.stop();
}
