//! One finished operation with every fact the later stages read, derived
//! once: the event, the metrics, the policy evaluator, the inventory and
//! the payload rule all take this record, so they cannot disagree about a
//! tool name, a client, a port or which policy rule applies.

use std::sync::Arc;

use super::{
    Peers,
    identity::{Identifier, Identity},
};
use crate::{
    policy::{Policy, ServerRule},
    protocol::http::parse_host,
    session::{Observer, Operation, SessionKey, Via},
};

/// Where the two ends of a TCP session are, by role (not by which end the
/// agent watched).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    pub server_address: Option<String>,
    pub server_port: Option<u16>,
    pub client_address: Option<String>,
    pub client_port: Option<u16>,
}

impl Endpoints {
    /// From the connection's addresses, or, when the connection was not
    /// tied to a socket (a TLS session whose socket the agent could not
    /// tell), the server the client asked for in its Host header. `None`
    /// for stdio sessions.
    pub fn of(key: &SessionKey, request: Option<&Via>, response: Option<&Via>) -> Option<Endpoints> {
        let via = request.or(response)?;
        let mut e = Endpoints::default();
        let addrs = via
            .conn
            .addrs
            .get()
            .or_else(|| response.and_then(|r| r.conn.addrs.get()));
        if let Some((local, peer)) = addrs {
            let (server, client) = match key.observer() {
                Observer::Server => (local, peer),
                Observer::Client => (peer, local),
            };
            // Unspecified: not known (a connection gone before it was
            // looked at).
            if server.port() != 0 {
                e.server_address = Some(server.ip().to_string());
                e.server_port = Some(server.port());
            }
            if client.port() != 0 {
                e.client_address = Some(client.ip().to_string());
                e.client_port = Some(client.port());
            }
        }
        if e.server_port.is_none()
            && let Some((host, port)) = via.host.as_deref().and_then(|h| parse_host(h, via.conn.tls))
        {
            e.server_address = Some(host);
            e.server_port = Some(port);
        }
        Some(e)
    }
}

/// The policy rule a server matched, with the policy it belongs to (a
/// SIGHUP may replace the policy while the record is in flight).
#[derive(Debug, Clone)]
pub struct MatchedRule {
    policy: Arc<Policy>,
    index: usize,
}

impl MatchedRule {
    pub fn rule(&self) -> &ServerRule {
        &self.policy.servers[self.index]
    }
}

/// A finished operation, enriched.
#[derive(Debug)]
pub struct OperationRecord {
    pub op: Box<Operation>,
    pub peers: Peers,
    /// `gen_ai.tool.name`: the tool of a `tools/call`.
    pub tool: Option<String>,
    /// The client as it names itself: the request's own `clientInfo`
    /// (2026-07-28), else the session's.
    pub client_name: Option<String>,
    pub client_version: Option<String>,
    /// The server as it names itself (its `initialize` answer).
    pub server_name: Option<String>,
    /// TCP sessions: where each end is.
    pub endpoints: Option<Endpoints>,
    /// The policy rule of this server, matched once.
    pub rule: Option<MatchedRule>,
    /// HTTP: who the call was for, from its credential.
    pub identity: Option<Identity>,
    /// What the server did while it handled the call (server view only).
    pub effects: Option<crate::effects::OperationEffects>,
}

impl OperationRecord {
    pub fn new(
        op: Box<Operation>,
        peers: Peers,
        effects: Option<crate::effects::OperationEffects>,
        policy: &Arc<Policy>,
        identifier: &Identifier,
    ) -> OperationRecord {
        // A task's requests are the tool's that created it.
        let tool = (op.method == "tools/call")
            .then(|| op.name.clone())
            .flatten()
            .or_else(|| op.links.task.as_ref().and_then(|t| t.tool.clone()));
        let client = op.request_client.as_ref().or(op.session.client.as_ref());
        let client_name = client.map(|c| c.name.clone());
        let client_version = client.and_then(|c| c.version.clone());
        let server_name = op.session.server.as_ref().map(|s| s.name.clone());
        let endpoints = Endpoints::of(&op.key, op.request_via.as_ref(), op.response_via.as_ref());
        let identity = op
            .request_via
            .as_ref()
            .and_then(|v| v.credential.as_deref())
            .and_then(|c| identifier.identify(c));
        let mut record = OperationRecord {
            op,
            peers,
            tool,
            client_name,
            client_version,
            server_name,
            endpoints,
            rule: None,
            identity,
            effects,
        };
        record.rule = policy
            .rule_index(record.server_name.as_deref(), record.server_exe(), record.server_port())
            .map(|index| MatchedRule {
                policy: policy.clone(),
                index,
            });
        record
    }

    pub fn server_exe(&self) -> Option<&str> {
        self.peers.server.as_ref().and_then(|p| p.exe.as_deref())
    }

    pub fn server_port(&self) -> Option<u16> {
        self.endpoints.as_ref().and_then(|e| e.server_port)
    }

    /// The user the call was made for: its credential's identity (HTTP),
    /// else the client process's owner.
    pub fn user(&self) -> Option<&str> {
        super::identity::user_of(
            self.identity.as_ref(),
            self.peers.client.as_ref().and_then(|p| p.user.as_deref()),
        )
    }

    /// Whether [`OperationRecord::user`] rests on evidence: a verified
    /// token, an opaque token's fingerprint, or (no credential) the client
    /// process's owner, which the kernel knows.
    pub fn user_is_evidence(&self) -> bool {
        match &self.identity {
            Some(i) if i.display().is_some() => i.is_evidence(),
            _ => self.peers.client.as_ref().and_then(|p| p.user.as_deref()).is_some(),
        }
    }

    /// How the server is named where a name is needed (seen sets, spike
    /// windows, the inventory's fallbacks).
    pub fn server_id(&self) -> String {
        self.server_name
            .clone()
            .or_else(|| self.server_exe().map(str::to_string))
            .or_else(|| self.server_port().map(|p| format!("port {p}")))
            .unwrap_or_else(|| "unknown".into())
    }
}
