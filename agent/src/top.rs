//! `mcptap top`: the dashboard's live figures in a terminal (ratatui),
//! from the running agent's local API. Refreshes every second.
//!
//! Keys: `w` window (15m, 1h, 24h, 7d) · `s` sort (calls, errors, p95,
//! name) · `/` filter (`tool=add`, `server=github`, `client=cursor`,
//! `user=alice`, `status=error`; Enter applies, Esc cancels) · `c` clear
//! filters · `q` quit.

use std::{path::PathBuf, time::Duration};

use crossterm::event::{Event, EventStream, KeyCode, KeyEventKind};
use ratatui::{
    Frame,
    layout::{Constraint, Layout},
    style::{Color, Modifier, Style, Stylize},
    text::Line,
    widgets::{Block, Borders, Cell, Paragraph, Row, Table},
};
use serde_json::Value;
use tokio_stream::StreamExt;

use crate::api::client::{ApiClient, query_string};

#[derive(Debug, clap::Args, Clone)]
pub struct TopArgs {
    /// The agent's API socket.
    #[arg(long, default_value = crate::cli::DEFAULT_API_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
    /// Start with this window: 15m, 1h, 24h, 7d.
    #[arg(long, default_value = "15m")]
    pub window: String,
    /// Start with these filters (`tool=add`, repeatable).
    #[arg(long = "filter", value_name = "FIELD=VALUE")]
    pub filters: Vec<String>,
}

const WINDOWS: [&str; 4] = ["15m", "1h", "24h", "7d"];
const SORTS: [&str; 4] = ["calls", "errors", "p95", "name"];
const FIELDS: [&str; 5] = ["tool", "server", "client", "user", "status"];

struct App {
    window: usize,
    sort: usize,
    filters: Vec<(String, String)>,
    editing: Option<String>,
    summary: Option<Value>,
    recent: Vec<Value>,
    error: Option<String>,
    message: Option<String>,
}

impl App {
    fn query(&self) -> String {
        let mut pairs: Vec<(&str, Option<&str>)> = vec![("window", Some(WINDOWS[self.window]))];
        for (k, v) in &self.filters {
            pairs.push((k.as_str(), Some(v.as_str())));
        }
        query_string(&pairs)
    }

    fn apply_filter(&mut self, text: &str) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        match text.split_once('=') {
            Some((k, v)) if FIELDS.contains(&k.trim()) && !v.trim().is_empty() => {
                let k = k.trim().to_string();
                self.filters.retain(|(f, _)| *f != k);
                self.filters.push((k, v.trim().to_string()));
                self.message = None;
            }
            _ => self.message = Some(format!("filter: FIELD=VALUE with FIELD one of {}", FIELDS.join(", "))),
        }
    }
}

pub async fn run(args: TopArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.socket);
    let mut app = App {
        window: WINDOWS.iter().position(|w| *w == args.window).unwrap_or(0),
        sort: 0,
        filters: Vec::new(),
        editing: None,
        summary: None,
        recent: Vec::new(),
        error: None,
        message: None,
    };
    for f in &args.filters {
        app.apply_filter(f);
    }
    // Fail before taking the terminal when the agent is not there.
    client.get("/api/summary").await?;

    let mut terminal = ratatui::init();
    let result = event_loop(&mut terminal, &client, &mut app).await;
    ratatui::restore();
    result
}

async fn event_loop(terminal: &mut ratatui::DefaultTerminal, client: &ApiClient, app: &mut App) -> anyhow::Result<()> {
    let mut keys = EventStream::new();
    let mut refresh = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = refresh.tick() => fetch(client, app).await,
            key = keys.next() => {
                let Some(Ok(Event::Key(key))) = key else {
                    if key.is_none() { return Ok(()); }
                    continue;
                };
                if key.kind != KeyEventKind::Press {
                    continue;
                }
                if let Some(text) = &mut app.editing {
                    match key.code {
                        KeyCode::Enter => {
                            let t = text.clone();
                            app.editing = None;
                            app.apply_filter(&t);
                            fetch(client, app).await;
                        }
                        KeyCode::Esc => app.editing = None,
                        KeyCode::Backspace => { text.pop(); }
                        KeyCode::Char(c) => text.push(c),
                        _ => {}
                    }
                } else {
                    match key.code {
                        KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                        KeyCode::Char('w') => { app.window = (app.window + 1) % WINDOWS.len(); fetch(client, app).await; }
                        KeyCode::Char('s') => app.sort = (app.sort + 1) % SORTS.len(),
                        KeyCode::Char('/') => app.editing = Some(String::new()),
                        KeyCode::Char('c') => { app.filters.clear(); fetch(client, app).await; }
                        _ => {}
                    }
                }
            }
        }
        terminal.draw(|f| draw(f, app))?;
    }
}

async fn fetch(client: &ApiClient, app: &mut App) {
    let q = app.query();
    match client.get(&format!("/api/summary{q}")).await {
        // Names are what peers chose: nothing in them may act on the
        // terminal (escape sequences, newlines).
        Ok(s) => {
            app.summary = Some(crate::tail::printable_value(&s));
            app.error = None;
        }
        Err(e) => app.error = Some(crate::tail::printable(&e.to_string()).into_owned()),
    }
    let mut calls_q = q.clone();
    calls_q.push_str(if calls_q.is_empty() { "?limit=12" } else { "&limit=12" });
    if let Ok(c) = client.get(&format!("/api/calls{calls_q}")).await {
        app.recent = crate::tail::printable_value(&c)["calls"]
            .as_array()
            .cloned()
            .unwrap_or_default();
    }
}

fn ms(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".into(), |m| format!("{m:.1}"))
}

