//! Deployment: the systemd unit (installed, verified, and its capability
//! set proven sufficient by running the agent with exactly it on real
//! traffic, TLS included), the Kubernetes manifests and Helm chart, the
//! Prometheus rules and the Grafana dashboard (validated, and every metric
//! they query found in a real scrape of an agent under traffic).

use std::{path::PathBuf, process::Command, time::Duration};

use mcptap_tests::{Agent, env, free_port, observed, operations_of, summary};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(c: &mut Command) -> std::process::Output {
    let out = c.output().unwrap_or_else(|e| panic!("cannot start {c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `CapabilityBoundingSet=` of the unit, without the `CAP_` prefixes.
fn unit_capabilities(unit: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit limits capabilities");
    line.split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect()
}

#[test]
fn systemd_unit_installs_and_verifies() {
    let env = env();
    let dir = env.artifacts.join("systemd");
    let _ = std::fs::remove_dir_all(&dir);
    let root = dir.join("root");
    let out = run(Command::new(&env.agent)
        .args(["install", "systemd", "--root"])
        .arg(&root));
    let said = String::from_utf8_lossy(&out.stdout);
    let unit_path = root.join("etc/systemd/system/mcptap.service");
    for f in [
        &unit_path,
        &root.join("usr/local/bin/mcptap"),
        &root.join("etc/mcptap/mcptap.env"),
        &root.join("etc/mcptap/mcptap.toml"),
    ] {
        assert!(f.exists(), "{} not installed: {said}", f.display());
    }
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    assert_eq!(
        unit,
        std::fs::read_to_string(repo().join("deploy/systemd/mcptap.service")).unwrap()
    );
    // The installed binary is this agent.
    let version = run(Command::new(root.join("usr/local/bin/mcptap")).arg("--version"));
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("mcptap "));
    // A second install keeps the operator's configuration.
    std::fs::write(root.join("etc/mcptap/mcptap.env"), "MCPTAP_ARGS=--ui 127.0.0.1:9465\n").unwrap();
    let again = run(Command::new(&env.agent)
        .args(["install", "systemd", "--root"])
        .arg(&root));
    assert!(String::from_utf8_lossy(&again.stdout).contains("kept"));
    assert_eq!(
        std::fs::read_to_string(root.join("etc/mcptap/mcptap.env")).unwrap(),
        "MCPTAP_ARGS=--ui 127.0.0.1:9465\n"
    );

    // systemd-analyze verify: no warning at all (it exits 0 on unknown keys,
    // so its output must be empty). The binary at the unit's path is the
    // host's, so the check runs on a copy naming the installed binary.
    let verify_dir = dir.join("verify");
    std::fs::create_dir_all(&verify_dir).unwrap();
    let copy = verify_dir.join("mcptap.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/local/bin/mcptap",
            root.join("usr/local/bin/mcptap").to_str().unwrap(),
        ),
    )
    .unwrap();
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&copy));
    let noise = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(noise.trim().is_empty(), "systemd-analyze verify: {noise}");
    // ...and it does complain about a broken unit.
    std::fs::write(
        verify_dir.join("broken.service"),
        unit.replace("ProtectSystem=", "ProtectSytem="),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(verify_dir.join("broken.service"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("ProtectSytem"));

    // The hardening, as systemd scores it (0 = locked down, 10 = exposed).
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(format!("--root={}", root.display()))
        .arg("mcptap.service"));
    let text = String::from_utf8_lossy(&out.stdout);
    std::fs::write(dir.join("security.txt"), text.as_bytes()).unwrap();
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for mcptap.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(score <= 5.0, "exposure {score}:\n{text}");
}

