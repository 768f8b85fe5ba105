//! What the dashboard, `mcptap top` and `mcptap tail` ask of the event
//! store: headline figures, calls over time, rankings with latency
//! percentiles, lists of calls, one event.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, ToSql};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Filters shared by every view (exact values).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Filters {
    pub server: Option<String>,
    pub client: Option<String>,
    pub tool: Option<String>,
    pub user: Option<String>,
    pub status: Option<String>,
    pub method: Option<String>,
    /// Calls that had a side effect of this kind (`exec`, `file_write`...).
    pub effect: Option<String>,
}

impl Filters {
    fn sql(&self) -> (String, Vec<&dyn ToSql>) {
        let mut clause = String::new();
        let mut args: Vec<&dyn ToSql> = Vec::new();
        for (col, v) in [
            ("server", &self.server),
            ("client", &self.client),
            ("tool", &self.tool),
            ("user", &self.user),
            ("status", &self.status),
            ("method", &self.method),
        ] {
            if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
                clause.push_str(&format!(" AND {col} = ?"));
                args.push(v);
            }
        }
        if let Some(v) = self.effect.as_ref().filter(|v| !v.is_empty()) {
            clause.push_str(" AND instr(effect_kinds, ',' || ? || ',') > 0");
            args.push(v);
        }
        (clause, args)
    }

    pub fn matches(&self, row: &crate::store::Row) -> bool {
        let ok = |want: &Option<String>, have: &Option<String>| {
            want.as_ref()
                .filter(|w| !w.is_empty())
                .is_none_or(|w| have.as_ref() == Some(w))
        };
        ok(&self.server, &row.server)
            && ok(&self.client, &row.client)
            && ok(&self.tool, &row.tool)
            && ok(&self.user, &row.user)
            && ok(&self.status, &row.status)
            && ok(&self.method, &row.method)
            && self.effect.as_ref().filter(|w| !w.is_empty()).is_none_or(|w| {
                row.effect_kinds
                    .as_deref()
                    .is_some_and(|k| k.contains(&format!(",{w},")))
            })
    }
}

