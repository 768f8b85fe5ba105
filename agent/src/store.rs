//! The agent's own store of recent events: SQLite in the state directory
//! (`events.db`), fed like a sink, read by the local API (dashboard,
//! `mcptap top`, `mcptap tail`). Bounded by count and age; survives
//! restarts, so the dashboard keeps its history.
//!
//! One table, one row per event: the fields the views group and filter by
//! as columns, the whole event as JSON (payloads only where they were
//! captured and allowed: the store holds what the sinks get).

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        mpsc::{Receiver, RecvTimeoutError},
    },
    time::Duration,
};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sinks::{filter::lookup, metrics::Metrics};

/// Bumped when the table changes; an older store is started afresh (it is a
/// view of recent events, not the record).
const SCHEMA_VERSION: i64 = 2;

/// Event ids are random: an index on them (text or hashed) costs a random
/// B-tree insert per event, half of the writer's time at steady state. An
/// event is found by its time (indexed, appended in order) and then its id.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    type TEXT NOT NULL,
    method TEXT,
    tool TEXT,
    server TEXT,
    client TEXT,
    user TEXT,
    status TEXT,
    duration_ms REAL,
    observer TEXT,
    transport TEXT,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts_ms);
CREATE INDEX IF NOT EXISTS events_type_ts ON events(type, ts_ms);
";

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub path: PathBuf,
    pub max_events: u64,
    pub max_age: Duration,
}

/// Opens the database (creating it), in WAL mode so that readers never
/// wait for the writer.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // The store is a view for the dashboards (the sinks are the record): no
    // fsync per checkpoint, which more than halves the cost of an event. A
    // crashed agent loses nothing (WAL); a crashed host may leave the file
    // unusable, and `open_or_reset` then starts a new one.
    conn.pragma_update(None, "synchronous", "OFF")?;
    // No temporary files: the root filesystem may be read-only (the
    // Kubernetes DaemonSet) and /tmp private (the systemd unit).
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version != SCHEMA_VERSION {
        let had: i64 = conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'events'",
            [],
            |r| r.get(0),
        )?;
        if had > 0 {
            tracing::info!(
                from = version,
                to = SCHEMA_VERSION,
                "the event store's format changed: starting it afresh"
            );
            conn.execute_batch("DROP TABLE events")?;
        }
    }
    conn.execute_batch(SCHEMA)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(conn)
}

/// Opens the store; a file SQLite cannot open (a host crash mid-write, a
/// stray file) is set aside by `reset` and a new store begins, so the agent
/// still starts. Corruption deeper in the file shows when it is written
/// (`is_corrupt`), and the writer resets the store then: no scan of the whole
/// file at every start.
pub fn open_or_reset(path: &Path) -> anyhow::Result<Connection> {
    match open(path) {
        Ok(conn) => Ok(conn),
        Err(err) => {
            tracing::warn!(path = %path.display(), "the event store cannot be opened: {err}");
            reset(path)
        }
    }
}

/// Moves the store's files aside to `events.db.unusable-<time>` and opens a
/// new one.
pub fn reset(path: &Path) -> anyhow::Result<Connection> {
    let aside = path.with_extension(format!("db.unusable-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ")));
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        if from.exists() {
            std::fs::rename(&from, format!("{}{suffix}", aside.display()))?;
        }
    }
    tracing::warn!(moved_to = %aside.display(), "starting a new event store");
    open(path).map_err(|e| anyhow::anyhow!("event store {}: {e}", path.display()))
}

/// Whether SQLite says the file itself is damaged (not busy, not full).
fn is_corrupt(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// A read-only connection for queries.
pub fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// The columns of one event.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Row {
    pub id: String,
    pub ts_ms: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub method: Option<String>,
    pub tool: Option<String>,
    pub server: Option<String>,
    pub client: Option<String>,
    pub user: Option<String>,
    pub status: Option<String>,
    pub duration_ms: Option<f64>,
    pub observer: Option<String>,
    pub transport: Option<String>,
}

impl Row {
    pub fn of(e: &Value) -> Option<Row> {
        let text = |f: &str| lookup(e, f).and_then(Value::as_str).map(str::to_string);
        let ts_ms = text("time")
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.timestamp_millis())?;
        Some(Row {
            id: text("event.id")?,
            ts_ms,
            kind: text("event.type")?,
            method: text("mcp.method.name"),
            tool: text("gen_ai.tool.name"),
            server: text("server.name").or_else(|| text("server.process.exe")),
            client: text("client.name").or_else(|| text("client.app")),
            user: text("client.process.user"),
            status: text("status"),
            duration_ms: lookup(e, "duration_s").and_then(Value::as_f64).map(|s| s * 1000.0),
            observer: text("observer"),
            transport: text("network.transport"),
        })
    }
}

/// The fields of an event the store indexes, read straight from its JSON
/// line (no `Value` tree: the writer's main cost at high rates otherwise).
#[derive(Deserialize)]
struct Head {
    #[serde(rename = "event.id")]
    id: String,
    #[serde(rename = "event.type")]
    kind: String,
    time: String,
    #[serde(rename = "mcp.method.name")]
    method: Option<String>,
    #[serde(rename = "gen_ai.tool.name")]
    tool: Option<String>,
    status: Option<String>,
    duration_s: Option<f64>,
    observer: Option<String>,
    #[serde(rename = "network.transport")]
    transport: Option<String>,
    server: Option<PartyHead>,
    client: Option<PartyHead>,
}

