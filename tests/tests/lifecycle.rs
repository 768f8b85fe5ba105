//! The agent's lifecycle, over and over: started, fed real traffic, stopped
//! with one SIGINT. Each stop must be quick, lose no event, and leave
//! nothing behind in the kernel (programs, uprobes, pinned objects).

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use mcptap_tests::{Agent, Env, count, env, summary};

const ROUNDS: usize = 50;
const STOP_WITHIN: Duration = Duration::from_secs(2);

/// One stdio session with the tiny server: initialize, a tool call, a
/// ping, the client named `client`.
fn session(env: &Env, client: &str) {
    let mut server = Command::new(&env.python)
        .arg(env.peers.join("tiny_server.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("tiny_server.py");
    let mut stdin = server.stdin.take().unwrap();
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    let init = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"{client}","version":"1"}}}}}}"#
    );
    for request in [
        init.as_str(),
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"n":1}}}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#,
    ] {
        writeln!(stdin, "{request}").unwrap();
        line.clear();
        stdout.read_line(&mut line).unwrap();
        assert!(line.contains("\"result\""), "{line}");
    }
    drop(stdin);
    server.wait().unwrap();
}

/// mcptap's programs still loaded in the kernel (by name), once the kernel
/// had time to free them: a program goes after an RCU grace period, not at
/// the very moment its last descriptor closes.
fn our_programs() -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = loaded_programs();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn loaded_programs() -> Vec<String> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("bpftool");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .filter(|n| {
            n.starts_with("sys_exit") || n.starts_with("fx") || n.starts_with("ssl_") || n.starts_with("sched_")
        })
        .map(str::to_string)
        .collect()
}

fn uprobe_events() -> String {
    std::fs::read_to_string("/sys/kernel/tracing/uprobe_events").unwrap_or_default()
}

#[test]
fn started_fed_and_stopped_fifty_times() {
    let env = env();
    assert!(
        our_programs().is_empty(),
        "programs left over before the test: {:?}",
        our_programs()
    );
    let uprobes_before = uprobe_events();
    let mut slowest = Duration::ZERO;
    for round in 0..ROUNDS {
        // Every other round with the dashboard on, and every fourth with a
        // `mcptap tail` reader connected to the local API when the stop
        // comes: a stop must not wait on a reader.
        let ui_port = mcptap_tests::free_port().to_string();
        let ui_addr = format!("127.0.0.1:{ui_port}");
        let extra: Vec<&str> = if round % 2 == 0 { vec!["--ui", &ui_addr] } else { vec![] };
        let mut agent = Agent::start(&env, &format!("lifecycle/{round:02}"), &extra);
        let tail = (round % 4 == 0).then(|| {
            Command::new(&env.agent)
                .arg("tail")
                .arg("--socket")
                .arg(agent.api_socket())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("mcptap tail")
        });
        // Named per round: the server may be gone before the agent reads
        // its /proc entry (the stop comes right after), its client's name
        // is in the events regardless.
        let client = format!("lifecycle-{round:02}");
        session(&env, &client);
        // Stopped as soon as the traffic is done: what the kernel already
        // captured must still become events.
        let stop = Instant::now();
        let exited = agent.stop_within(libc::SIGINT, STOP_WITHIN);
        let took = stop.elapsed();
        slowest = slowest.max(took);
        assert!(
            exited,
            "round {round}: one SIGINT did not stop the agent within {STOP_WITHIN:?}:\n{}",
            agent.log_text()
        );
        if let Some(mut tail) = tail {
            // The reader sees the agent go, and ends.
            let deadline = Instant::now() + Duration::from_secs(5);
            while tail.try_wait().unwrap().is_none() {
                assert!(
                    Instant::now() < deadline,
                    "round {round}: mcptap tail outlived the agent"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let events = agent.events();
        let ops: Vec<_> = events
            .iter()
            .filter(|e| e["event.type"] == "mcp.operation" && e["client"]["name"] == client.as_str())
            .cloned()
            .collect();
        assert_eq!(
            count(&ops, "initialize", None, "ok"),
            1,
            "round {round}: {}",
            summary(&events)
        );
        assert_eq!(
            count(&ops, "tools/call", Some("echo"), "ok"),
            1,
            "round {round}: {}",
            summary(&events)
        );
        assert_eq!(
            count(&ops, "ping", None, "ok"),
            1,
            "round {round}: {}",
            summary(&events)
        );
        assert!(
            our_programs().is_empty(),
            "round {round}: programs left in the kernel: {:?}",
            our_programs()
        );
        assert_eq!(uprobe_events(), uprobes_before, "round {round}: uprobes left behind");
        assert!(
            std::fs::read_dir("/sys/fs/bpf").map_or(true, |d| d.count() == 0),
            "round {round}: pinned objects left in /sys/fs/bpf"
        );
    }
    eprintln!("{ROUNDS} rounds: the slowest stop took {slowest:?}");
}