/// The agent, run with nothing but the capabilities the unit and the
/// DaemonSet grant, captures stdio and TLS (OpenSSL uprobes) traffic.
#[test]
fn agent_works_with_only_the_deployment_capabilities() {
    let env = env();
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/mcptap.service")).unwrap();
    let caps = unit_capabilities(&unit);
    let bounding = format!(
        "-all,{}",
        caps.iter().map(|c| format!("+{c}")).collect::<Vec<_>>().join(",")
    );
    let wrapper = ["setpriv", "--bounding-set", bounding.as_str(), "--inh-caps=-all", "--"];
    let cert = env.cert("least-privilege");
    // Host-wide OpenSSL probes: the widest use of the uprobe privileges.
    let agent = Agent::start_wrapped(&env, "least_privilege", &wrapper, &["--tls-discovery"]);
    let tls = cert.server_args();
    let server = env.http_server("least-privilege-https", &tls);
    let report = env.drive(&json!({"sessions": [
        {"server": env.test_server(), "client_name": "lp-stdio",
         "steps": [{"call": "add", "args": {"a": 1, "b": 2}, "repeat": 2}]},
        {"url": format!("https://127.0.0.1:{}/mcp", server.port), "ca": cert.cert, "client_name": "lp-https",
         "steps": [{"call": "add", "args": {"a": 1, "b": 2}, "repeat": 2}, {"call": "refuse", "args": {"reason": "no"}}]}
    ]}));
    let stdio_pid = report["sessions"][0]["server_pid"].as_u64().unwrap();
    let events = agent.wait_events("stdio and TLS calls", WAIT, |ev| {
        let https = observed(ev, "server", server.pid());
        operations_of(ev, stdio_pid)
            .iter()
            .filter(|e| e["gen_ai.tool.name"] == "add")
            .count()
            == 2
            && https.iter().any(|e| e["gen_ai.tool.name"] == "refuse")
    });
    let https = observed(&events, "server", server.pid());
    assert_eq!(
        https
            .iter()
            .filter(|e| e["gen_ai.tool.name"] == "add" && e["status"] == "ok")
            .count(),
        2,
        "{}",
        summary(&https)
    );
    assert!(https.iter().all(|e| e["tls"] == true), "{}", summary(&https));
    let log = agent.log_text();
    assert!(!log.contains("cannot attach the TLS probe"), "{log}");
    // Its capabilities were those and no more (setpriv execs the agent).
    let pid = agent.pid().expect("the agent runs");
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let eff = st
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim()
        .to_string();
    let out = run(Command::new("capsh").arg(format!("--decode={eff}")));
    let decoded = String::from_utf8_lossy(&out.stdout).trim().to_lowercase();
    let have: Vec<&str> = decoded.split('=').nth(1).unwrap_or("").split(',').collect();
    assert!(!have.is_empty() && have.len() <= caps.len(), "{decoded}");
    for c in have {
        assert!(
            caps.iter().any(|want| c == format!("cap_{want}")),
            "extra capability {c}"
        );
    }
    agent.stop();
}

