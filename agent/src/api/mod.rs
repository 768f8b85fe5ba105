//! The local API over the event store: JSON for the dashboard and
//! `mcptap top`, a server-sent event stream for `mcptap tail` and the live
//! tail. Served on a unix socket (file permissions: root only) and, with
//! `--ui`, on TCP with the dashboard's assets. On TCP a bearer token is
//! always required (loopback too: every local user can reach loopback),
//! and on a loopback address the `Host` header must name it (a page of
//! another site that rebinds its DNS name to 127.0.0.1 sends its own name:
//! refused).
//!
//! | route | |
//! |---|---|
//! | `GET /api/summary?window=15m\|1h\|24h\|7d&server=&client=&tool=&user=&status=` | headline figures, calls over time, rankings |
//! | `GET /api/calls?kind=mcp.operation\|mcp.alert\|all&limit=&before=&...filters` | events newest first |
//! | `GET /api/events/{id}?ts_ms=` | one full event (`ts_ms` from the listing: found by index) |
//! | `GET /api/tail?...filters` | live events (`text/event-stream`) |
//! | `GET /api/tools?window=` | each server's latest tools/list in the window: tools offered (with a digest of each definition), their calls, those never called |

pub mod audit;
pub mod client;
pub mod query;

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::{
    Json, Router,
    extract::{Path as UrlPath, Query, Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response, sse},
    routing::get,
};
use serde::Deserialize;
use serde_json::json;
use tokio_stream::{StreamExt as _, wrappers::BroadcastStream};

use self::query::Filters;

/// The dashboard's files, built by `cargo xtask` (ui/) and embedded.
mod assets {
    include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));
}

#[derive(Clone)]
pub struct ApiState {
    pub db: PathBuf,
    /// Stored events' lines, as they are stored.
    pub live: tokio::sync::broadcast::Sender<Arc<crate::store::Stored>>,
    /// Required as `Authorization: Bearer <token>` (or `?token=` for the
    /// browser's event stream) when set.
    pub token: Option<Arc<str>>,
    /// Where reads of payloads are recorded (`mcp.audit`).
    pub audit: Option<audit::AuditTrail>,
    /// `Host` values accepted (`None`: any).
    pub hosts: Option<Arc<[String]>>,
}

/// The `Host` values a dashboard bound to `addr` accepts: on loopback its
/// own address and `localhost` at its port; elsewhere any (the token is
/// what guards it there, and the names it is reached by are the network's).
pub fn allowed_hosts(addr: SocketAddr) -> Option<Arc<[String]>> {
    if !addr.ip().is_loopback() {
        return None;
    }
    let port = addr.port();
    let mut hosts = vec![addr.to_string(), format!("localhost:{port}")];
    if port == 80 {
        hosts.extend([addr.ip().to_string(), "localhost".to_string()]);
    }
    Some(hosts.into())
}

fn router(state: ApiState, with_ui: bool) -> Router {
    let mut app = Router::new()
        .route("/api/summary", get(summary))
        .route("/api/calls", get(calls))
        .route("/api/events/{id}", get(event))
        .route("/api/tail", get(tail))
        .route("/api/tools", get(tools))
        .layer(middleware::from_fn_with_state(state.clone(), authorize));
    if with_ui {
        app = app
            .route("/", get(|| asset(UrlPath("index.html".into()))))
            .route("/{*path}", get(asset));
    }
    app.layer(middleware::from_fn_with_state(state.clone(), check_host))
        .with_state(state)
}

/// Refuses a request whose `Host` is not one the dashboard answers to.
async fn check_host(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    if let Some(hosts) = &state.hosts {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return (
                StatusCode::MISDIRECTED_REQUEST,
                Json(json!({"error": "this dashboard answers to its own address only (Host header)"})),
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// Serves the API on a unix socket, readable by the agent's user only.
pub async fn serve_unix(path: PathBuf, state: ApiState) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by a previous run (not a file someone cares about).
    if std::fs::symlink_metadata(&path).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type())) {
        std::fs::remove_file(&path)?;
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(|e| anyhow::anyhow!("cannot serve the API on {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    tracing::info!(socket = %path.display(), "serving the local API");
    let app = router(state, false).into_make_service_with_connect_info::<audit::UnixPeer>();
    axum::serve(listener, app).await?;
    Ok(())
}

/// Binds the dashboard's address.
pub async fn bind_ui(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!("cannot serve the dashboard on {addr}: the address is in use; pick another with --ui")
        } else {
            anyhow::anyhow!("cannot serve the dashboard on {addr}: {e}")
        }
    })
}

pub async fn serve_ui(listener: tokio::net::TcpListener, state: ApiState) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state, true).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

async fn authorize(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let query = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")))
        .map(str::to_string);
    let given = bearer.or(query).unwrap_or_default();
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "a bearer token is required"})),
        )
            .into_response()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, Deserialize)]
struct SummaryQuery {
    window: Option<String>,
    #[serde(flatten)]
    filters: Filters,
}

