//! Payload views leave a trace: every read of a stored event that carries
//! captured payloads (`GET /api/events/{id}`), and every live tail opened
//! (it streams whole events), becomes an `mcp.audit` event naming who asked
//! — the local user behind the unix socket (its credentials, from the
//! kernel), or the dashboard client's address — what, and when.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{extract::connect_info::Connected, serve::IncomingStream};
use serde::Serialize;

use crate::sinks::metrics::Metrics;

/// Who read: the peer of the unix socket (uid and pid from the kernel), or
/// a dashboard client (its address; it held the token when one is set).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum Viewer {
    UnixSocket {
        #[serde(skip_serializing_if = "Option::is_none")]
        uid: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pid: Option<i32>,
    },
    Dashboard {
        address: String,
        token: bool,
    },
}

/// The unix socket's peer, as axum's connection info.
#[derive(Debug, Clone, Copy)]
pub struct UnixPeer {
    pub uid: Option<u32>,
    pub pid: Option<i32>,
}

impl Connected<IncomingStream<'_, tokio::net::UnixListener>> for UnixPeer {
    fn connect_info(stream: IncomingStream<'_, tokio::net::UnixListener>) -> Self {
        let cred = stream.io().peer_cred().ok();
        UnixPeer {
            uid: cred.map(|c| c.uid()),
            pid: cred.and_then(|c| c.pid()),
        }
    }
}

impl Viewer {
    /// From the request's connection info (whichever listener served it).
    pub fn of(extensions: &axum::http::Extensions, token_set: bool) -> Viewer {
        use axum::extract::ConnectInfo;
        if let Some(ConnectInfo(peer)) = extensions.get::<ConnectInfo<UnixPeer>>() {
            return Viewer::UnixSocket {
                uid: peer.uid,
                user: peer.uid.and_then(crate::enrich::process::user_name),
                pid: peer.pid,
            };
        }
        let address = extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "unknown".to_string(), |ConnectInfo(a)| a.to_string());
        Viewer::Dashboard {
            address,
            token: token_set,
        }
    }
}

/// One read to record.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Audit {
    /// `event` (one stored event with payloads) or `tail` (a live stream).
    pub route: &'static str,
    /// The event read (`event`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub viewed_event_id: Option<String>,
    pub viewer: Viewer,
    /// When, in milliseconds since the epoch.
    #[serde(skip)]
    pub at_ms: i64,
}

impl Audit {
    pub fn new(route: &'static str, viewed_event_id: Option<String>, viewer: Viewer) -> Audit {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Audit {
            route,
            viewed_event_id,
            viewer,
            at_ms,
        }
    }
}

/// Where the API hands audits to the pipeline (which turns them into
/// events like any other); a full queue is counted
/// (`mcptap_events_dropped_total{sink="audit"}`) and logged.
#[derive(Clone)]
pub struct AuditTrail {
    tx: tokio::sync::mpsc::Sender<Audit>,
    metrics: Arc<Metrics>,
}

/// Audits waiting for the pipeline, at most.
pub const QUEUE: usize = 1024;

impl AuditTrail {
    pub fn new(metrics: Arc<Metrics>) -> (AuditTrail, tokio::sync::mpsc::Receiver<Audit>) {
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        (AuditTrail { tx, metrics }, rx)
    }

    pub fn record(&self, audit: Audit) {
        if self.tx.try_send(audit).is_err() {
            self.metrics.events_dropped.with_label_values(&["audit"]).inc();
            tracing::warn!("an API read could not be audited: the audit queue is full");
        }
    }
}
