//! End-to-end delivery: the agent's events reach real receivers — rsyslog
//! (Debian's package) over UDP, TCP and TLS; an HTTP collector that goes
//! away and comes back; an OTLP receiver built on the official protobuf
//! definitions — each exactly once, and per-sink filters, rate limits and
//! file rotation hold on real traffic.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use mcptap_tests::{Agent, Env, env, free_port, read_events, summary, wait_until};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// A fresh directory under the artifacts (beside the agent's own, which
/// `Agent::start` empties).
fn workdir(env: &Env, name: &str) -> PathBuf {
    let dir = env.artifacts.join(format!("{name}-setup"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether the session of the server named `name` has ended in `events`.
fn session_ended(events: &[Value], name: &str) -> bool {
    events
        .iter()
        .any(|e| e["event.type"] == "mcp.session.end" && e["server"]["name"] == name)
}

/// Tool calls through the tests' stdio server: `calls` adds and one refuse.
fn traffic(env: &Env, name: &str, calls: usize) -> Value {
    env.drive(
        &json!({"sessions": [{"server": env.test_server(), "env": {"MCPTAP_TEST_SERVER_NAME": name},
        "steps": [
            {"call": "add", "args": {"a": 1, "b": 2}, "repeat": calls},
            {"call": "refuse", "args": {"reason": "no"}}
        ]}]}),
    )
}

fn ids(events: &[Value]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in events {
        *out.entry(e["event.id"].as_str().expect("event.id").to_string())
            .or_insert(0) += 1;
    }
    out
}

/// The agent's events as each sink must have them: exactly the same ids,
/// each once.
fn assert_exactly_once(sink: &str, want: &[Value], got: &[Value]) {
    let (want_ids, got_ids) = (ids(want), ids(got));
    let dups: Vec<_> = got_ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "{sink}: events received more than once: {dups:?}");
    let missing: Vec<_> = want_ids.keys().filter(|id| !got_ids.contains_key(*id)).collect();
    let extra: Vec<_> = got_ids.keys().filter(|id| !want_ids.contains_key(*id)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{sink}: {} events missing, {} unknown; agent's events:\n{}",
        missing.len(),
        extra.len(),
        summary(want)
    );
}

struct Rsyslog {
    child: Child,
    dir: PathBuf,
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Rsyslog {
    /// rsyslogd in the foreground with `inputs` (rsyslog config lines), each
    /// input's messages written to `<ruleset>.log` in `dir`.
    fn start(dir: &Path, globals: &str, inputs: &[(&str, String)], ports: &[u16]) -> Rsyslog {
        let mut conf = format!(
            "global(workDirectory=\"{d}\" maxMessageSize=\"256k\"{globals})\n\
             template(name=\"line\" type=\"string\" string=\"%protocol-version% %app-name% %procid% %msgid% %syslogfacility-text% %syslogseverity-text% %hostname% %msg%\\n\")\n",
            d = dir.display()
        );
        for (ruleset, input) in inputs {
            conf.push_str(&format!(
                "ruleset(name=\"{ruleset}\") {{ action(type=\"omfile\" file=\"{}/{ruleset}.log\" template=\"line\") }}\n{input}\n",
                dir.display()
            ));
        }
        let conf_path = dir.join("rsyslog.conf");
        fs::write(&conf_path, &conf).unwrap();
        let log = fs::File::create(dir.join("rsyslogd.out")).unwrap();
        let child = Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(&conf_path)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("rsyslogd (Debian package rsyslog, installed by cargo xtask setup)");
        let r = Rsyslog {
            child,
            dir: dir.to_path_buf(),
        };
        for port in ports {
            let udp = inputs
                .iter()
                .any(|(_, i)| i.contains("imudp") && i.contains(&port.to_string()));
            if !udp {
                wait_until(
                    &format!("rsyslogd listening on {port}"),
                    Duration::from_secs(20),
                    || std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok(),
                );
            }
        }
        // UDP inputs are up when the TCP ones are (same start-up), or soon.
        std::thread::sleep(Duration::from_millis(500));
        r
    }

    /// Messages of one ruleset: (header fields, event).
    fn messages(&self, ruleset: &str) -> Vec<(Vec<String>, Value)> {
        let text = fs::read_to_string(self.dir.join(format!("{ruleset}.log"))).unwrap_or_default();
        text.lines()
            .map(|l| {
                let mut parts = l.splitn(8, ' ');
                let header: Vec<String> = (0..7).map(|_| parts.next().unwrap_or("").to_string()).collect();
                let msg = parts.next().unwrap_or("").trim();
                let event =
                    serde_json::from_str(msg).unwrap_or_else(|e| panic!("{ruleset}: MSG is not an event ({e}): {l}"));
                (header, event)
            })
            .collect()
    }
}

#[test]
fn syslog_reaches_rsyslog_over_udp_tcp_and_tls() {
    let env = env();
    let dir = workdir(&env, "syslog-rsyslog");
    let (udp, tcp, tls) = (free_port(), free_port(), free_port());
    let plain = Rsyslog::start(
        &dir.join("plain").tap_mkdir(),
        "",
        &[
            (
                "udp",
                format!(
                    "module(load=\"imudp\")\ninput(type=\"imudp\" address=\"127.0.0.1\" port=\"{udp}\" ruleset=\"udp\")"
                ),
            ),
            (
                "tcp",
                format!(
                    "module(load=\"imtcp\")\ninput(type=\"imtcp\" address=\"127.0.0.1\" port=\"{tcp}\" ruleset=\"tcp\")"
                ),
            ),
        ],
        &[udp, tcp],
    );
    // rsyslog's GnuTLS driver with a certificate signed by a test CA; the
    // agent verifies it against that CA.
    let tls_dir = dir.join("tls").tap_mkdir();
    let (cert, key, ca) = (
        tls_dir.join("cert.pem"),
        tls_dir.join("key.pem"),
        tls_dir.join("ca.pem"),
    );
    let out = Command::new(&env.python)
        .arg(env.peers.join("make_cert.py"))
        .args([&cert, &key, &ca])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make_cert.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secure = Rsyslog::start(
        &tls_dir,
        &format!(
            " defaultNetstreamDriver=\"gtls\" defaultNetstreamDriverCAFile=\"{}\" defaultNetstreamDriverCertFile=\"{}\" defaultNetstreamDriverKeyFile=\"{}\"",
            ca.display(),
            cert.display(),
            key.display()
        ),
        &[(
            "tls",
            format!(
                "module(load=\"imtcp\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=\"anon\")\ninput(type=\"imtcp\" address=\"127.0.0.1\" port=\"{tls}\" ruleset=\"tls\")"
            ),
        )],
        &[tls],
    );

    let config = dir.join("mcptap.toml");
    fs::write(
        &config,
        format!(
            r#"
[[sink]]
name = "rsyslog-udp"
type = "syslog"
address = "127.0.0.1:{udp}"
protocol = "udp"
flush_interval = "50ms"

[[sink]]
name = "rsyslog-tcp"
type = "syslog"
address = "127.0.0.1:{tcp}"
protocol = "tcp"
facility = "auth"
flush_interval = "50ms"

[[sink]]
name = "rsyslog-tls"
type = "syslog"
address = "127.0.0.1:{tls}"
protocol = "tls"
ca_file = "{ca}"
server_name = "localhost"
flush_interval = "50ms"
"#,
            ca = ca.display()
        ),
    )
    .unwrap();
    let agent = Agent::start(
        &env,
        "syslog",
        &[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            dir.join("state").to_str().unwrap(),
        ],
    );
    traffic(&env, "e2e-syslog", 5);
    agent.wait_events("the session's events", WAIT, |ev| session_ended(ev, "e2e-syslog"));
    let events = agent.stop();
    let ops: Vec<&Value> = events
        .iter()
        .filter(|e| e["server"]["name"] == "e2e-syslog" && e["event.type"] == "mcp.operation")
        .collect();
    assert_eq!(
        ops.iter().filter(|e| e["gen_ai.tool.name"] == "add").count(),
        5,
        "{}",
        summary(&events)
    );

    for (server, ruleset, facility) in [
        (&plain, "udp", "local0"),
        (&plain, "tcp", "auth"),
        (&secure, "tls", "local0"),
    ] {
        wait_until(&format!("rsyslog {ruleset} to have every event"), WAIT, || {
            server.messages(ruleset).len() >= events.len()
        });
        let messages = server.messages(ruleset);
        let got: Vec<Value> = messages.iter().map(|(_, e)| e.clone()).collect();
        assert_exactly_once(ruleset, &events, &got);
        for (header, event) in &messages {
            // version, app, procid, msgid, facility, severity, host
            assert_eq!(header[0], "1", "{ruleset}: RFC 5424 version: {header:?}");
            assert_eq!(header[1], "mcptap");
            assert_eq!(header[3], event["event.type"].as_str().unwrap());
            assert_eq!(header[4], facility, "{ruleset}: {header:?}");
            let want_severity = match (event["event.type"].as_str(), event["status"].as_str()) {
                (Some("mcp.alert"), _) => "warning",
                (_, Some(s)) if s != "ok" => "notice",
                _ => "info",
            };
            assert_eq!(header[5], want_severity, "{ruleset}: {header:?} {event}");
            assert_eq!(header[6], event["host"]["name"].as_str().unwrap());
        }
        // The refused call is a notice; the adds are info.
        assert!(
            messages
                .iter()
                .any(|(h, e)| e["gen_ai.tool.name"] == "refuse" && h[5] == "notice")
        );
    }
}

/// `Path::join` then create it.
trait TapMkdir {
    fn tap_mkdir(self) -> PathBuf;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> PathBuf {
        fs::create_dir_all(&self).unwrap();
        self
    }
}

struct Receiver {
    child: Option<Child>,
    port: u16,
    out: PathBuf,
    script: &'static str,
}

impl Receiver {
    fn start(env: &Env, script: &'static str, port: u16, out: &Path) -> Receiver {
        let mut r = Receiver {
            child: None,
            port,
            out: out.to_path_buf(),
            script,
        };
        r.restart(env);
        r
    }

    fn restart(&mut self, env: &Env) {
        let child = Command::new(&env.python)
            .arg(env.peers.join(self.script))
            .arg(self.port.to_string())
            .arg(&self.out)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start receiver");
        self.child = Some(child);
        let port = self.port;
        wait_until(&format!("{} on {port}", self.script), Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn lines(&self) -> Vec<Value> {
        read_events(&self.out)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn http_collector_outage_loses_nothing_and_duplicates_nothing() {
    let env = env();
    let dir = workdir(&env, "http-collector");
    let port = free_port();
    let mut collector = Receiver::start(&env, "collector.py", port, &dir.join("received.jsonl"));
    let config = dir.join("mcptap.toml");
    fs::write(
        &config,
        format!(
            r#"
[[sink]]
name = "collector"
type = "http"
url = "http://127.0.0.1:{port}/ingest"
batch_events = 4
flush_interval = "50ms"
retry_initial = "100ms"
retry_max = "500ms"
"#
        ),
    )
    .unwrap();
    let agent = Agent::start(
        &env,
        "http-collector",
        &[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            dir.join("state").to_str().unwrap(),
        ],
    );
    let delivered = |agent: &Agent| {
        agent
            .metrics()
            .value("mcptap_sink_delivered_events_total", &[("sink", "collector")])
    };
    traffic(&env, "e2e-collector-1", 3);
    wait_until("the first session delivered", WAIT, || {
        collector
            .lines()
            .iter()
            .any(|l| l["event"]["event.type"] == "mcp.session.end")
    });

    // The collector goes away; calls go on.
    collector.kill();
    let before = delivered(&agent);
    traffic(&env, "e2e-collector-2", 10);
    wait_until("delivery failures while the collector is down", WAIT, || {
        let m = agent.metrics();
        m.value("mcptap_sink_delivery_failures_total", &[("sink", "collector")]) >= 3.0
            && m.value("mcptap_sink_spool_bytes", &[("sink", "collector")]) > 0.0
    });
    let m = agent.metrics();
    assert_eq!(m.value("mcptap_sink_up", &[("sink", "collector")]), 0.0);
    assert_eq!(
        delivered(&agent),
        before,
        "nothing can be delivered while the collector is down"
    );
    std::thread::sleep(Duration::from_secs(3));

    // Back: the spooled events arrive, then new ones.
    collector.restart(&env);
    traffic(&env, "e2e-collector-3", 2);
    let events_seen = || agent.events();
    wait_until("every event delivered", WAIT, || {
        let m = agent.metrics();
        m.value("mcptap_sink_delivered_events_total", &[("sink", "collector")]) >= events_seen().len() as f64
            && session_ended(&events_seen(), "e2e-collector-3")
    });
    let events = agent.stop();
    let received = collector.lines();
    let got: Vec<Value> = received.iter().map(|l| l["event"].clone()).collect();
    assert_exactly_once("collector", &events, &got);
    for name in ["e2e-collector-1", "e2e-collector-2", "e2e-collector-3"] {
        assert!(
            got.iter()
                .any(|e| e["server"]["name"] == name && e["gen_ai.tool.name"] == "add"),
            "{name}'s calls reached the collector"
        );
    }
    assert!(received.iter().all(|l| l["content_type"] == "application/x-ndjson"));
    // Events arrive in the order they were produced.
    let order: Vec<&str> = got.iter().map(|e| e["event.id"].as_str().unwrap()).collect();
    let produced: Vec<&str> = events.iter().map(|e| e["event.id"].as_str().unwrap()).collect();
    assert_eq!(order, produced);
    // Batches are named by their place in the spool: distinct.
    let batches: BTreeSet<&str> = received.iter().filter_map(|l| l["batch"].as_str()).collect();
    assert!(batches.len() >= 2);
}

#[test]
fn otlp_receiver_gets_spans_and_logs() {
    let env = env();
    let dir = workdir(&env, "otlp");
    let port = free_port();
    let receiver = Receiver::start(&env, "otlp_receiver.py", port, &dir.join("received.jsonl"));
    let config = dir.join("mcptap.toml");
    fs::write(
        &config,
        format!(
            r#"
[[sink]]
name = "otel"
type = "otlp"
endpoint = "http://127.0.0.1:{port}"
flush_interval = "50ms"
"#
        ),
    )
    .unwrap();
    let policy = dir.join("policy.toml");
    fs::write(
        &policy,
        "[[server]]\nname = \"e2e-otlp\"\ndenied_tools = [\"refuse\"]\n",
    )
    .unwrap();
    let agent = Agent::start(
        &env,
        "otlp",
        &[
            "--config",
            config.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            "--state-dir",
            dir.join("state").to_str().unwrap(),
        ],
    );
    traffic(&env, "e2e-otlp", 4);
    agent.wait_events("the session's end", WAIT, |ev| session_ended(ev, "e2e-otlp"));
    let events = agent.stop();
    let received = receiver.lines();
    assert!(
        received
            .iter()
            .all(|r| r.get("error").is_none() && r["content_type"] == "application/x-protobuf"),
        "every request decodes as OTLP protobuf: {received:?}"
    );
    let attr = |attrs: &Value, key: &str| -> Option<Value> {
        attrs
            .as_array()?
            .iter()
            .find(|a| a["key"] == key)
            .map(|a| a["value"].clone())
    };
    let mut spans = Vec::new();
    let mut logs = Vec::new();
    for r in &received {
        let (resources, scopes, items) = match r["signal"].as_str() {
            Some("traces") => ("resourceSpans", "scopeSpans", "spans"),
            _ => ("resourceLogs", "scopeLogs", "logRecords"),
        };
        for rs in r["request"][resources].as_array().unwrap() {
            let res = &rs["resource"]["attributes"];
            assert_eq!(attr(res, "service.name"), Some(json!({"stringValue": "mcptap"})));
            assert!(attr(res, "host.name").is_some());
            for ss in rs[scopes].as_array().unwrap() {
                assert_eq!(ss["scope"]["name"], "mcptap");
                for item in ss[items].as_array().unwrap() {
                    if items == "spans" {
                        spans.push(item.clone());
                    } else {
                        logs.push(item.clone());
                    }
                }
            }
        }
    }
    let ops: Vec<&Value> = events.iter().filter(|e| e["event.type"] == "mcp.operation").collect();
    assert_eq!(spans.len(), ops.len(), "one span per operation");
    assert_eq!(logs.len(), events.len() - ops.len(), "one log record per other event");
    let adds: Vec<&Value> = spans.iter().filter(|s| s["name"] == "tools/call add").collect();
    assert_eq!(adds.len(), 4, "spans named `{{mcp.method.name}} {{gen_ai.tool.name}}`");
    for s in &adds {
        assert_eq!(s["kind"], "SPAN_KIND_SERVER");
        assert_eq!(
            attr(&s["attributes"], "mcp.method.name"),
            Some(json!({"stringValue": "tools/call"}))
        );
        assert_eq!(
            attr(&s["attributes"], "network.transport"),
            Some(json!({"stringValue": "pipe"}))
        );
        let start: u64 = s["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
        let end: u64 = s["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
        assert!(end > start && end - start < 10_000_000_000);
        assert!(s.get("status").is_none_or(|st| st.get("code").is_none()));
    }
    let refused = spans
        .iter()
        .find(|s| s["name"] == "tools/call refuse")
        .expect("refuse span");
    assert_eq!(refused["status"]["code"], "STATUS_CODE_ERROR");
    let alert = logs
        .iter()
        .find(|l| {
            l["eventName"] == "mcp.alert"
                && attr(&l["attributes"], "alert.kind") == Some(json!({"stringValue": "policy_violation"}))
        })
        .unwrap_or_else(|| panic!("policy alert as a log record: {logs:?}"));
    assert_eq!(alert["severityText"], "WARN");
    assert!(alert["body"]["stringValue"].as_str().unwrap().contains("refuse"));
}

#[test]
fn file_sinks_rotate_filter_and_rate_limit() {
    let env = env();
    let dir = workdir(&env, "file-sinks");
    let config = dir.join("mcptap.toml");
    let (rotated, calls_only, limited) = (dir.join("rotated"), dir.join("calls"), dir.join("limited"));
    fs::write(
        &config,
        format!(
            r#"
[[sink]]
name = "rotated"
type = "file"
path = "{}/events.jsonl"
rotate_size = "4KiB"
keep_files = 3

[[sink]]
name = "calls-only"
type = "file"
path = "{}/events.jsonl"
include = {{ "event.type" = ["mcp.operation"], "mcp.method.name" = ["tools/*"] }}
exclude = {{ "gen_ai.tool.name" = ["refuse"] }}

[[sink]]
name = "limited"
type = "file"
path = "{}/events.jsonl"
rate_limit = 1
rate_burst = 3
"#,
            rotated.display(),
            calls_only.display(),
            limited.display()
        ),
    )
    .unwrap();
    let agent = Agent::start(&env, "file-sinks", &["--config", config.to_str().unwrap()]);
    traffic(&env, "e2e-files", 30);
    agent.wait_events("the session's end", WAIT, |ev| session_ended(ev, "e2e-files"));
    let m = agent.metrics();
    let events = agent.stop();
    assert!(events.len() >= 33, "{}", summary(&events));

    // Rotation: at most 3 rotated files of at most 4 KiB plus the live one;
    // the newest events are all there, whole, in order.
    // Oldest first: by modification time (names sort by time only down to
    // the second).
    let mut files: Vec<PathBuf> = fs::read_dir(&rotated).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort_by_key(|f| fs::metadata(f).unwrap().modified().unwrap());
    assert_eq!(files.len(), 4, "3 rotated files and the live one: {files:?}");
    for f in &files[..3] {
        assert!(fs::metadata(f).unwrap().len() <= 4096, "{f:?}");
    }
    let kept: Vec<Value> = files.iter().flat_map(|f| read_events(f)).collect();
    let tail = &events[events.len() - kept.len()..];
    assert_eq!(
        ids_in_order(&kept),
        ids_in_order(tail),
        "the newest events, whole and in order"
    );

    // Filter: tools/* operations but refuse, nothing else.
    let calls = read_events(&calls_only.join("events.jsonl"));
    let want: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["event.type"] == "mcp.operation"
                && e["mcp.method.name"].as_str().is_some_and(|m| m.starts_with("tools/"))
                && e["gen_ai.tool.name"] != "refuse"
        })
        .collect();
    let want_ids: Vec<String> = want
        .iter()
        .map(|e| e["event.id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids_in_order(&calls), want_ids);
    assert_eq!(calls.iter().filter(|e| e["gen_ai.tool.name"] == "add").count(), 30);
    assert!(calls.iter().all(|e| e["gen_ai.tool.name"] != "refuse"));
    let filtered = m.value("mcptap_sink_filtered_events_total", &[("sink", "calls-only")]);
    assert!(
        filtered >= 3.0,
        "initialize, refuse, notifications, session end are filtered: {filtered}"
    );

    // Rate limit: the burst, then about one per second; the rest counted.
    let limited_events = read_events(&limited.join("events.jsonl"));
    let dropped = m.value(
        "mcptap_events_dropped_total",
        &[("sink", "limited"), ("reason", "rate_limit")],
    );
    assert!(
        limited_events.len() >= 3 && limited_events.len() < events.len(),
        "{}",
        limited_events.len()
    );
    assert!(dropped >= 1.0);
}

fn ids_in_order(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event.id"].as_str().unwrap().to_string())
        .collect()
}
