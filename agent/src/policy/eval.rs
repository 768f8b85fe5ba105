//! Checking finished operations against the policy: scope violations
//! (client, user, tool), error-rate and latency spikes over a sliding
//! window, and first uses of tools and servers never seen before (the
//! "shadow MCP servers" a security team wants to hear about). What was seen
//! survives restarts in the agent's state directory.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::PathBuf,
    sync::Arc,
};

use serde::{Deserialize, Serialize};

use super::{Policy, ServerRule};
use crate::{enrich::operation::OperationRecord, protocol::jsonrpc::ToolDef};

/// What an alert says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// `policy_violation`, `error_rate_spike`, `latency_spike`, `new_tool`,
    /// `new_server`, `unknown_server`.
    pub kind: &'static str,
    /// The rule that fired (`server[1] github*`, `alerts.error_rate`...).
    pub rule: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// `effect_outside_scope`: the first effect out of scope (the message
    /// says how many there were in the call).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effect: Option<crate::effects::Effect>,
}

/// The facts of one finished operation the policy looks at: a view of the
/// enriched record (`From<&OperationRecord>`), with the server's rule
/// already matched there.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    pub rule: Option<&'a ServerRule>,
    pub server_name: Option<&'a str>,
    pub server_exe: Option<&'a str>,
    pub server_port: Option<u16>,
    pub client_name: Option<&'a str>,
    pub client_app: Option<&'a str>,
    pub user: Option<&'a str>,
    /// The user rests on evidence (a verified token, an opaque token's
    /// fingerprint, the client process's owner), not on a claim.
    pub user_is_evidence: bool,
    pub method: &'a str,
    /// A `tools/list` answer's tools and their digests.
    pub offered_tools: Option<&'a [ToolDef]>,
    pub tool: Option<&'a str>,
    pub ok: bool,
    pub duration_s: Option<f64>,
    pub ts_ns: u64,
    /// What the server did during the call (server view).
    pub effects: Option<&'a [crate::effects::AttributedEffect]>,
    /// HTTP: the request's routing headers disagreed with its body.
    pub header_mismatch: Option<&'a str>,
}

impl<'a> From<&'a OperationRecord> for Facts<'a> {
    fn from(r: &'a OperationRecord) -> Facts<'a> {
        Facts {
            rule: r.rule.as_ref().map(|m| m.rule()),
            server_name: r.server_name.as_deref(),
            server_exe: r.server_exe(),
            server_port: r.server_port(),
            client_name: r.client_name.as_deref(),
            client_app: r.peers.client_app,
            user: r.user(),
            user_is_evidence: r.user_is_evidence(),
            header_mismatch: r.op.links.header_mismatch.as_deref(),
            method: &r.op.method,
            offered_tools: r.op.offered_tools.as_deref(),
            tool: r.tool.as_deref(),
            ok: r.op.status == crate::session::Status::Ok,
            duration_s: r.op.duration_s(),
            ts_ns: r.op.request_ts_ns,
            effects: r.effects.as_ref().map(|e| e.all.as_slice()),
        }
    }
}

impl Facts<'_> {
    /// How a server is named in seen sets and windows.
    fn server_id(&self) -> String {
        self.server_name
            .map(str::to_string)
            .or_else(|| self.server_exe.map(str::to_string))
            .or_else(|| self.server_port.map(|p| format!("port {p}")))
            .unwrap_or_else(|| "unknown".into())
    }
}

#[derive(Debug, Default)]
struct Window {
    calls: VecDeque<(u64, bool, Option<f64>)>,
    error_firing: bool,
    latency_firing: bool,
}

