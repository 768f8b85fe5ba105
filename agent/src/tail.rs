//! `mcptap tail`: the running agent's events as they happen, one line
//! each (or the JSON itself), filtered by tool, client, server, user,
//! status or event type.

use std::{io::Write, path::PathBuf};

use anyhow::Context;
use serde_json::Value;
use tokio::signal::unix::{SignalKind, signal};

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
    // Ctrl-C and SIGTERM stop it, also when started with SIGINT ignored
    // (a background job of a shell without job control).
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let follow = client.stream(
        &path,
        // On stderr, so that `--json` output stays pure JSON Lines.
        || eprintln!("following live events from {socket} (Ctrl-C to stop)"),
        |name, data| {
            if failed.is_some() {
                return;
            }
            let line = if name == "lagged" {
                format!("… {} events skipped: this terminal did not keep up", printable(data))
            } else if args.json {
                json_for_terminal(data).into_owned()
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
    );
    tokio::select! {
        r = follow => r?,
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
    }
    match failed {
        Some(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(err.into()),
        _ => Ok(()),
    }
}

/// Whether a character would act on a terminal rather than show: C0 and
/// C1 controls (ESC starts a sequence, U+009B is one by itself, a newline
/// forges a line) and the bidirectional overrides (text shown in another
/// order than it is).
fn acts_on_terminal(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Text a peer wrote, made safe to print: what would act on the terminal
/// is shown escaped (`\u{1b}`).
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(acts_on_terminal) {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(
        s.chars()
            .map(|c| {
                if acts_on_terminal(c) {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// A JSON line made safe to print: serde_json escapes C0 controls already;
/// C1 controls and bidirectional overrides are escaped too (`\u009b`),
/// which keeps it the same JSON.
fn json_for_terminal(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.chars().any(acts_on_terminal) {
        return std::borrow::Cow::Borrowed(line);
    }
    std::borrow::Cow::Owned(
        line.chars()
            .map(|c| {
                if acts_on_terminal(c) {
                    format!("\\u{:04x}", c as u32)
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// Every string of a JSON value made [`printable`].
pub fn printable_value(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(printable(s).into_owned()),
        Value::Array(items) => Value::Array(items.iter().map(printable_value).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (printable(k).into_owned(), printable_value(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// One line: time, status, method and tool, duration, who. Every value a
/// peer chose is [`printable`].
pub fn pretty(e: &Value, color: bool) -> String {
    let e = &printable_value(e);
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

    #[test]
    fn what_peers_wrote_cannot_act_on_the_terminal() {
        let e = json!({"event.type": "mcp.operation", "time": "2026-11-22T08:39:10.521942Z", "status": "ok",
            "mcp.method.name": "tools/call", "gen_ai.tool.name": "x\n08:39:11.000 ok forged\u{1b}[2J\u{9b}31m\u{202e}",
            "server": {"name": "demo\r"}, "client": {"name": "c"}});
        let line = pretty(&e, true);
        assert!(
            !line.contains('\n') && !line.contains('\r') && !line.contains('\u{9b}') && !line.contains('\u{202e}'),
            "{line:?}"
        );
        // Only the tail's own colours remain as escape sequences.
        assert_eq!(line.matches('\u{1b}').count(), 2, "{line:?}");
        assert!(line.contains("\\u{1b}[2J"), "{line:?}");
        // JSON lines: the same JSON, escaped.
        let raw = "{\"n\":\"a\u{9b}b\u{202e}\"}";
        let safe = json_for_terminal(raw);
        assert!(!safe.contains('\u{9b}'), "{safe}");
        let back: Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["n"], "a\u{9b}b\u{202e}");
    }
}