fn draw(f: &mut Frame, app: &App) {
    let s = app.summary.as_ref();
    let n = |k: &str| s.and_then(|s| s[k].as_u64()).unwrap_or(0);
    let rate = s.and_then(|s| s["error_rate"].as_f64()).unwrap_or(0.0);
    let filters = if app.filters.is_empty() {
        "none".to_string()
    } else {
        app.filters
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let header = vec![
        Line::from(vec![
            "mcptap top".bold(),
            format!(
                "  window {}  calls {}  errors {:.1}%  clients {}  servers {}  users {}  p50 {} ms  p95 {} ms  p99 {} ms",
                WINDOWS[app.window],
                n("calls"),
                rate * 100.0,
                n("clients"),
                n("servers"),
                n("users"),
                s.map_or("-".into(), |s| ms(&s["p50_ms"])),
                s.map_or("-".into(), |s| ms(&s["p95_ms"])),
                s.map_or("-".into(), |s| ms(&s["p99_ms"])),
            )
            .into(),
        ]),
        Line::from(format!(
            "sort: {}   filter: {}   [w] window  [s] sort  [/] filter  [c] clear  [q] quit",
            SORTS[app.sort], filters
        )),
        match (&app.editing, &app.error, &app.message) {
            (Some(text), _, _) => Line::from(format!("filter> {text}▏")).fg(Color::Yellow),
            (None, Some(e), _) => Line::from(format!("error: {e}")).fg(Color::Red),
            (None, None, Some(m)) => Line::from(m.as_str()).fg(Color::Yellow),
            _ => Line::from(""),
        },
    ];
    let [top, tables, bottom] =
        Layout::vertical([Constraint::Length(3), Constraint::Min(8), Constraint::Length(14)]).areas(f.area());
    f.render_widget(Paragraph::new(header), top);

    let [left, mid, right] = Layout::horizontal([Constraint::Ratio(1, 3); 3]).areas(tables);
    for (area, key, title) in [
        (left, "tools", "Tools"),
        (mid, "clients_ranked", "Clients"),
        (right, "servers_ranked", "Servers"),
    ] {
        let mut rows: Vec<Value> = s.and_then(|s| s[key].as_array().cloned()).unwrap_or_default();
        sort_rows(&mut rows, SORTS[app.sort]);
        f.render_widget(rank_table(title, &rows), area);
    }

    let recent: Vec<Row> = app
        .recent
        .iter()
        .map(|c| {
            let t = c["ts_ms"]
                .as_i64()
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.format("%H:%M:%S%.3f").to_string())
                .unwrap_or_default();
            let status = c["status"].as_str().unwrap_or("?");
            let style = match status {
                "ok" => Style::default().fg(Color::Green),
                "tool_error" => Style::default().fg(Color::Yellow),
                _ => Style::default().fg(Color::Red),
            };
            Row::new(vec![
                Cell::from(t),
                Cell::from(status.to_string()).style(style),
                Cell::from(format!(
                    "{} {}",
                    c["method"].as_str().unwrap_or("?"),
                    c["tool"].as_str().unwrap_or("")
                )),
                Cell::from(ms(&c["duration_ms"])),
                Cell::from(c["server"].as_str().unwrap_or("?").to_string()),
                Cell::from(c["client"].as_str().unwrap_or("?").to_string()),
                Cell::from(c["user"].as_str().unwrap_or("?").to_string()),
            ])
        })
        .collect();
    let table = Table::new(
        recent,
        [
            Constraint::Length(12),
            Constraint::Length(11),
            Constraint::Percentage(30),
            Constraint::Length(9),
            Constraint::Percentage(20),
            Constraint::Percentage(20),
            Constraint::Length(10),
        ],
    )
    .header(Row::new(["TIME", "STATUS", "CALL", "MS", "SERVER", "CLIENT", "USER"]).add_modifier(Modifier::BOLD))
    .block(Block::default().borders(Borders::ALL).title("Recent calls"));
    f.render_widget(table, bottom);
}

fn sort_rows(rows: &mut [Value], by: &str) {
    match by {
        "errors" => rows.sort_by(|a, b| b["errors"].as_u64().cmp(&a["errors"].as_u64())),
        "p95" => rows.sort_by(|a, b| {
            b["p95_ms"]
                .as_f64()
                .unwrap_or(-1.0)
                .total_cmp(&a["p95_ms"].as_f64().unwrap_or(-1.0))
        }),
        "name" => rows.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str())),
        _ => rows.sort_by(|a, b| b["calls"].as_u64().cmp(&a["calls"].as_u64())),
    }
}

fn rank_table<'a>(title: &'a str, rows: &[Value]) -> Table<'a> {
    let rows: Vec<Row> = rows
        .iter()
        .map(|r| {
            Row::new(vec![
                Cell::from(r["name"].as_str().unwrap_or("?").to_string()),
                Cell::from(r["calls"].as_u64().unwrap_or(0).to_string()),
                Cell::from(format!("{:.0}%", r["error_rate"].as_f64().unwrap_or(0.0) * 100.0)),
                Cell::from(ms(&r["p50_ms"])),
                Cell::from(ms(&r["p95_ms"])),
                Cell::from(ms(&r["p99_ms"])),
            ])
        })
        .collect();
    Table::new(
        rows,
        [
            Constraint::Min(10),
            Constraint::Length(6),
            Constraint::Length(5),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(7),
        ],
    )
    .header(Row::new(["NAME", "CALLS", "ERR", "P50", "P95", "P99"]).add_modifier(Modifier::BOLD))
    .block(Block::default().borders(Borders::ALL).title(title))
}
