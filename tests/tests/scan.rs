//! `mcptap scan` on fixture hosts (tests/fixtures/scan: every client's file
//! format, two users, credentials typed in and referenced) and on a host
//! with none; then against the inventory of a real agent run: configured
//! servers observed or never, and a server observed but configured nowhere.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use mcptap_tests::{Agent, Env, env};
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/scan")
}

fn scan(env: &Env, args: &[&str]) -> (i32, String) {
    let out = Command::new(&env.agent)
        .arg("scan")
        .args(args)
        .output()
        .expect("mcptap scan");
    assert!(
        out.stderr.is_empty() || out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn scan_json(env: &Env, root: &Path, state: &Path) -> Value {
    let (code, out) = scan(
        env,
        &[
            "--root",
            root.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(code, 0, "{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("scan --json is not JSON ({e}): {out}"))
}

/// (user, client, server name) of every configured server.
fn configured(report: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for f in report["files"].as_array().unwrap() {
        for s in f["servers"].as_array().unwrap() {
            out.push((
                f["user"].as_str().unwrap().to_string(),
                f["client"].as_str().unwrap().to_string(),
                s["name"].as_str().unwrap().to_string(),
            ));
        }
    }
    out.sort();
    out
}

const SECRETS: &[&str] = &[
    "ghp_FAKEfake",
    "s3cretPassw0rd",
    "lin_oauth_FAKE",
    "xoxb-FAKE",
    "live_FAKE_value",
];

#[test]
fn scan_reads_every_client_format() {
    let env = env();
    let root = fixtures().join("root");
    let nowhere = env.artifacts.join("scan-no-state");
    let report = scan_json(&env, &root, &nowhere);
    let t = |u: &str, c: &str, s: &str| (u.to_string(), c.to_string(), s.to_string());
    assert_eq!(
        configured(&report),
        [
            t("alice", "claude-code", "db"),
            t("alice", "claude-code", "remote-docs"),
            t("alice", "claude-code", "shared-tools"),
            t("alice", "claude-desktop", "e2e-scan"),
            t("alice", "claude-desktop", "github"),
            t("alice", "cursor", "linear"),
            t("bob", "generic", "inventory-api"),
            t("bob", "vscode", "copilot"),
            t("bob", "vscode", "git"),
            t("bob", "vscode", "time"),
            t("bob", "windsurf", "local-http"),
            t("bob", "windsurf", "slack"),
        ]
    );
    let server = |name: &str| -> Value {
        report["files"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|f| f["servers"].as_array().unwrap().iter())
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(server("linear")["transport"], "sse");
    assert_eq!(server("copilot")["transport"], "http");
    assert_eq!(server("local-http")["disabled"], true);
    assert_eq!(
        server("time")["args"],
        json!(["mcp-server-time", "--local-timezone=Europe/Paris"])
    );
    let project = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| {
            f["servers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["name"] == "shared-tools")
        })
        .unwrap();
    assert_eq!(project["scope"], "project:/home/alice/app");

    // Typed-in credentials are flagged by where they are; references
    // (${DOCS_TOKEN}, ${input:gh-token}) are not.
    let mut creds: Vec<(String, String, String)> = report["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["server"].as_str().unwrap().to_string(),
                c["field"].as_str().unwrap().to_string(),
                c["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    creds.sort();
    assert_eq!(
        creds,
        [
            t("db", "env.DATABASE_URL", "url_credentials"),
            t("github", "env.GITHUB_PERSONAL_ACCESS_TOKEN", "github_token"),
            t("inventory-api", "args[1]", "secret_flag_value"),
            t("linear", "headers.Authorization", "bearer"),
            t("slack", "env.SLACK_BOT_TOKEN", "slack_token"),
        ]
    );
    assert!(report.get("observed_not_configured").is_none());

    // Neither the table nor the JSON repeats a secret.
    let (code, table) = scan(
        &env,
        &[
            "--root",
            root.to_str().unwrap(),
            "--state-dir",
            nowhere.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0);
    let json_text = report.to_string();
    for secret in SECRETS {
        assert!(
            !table.contains(secret) && !json_text.contains(secret),
            "{secret} leaked:\n{table}"
        );
    }
    assert!(table.contains("Hard-coded credentials: 5"), "{table}");
    assert!(table.contains("MCP servers configured: 12 in 8 files"), "{table}");
    std::fs::write(env.artifacts.join("scan-fixtures.txt"), &table).unwrap();

    // For CI jobs: a distinct exit status when credentials are found.
    let (code, _) = scan(
        &env,
        &[
            "--root",
            root.to_str().unwrap(),
            "--state-dir",
            nowhere.to_str().unwrap(),
            "--fail-on-credentials",
        ],
    );
    assert_eq!(code, 3);
}

#[test]
fn scan_on_a_host_with_no_clients() {
    let env = env();
    let root = fixtures().join("empty");
    let report = scan_json(&env, &root, &env.artifacts.join("scan-no-state"));
    assert_eq!(report["files"], json!([]));
    assert_eq!(report["credentials"], json!([]));
    let (code, table) = scan(
        &env,
        &[
            "--root",
            root.to_str().unwrap(),
            "--state-dir",
            "/nonexistent",
            "--fail-on-credentials",
        ],
    );
    assert_eq!(code, 0);
    assert!(table.contains("No MCP client configuration found."), "{table}");
}

#[test]
fn scan_sets_configurations_against_what_the_agent_observed() {
    let env = env();
    let state = env.artifacts.join("scan-observed-state");
    let _ = std::fs::remove_dir_all(&state);
    let agent = Agent::start(&env, "scan-observed", &["--state-dir", state.to_str().unwrap()]);
    // The configured server (alice's Claude Desktop runs stdio_server.py),
    // and one configured nowhere (server-everything).
    let report = env.drive(&json!({"sessions": [
        {"server": env.test_server(), "env": {"MCPTAP_TEST_SERVER_NAME": "e2e-scan"},
         "steps": [{"call": "add", "args": {"a": 1, "b": 2}, "repeat": 3}]},
        {"server": env.server_everything(), "steps": [{"call": "echo", "args": {"message": "hi"}}]}
    ]}));
    assert!(report.is_object());
    agent.wait_events("both servers' calls", Duration::from_secs(30), |ev| {
        let calls = |name: &str, tool: &str| {
            ev.iter()
                .filter(|e| {
                    e["gen_ai.tool.name"] == tool && e["server"]["name"].as_str().is_some_and(|n| n.contains(name))
                })
                .count()
        };
        // drive.py also calls whoami first.
        calls("e2e-scan", "add") == 3 && calls("everything", "echo") == 1
    });
    let events = agent.stop();
    let ops_of = |pred: &dyn Fn(&Value) -> bool| {
        events
            .iter()
            .filter(|e| e["event.type"] == "mcp.operation" && pred(e))
            .count()
    };
    let scan_ops = ops_of(&|e| e["server"]["name"] == "e2e-scan");

    let report = scan_json(&env, &fixtures().join("root"), &state);
    assert!(report["inventory"].as_str().unwrap().ends_with("inventory.json"));
    let observed = |name: &str| -> Value {
        for f in report["files"].as_array().unwrap() {
            for (s, o) in f["servers"]
                .as_array()
                .unwrap()
                .iter()
                .zip(f["observed"].as_array().unwrap())
            {
                if s["name"] == name {
                    return o.clone();
                }
            }
        }
        panic!("{name} not configured")
    };
    assert_eq!(
        observed("e2e-scan")["calls"],
        json!(scan_ops),
        "every operation of the configured server counted"
    );
    assert_eq!(observed("github")["calls"], 0, "configured, never observed");
    assert_eq!(observed("slack")["calls"], 0);
    let shadow = report["observed_not_configured"].as_array().unwrap();
    let everything = shadow
        .iter()
        .find(|o| o["name"].as_str().is_some_and(|n| n.contains("everything")))
        .unwrap_or_else(|| panic!("server-everything observed but configured nowhere: {shadow:?}"));
    assert_eq!(everything["transport"], "pipe");
    assert!(
        everything["calls"].as_u64().unwrap() >= 2,
        "initialize and echo at least"
    );
    assert!(everything["users"].as_array().unwrap().iter().any(|u| u == "root"));
    assert!(!shadow.iter().any(|o| o["name"] == "e2e-scan"));

    let (_, table) = scan(
        &env,
        &[
            "--root",
            fixtures().join("root").to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    assert!(table.contains("Observed but configured nowhere: "), "{table}");
    assert!(table.contains("never"), "{table}");
    std::fs::write(env.artifacts.join("scan-observed.txt"), &table).unwrap();
}