#[derive(Deserialize)]
struct PartyHead {
    name: Option<String>,
    app: Option<String>,
    process: Option<ProcessHead>,
}

#[derive(Deserialize)]
struct ProcessHead {
    exe: Option<String>,
    user: Option<String>,
}

impl Row {
    /// As `Row::of`, from the event's JSON line as the sinks write it.
    pub fn from_line(line: &str) -> Option<Row> {
        let h: Head = serde_json::from_str(line).ok()?;
        let ts_ms = chrono::DateTime::parse_from_rfc3339(&h.time).ok()?.timestamp_millis();
        let (server, client) = (h.server, h.client);
        Some(Row {
            id: h.id,
            ts_ms,
            kind: h.kind,
            method: h.method,
            tool: h.tool,
            server: server
                .as_ref()
                .and_then(|s| s.name.clone().or_else(|| s.process.as_ref()?.exe.clone())),
            client: client.as_ref().and_then(|c| c.name.clone().or_else(|| c.app.clone())),
            user: client.and_then(|c| c.process?.user),
            status: h.status,
            duration_ms: h.duration_s.map(|s| s * 1000.0),
            observer: h.observer,
            transport: h.transport,
        })
    }
}

/// Inserts a batch of events in one transaction; returns how many were new.
pub fn insert(conn: &mut Connection, events: &[(Row, &str)]) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    let mut n = 0;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO events (id, ts_ms, type, method, tool, server, client, user, status, duration_ms, observer, transport, json)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13
             WHERE NOT EXISTS (SELECT 1 FROM events WHERE ts_ms = ?2 AND id = ?1)",
        )?;
        for (r, json) in events {
            n += stmt.execute(params![
                r.id,
                r.ts_ms,
                r.kind,
                r.method,
                r.tool,
                r.server,
                r.client,
                r.user,
                r.status,
                r.duration_ms,
                r.observer,
                r.transport,
                json
            ])?;
        }
    }
    tx.commit()?;
    Ok(n)
}

/// Deletes what is past the bounds: the oldest beyond `max_events`, and
/// anything older than `max_age`.
pub fn prune(conn: &Connection, max_events: u64, max_age: Duration, now_ms: i64) -> rusqlite::Result<usize> {
    let mut n = conn.execute(
        "DELETE FROM events WHERE ts_ms < ?1",
        params![now_ms - max_age.as_millis() as i64],
    )?;
    let last: Option<i64> = conn
        .query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0))
        .optional()?
        .flatten();
    if let Some(last) = last {
        n += conn.execute("DELETE FROM events WHERE seq <= ?1", params![last - max_events as i64])?;
    }
    Ok(n)
}

/// How long the writer gathers events into one transaction.
const BATCH_WAIT: Duration = Duration::from_millis(100);