/// One `effect_outside_scope` alert per part of the scope an operation's
/// effects broke (read, write, exec...), naming the first such effect and
/// how many there were.
fn effects_outside(
    r: &ServerRule,
    scope: &super::effects::Scope,
    all: &[crate::effects::AttributedEffect],
    f: &Facts<'_>,
    server: &str,
) -> Vec<Alert> {
    let mut parts: Vec<(&'static str, String, &crate::effects::Effect, usize)> = Vec::new();
    for e in all {
        if let Some((part, allowed)) = scope.outside(&e.effect) {
            match parts.iter_mut().find(|(p, ..)| *p == part) {
                Some(entry) => entry.3 += 1,
                None => parts.push((part, allowed, &e.effect, 1)),
            }
        }
    }
    parts
        .into_iter()
        .map(|(part, allowed, first, n)| {
            let what = first
                .path
                .clone()
                .or_else(|| first.address.map(|a| a.to_string()))
                .unwrap_or_else(|| "(unknown)".into());
            Alert {
                kind: "effect_outside_scope",
                rule: format!("{} effects.{part}", r.label),
                message: format!(
                    "{} of server {server:?} ({}, user {}) did {} {what:?} outside effects.{part} {allowed}{}",
                    f.tool.map_or_else(|| f.method.to_string(), |t| format!("tool {t:?}")),
                    f.client_name
                        .map_or("client (unknown)".to_string(), |c| format!("client {c:?}")),
                    f.user.map_or("(unknown)".to_string(), |u| format!("{u:?}")),
                    first.kind.as_str(),
                    if n > 1 {
                        format!(" ({n} such effects in this call)")
                    } else {
                        String::new()
                    },
                ),
                owner: r.owner.clone(),
                effect: Some(first.clone()),
            }
        })
        .collect()
}

/// Tools and servers seen so far (persisted).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Seen {
    servers: HashSet<String>,
    tools: HashSet<String>,
    /// The digest of each tool definition a server offered last, by
    /// server and tool.
    #[serde(default)]
    tool_defs: HashMap<String, String>,
}

/// Most tool definitions remembered (past it, new ones are not compared).
const MAX_TOOL_DEFS: usize = 20_000;

pub struct Evaluator {
    policy: Arc<Policy>,
    windows: HashMap<String, Window>,
    seen: Seen,
    dirty: bool,
    state_file: Option<PathBuf>,
    unknown_reported: HashSet<String>,
}

