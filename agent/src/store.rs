//! The agent's own store of recent events: SQLite in the state directory
//! (`events.db`), fed like a sink, read by the local API (dashboard,
//! `mcptap top`, `mcptap tail`). Bounded by count and age; survives
//! restarts, so the dashboard keeps its history.
//!
//! One table, one row per event: the fields the views group and filter by
//! as columns, the whole event as JSON (payloads only where they were
//! captured and allowed: the store holds what the sinks get).

use std::{
    borrow::Cow,
    path::{Path, PathBuf},
    sync::{
        Arc,
        mpsc::{Receiver, RecvTimeoutError},
    },
    time::Duration,
};

use crate::{event::Event, sinks::metrics::Metrics};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// Bumped when the table changes; an older store is started afresh (it is a
/// view of recent events, not the record).
const SCHEMA_VERSION: i64 = 3;

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
    effects INTEGER,
    effect_kinds TEXT,
    cpu_ms REAL,
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
    /// How many side effects the call had (`mcp.effects.counts`).
    pub effects: Option<i64>,
    /// Their kinds, `,exec,file_read,` (filtered with `instr`).
    pub effect_kinds: Option<String>,
    /// `mcp.server.cpu.seconds`, in milliseconds.
    pub cpu_ms: Option<f64>,
}

/// One event as the store receives it: its line (stored whole), and the
/// fields it indexes, read from the typed event by the pipeline.
#[derive(Debug)]
pub struct Stored {
    pub row: Row,
    pub line: Arc<str>,
}

impl Stored {
    pub fn of(e: &Event, line: Arc<str>) -> Stored {
        Stored {
            row: Row::of_event(e),
            line,
        }
    }
}

impl Row {
    pub fn of_event(e: &Event) -> Row {
        let text = |f: &str| e.field(f).map(Cow::into_owned);
        Row {
            id: e.id.clone(),
            ts_ms: chrono::DateTime::parse_from_rfc3339(&e.time).map_or(0, |t| t.timestamp_millis()),
            kind: e.kind.as_str().to_string(),
            method: e.method.clone(),
            tool: e.tool.clone(),
            server: text("server.name").or_else(|| text("server.process.exe")),
            client: text("client.name").or_else(|| text("client.app")),
            user: crate::enrich::identity::user_of(
                e.user.as_ref(),
                e.client.process.as_ref().and_then(|p| p.user.as_deref()),
            )
            .map(str::to_string),
            status: e.status.map(str::to_string),
            duration_ms: e.duration_s.map(|s| s * 1000.0),
            observer: Some(e.observer.to_string()),
            transport: Some(e.transport.to_string()),
            effects: e.effects.as_ref().map(|fx| fx.counts.values().sum::<u64>() as i64),
            effect_kinds: e.effects.as_ref().map(|fx| {
                let kinds: Vec<&str> = fx.counts.keys().map(|k| k.as_str()).collect();
                format!(",{},", kinds.join(","))
            }),
            cpu_ms: e.cpu.map(|c| c.seconds * 1000.0),
        }
    }
}

/// Inserts a batch of events in one transaction; returns how many were new.
pub fn insert(conn: &mut Connection, events: &[Arc<Stored>]) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    let mut n = 0;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO events (id, ts_ms, type, method, tool, server, client, user, status, duration_ms, observer, transport, effects, effect_kinds, cpu_ms, json)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16
             WHERE NOT EXISTS (SELECT 1 FROM events WHERE ts_ms = ?2 AND id = ?1)",
        )?;
        for stored in events {
            let (r, json) = (&stored.row, &*stored.line);
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
                r.effects,
                r.effect_kinds,
                r.cpu_ms,
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
    rx: Receiver<Arc<Stored>>,
    live: tokio::sync::broadcast::Sender<Arc<Stored>>,
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
            let inserted = insert(&mut conn, &lines);
            let stored = lines.len();
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
pub mod tests {
    use super::*;
    use crate::event::testing::{full, operation};

    pub fn stored(events: &[Event]) -> Vec<Arc<Stored>> {
        events
            .iter()
            .map(|e| Arc::new(Stored::of(e, serde_json::to_string(e).unwrap().into())))
            .collect()
    }

    #[test]
    fn rows_insert_once_and_prune_by_count_and_age() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("events.db")).unwrap();
        let events: Vec<Event> = (0..10)
            .map(|i| operation(i, "add", "claude-code", "ok", 250.0))
            .collect();
        let batch = stored(&events);
        assert_eq!(insert(&mut conn, &batch).unwrap(), 10);
        assert_eq!(insert(&mut conn, &batch).unwrap(), 0, "event ids are unique");
        let r = &batch[3].row;
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

    #[test]
    fn rows_fall_back_to_the_server_exe_and_the_client_app() {
        let mut e = full();
        e.server.name = None;
        e.client.name = None;
        let row = Row::of_event(&e);
        assert_eq!(row.server.as_deref(), Some("/usr/bin/python3.11"));
        assert_eq!(row.client.as_deref(), Some("claude-code"));
        assert_eq!(row.kind, "mcp.alert");
        assert_eq!(row.ts_ms, 1_796_083_201_000);
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
