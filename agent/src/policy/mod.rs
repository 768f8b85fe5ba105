//! The policy: who may call what (docs/policy.md). A TOML file of server
//! rules and alert rules, validated at start (and on SIGHUP) with
//! line-numbered errors; `eval` checks every finished operation against it.
//!
//! ```toml
//! [[server]]
//! name = "github*"                 # serverInfo name (glob)
//! exe = "*/github-mcp-server"      # or the server's executable (glob)
//! port = 8443                      # or its port
//! owner = "platform-team"
//! allowed_clients = ["claude-code", "cursor"]   # client applications, as attributed
//! allowed_client_names = ["my-agent"]   # or: clientInfo names (self-declared: opt-in)
//! allowed_tools = ["get_*", "list_*"]
//! denied_tools = ["delete_*"]
//! allowed_users = ["alice", "svc-*"]   # verified identities (or the client process's owner)
//! trust_unverified_users = false        # true: unverified JWT claims and Basic names count too
//! capture_payloads = true
//! payload_allow_keys = ["repo", "path"]
//! effects = { read = ["/srv/repos"], exec = ["/usr/bin/git"], connect = ["*:443"] }
//! tool_effects = { "push_*" = { connect = ["github.com:443"] } }
//!
//! [alerts]
//! error_rate = { threshold = 0.5, window_s = 300, min_calls = 10 }
//! latency = { p95_s = 2.0, window_s = 300, min_calls = 10 }
//! new_tool = true
//! new_server = true
//! unknown_server = true
//! ```

pub mod effects;
pub mod eval;

use std::path::{Path, PathBuf};

use globset::{Glob, GlobMatcher};
use serde::Deserialize;
use toml::Spanned;

use crate::tomlfile::FileError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default, rename = "server")]
    servers: Vec<Spanned<ServerRuleFile>>,
    #[serde(default)]
    alerts: AlertsFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerRuleFile {
    name: Option<Spanned<String>>,
    exe: Option<Spanned<String>>,
    port: Option<u16>,
    owner: Option<String>,
    allowed_clients: Option<Vec<Spanned<String>>>,
    allowed_client_names: Option<Vec<Spanned<String>>>,
    allowed_tools: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    denied_tools: Vec<Spanned<String>>,
    allowed_users: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    trust_unverified_users: bool,
    #[serde(default)]
    capture_payloads: bool,
    #[serde(default)]
    payload_allow_keys: Vec<String>,
    /// The side effects the server may have (docs/policy.md).
    effects: Option<Spanned<effects::ScopeFile>>,
    /// Per tool (glob): its own scope, kind by kind over the server's.
    #[serde(default)]
    tool_effects: std::collections::BTreeMap<String, Spanned<effects::ScopeFile>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsFile {
    error_rate: Option<Spanned<ErrorRateRule>>,
    latency: Option<Spanned<LatencyRule>>,
    #[serde(default)]
    new_tool: bool,
    #[serde(default)]
    new_server: bool,
    #[serde(default)]
    unknown_server: bool,
    /// On unless set to false.
    tool_definition_changed: Option<bool>,
    /// On unless set to false.
    header_body_mismatch: Option<bool>,
}

/// Too many failures among a server's (or tool's) recent calls.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ErrorRateRule {
    /// Share of calls ending in anything but `ok`, 0 to 1.
    pub threshold: f64,
    pub window_s: u64,
    #[serde(default = "default_min_calls")]
    pub min_calls: u64,
}

/// Calls too slow: the 95th percentile over the window.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LatencyRule {
    pub p95_s: f64,
    pub window_s: u64,
    #[serde(default = "default_min_calls")]
    pub min_calls: u64,
}

fn default_min_calls() -> u64 {
    10
}

/// A glob and its source text (for alert messages).
#[derive(Debug, Clone)]
pub struct Pattern {
    pub text: String,
    matcher: GlobMatcher,
}

impl Pattern {
    pub fn new(text: &str) -> Result<Pattern, String> {
        let g = Glob::new(text).map_err(|e| format!("bad pattern {text:?}: {e}"))?;
        Ok(Pattern {
            text: text.to_string(),
            matcher: g.compile_matcher(),
        })
    }

    pub fn matches(&self, s: &str) -> bool {
        self.matcher.is_match(s)
    }
}

/// A server rule, compiled.
#[derive(Debug, Clone)]
pub struct ServerRule {
    /// `server[N]` and what it matches, for alert messages and metrics.
    pub label: String,
    pub name: Option<Pattern>,
    pub exe: Option<Pattern>,
    pub port: Option<u16>,
    pub owner: Option<String>,
    /// Client applications as the agent attributed them (`client.app`:
    /// from the client process's executable and ancestry).
    pub allowed_clients: Option<Vec<Pattern>>,
    /// Client names as clients declare them (`clientInfo`): anyone can
    /// write any name, so only when the operator asks for it.
    pub allowed_client_names: Option<Vec<Pattern>>,
    pub allowed_tools: Option<Vec<Pattern>>,
    pub denied_tools: Vec<Pattern>,
    pub allowed_users: Option<Vec<Pattern>>,
    /// Unverified identities (JWT claims no key checked, Basic's user
    /// name) count for `allowed_users`.
    pub trust_unverified_users: bool,
    pub capture_payloads: bool,
    pub payload_allow_keys: Vec<String>,
    pub effects: Option<effects::Scope>,
    pub tool_effects: Vec<(Pattern, effects::Scope)>,
}