impl Evaluator {
    /// `state_file`: where seen tools and servers are kept across restarts.
    pub fn new(policy: Arc<Policy>, state_file: Option<PathBuf>) -> Evaluator {
        let seen = state_file
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Evaluator {
            policy,
            windows: HashMap::new(),
            seen,
            dirty: false,
            state_file,
            unknown_reported: HashSet::new(),
        }
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// A reloaded policy (SIGHUP): windows and seen sets carry over.
    pub fn set_policy(&mut self, policy: Arc<Policy>) {
        self.policy = policy;
        self.unknown_reported.clear();
    }

    /// Writes what was seen, when it changed.
    pub fn persist(&mut self) {
        if !self.dirty {
            return;
        }
        let Some(path) = &self.state_file else { return };
        let result = serde_json::to_vec(&self.seen)
            .map_err(std::io::Error::other)
            .and_then(|b| crate::statefile::write_atomically(path, &b));
        match result {
            Ok(()) => self.dirty = false,
            Err(err) => tracing::warn!(path = %path.display(), "cannot save seen tools and servers: {err}"),
        }
    }

    /// The alerts one finished operation raises.
    pub fn check(&mut self, f: &Facts<'_>) -> Vec<Alert> {
        let mut alerts = Vec::new();
        let server = f.server_id();
        let policy = self.policy.clone();
        let rule = f.rule;

        // First uses.
        if self.seen.servers.insert(server.clone()) {
            self.dirty = true;
            if policy.alerts.new_server {
                alerts.push(Alert {
                    kind: "new_server",
                    rule: "alerts.new_server".into(),
                    message: format!("first use of server {server:?}"),
                    owner: rule.and_then(|r| r.owner.clone()),
                    effect: None,
                });
            }
        }
        if let Some(m) = f.header_mismatch
            && policy.alerts.header_body_mismatch
        {
            alerts.push(Alert {
                kind: "header_body_mismatch",
                rule: "alerts.header_body_mismatch".into(),
                message: format!(
                    "{} to server {server:?}: its Mcp-Method/Mcp-Name headers disagree with its body ({m}): what a gateway routed and checked is not what the server was asked",
                    f.method
                ),
                owner: rule.and_then(|r| r.owner.clone()),
                effect: None,
            });
        }
        if let Some(offered) = f.offered_tools {
            for t in offered {
                let key = format!("{server}\u{1f}{}", t.name);
                let room = self.seen.tool_defs.len() < MAX_TOOL_DEFS;
                match self.seen.tool_defs.get_mut(&key) {
                    Some(before) if *before != t.digest => {
                        if policy.alerts.tool_definition_changed {
                            alerts.push(Alert {
                                kind: "tool_definition_changed",
                                rule: "alerts.tool_definition_changed".into(),
                                message: format!(
                                    "the definition of tool {:?} of server {server:?} changed ({} → {}): its description or schema is not what was offered before",
                                    t.name, before, t.digest
                                ),
                                owner: rule.and_then(|r| r.owner.clone()),
                                effect: None,
                            });
                        }
                        before.clone_from(&t.digest);
                        self.dirty = true;
                    }
                    Some(_) => {}
                    None if room => {
                        self.seen.tool_defs.insert(key, t.digest.clone());
                        self.dirty = true;
                    }
                    None => {}
                }
            }
        }
        if let Some(tool) = f.tool
            && self.seen.tools.insert(format!("{server}\u{1f}{tool}"))
        {
            self.dirty = true;
            if policy.alerts.new_tool {
                alerts.push(Alert {
                    kind: "new_tool",
                    rule: "alerts.new_tool".into(),
                    message: format!("first use of tool {tool:?} of server {server:?}"),
                    owner: rule.and_then(|r| r.owner.clone()),
                    effect: None,
                });
            }
        }

        // Scope.
        match rule {
            None => {
                if policy.alerts.unknown_server && self.unknown_reported.insert(server.clone()) {
                    alerts.push(Alert {
                        kind: "unknown_server",
                        rule: "alerts.unknown_server".into(),
                        message: format!("server {server:?} matches no rule of the policy"),
                        owner: None,
                        effect: None,
                    });
                }
            }
            Some(r) => {
                let violation = |message: String| Alert {
                    kind: "policy_violation",
                    rule: r.label.clone(),
                    message,
                    owner: r.owner.clone(),
                    effect: None,
                };
                // The client: by the application the agent attributed
                // (evidence), and by its declared name only where the rule
                // asks for that.
                let app_ok = r
                    .allowed_clients
                    .as_ref()
                    .map(|allowed| f.client_app.is_some_and(|a| allowed.iter().any(|p| p.matches(a))));
                let name_ok = r
                    .allowed_client_names
                    .as_ref()
                    .map(|allowed| f.client_name.is_some_and(|n| allowed.iter().any(|p| p.matches(n))));
                if let (Some(false), None) | (None, Some(false)) | (Some(false), Some(false)) = (app_ok, name_ok) {
                    alerts.push(violation(format!(
                        "client {} is not allowed on server {server:?}",
                        describe_client(f.client_app, f.client_name)
                    )));
                }
                if let Some(allowed) = &r.allowed_users {
                    let counts = f.user_is_evidence || r.trust_unverified_users;
                    let ok = counts && f.user.is_some_and(|u| allowed.iter().any(|p| p.matches(u)));
                    if !ok {
                        let who = f.user.map_or("(unknown)".to_string(), |u| format!("{u:?}"));
                        let unverified = if counts { "" } else { " (unverified claim)" };
                        alerts.push(violation(format!(
                            "user {who}{unverified} is not allowed on server {server:?}"
                        )));
                    }
                }
                if let Some(tool) = f.tool {
                    if let Some(p) = r.denied_tools.iter().find(|p| p.matches(tool)) {
                        alerts.push(violation(format!(
                            "tool {tool:?} is denied (pattern {:?}) on server {server:?}",
                            p.text
                        )));
                    } else if let Some(allowed) = &r.allowed_tools
                        && !allowed.iter().any(|p| p.matches(tool))
                    {
                        alerts.push(violation(format!(
                            "tool {tool:?} is not among the allowed tools of server {server:?}"
                        )));
                    }
                }
                if let (Some(all), Some(scope)) = (f.effects, r.scope_for(f.tool)) {
                    alerts.extend(effects_outside(r, &scope, all, f, &server));
                }
            }
        }

        // Spikes, per server and tool (or method).
        let (error_rule, latency_rule) = (policy.alerts.error_rate, policy.alerts.latency);
        if error_rule.is_some() || latency_rule.is_some() {
            let what = f.tool.unwrap_or(f.method);
            let key = format!("{server}\u{1f}{what}");
            let longest = error_rule
                .map_or(0, |r| r.window_s)
                .max(latency_rule.map_or(0, |r| r.window_s));
            let w = self.windows.entry(key).or_default();
            w.calls.push_back((f.ts_ns, !f.ok, f.duration_s));
            let horizon = f.ts_ns.saturating_sub(longest.saturating_mul(1_000_000_000));
            while w.calls.front().is_some_and(|(ts, _, _)| *ts < horizon) {
                w.calls.pop_front();
            }
            if let Some(spike) = error_rule {
                let since = f.ts_ns.saturating_sub(spike.window_s.saturating_mul(1_000_000_000));
                let recent: Vec<_> = w.calls.iter().filter(|(ts, _, _)| *ts >= since).collect();
                let failed = recent.iter().filter(|(_, failed, _)| *failed).count();
                let rate = failed as f64 / recent.len().max(1) as f64;
                let high = recent.len() as u64 >= spike.min_calls && rate >= spike.threshold;
                if high && !w.error_firing {
                    alerts.push(Alert {
                        kind: "error_rate_spike",
                        rule: "alerts.error_rate".into(),
                        message: format!(
                            "{failed} of the last {} calls of {what:?} on server {server:?} failed ({:.0}% ≥ {:.0}%) within {} s",
                            recent.len(),
                            rate * 100.0,
                            spike.threshold * 100.0,
                            spike.window_s
                        ),
                        owner: rule.and_then(|r| r.owner.clone()),
                        effect: None,
                    });
                }
                w.error_firing = high;
            }
            if let Some(spike) = latency_rule {
                let since = f.ts_ns.saturating_sub(spike.window_s.saturating_mul(1_000_000_000));
                let mut durations: Vec<f64> = w
                    .calls
                    .iter()
                    .filter(|(ts, _, _)| *ts >= since)
                    .filter_map(|(_, _, d)| *d)
                    .collect();
                durations.sort_by(f64::total_cmp);
                let p95 = durations
                    .get(((durations.len().max(1) - 1) as f64 * 0.95).round() as usize)
                    .copied();
                let high = durations.len() as u64 >= spike.min_calls && p95.is_some_and(|p| p >= spike.p95_s);
                if high && !w.latency_firing {
                    alerts.push(Alert {
                        kind: "latency_spike",
                        rule: "alerts.latency".into(),
                        message: format!(
                            "p95 of {what:?} on server {server:?} is {:.3} s ≥ {} s over {} calls within {} s",
                            p95.unwrap_or_default(),
                            spike.p95_s,
                            durations.len(),
                            spike.window_s
                        ),
                        owner: rule.and_then(|r| r.owner.clone()),
                        effect: None,
                    });
                }
                w.latency_firing = high;
            }
        }
        alerts
    }
}

/// A client in an alert: its attributed application and declared name.
fn describe_client(app: Option<&str>, declared: Option<&str>) -> String {
    let app = app.map_or("(unknown application)".to_string(), |a| format!("{a:?}"));
    match declared {
        Some(n) => format!("{app} (declares {n:?})"),
        None => app,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As the pipeline does: the server's rule matched (there, once, in the
    /// enriched record), then the facts checked.
    fn check(e: &mut Evaluator, f: &Facts<'_>) -> Vec<Alert> {
        let policy = e.policy().clone();
        let f = Facts {
            rule: policy.rule_for(f.server_name, f.server_exe, f.server_port),
            ..f.clone()
        };
        e.check(&f)
    }

    fn evaluator(policy: &str) -> Evaluator {
        Evaluator::new(Arc::new(Policy::parse(policy).unwrap()), None)
    }

    fn call<'a>(tool: &'a str, ts_s: u64) -> Facts<'a> {
        Facts {
            server_name: Some("github"),
            client_name: Some("claude-code"),
            client_app: Some("claude-code"),
            user: Some("alice"),
            user_is_evidence: true,
            method: "tools/call",
            tool: Some(tool),
            ok: true,
            duration_s: Some(0.1),
            ts_ns: ts_s * 1_000_000_000,
            ..Facts::default()
        }
    }