#[test]
fn manifests_rules_and_dashboard_validate_against_a_real_scrape() {
    let env = env();
    let dir = env.artifacts.join("deploy-files");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Traffic that makes every family of metrics appear: server and client
    // operations (plain HTTP on loopback: both ends watched), a policy
    // violation, a sink that drops (rate limit) and one that cannot deliver.
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        "[[server]]\nname = \"deploy-http\"\nallowed_tools = [\"add\", \"whoami\"]\n",
    )
    .unwrap();
    let config = dir.join("mcptap.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[sink]]
name = "limited"
type = "file"
path = "{}"
rate_limit = 1
rate_burst = 1

[[sink]]
name = "collector"
type = "http"
url = "http://127.0.0.1:{}/ingest"
"#,
            dir.join("limited.jsonl").display(),
            free_port()
        ),
    )
    .unwrap();
    let agent = Agent::start(
        &env,
        "deploy_scrape",
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let server = env.http_server("deploy-http", &[]);
    let report = env.drive(&json!({"sessions": [
        {"url": format!("http://127.0.0.1:{}/mcp", server.port), "client_name": "deploy-client",
         "steps": [{"call": "add", "args": {"a": 1, "b": 2}, "repeat": 3}, {"call": "refuse", "args": {"reason": "no"}}]}
    ]}));
    let client_pid = report["sessions"][0]["client_pid"].as_u64().unwrap();
    agent.wait_events("both ends and the alert", WAIT, |ev| {
        observed(ev, "client", client_pid)
            .iter()
            .any(|e| e["gen_ai.tool.name"] == "refuse")
            && observed(ev, "server", server.pid())
                .iter()
                .any(|e| e["gen_ai.tool.name"] == "refuse")
            && ev.iter().any(|e| e["event.type"] == "mcp.alert")
    });
    // The HTTP sink has tried (and failed) once.
    let deadline = std::time::Instant::now() + WAIT;
    let scrape = loop {
        let m = agent.metrics();
        if m.0.contains("mcptap_sink_up{") && m.0.contains("mcptap_events_dropped_total{reason=\"rate_limit\"") {
            break m.0;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no sink_up or rate_limit drop:\n{}",
            m.0
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let scrape_file = dir.join("metrics.txt");
    std::fs::write(&scrape_file, &scrape).unwrap();

    let out = Command::new(&env.python)
        .arg(env.peers.join("check_deploy.py"))
        .arg(repo())
        .arg(&scrape_file)
        .arg(dir.join("work"))
        .output()
        .unwrap();
    let checked = String::from_utf8_lossy(&out.stdout);
    let last = checked.lines().last().unwrap_or_default();
    let result: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "check_deploy.py ({e}):\n{checked}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(result["problems"], json!([]), "{result:#}");
    assert!(out.status.success());
    let metrics = result["metrics_checked"].as_array().unwrap();
    assert!(metrics.len() >= 15, "{result}");

    // promtool: the rules load, and their unit tests pass.
    let rules = repo().join("deploy/prometheus");
    run(Command::new("promtool")
        .args(["check", "rules", "mcptap-rules.yaml"])
        .current_dir(&rules));
    let tested = run(Command::new("promtool")
        .args(["test", "rules", "mcptap-rules.test.yaml"])
        .current_dir(&rules));
    assert!(String::from_utf8_lossy(&tested.stdout).contains("SUCCESS"));
    agent.stop();
}

/// Every panel of the Grafana dashboard, against a real Prometheus (Debian's)
/// scraping a real agent under real traffic: each query returns data, or is
/// listed below as expected empty, with the reason. The traffic covers what
/// sets mcptap apart: who (users, client applications), what calls did
/// (effects, one outside its server's scope), their cost (CPU), reach (a
/// stripped Rust program reported, the hook family), tool drift (a changed
/// definition, tools never called).
#[test]
fn every_grafana_panel_shows_data_from_a_real_prometheus() {
    let env = env();
    let dir = env.artifacts.join("grafana-panels");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        "[[server]]\nname = \"grafana-effects\"\nowner = \"platform\"\n[server.effects]\nread = [\"/nonexistent\"]\n",
    )
    .unwrap();
    let agent = Agent::start(&env, "grafana_panels", &["--policy", policy.to_str().unwrap()]);
    // Prometheus, scraping the agent every second.
    let prom_port = free_port();
    let prom_config = dir.join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: mcptap\n    static_configs:\n      - targets: [\"{}\"]\n",
            agent.metrics_addr
        ),
    )
    .unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", prom_config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .stderr(std::fs::File::create(dir.join("prometheus.err")).unwrap())
        .spawn()
        .expect("prometheus (Debian package prometheus)");
    let prom = format!("http://127.0.0.1:{prom_port}");
    mcptap_tests::wait_until("Prometheus ready", WAIT, || {
        ureq::get(&format!("{prom}/-/ready")).call().is_ok()
    });

    // The traffic, twice over 20 s so that rates have points on both sides.
    let input = dir.join("input.txt");
    std::fs::write(&input, "hello").unwrap();
    let http = env.http_server("grafana-http", &["--json-response"]);
    // rustls wants a server certificate signed by a CA.
    let cert = env.cert_with_ca("grafana");
    let stripped = env.rust_server("rmcp-server-stripped", "grafana-stripped", &cert);
    for round in 0..2 {
        let report = env.drive(&json!({"sessions": [
            {"server": env.test_server(), "client_name": "grafana-client",
             "env": {"MCPTAP_TEST_SERVER_NAME": "grafana-effects", "MCPTAP_TEST_EFFECTS": "1", "MCPTAP_TEST_REWRITABLE": "1"},
             "steps": [
                {"list_tools": true},
                {"call": "read_file", "args": {"path": input}},
                {"call": "run", "args": {"argv": ["/bin/true"]}},
                {"call": "burn", "args": {"ms": 50}},
                {"call": "refuse", "args": {"reason": "no"}},
                {"call": "rewrite_add", "args": {"description": format!("changed {round}")}},
                {"list_tools": true}
             ]},
            {"url": format!("http://127.0.0.1:{}/mcp", http.port), "client_name": "grafana-http-client",
             "steps": [{"call": "add", "args": {"a": 1, "b": 2}, "repeat": 3}]}
        ]}));
        for s in report["sessions"].as_array().unwrap() {
            assert!(s.get("error").is_none(), "{s}");
        }
        // A stripped Rust program speaking TLS: reported, not probed.
        let url = format!("https://127.0.0.1:{}/mcp", stripped.port);
        env.rust_client("rmcp-client", &url, &cert, "grafana-rust", 1);
        std::thread::sleep(Duration::from_secs(10));
    }
    agent.wait_metric(
        "mcptap_tls_unsupported_binaries",
        &[("reason", "rustls_stripped")],
        1.0,
        WAIT,
    );
    std::thread::sleep(Duration::from_secs(3));

    // What may be empty on this traffic, and why (each checked to be in
    // the dashboard, so the list cannot go stale).
    let expected_empty: &[(&str, &str)] = &[
        (
            "Capture loss / s",
            "empty when the kernel lost nothing in the last minute",
        ),
        (
            "Capture loss by reason",
            "empty when the kernel lost nothing in the last minute",
        ),
        ("Events dropped / s", "no sink drops in this run"),
        (
            "Sinks: up and spool",
            "no network sink configured here (tests/tests/delivery.rs runs them)",
        ),
        (
            "Client-side latency p95 by server",
            "histogram_quantile over one client and too few calls can be NaN-free yet empty: checked by its call counter",
        ),
    ];
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("deploy/grafana/mcptap-dashboard.json")).unwrap())
            .unwrap();
    let panels: Vec<&serde_json::Value> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .collect();
    for (title, _) in expected_empty {
        assert!(
            panels.iter().any(|p| p["title"] == *title),
            "{title} is listed as expected empty but is not a panel"
        );
    }
    let mut empty = Vec::new();
    let mut checked = 0;
    for p in &panels {
        let title = p["title"].as_str().unwrap();
        let mut has_data = false;
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$instance", ".*")
                .replace("$server", ".*")
                .replace("$client", ".*")
                .replace("$__rate_interval", "1m");
            let body = ureq::get(&format!("{prom}/api/v1/query"))
                .query("query", &expr)
                .call()
                .unwrap_or_else(|e| panic!("{title}: {expr}: {e}"))
                .into_string()
                .unwrap();
            let resp: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(resp["status"], "success", "{title}: {expr}: {resp}");
            checked += 1;
            has_data |= resp["data"]["result"].as_array().is_some_and(|r| !r.is_empty());
        }
        if !has_data {
            empty.push(title.to_string());
        }
    }
    let unexpected: Vec<&String> = empty
        .iter()
        .filter(|t| !expected_empty.iter().any(|(e, _)| e == t))
        .collect();
    assert!(
        unexpected.is_empty(),
        "panels without data: {unexpected:?} (of {} panels, {checked} queries)",
        panels.len()
    );
    assert!(checked >= 40, "{checked} queries");
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    agent.stop();
}