impl ServerRule {
    /// The side-effect scope of a call to `tool`: the first tool scope
    /// matching it over the server's; `None` when neither restricts.
    pub fn scope_for(&self, tool: Option<&str>) -> Option<effects::Scope> {
        let own = tool.and_then(|t| self.tool_effects.iter().find(|(p, _)| p.matches(t)).map(|(_, s)| s));
        match (&self.effects, own) {
            (None, None) => None,
            (Some(s), None) => Some(s.clone()),
            (None, Some(t)) => Some(t.clone()),
            (Some(s), Some(t)) => Some(s.overlaid(t)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Alerts {
    pub error_rate: Option<ErrorRateRule>,
    pub latency: Option<LatencyRule>,
    pub new_tool: bool,
    pub new_server: bool,
    pub unknown_server: bool,
    /// A tool an already-seen server offers changed its definition (the
    /// "rug pull"): on by default, with or without a policy file.
    pub tool_definition_changed: bool,
    /// An HTTP request's `Mcp-Method`/`Mcp-Name` headers disagree with its
    /// body (a proxy routing on the header, a server acting on the body):
    /// on by default.
    pub header_body_mismatch: bool,
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            error_rate: None,
            latency: None,
            new_tool: false,
            new_server: false,
            unknown_server: false,
            tool_definition_changed: true,
            header_body_mismatch: true,
        }
    }
}

/// The compiled policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub path: Option<PathBuf>,
    pub servers: Vec<ServerRule>,
    pub alerts: Alerts,
}

impl Policy {
    pub fn load(path: &Path) -> Result<Policy, FileError> {
        let mut policy = crate::tomlfile::load(path, "policy", Policy::parse)?;
        policy.path = Some(path.to_path_buf());
        Ok(policy)
    }

    /// Parses and checks a policy; errors carry the byte range at fault.
    pub fn parse(text: &str) -> Result<Policy, (std::ops::Range<usize>, String)> {
        let file: File = toml::from_str(text).map_err(|e| (e.span().unwrap_or(0..0), e.message().to_string()))?;
        let glob = |s: &Spanned<String>| -> Result<Pattern, (std::ops::Range<usize>, String)> {
            let g = Glob::new(s.get_ref()).map_err(|e| (s.span(), format!("bad pattern {:?}: {e}", s.get_ref())))?;
            Ok(Pattern {
                text: s.get_ref().clone(),
                matcher: g.compile_matcher(),
            })
        };
        let globs = |v: &[Spanned<String>]| v.iter().map(glob).collect::<Result<Vec<_>, _>>();
        let mut servers = Vec::new();
        for (i, spanned) in file.servers.iter().enumerate() {
            let r = spanned.get_ref();
            if r.name.is_none() && r.exe.is_none() && r.port.is_none() {
                return Err((
                    spanned.span(),
                    format!(
                        "server rule {} matches nothing: give it a name, an exe or a port",
                        i + 1
                    ),
                ));
            }
            let what = r
                .name
                .as_ref()
                .map(|n| n.get_ref().clone())
                .or_else(|| r.exe.as_ref().map(|e| e.get_ref().clone()))
                .unwrap_or_else(|| format!("port {}", r.port.unwrap_or_default()));
            servers.push(ServerRule {
                label: format!("server[{}] {}", i + 1, what),
                name: r.name.as_ref().map(glob).transpose()?,
                exe: r.exe.as_ref().map(glob).transpose()?,
                port: r.port,
                owner: r.owner.clone(),
                allowed_clients: r.allowed_clients.as_deref().map(globs).transpose()?,
                allowed_client_names: r.allowed_client_names.as_deref().map(globs).transpose()?,
                allowed_tools: r.allowed_tools.as_deref().map(globs).transpose()?,
                denied_tools: globs(&r.denied_tools)?,
                allowed_users: r.allowed_users.as_deref().map(globs).transpose()?,
                trust_unverified_users: r.trust_unverified_users,
                capture_payloads: r.capture_payloads,
                payload_allow_keys: r.payload_allow_keys.clone(),
                effects: r
                    .effects
                    .as_ref()
                    .map(|s| effects::Scope::compile(s.get_ref()).map_err(|e| (s.span(), e)))
                    .transpose()?,
                tool_effects: r
                    .tool_effects
                    .iter()
                    .map(|(tool, s)| {
                        let pattern = Pattern::new(tool).map_err(|e| (s.span(), e))?;
                        let scope = effects::Scope::compile(s.get_ref()).map_err(|e| (s.span(), e))?;
                        Ok((pattern, scope))
                    })
                    .collect::<Result<Vec<_>, (std::ops::Range<usize>, String)>>()?,
            });
        }
        if let Some(rule) = &file.alerts.error_rate {
            let r = rule.get_ref();
            if !(0.0..=1.0).contains(&r.threshold) || r.threshold.is_nan() {
                return Err((
                    rule.span(),
                    format!("error_rate threshold {} is not between 0 and 1", r.threshold),
                ));
            }
            if r.window_s == 0 {
                return Err((rule.span(), "error_rate window_s must be positive".into()));
            }
        }
        if let Some(rule) = &file.alerts.latency {
            let r = rule.get_ref();
            if r.p95_s <= 0.0 || r.p95_s.is_nan() || r.window_s == 0 {
                return Err((rule.span(), "latency needs a positive p95_s and window_s".into()));
            }
        }
        Ok(Policy {
            path: None,
            servers,
            alerts: Alerts {
                error_rate: file.alerts.error_rate.map(|r| r.into_inner()),
                latency: file.alerts.latency.map(|r| r.into_inner()),
                new_tool: file.alerts.new_tool,
                new_server: file.alerts.new_server,
                unknown_server: file.alerts.unknown_server,
                tool_definition_changed: file.alerts.tool_definition_changed.unwrap_or(true),
                header_body_mismatch: file.alerts.header_body_mismatch.unwrap_or(true),
            },
        })
    }