/// The dashboard's windows.
pub fn window_ms(name: &str) -> Option<i64> {
    match name {
        "15m" => Some(15 * 60_000),
        "1h" => Some(3_600_000),
        "24h" => Some(86_400_000),
        "7d" => Some(7 * 86_400_000),
        _ => None,
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub window: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub calls: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub clients: u64,
    pub servers: u64,
    pub users: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub series: Series,
    pub tools: Vec<Rank>,
    pub clients_ranked: Vec<Rank>,
    pub servers_ranked: Vec<Rank>,
    pub users_ranked: Vec<Rank>,
}

/// Calls over time: one point per bucket, counts by status.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Series {
    pub bucket_ms: i64,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    pub t_ms: i64,
    pub by_status: HashMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rank {
    pub name: String,
    pub calls: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Server CPU spent on these calls (server view), seconds.
    pub cpu_s: f64,
    /// Side effects of these calls.
    pub effects: u64,
}

const BUCKETS: i64 = 60;
const RANKED: usize = 50;

struct Op {
    ts_ms: i64,
    tool: Option<String>,
    server: Option<String>,
    client: Option<String>,
    user: Option<String>,
    status: String,
    duration_ms: Option<f64>,
    effects: Option<i64>,
    cpu_ms: Option<f64>,
}

/// Operations (requests) in the window: `calls` counts every request,
/// failures are any status but `ok`; tools rank `tools/call` only.
pub fn summary(conn: &Connection, window: &str, window_ms: i64, now_ms: i64, f: &Filters) -> rusqlite::Result<Summary> {
    let from = now_ms - window_ms;
    let (clause, mut args) = f.sql();
    let sql = format!(
        "SELECT ts_ms, tool, server, client, user, status, duration_ms, effects, cpu_ms FROM events
         WHERE type = 'mcp.operation' AND ts_ms >= ? AND ts_ms <= ?{clause}"
    );
    let mut all: Vec<&dyn ToSql> = vec![&from, &now_ms];
    all.append(&mut args);
    let mut stmt = conn.prepare(&sql)?;
    let ops: Vec<Op> = stmt
        .query_map(all.as_slice(), |r| {
            Ok(Op {
                ts_ms: r.get(0)?,
                tool: r.get(1)?,
                server: r.get(2)?,
                client: r.get(3)?,
                user: r.get(4)?,
                status: r.get::<_, Option<String>>(5)?.unwrap_or_else(|| "unknown".into()),
                duration_ms: r.get(6)?,
                effects: r.get(7)?,
                cpu_ms: r.get(8)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;

    let calls = ops.len() as u64;
    let errors = ops.iter().filter(|o| o.status != "ok").count() as u64;
    let distinct = |get: fn(&Op) -> Option<&String>| {
        ops.iter()
            .filter_map(get)
            .collect::<std::collections::HashSet<_>>()
            .len() as u64
    };
    let mut durations: Vec<f64> = ops.iter().filter_map(|o| o.duration_ms).collect();
    let (p50, p95, p99) = percentiles(&mut durations);

    let bucket_ms = (window_ms / BUCKETS).max(1);
    let mut points: Vec<Point> = (0..BUCKETS)
        .map(|i| Point {
            t_ms: from + i * bucket_ms,
            by_status: HashMap::new(),
        })
        .collect();
    for o in &ops {
        let i = ((o.ts_ms - from) / bucket_ms).clamp(0, BUCKETS - 1) as usize;
        *points[i].by_status.entry(o.status.clone()).or_default() += 1;
    }

    Ok(Summary {
        window: window.to_string(),
        from_ms: from,
        to_ms: now_ms,
        calls,
        errors,
        error_rate: if calls == 0 { 0.0 } else { errors as f64 / calls as f64 },
        clients: distinct(|o| o.client.as_ref()),
        servers: distinct(|o| o.server.as_ref()),
        users: distinct(|o| o.user.as_ref()),
        p50_ms: p50,
        p95_ms: p95,
        p99_ms: p99,
        series: Series { bucket_ms, points },
        tools: rank(&ops, |o| o.tool.as_ref()),
        clients_ranked: rank(&ops, |o| o.client.as_ref()),
        servers_ranked: rank(&ops, |o| o.server.as_ref()),
        users_ranked: rank(&ops, |o| o.user.as_ref()),
    })
}

fn rank(ops: &[Op], key: fn(&Op) -> Option<&String>) -> Vec<Rank> {
    #[derive(Default)]
    struct Group {
        calls: u64,
        errors: u64,
        durations: Vec<f64>,
        cpu_ms: f64,
        effects: u64,
    }
    let mut groups: HashMap<&String, Group> = HashMap::new();
    for o in ops {
        if let Some(k) = key(o) {
            let g = groups.entry(k).or_default();
            g.calls += 1;
            if o.status != "ok" {
                g.errors += 1;
            }
            g.durations.extend(o.duration_ms);
            g.cpu_ms += o.cpu_ms.unwrap_or(0.0);
            g.effects += o.effects.unwrap_or(0).max(0) as u64;
        }
    }
    let mut ranks: Vec<Rank> = groups
        .into_iter()
        .map(|(name, mut g)| {
            let (p50, p95, p99) = percentiles(&mut g.durations);
            Rank {
                name: name.clone(),
                calls: g.calls,
                errors: g.errors,
                error_rate: g.errors as f64 / g.calls as f64,
                p50_ms: p50,
                p95_ms: p95,
                p99_ms: p99,
                cpu_s: g.cpu_ms / 1000.0,
                effects: g.effects,
            }
        })
        .collect();
    ranks.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.name.cmp(&b.name)));
    ranks.truncate(RANKED);
    ranks
}

/// Nearest-rank percentiles.
fn percentiles(d: &mut [f64]) -> (Option<f64>, Option<f64>, Option<f64>) {
    if d.is_empty() {
        return (None, None, None);
    }
    d.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = (q * d.len() as f64).ceil() as usize;
        d[rank.clamp(1, d.len()) - 1]
    };
    (Some(at(0.50)), Some(at(0.95)), Some(at(0.99)))
}

/// One listed call (or other event).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CallRow {
    pub seq: i64,
    #[serde(flatten)]
    pub row: crate::store::Row,
}

/// Events newest first; operations unless `kind` says otherwise
/// (`mcp.alert`, or `all`).
pub fn calls(
    conn: &Connection,
    f: &Filters,
    kind: &str,
    since_ms: Option<i64>,
    before_seq: Option<i64>,
    limit: usize,
) -> rusqlite::Result<Vec<CallRow>> {
    let (clause, mut args) = f.sql();
    let mut sql = String::from(
        "SELECT seq, id, ts_ms, type, method, tool, server, client, user, status, duration_ms, observer, transport, effects, effect_kinds, cpu_ms
         FROM events WHERE 1 = 1",
    );
    let kind_owned = kind.to_string();
    let mut all: Vec<&dyn ToSql> = Vec::new();
    if kind != "all" {
        sql.push_str(" AND type = ?");
        all.push(&kind_owned);
    }
    if let Some(s) = &since_ms {
        sql.push_str(" AND ts_ms >= ?");
        all.push(s);
    }
    if let Some(b) = &before_seq {
        sql.push_str(" AND seq < ?");
        all.push(b);
    }
    sql.push_str(&clause);
    all.append(&mut args);
    let limit = limit.clamp(1, 1000) as i64;
    sql.push_str(" ORDER BY seq DESC LIMIT ?");
    all.push(&limit);
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt
        .query_map(all.as_slice(), |r| {
            Ok(CallRow {
                seq: r.get(0)?,
                row: crate::store::Row {
                    id: r.get(1)?,
                    ts_ms: r.get(2)?,
                    kind: r.get(3)?,
                    method: r.get(4)?,
                    tool: r.get(5)?,
                    server: r.get(6)?,
                    client: r.get(7)?,
                    user: r.get(8)?,
                    status: r.get(9)?,
                    duration_ms: r.get(10)?,
                    observer: r.get(11)?,
                    transport: r.get(12)?,
                    effects: r.get(13)?,
                    effect_kinds: r.get(14)?,
                    cpu_ms: r.get(15)?,
                },
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// One tool a server offered in the window, and how it was used.
#[derive(Debug, Serialize, PartialEq)]
pub struct OfferedTool {
    pub name: String,
    pub digest: String,
    /// `tools/call`s of it in the window (as seen from the busier side
    /// when both ends are watched).
    pub calls: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_called_ms: Option<i64>,
}

/// A server's latest `tools/list` answer in the window, set against its
/// calls: adoption, and what is offered but never called.
#[derive(Debug, Serialize, PartialEq)]
pub struct ServerTools {
    pub server: String,
    /// When the tools were last listed.
    pub listed_ms: i64,
    pub tools: Vec<OfferedTool>,
    /// Offered, not called in the window.
    pub unused: Vec<String>,
}

/// Servers whose tools were listed in the window (`from_ms`..), each with
/// its latest offer and the calls of each tool.
pub fn tools(conn: &Connection, from_ms: i64, now_ms: i64) -> rusqlite::Result<Vec<ServerTools>> {
    let mut latest: Vec<ServerTools> = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT server, ts_ms, json FROM events
         WHERE type = 'mcp.operation' AND method = 'tools/list' AND status = 'ok' AND ts_ms >= ?1 AND ts_ms <= ?2
         ORDER BY ts_ms DESC",
    )?;
    let rows = stmt.query_map(rusqlite::params![from_ms, now_ms], |r| {
        Ok((
            r.get::<_, Option<String>>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (server, ts, json) = row?;
        let server = server.unwrap_or_else(|| "unknown".into());
        if latest.iter().any(|s| s.server == server) {
            continue;
        }
        // The stored event's own offer (the store keeps events whole).
        let Ok(event) = serde_json::from_str::<Value>(&json) else {
            continue;
        };
        let Some(offered) = event.get("mcp.tools.offered").and_then(Value::as_array) else {
            continue;
        };
        let tools = offered
            .iter()
            .filter_map(|t| {
                Some(OfferedTool {
                    name: t.get("name")?.as_str()?.to_string(),
                    digest: t.get("digest")?.as_str()?.to_string(),
                    calls: 0,
                    last_called_ms: None,
                })
            })
            .collect();
        latest.push(ServerTools {
            server,
            listed_ms: ts,
            tools,
            unused: Vec::new(),
        });
    }
    let mut stmt = conn.prepare(
        "SELECT server, tool, observer, count(*), max(ts_ms) FROM events
         WHERE type = 'mcp.operation' AND method = 'tools/call' AND ts_ms >= ?1 AND ts_ms <= ?2
         GROUP BY server, tool, observer",
    )?;
    let calls = stmt.query_map(rusqlite::params![from_ms, now_ms], |r| {
        Ok((
            r.get::<_, Option<String>>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    for c in calls {
        let (server, tool, n, last) = c?;
        let (Some(server), Some(tool)) = (server, tool) else {
            continue;
        };
        let Some(t) = latest
            .iter_mut()
            .find(|s| s.server == server)
            .and_then(|s| s.tools.iter_mut().find(|t| t.name == tool))
        else {
            continue;
        };
        t.calls = t.calls.max(n as u64);
        t.last_called_ms = Some(t.last_called_ms.map_or(last, |l| l.max(last)));
    }
    for s in &mut latest {
        s.unused = s
            .tools
            .iter()
            .filter(|t| t.calls == 0)
            .map(|t| t.name.clone())
            .collect();
    }
    latest.sort_by(|a, b| a.server.cmp(&b.server));
    Ok(latest)
}

/// The full event, as stored. `ts_ms` (the listing's) finds it through the
/// time index; without it, or when it does not match, every row is looked at.
pub fn event(conn: &Connection, id: &str, ts_ms: Option<i64>) -> rusqlite::Result<Option<Value>> {
    let by_time = match ts_ms {
        Some(ts) => conn
            .query_row(
                "SELECT json FROM events WHERE ts_ms = ?1 AND id = ?2",
                rusqlite::params![ts, id],
                |r| r.get(0),
            )
            .optional()?,
        None => None,
    };
    let json: Option<String> = match by_time {
        Some(j) => Some(j),
        None => conn
            .query_row("SELECT json FROM events WHERE id = ?1", [id], |r| r.get(0))
            .optional()?,
    };
    Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::Event,
        store::{Row, insert, open},
    };

    fn op(i: i64, tool: &str, client: &str, status: &'static str, ms: f64) -> Event {
        crate::event::testing::operation(i, tool, client, status, ms)
    }

    fn db(events: &[Event]) -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("e.db")).unwrap();
        insert(&mut conn, &crate::store::tests::stored(events)).unwrap();
        (dir, conn)
    }

    #[test]
    fn tools_offered_against_their_calls() {
        use crate::protocol::jsonrpc::ToolDef;
        let mut list = op(1, "", "claude-code", "ok", 1.0);
        list.method = Some("tools/list".into());
        list.tool = None;
        list.offered_tools = Some(
            ["add", "delete", "search"]
                .iter()
                .map(|n| ToolDef {
                    name: n.to_string(),
                    digest: format!("sha256:{n}"),
                })
                .collect(),
        );
        let mut older = list.clone();
        older.id = "older".into();
        older.time = chrono::DateTime::from_timestamp_millis(1_800_000_000_000 - 5000)
            .unwrap()
            .to_rfc3339();
        older.offered_tools = Some(vec![ToolDef {
            name: "gone".into(),
            digest: "sha256:x".into(),
        }]);
        let mut events = vec![older, list];
        events.extend((2..5).map(|i| op(i, "add", "claude-code", "ok", 1.0)));
        events.push(op(5, "search", "cursor", "ok", 1.0));
        events.push(op(-100_000, "delete", "cursor", "ok", 1.0)); // before the window
        let (_d, conn) = db(&events);
        let now = 1_800_000_000_000 + 10_000;
        let servers = tools(&conn, now - window_ms("1h").unwrap(), now).unwrap();
        assert_eq!(servers.len(), 1, "{servers:?}");
        let s = &servers[0];
        assert_eq!(s.server, "demo");
        let calls: Vec<(&str, u64)> = s.tools.iter().map(|t| (t.name.as_str(), t.calls)).collect();
        assert_eq!(
            calls,
            [("add", 3), ("delete", 0), ("search", 1)],
            "the latest offer only"
        );
        assert_eq!(s.unused, ["delete"]);
        assert_eq!(s.tools[0].last_called_ms, Some(1_800_000_000_000 + 4000));
    }

    #[test]
    fn summaries_count_rank_and_filter() {
        let mut events: Vec<Event> = (0..8)
            .map(|i| op(i, "add", "claude-code", "ok", (i + 1) as f64 * 10.0))
            .collect();
        events.push(op(8, "delete", "cursor", "tool_error", 5.0));
        events.push(op(9, "delete", "cursor", "error", 7.0));
        events.push(op(-1000, "old", "cursor", "ok", 1.0)); // outside a 15 min window
        let (_d, conn) = db(&events);
        let now = 1_800_000_000_000 + 10_000;
        let s = summary(&conn, "15m", window_ms("15m").unwrap(), now, &Filters::default()).unwrap();
        assert_eq!((s.calls, s.errors, s.clients, s.servers, s.users), (10, 2, 2, 1, 1));
        assert!((s.error_rate - 0.2).abs() < 1e-9);
        assert_eq!(s.tools[0].name, "add");
        assert_eq!(s.tools[0].calls, 8);
        assert_eq!(
            (s.tools[0].p50_ms, s.tools[0].p95_ms, s.tools[0].p99_ms),
            (Some(40.0), Some(80.0), Some(80.0))
        );
        assert_eq!((s.tools[1].name.as_str(), s.tools[1].errors), ("delete", 2));
        assert_eq!(s.clients_ranked.iter().map(|r| r.calls).sum::<u64>(), 10);
        let total: u64 = s.series.points.iter().flat_map(|p| p.by_status.values()).sum();
        assert_eq!(total, 10);
        assert_eq!(s.series.points.len(), 60);

        let only = Filters {
            client: Some("cursor".into()),
            ..Default::default()
        };
        let s = summary(&conn, "15m", window_ms("15m").unwrap(), now, &only).unwrap();
        assert_eq!((s.calls, s.errors), (2, 2));
        let s = summary(&conn, "7d", window_ms("7d").unwrap(), now, &only).unwrap();
        assert_eq!(s.calls, 3);
    }

    #[test]
    fn calls_newest_first_with_filters_and_paging() {
        let events: Vec<Event> = (0..5)
            .map(|i| op(i, if i % 2 == 0 { "a" } else { "b" }, "c", "ok", 1.0))
            .collect();
        let (_d, conn) = db(&events);
        let rows = calls(&conn, &Filters::default(), "mcp.operation", None, None, 3).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.row.id.as_str()).collect::<Vec<_>>(),
            ["id-4", "id-3", "id-2"]
        );
        let next = calls(&conn, &Filters::default(), "mcp.operation", None, Some(rows[2].seq), 3).unwrap();
        assert_eq!(
            next.iter().map(|r| r.row.id.as_str()).collect::<Vec<_>>(),
            ["id-1", "id-0"]
        );
        let only_a = Filters {
            tool: Some("a".into()),
            ..Default::default()
        };
        assert_eq!(calls(&conn, &only_a, "mcp.operation", None, None, 10).unwrap().len(), 3);
        assert!(only_a.matches(&Row::of_event(&events[0])) && !only_a.matches(&Row::of_event(&events[1])));
        assert_eq!(event(&conn, "id-3", None).unwrap().unwrap()["gen_ai.tool.name"], "b");
        let ts = rows[1].row.ts_ms;
        assert_eq!(event(&conn, "id-3", Some(ts)).unwrap().unwrap()["event.id"], "id-3");
        // A time that does not match still finds it (by scanning).
        assert_eq!(event(&conn, "id-3", Some(ts + 1)).unwrap().unwrap()["event.id"], "id-3");
        assert!(event(&conn, "nope", None).unwrap().is_none());
    }
}