    const SCOPE: &str = r#"
[[server]]
name = "github"
owner = "platform"
allowed_clients = ["claude-code"]
allowed_tools = ["get_*", "delete_branch"]
denied_tools = ["delete_*"]
allowed_users = ["alice"]
"#;

    #[test]
    fn scope_violations_name_their_rule() {
        let mut e = evaluator(SCOPE);
        assert!(check(&mut e, &call("get_issue", 1)).is_empty());
        let denied = check(&mut e, &call("delete_branch", 2));
        assert_eq!(denied.len(), 1, "denied wins over allowed: {denied:?}");
        assert_eq!(denied[0].kind, "policy_violation");
        assert_eq!(denied[0].rule, "server[1] github");
        assert_eq!(denied[0].owner.as_deref(), Some("platform"));
        assert!(denied[0].message.contains("delete_*"));
        assert_eq!(check(&mut e, &call("create_issue", 3))[0].kind, "policy_violation");
        let mut stranger = call("get_issue", 4);
        stranger.client_app = Some("cursor");
        stranger.user = Some("mallory");
        let alerts = check(&mut e, &stranger);
        assert_eq!(alerts.len(), 2, "{alerts:?}");
        // The client's application is what counts, whatever it declares.
        let mut by_app = call("get_issue", 5);
        by_app.client_name = Some("my-wrapper");
        assert!(check(&mut e, &by_app).is_empty());
    }