    /// The first rule (in file order) matching a server.
    pub fn rule_for(&self, name: Option<&str>, exe: Option<&str>, port: Option<u16>) -> Option<&ServerRule> {
        self.rule_index(name, exe, port).map(|i| &self.servers[i])
    }

    /// Where in `servers` the first rule matching a server is.
    pub fn rule_index(&self, name: Option<&str>, exe: Option<&str>, port: Option<u16>) -> Option<usize> {
        self.servers.iter().position(|r| {
            r.name.as_ref().is_none_or(|p| name.is_some_and(|n| p.matches(n)))
                && r.exe.as_ref().is_none_or(|p| exe.is_some_and(|e| p.matches(e)))
                && r.port.is_none_or(|want| port == Some(want))
        })
    }

    /// Whether some rule lets payloads be captured.
    pub fn any_capture(&self) -> bool {
        self.servers.iter().any(|r| r.capture_payloads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[server]]
name = "github*"
owner = "platform"
allowed_clients = ["claude-code", "cursor"]
allowed_tools = ["get_*", "list_*", "delete_branch"]
denied_tools = ["delete_*"]
allowed_users = ["alice", "svc-*"]

[[server]]
exe = "*/db-mcp"
port = 9000

[alerts]
error_rate = { threshold = 0.5, window_s = 60 }
latency = { p95_s = 2.0, window_s = 60, min_calls = 5 }
new_tool = true
"#;

    #[test]
    fn parses_and_matches_in_file_order() {
        let p = Policy::parse(GOOD).unwrap();
        assert_eq!(p.servers.len(), 2);
        let r = p.rule_for(Some("github-enterprise"), None, None).unwrap();
        assert_eq!(r.owner.as_deref(), Some("platform"));
        assert_eq!(r.label, "server[1] github*");
        assert!(p.rule_for(Some("gitlab"), None, None).is_none());
        // exe and port must both match.
        assert!(p.rule_for(None, Some("/opt/db-mcp"), Some(9000)).is_some());
        assert!(p.rule_for(None, Some("/opt/db-mcp"), Some(9001)).is_none());
        assert_eq!(p.alerts.error_rate.unwrap().min_calls, 10);
        assert!(p.alerts.new_tool && !p.alerts.new_server);
    }

    fn error_line(text: &str) -> (usize, String) {
        let dir = std::env::temp_dir().join(format!("mcptap-policy-{}-{}", std::process::id(), text.len()));
        std::fs::write(&dir, text).unwrap();
        let err = Policy::load(&dir).unwrap_err();
        let _ = std::fs::remove_file(&dir);
        match err {
            FileError::Invalid { line, message, .. } => (line, message),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn bad_files_say_where() {
        let (line, msg) = error_line("[[server]]\nname = \"x\"\nallowed_toolz = [\"a\"]\n");
        assert_eq!(line, 3, "{msg}");
        assert!(msg.contains("allowed_toolz"), "{msg}");
        let (line, msg) = error_line("[[server]]\nname = \"x\"\ndenied_tools = [\"ok\", \"bad[\"]\n");
        assert_eq!(line, 3, "{msg}");
        assert!(msg.contains("bad["), "{msg}");
        let (line, msg) = error_line("\n\n[[server]]\nowner = \"nobody\"\n");
        assert_eq!(line, 3, "{msg}");
        assert!(msg.contains("matches nothing"), "{msg}");
        let (line, msg) = error_line("[alerts]\nerror_rate = { threshold = 2.0, window_s = 10 }\n");
        assert_eq!(line, 2, "{msg}");
        let (line, _) = error_line("[[server]\nname = 1");
        assert_eq!(line, 1);
        let (_, msg) = error_line("[[server]]\nport = \"http\"\n");
        assert!(msg.contains("invalid type"), "{msg}");
    }
}