fn internal(err: impl std::fmt::Display) -> Response {
    tracing::warn!("API query failed: {err}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({"error": err.to_string()})),
    )
        .into_response()
}

/// Runs a query on a fresh read-only connection, off the async threads.
async fn with_db<T: Send + 'static>(
    db: &Path,
    f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, Response> {
    let db = db.to_path_buf();
    tokio::task::spawn_blocking(move || {
        if !db.exists() {
            return Err(rusqlite::Error::InvalidPath(db));
        }
        let conn = crate::store::open_reader(&db)?;
        f(&conn)
    })
    .await
    .map_err(internal)?
    .map_err(internal)
}

/// The answer to a window the dashboard does not have.
fn bad_window() -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": "window: 15m, 1h, 24h or 7d"})),
    )
        .into_response()
}

async fn summary(State(state): State<ApiState>, Query(q): Query<SummaryQuery>) -> Response {
    let window = q.window.unwrap_or_else(|| "15m".into());
    let Some(ms) = query::window_ms(&window) else {
        return bad_window();
    };
    let now = chrono::Utc::now().timestamp_millis();
    match with_db(&state.db, move |c| query::summary(c, &window, ms, now, &q.filters)).await {
        Ok(s) => Json(s).into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
struct CallsQuery {
    kind: Option<String>,
    limit: Option<usize>,
    before: Option<i64>,
    window: Option<String>,
    #[serde(flatten)]
    filters: Filters,
}

async fn calls(State(state): State<ApiState>, Query(q): Query<CallsQuery>) -> Response {
    let kind = q.kind.unwrap_or_else(|| "mcp.operation".into());
    let since = q
        .window
        .as_deref()
        .and_then(query::window_ms)
        .map(|ms| chrono::Utc::now().timestamp_millis() - ms);
    let limit = q.limit.unwrap_or(100);
    match with_db(&state.db, move |c| {
        query::calls(c, &q.filters, &kind, since, q.before, limit)
    })
    .await
    {
        Ok(rows) => Json(json!({ "calls": rows })).into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
struct ToolsQuery {
    window: Option<String>,
}

async fn tools(State(state): State<ApiState>, Query(q): Query<ToolsQuery>) -> Response {
    let window = q.window.unwrap_or_else(|| "24h".into());
    let Some(ms) = query::window_ms(&window) else {
        return bad_window();
    };
    let now = chrono::Utc::now().timestamp_millis();
    match with_db(&state.db, move |c| query::tools(c, now - ms, now)).await {
        Ok(servers) => Json(json!({ "window": window, "servers": servers })).into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
struct EventQuery {
    ts_ms: Option<i64>,
}

async fn event(
    State(state): State<ApiState>,
    extensions: axum::http::Extensions,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<EventQuery>,
) -> Response {
    match with_db(&state.db, move |c| query::event(c, &id, q.ts_ms)).await {
        Ok(Some(e)) => {
            // Captured payloads were read: that leaves a trace.
            if let (Some(trail), Some(_)) = (&state.audit, e.get("payload")) {
                let viewer = audit::Viewer::of(&extensions, state.token.is_some());
                let id = e.get("event.id").and_then(|v| v.as_str()).map(str::to_string);
                trail.record(audit::Audit::new("event", id, viewer));
            }
            Json(e).into_response()
        }
        Ok(None) => (StatusCode::NOT_FOUND, Json(json!({"error": "no such event"}))).into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
struct TailQuery {
    kind: Option<String>,
    #[serde(flatten)]
    filters: Filters,
}

async fn tail(
    State(state): State<ApiState>,
    extensions: axum::http::Extensions,
    Query(q): Query<TailQuery>,
) -> impl IntoResponse {
    // A live tail streams whole events, payloads included when captured.
    if let Some(trail) = &state.audit {
        let viewer = audit::Viewer::of(&extensions, state.token.is_some());
        trail.record(audit::Audit::new("tail", None, viewer));
    }
    let kind = q.kind.unwrap_or_else(|| "all".into());
    let stream = BroadcastStream::new(state.live.subscribe()).filter_map(move |item| {
        let event = match item {
            Ok(e) => e,
            // A slow reader missed events: say so in the stream.
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                return Some(Ok::<_, Infallible>(
                    sse::Event::default().event("lagged").data(n.to_string()),
                ));
            }
        };
        let type_ok = kind == "all" || event.row.kind == kind;
        (type_ok && q.filters.matches(&event.row)).then(|| Ok(sse::Event::default().data(&*event.line)))
    });
    sse::Sse::new(stream).keep_alive(sse::KeepAlive::default())
}

async fn asset(UrlPath(path): UrlPath<String>) -> Response {
    let path = path.trim_start_matches('/');
    // Client-side routes fall back to the page itself.
    let (name, bytes) = match assets::FILES.iter().find(|(n, _)| *n == path) {
        Some(&(n, b)) => (n, b),
        None => match assets::FILES.iter().find(|(n, _)| *n == "index.html") {
            Some(&(n, b)) if !path.starts_with("assets/") => (n, b),
            _ => return (StatusCode::NOT_FOUND, "not found").into_response(),
        },
    };
    let kind = match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
    // No framing by other sites: the page shows what agents did.
    headers.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:"),
    );
    (headers, bytes).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt as _;

    use super::*;

    fn state(dir: &Path, token: Option<&str>) -> ApiState {
        let db = dir.join("events.db");
        crate::store::open(&db).unwrap();
        ApiState {
            db,
            live: tokio::sync::broadcast::channel(4).0,
            token: token.map(Into::into),
            audit: None,
            hosts: None,
        }
    }

    async fn get(app: &Router, uri: &str, auth: Option<&str>) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::builder().uri(uri);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let res = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = res.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    #[tokio::test]
    async fn reading_an_event_with_payloads_is_audited() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = state(dir.path(), None);
        let (trail, mut audits) = audit::AuditTrail::new(Arc::new(crate::sinks::metrics::Metrics::new()));
        st.audit = Some(trail);
        let mut with = crate::event::testing::operation(1, "add", "c", "ok", 1.0);
        with.id = "with-payload".into();
        with.payload = Some(crate::event::PayloadOut {
            http_request_headers: None,
            params: Some(json!({"a": 1})),
            result: None,
            error: None,
        });
        let mut without = crate::event::testing::operation(2, "add", "c", "ok", 1.0);
        without.id = "without-payload".into();
        without.payload = None;
        let mut conn = crate::store::open(&st.db).unwrap();
        crate::store::insert(&mut conn, &crate::store::tests::stored(&[with, without])).unwrap();
        let app = router(st, false);
        assert_eq!(get(&app, "/api/events/without-payload", None).await.0, StatusCode::OK);
        assert!(audits.try_recv().is_err(), "no payload, no audit");
        assert_eq!(get(&app, "/api/events/with-payload", None).await.0, StatusCode::OK);
        let a = audits.try_recv().expect("an audit");
        assert_eq!((a.route, a.viewed_event_id.as_deref()), ("event", Some("with-payload")));
        assert!(matches!(a.viewer, audit::Viewer::Dashboard { .. }), "{a:?}");
        assert_eq!(get(&app, "/api/events/no-such", None).await.0, StatusCode::NOT_FOUND);
        assert!(audits.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_token_is_required_when_set() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(state(dir.path(), Some("0123456789abcdef-token")), true);
        assert_eq!(get(&app, "/api/summary", None).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            get(&app, "/api/summary", Some("Bearer wrong")).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get(&app, "/api/summary", Some("Bearer 0123456789abcdef-token")).await.0,
            StatusCode::OK
        );
        assert_eq!(
            get(&app, "/api/summary?window=24h&token=0123456789abcdef-token", None)
                .await
                .0,
            StatusCode::OK
        );
        // The page itself is public: it holds no data, and asks for the token.
        assert_eq!(get(&app, "/", None).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn bad_queries_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(state(dir.path(), None), false);
        let (status, _, body) = get(&app, "/api/summary?window=1y", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("15m"), "{body}");
        assert_eq!(get(&app, "/api/events/nope", None).await.0, StatusCode::NOT_FOUND);
        let (status, _, body) = get(&app, "/api/calls?limit=5", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, r#"{"calls":[]}"#);
        // The unix-socket API serves no pages.
        assert_eq!(get(&app, "/", None).await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn pages_carry_a_strict_policy_and_unknown_assets_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(state(dir.path(), None), true);
        let (status, headers, body) = get(&app, "/", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("<title>mcptap</title>"), "{body}");
        assert!(
            headers[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("default-src 'self'")
        );
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        // Client-side routes get the page; missing assets do not.
        assert_eq!(get(&app, "/calls/123", None).await.0, StatusCode::OK);
        assert_eq!(get(&app, "/assets/missing.js", None).await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_loopback_dashboard_answers_to_its_own_address_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = state(dir.path(), Some("0123456789abcdef-token"));
        st.hosts = allowed_hosts("127.0.0.1:9465".parse().unwrap());
        let app = router(st, true);
        let with_host = |host: &'static str| {
            let app = app.clone();
            async move {
                let req = Request::builder()
                    .uri("/api/summary")
                    .header(header::HOST, host)
                    .header(header::AUTHORIZATION, "Bearer 0123456789abcdef-token")
                    .body(Body::empty())
                    .unwrap();
                app.oneshot(req).await.unwrap().status()
            }
        };
        assert_eq!(with_host("127.0.0.1:9465").await, StatusCode::OK);
        assert_eq!(with_host("localhost:9465").await, StatusCode::OK);
        // A rebound DNS name: its own Host header.
        assert_eq!(
            with_host("attacker.example:9465").await,
            StatusCode::MISDIRECTED_REQUEST
        );
        assert_eq!(with_host("127.0.0.1:1").await, StatusCode::MISDIRECTED_REQUEST);
        // Other addresses: any name (the token guards them).
        assert!(allowed_hosts("10.0.0.5:9465".parse().unwrap()).is_none());
    }
}