/// The store's writer: a sink thread. Inserts what arrives, in batches,
/// prunes now and then, and passes each stored event to live subscribers.
pub fn spawn_writer(
    opts: StoreOptions,
    rx: Receiver<Arc<str>>,
    live: tokio::sync::broadcast::Sender<Arc<str>>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    if let Some(dir) = opts.path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut conn = open_or_reset(&opts.path)?;
    let now = chrono::Utc::now().timestamp_millis();
    if let Err(err) = prune(&conn, opts.max_events, opts.max_age, now) {
        tracing::warn!("pruning the event store failed: {err}");
    }
    let thread = std::thread::Builder::new().name("sink-store".into()).spawn(move || {
        let mut since_prune = 0usize;
        let mut warned: Option<std::time::Instant> = None;
        loop {
            let first = match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = prune(
                        &conn,
                        opts.max_events,
                        opts.max_age,
                        chrono::Utc::now().timestamp_millis(),
                    );
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            // One transaction per 100 ms (or 1000 events): a commit costs
            // far more than a row, and views can wait that long.
            let mut lines = vec![first];
            let until = std::time::Instant::now() + BATCH_WAIT;
            while lines.len() < 1000 {
                match rx.recv_timeout(until.saturating_duration_since(std::time::Instant::now())) {
                    Ok(line) => lines.push(line),
                    Err(_) => break,
                }
            }
            let batch: Vec<(Row, &str)> = lines.iter().filter_map(|l| Some((Row::from_line(l)?, &**l))).collect();
            let inserted = insert(&mut conn, &batch);
            let stored = batch.len();
            drop(batch);
            match inserted {
                Ok(_) => {
                    if live.receiver_count() > 0 {
                        for line in lines {
                            // A subscriber that left meanwhile is fine.
                            let _ = live.send(line);
                        }
                    }
                }
                Err(err) => {
                    metrics
                        .events_dropped
                        .with_label_values(&["store", "write_error"])
                        .inc_by(stored as u64);
                    if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                        tracing::error!("writing the event store failed: {err}");
                        warned = Some(std::time::Instant::now());
                    }
                    if is_corrupt(&err) {
                        match reset(&opts.path) {
                            Ok(fresh) => conn = fresh,
                            Err(err) => tracing::error!("cannot start a new event store: {err:#}"),
                        }
                    }
                }
            }
            since_prune += stored;
            if since_prune >= 1000 {
                since_prune = 0;
                if let Err(err) = prune(
                    &conn,
                    opts.max_events,
                    opts.max_age,
                    chrono::Utc::now().timestamp_millis(),
                ) {
                    tracing::warn!("pruning the event store failed: {err}");
                }
            }
        }
    })?;
    Ok(thread)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(i: i64, tool: &str, status: &str) -> Value {
        json!({
            "event.id": format!("id-{i}"),
            "event.type": "mcp.operation",
            "time": chrono::DateTime::from_timestamp_millis(1_800_000_000_000 + i * 1000).unwrap().to_rfc3339(),
            "mcp.method.name": "tools/call",
            "gen_ai.tool.name": tool,
            "status": status,
            "duration_s": 0.25,
            "server": {"name": "demo"},
            "client": {"name": "claude-code", "process": {"user": "alice"}}
        })
    }

    #[test]
    fn rows_insert_once_and_prune_by_count_and_age() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("events.db")).unwrap();
        let values: Vec<Value> = (0..10).map(|i| event(i, "add", "ok")).collect();
        let lines: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let batch: Vec<(Row, &str)> = values
            .iter()
            .zip(&lines)
            .map(|(v, l)| (Row::of(v).unwrap(), l.as_str()))
            .collect();
        assert_eq!(insert(&mut conn, &batch).unwrap(), 10);
        assert_eq!(insert(&mut conn, &batch).unwrap(), 0, "event ids are unique");
        let r = Row::of(&values[3]).unwrap();
        assert_eq!(
            (r.tool.as_deref(), r.client.as_deref(), r.user.as_deref(), r.duration_ms),
            (Some("add"), Some("claude-code"), Some("alice"), Some(250.0))
        );
        assert_eq!(
            prune(&conn, 6, Duration::from_secs(86400), 1_800_000_010_000).unwrap(),
            4
        );
        // Older than 5 s at t = 12 s: events 0..=6 (4..=6 remain of them).
        assert_eq!(prune(&conn, 100, Duration::from_secs(5), 1_800_000_012_000).unwrap(), 3);
        let left: i64 = conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 3);
    }
}

#[cfg(test)]
mod lines {
    use serde_json::json;

    use super::*;

    #[test]
    fn rows_from_lines_match_rows_from_values() {
        let events = [
            // docs/events.md's example, abridged.
            json!({"schema": "mcptap.event/v1", "event.id": "aeefacac", "event.type": "mcp.operation",
                   "time": "2026-11-22T06:33:27.225714Z", "host": {"name": "vm"}, "observer": "server",
                   "network.transport": "tcp", "tls": true, "mcp.method.name": "tools/call",
                   "gen_ai.tool.name": "refuse", "jsonrpc.request.id": "10", "status": "tool_error",
                   "duration_s": 0.005445282, "request": {"bytes": 111},
                   "server": {"name": "e2e", "process": {"pid": 353, "exe": "/usr/bin/python3.11", "user": "root"}},
                   "client": {"name": "c\"lient", "process": {"pid": 354, "user": "alice"}, "found_by": "socket_peer"}}),
            // No names: the server's exe, the client's application.
            json!({"event.id": "b", "event.type": "mcp.operation", "time": "2026-11-22T06:33:27Z",
                   "mcp.method.name": "initialize", "status": "ok",
                   "server": {"process": {"exe": "/usr/bin/node"}}, "client": {"app": "cursor"}}),
            json!({"event.id": "c", "event.type": "mcp.alert", "time": "2026-11-22T06:33:27Z",
                   "alert": {"kind": "policy_violation"}}),
        ];
        for e in &events {
            let from_line = Row::from_line(&e.to_string());
            assert_eq!(from_line, Row::of(e), "{e}");
            assert!(from_line.is_some());
        }
        assert_eq!(Row::from_line("not json"), None);
        assert_eq!(Row::from_line(r#"{"event.id": "x"}"#), None);
    }
}

#[cfg(test)]
mod reset {
    use super::*;

    #[test]
    fn an_unusable_file_is_moved_aside_and_a_new_store_begins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        std::fs::write(&path, vec![0x5au8; 64 * 1024]).unwrap();
        let conn = open_or_reset(&path).unwrap();
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0);
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("events.db.unusable-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(std::fs::read(aside[0].path()).unwrap(), vec![0x5au8; 64 * 1024]);
    }

    #[test]
    fn damage_is_told_from_other_errors() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, vec![0x5au8; 8192]).unwrap();
        let err = open(&junk).unwrap_err();
        assert!(is_corrupt(&err), "{err}");
        let conn = open(&dir.path().join("events.db")).unwrap();
        let err = conn.execute("INSERT INTO nope VALUES (1)", []).unwrap_err();
        assert!(!is_corrupt(&err), "{err}");
    }
}