    #[test]
    fn claims_do_not_pass_for_evidence() {
        let mut e = evaluator(SCOPE);
        // A Python client that says it is Claude Code.
        let mut liar = call("get_issue", 1);
        liar.client_app = Some("python-agent");
        liar.client_name = Some("claude-code");
        let alerts = check(&mut e, &liar);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert!(
            alerts[0]
                .message
                .contains("\"python-agent\" (declares \"claude-code\")"),
            "{}",
            alerts[0].message
        );
        // An unsigned JWT naming alice.
        let mut forged = call("get_issue", 2);
        forged.user_is_evidence = false;
        let alerts = check(&mut e, &forged);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert!(
            alerts[0].message.contains("\"alice\" (unverified claim)"),
            "{}",
            alerts[0].message
        );
        // Unless the rule says so: declared names, unverified users.
        let mut e = evaluator(
            "[[server]]\nname = \"github\"\nallowed_client_names = [\"claude-code\"]\nallowed_users = [\"alice\"]\ntrust_unverified_users = true\n",
        );
        assert!(check(&mut e, &liar).is_empty());
        assert!(check(&mut e, &forged).is_empty());
    }

    #[test]
    fn first_uses_and_unknown_servers() {
        let mut e = evaluator("[alerts]\nnew_tool = true\nnew_server = true\nunknown_server = true\n");
        let kinds = |a: Vec<Alert>| a.into_iter().map(|a| a.kind).collect::<Vec<_>>();
        assert_eq!(
            kinds(check(&mut e, &call("get_issue", 1))),
            vec!["new_server", "new_tool", "unknown_server"]
        );
        assert_eq!(kinds(check(&mut e, &call("get_issue", 2))), Vec::<&str>::new());
        assert_eq!(kinds(check(&mut e, &call("list_repos", 3))), vec!["new_tool"]);
    }

