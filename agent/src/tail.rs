//! `mcptap tail`: the running agent's events as they happen, one line
//! each (or the JSON itself), filtered by tool, client, server, user,
//! status or event type.

use std::{io::Write, path::PathBuf};

use serde_json::Value;

use crate::api::client::{ApiClient, query_string};

#[derive(Debug, clap::Args, Clone)]
pub struct TailArgs {
    /// The agent's API socket.
    #[arg(long, default_value = crate::cli::DEFAULT_API_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
    /// Only calls of this tool.
    #[arg(long)]
    pub tool: Option<String>,
    /// Only this client (clientInfo name, or the client application).
    #[arg(long)]
    pub client: Option<String>,
    /// Only this server (serverInfo name).
    #[arg(long)]
    pub server: Option<String>,
    /// Only calls by this user.
    #[arg(long)]
    pub user: Option<String>,
    /// Only this status: ok, error, tool_error, cancelled, timeout...
    #[arg(long)]
    pub status: Option<String>,
    /// Only this event type: mcp.operation, mcp.alert, mcp.notification, mcp.session.end.
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// Print each event's JSON (one per line) instead of a summary line.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: TailArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.socket);
    let path = format!(
        "/api/tail{}",
        query_string(&[
            ("tool", args.tool.as_deref()),
            ("client", args.client.as_deref()),
            ("server", args.server.as_deref()),
            ("user", args.user.as_deref()),
            ("status", args.status.as_deref()),
            ("kind", args.kind.as_deref()),
        ])
    );
    let color = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut out = std::io::stdout().lock();
    let mut failed = None;
    let socket = args.socket.display().to_string();
    client
        .stream(
            &path,
            // On stderr, so that `--json` output stays pure JSON Lines.
            || eprintln!("following live events from {socket} (Ctrl-C to stop)"),
            |name, data| {
                if failed.is_some() {
                    return;
                }
                let line = if name == "lagged" {
                    format!("… {data} events skipped: this terminal did not keep up")
                } else if args.json {
                    data.to_string()
                } else {
                    match serde_json::from_str::<Value>(data) {
                        Ok(e) => pretty(&e, color),
                        Err(_) => return,
                    }
                };
                // A closed pipe (`| head`) ends the tail quietly.
                if let Err(err) = writeln!(out, "{line}").and_then(|_| out.flush()) {
                    failed = Some(err);
                }
            },
        )
        .await?;
    match failed {
        Some(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(err.into()),
        _ => Ok(()),
    }
}

/// One line: time, status, method and tool, duration, who.
pub fn pretty(e: &Value, color: bool) -> String {
    let s = |k: &str| e.get(k).and_then(Value::as_str);
    let paint = |code: &str, text: &str| {
        if color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    };
    let time = s("time").and_then(|t| t.get(11..23)).unwrap_or("--:--:--.---");
    let server = e["server"]["name"].as_str().unwrap_or("?");
    let client = e["client"]["name"]
        .as_str()
        .or_else(|| e["client"]["app"].as_str())
        .unwrap_or("?");
    let user = e["client"]["process"]["user"].as_str().unwrap_or("?");
    let who = format!("server={server} client={client} user={user}");
    match s("event.type") {
        Some("mcp.operation") => {
            let status = s("status").unwrap_or("?");
            let code = match status {
                "ok" => "32",
                "tool_error" => "33",
                _ => "31",
            };
            let what = match (
                s("mcp.method.name"),
                s("gen_ai.tool.name").or_else(|| s("gen_ai.prompt.name")),
            ) {
                (Some(m), Some(t)) => format!("{m} {t}"),
                (Some(m), None) => m.to_string(),
                _ => "?".into(),
            };
            let duration = e["duration_s"]
                .as_f64()
                .map_or_else(|| "-".to_string(), |d| format!("{:.1}ms", d * 1000.0));
            format!(
                "{time} {} {:<28} {:>9}  {who}",
                paint(code, &format!("{status:<10}")),
                what,
                duration
            )
        }
        Some("mcp.alert") => format!(
            "{time} {} {}: {}  {who}",
            paint("1;31", "ALERT     "),
            e["alert"]["kind"].as_str().unwrap_or("?"),
            e["alert"]["message"].as_str().unwrap_or("")
        ),
        Some("mcp.notification") => paint(
            "2",
            &format!("{time} {:<10} {}  {who}", "notify", s("mcp.method.name").unwrap_or("?")),
        ),
        Some("mcp.session.end") => paint(
            "2",
            &format!(
                "{time} {:<10} session {}  {who}",
                "end",
                s("mcp.session.id").unwrap_or("?")
            ),
        ),
        other => format!("{time} {}", other.unwrap_or("?")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn lines_say_what_happened() {
        let e = json!({"event.type": "mcp.operation", "time": "2026-11-22T08:39:10.521942Z", "status": "tool_error",
            "mcp.method.name": "tools/call", "gen_ai.tool.name": "refuse", "duration_s": 0.0042,
            "server": {"name": "demo"}, "client": {"name": "claude-code", "process": {"user": "alice"}}});
        let line = pretty(&e, false);
        assert!(line.starts_with("08:39:10.521 tool_error tools/call refuse"), "{line}");
        assert!(
            line.contains("4.2ms") && line.ends_with("server=demo client=claude-code user=alice"),
            "{line}"
        );
        let a = json!({"event.type": "mcp.alert", "time": "2026-11-22T08:39:10.521942Z",
            "alert": {"kind": "policy_violation", "message": "tool \"refuse\" is denied"}});
        assert!(pretty(&a, false).contains("ALERT      policy_violation: tool \"refuse\" is denied"));
    }
}