    #[test]
    fn a_changed_tool_definition_is_an_alert() {
        let def = |name: &str, digest: &str| ToolDef {
            name: name.into(),
            digest: digest.into(),
        };
        let mut e = evaluator("");
        let list = |e: &mut Evaluator, tools: &[ToolDef]| -> Vec<Alert> {
            let f = Facts {
                server_name: Some("github"),
                method: "tools/list",
                ok: true,
                offered_tools: Some(tools),
                ..Facts::default()
            };
            check(e, &f)
        };
        let first = [def("add", "sha256:01"), def("sub", "sha256:02")];
        assert!(list(&mut e, &first).is_empty(), "first sight: remembered, no alert");
        assert!(list(&mut e, &first).is_empty(), "unchanged");
        let changed = [
            def("add", "sha256:99"),
            def("sub", "sha256:02"),
            def("mul", "sha256:03"),
        ];
        let alerts = list(&mut e, &changed);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].kind, "tool_definition_changed");
        assert!(alerts[0].message.contains("\"add\"") && alerts[0].message.contains("sha256:99"));
        assert!(list(&mut e, &changed).is_empty(), "said once per change");
        // Off when the policy says so.
        let mut quiet = evaluator("[alerts]\ntool_definition_changed = false\n");
        assert!(list(&mut quiet, &first).is_empty());
        assert!(list(&mut quiet, &changed).is_empty());
    }

    #[test]
    fn seen_sets_survive_restarts() {
        let file = std::env::temp_dir().join(format!("mcptap-seen-{}.json", std::process::id()));
        let policy = Arc::new(Policy::parse("[alerts]\nnew_tool = true\n").unwrap());
        let mut e = Evaluator::new(policy.clone(), Some(file.clone()));
        assert_eq!(check(&mut e, &call("get_issue", 1)).len(), 1);
        e.persist();
        let mut again = Evaluator::new(policy, Some(file.clone()));
        assert!(check(&mut again, &call("get_issue", 2)).is_empty());
        let _ = std::fs::remove_file(file);
    }

    #[test]
    fn error_rate_and_latency_spikes_fire_once_per_episode() {
        let mut e = evaluator(
            "[alerts]\nerror_rate = { threshold = 0.5, window_s = 60, min_calls = 4 }\nlatency = { p95_s = 1.0, window_s = 60, min_calls = 4 }\n",
        );
        let mut fired = Vec::new();
        for i in 0..6 {
            let mut c = call("get_issue", i);
            c.ok = i < 2; // then failures
            fired.extend(check(&mut e, &c));
        }
        assert_eq!(
            fired.iter().filter(|a| a.kind == "error_rate_spike").count(),
            1,
            "{fired:?}"
        );
        // Long after, the window has moved on: the episode is over.
        for i in 200..210 {
            assert!(check(&mut e, &call("get_issue", i)).is_empty());
        }
        let mut slow = Vec::new();
        for i in 300..306 {
            let mut c = call("get_issue", i);
            c.duration_s = Some(3.0);
            slow.extend(check(&mut e, &c));
        }
        assert_eq!(slow.iter().filter(|a| a.kind == "latency_spike").count(), 1, "{slow:?}");
    }
}
