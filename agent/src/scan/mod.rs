//! `mcptap scan`: the inventory of MCP servers this host's clients are
//! configured to run (`configs`), the credentials hard-coded in those
//! configurations, and — when the agent has run here — which configured
//! servers were never seen and which seen servers are configured nowhere.
//!
//! Reads files only; no kernel, no network. Secrets are named by where they
//! are and what they look like, never printed.

pub mod configs;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use serde::Serialize;

use self::configs::{ConfigFile, ConfiguredServer};
use crate::{
    inventory::{Inventory, ObservedServer},
    mask,
};

#[derive(Debug, clap::Args, Clone)]
pub struct ScanArgs {
    /// Scan only this home directory (repeatable); by default every user's
    /// home from /etc/passwd.
    #[arg(long = "home", value_name = "DIR")]
    pub homes: Vec<PathBuf>,
    /// Treat this directory as the file system root (/etc/passwd and homes
    /// below it): for images and fixtures.
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// The agent's state directory, whose inventory of observed servers is
    /// compared with the configurations.
    #[arg(long, default_value = "/var/lib/mcptap", value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Exit with status 3 when a hard-coded credential is found (for CI and
    /// compliance jobs).
    #[arg(long)]
    pub fail_on_credentials: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub files: Vec<FileReport>,
    pub credentials: Vec<Credential>,
    /// Absent when the agent never ran here (no inventory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_not_configured: Option<Vec<ObservedServer>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct FileReport {
    #[serde(flatten)]
    pub file: ConfigFile,
    /// Per server (same order): whether the agent observed it; `None`
    /// without an inventory.
    pub observed: Vec<Option<Observed>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Observed {
    pub calls: u64,
    pub last_seen: String,
}

/// A credential written into a configuration.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Credential {
    pub user: String,
    pub client: &'static str,
    pub path: PathBuf,
    pub server: String,
    /// `env.GITHUB_TOKEN`, `headers.Authorization`, `args[3]`, `url`.
    pub field: String,
    /// What it looks like: `github_token`, `bearer`, `secret_named_value`...
    pub kind: String,
}

pub fn run(args: ScanArgs) -> anyhow::Result<std::process::ExitCode> {
    let report = scan(&args);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(if args.fail_on_credentials && !report.credentials.is_empty() {
        std::process::ExitCode::from(3)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

pub fn scan(args: &ScanArgs) -> Report {
    let homes: Vec<(String, PathBuf)> = if args.homes.is_empty() {
        users(&args.root)
    } else {
        args.homes
            .iter()
            .map(|h| (owner_name(&args.root, h), h.clone()))
            .collect()
    };
    let mut files = Vec::new();
    for (user, home) in &homes {
        files.extend(configs::scan_home(&args.root, home, user));
    }
    let inventory_path = args.state_dir.join("inventory.json");
    let inventory = Inventory::read(&inventory_path).ok();
    let credentials = files.iter().flat_map(credentials_of).collect();
    let mut matched = BTreeSet::new();
    let files: Vec<FileReport> = files
        .into_iter()
        .map(|file| {
            let observed = file
                .servers
                .iter()
                .map(|s| {
                    let inv = inventory.as_ref()?;
                    let hits: Vec<usize> = inv
                        .servers
                        .iter()
                        .enumerate()
                        .filter(|(_, o)| matches(s, o))
                        .map(|(i, _)| i)
                        .collect();
                    matched.extend(hits.iter().copied());
                    let calls = hits.iter().map(|&i| inv.servers[i].calls).sum();
                    let last_seen = hits.iter().map(|&i| inv.servers[i].last_seen.clone()).max();
                    Some(Observed {
                        calls,
                        last_seen: last_seen.unwrap_or_default(),
                    })
                })
                .collect();
            FileReport { file, observed }
        })
        .collect();
    let observed_not_configured = inventory.as_ref().map(|inv| {
        inv.servers
            .iter()
            .enumerate()
            .filter(|(i, _)| !matched.contains(i))
            .map(|(_, s)| s.clone())
            .collect()
    });
    Report {
        files,
        credentials,
        observed_not_configured,
        inventory: inventory.is_some().then_some(inventory_path),
    }
}

/// Users with a home directory, from `<root>/etc/passwd`.
fn users(root: &Path) -> Vec<(String, PathBuf)> {
    let Ok(passwd) = std::fs::read_to_string(root.join("etc/passwd")) else {
        return Vec::new();
    };
    let mut seen = BTreeSet::new();
    passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let (name, home) = (*f.first()?, *f.get(5)?);
            let home = root.join(home.trim_start_matches('/'));
            (home.is_dir() && home != root && seen.insert(home.clone())).then(|| (name.to_string(), home))
        })
        .collect()
}

/// The user owning a home directory, by uid in `<root>/etc/passwd`, else
/// the directory's name.
fn owner_name(root: &Path, home: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata(home).map(|m| m.uid()).ok();
    let from_passwd = uid.and_then(|uid| {
        std::fs::read_to_string(root.join("etc/passwd"))
            .ok()?
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.get(2)?.parse::<u32>().ok()? == uid
                    && f.get(5).is_some_and(|h| root.join(h.trim_start_matches('/')) == home))
                .then(|| f[0].to_string())
            })
    });
    from_passwd.unwrap_or_else(|| {
        home.file_name()
            .map_or_else(|| home.display().to_string(), |n| n.to_string_lossy().into_owned())
    })
}

/// `${input:x}`, `${env:X}`, `${X}`, `$X` removed: what remains was typed in.
fn literal_part(value: &str) -> String {
    static REFS: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*").expect("valid pattern"));
    REFS.replace_all(value, "").into_owned()
}

fn credentials_of(file: &ConfigFile) -> Vec<Credential> {
    let mut out = Vec::new();
    for s in &file.servers {
        let mut add = |field: String, kind: String| {
            out.push(Credential {
                user: file.user.clone(),
                client: file.client,
                path: file.path.clone(),
                server: s.name.clone(),
                field,
                kind,
            })
        };
        for (what, pairs) in [("env", &s.env), ("headers", &s.headers)] {
            for (name, value) in pairs {
                if let Some(kind) = secret_value(name, value) {
                    add(format!("{what}.{name}"), kind);
                }
            }
        }
        let literal_args: Vec<String> = s.raw_args.iter().map(|a| literal_part(a)).collect();
        let masked = mask::mask_cmdline(&literal_args);
        for (i, (arg, m)) in literal_args.iter().zip(&masked).enumerate() {
            // A reference (`--token=${input:t}`) leaves nothing typed in.
            let typed = !arg.trim().is_empty() && !arg.ends_with('=');
            if typed && arg != m {
                let kinds = mask::secret_kinds(arg);
                let kind = if kinds.is_empty() {
                    "secret_flag_value".to_string()
                } else {
                    kinds.join(",")
                };
                add(format!("args[{i}]"), kind);
            }
        }
        if let Some(url) = &s.raw_url {
            let kinds = mask::secret_kinds(&literal_part(url));
            if !kinds.is_empty() {
                add("url".into(), kinds.join(","));
            }
        }
    }
    out
}

/// What a configured value's secret looks like, if it holds one typed in.
fn secret_value(name: &str, value: &str) -> Option<String> {
    let literal = literal_part(value);
    let kinds = mask::secret_kinds(&literal);
    if !kinds.is_empty() {
        return Some(kinds.join(","));
    }
    // A secret-named variable with a value of its own (not a reference,
    // not a placeholder like "<token>" or "changeme").
    let trimmed = literal.trim();
    let placeholder = trimmed.starts_with('<') || trimmed.chars().all(|c| c == '*' || c == 'x' || c == 'X');
    (mask::is_secret_name(name) && trimmed.len() >= 8 && !placeholder).then(|| "secret_named_value".to_string())
}

/// Launchers and words that say nothing about which server runs.
const GENERIC: &[&str] = &[
    "npx", "npm", "pnpm", "yarn", "bunx", "bun", "node", "deno", "uvx", "uv", "pipx", "python", "python3", "py",
    "docker", "podman", "sh", "bash", "cmd", "run", "exec", "tool", "stdio", "mcp", "server", "start", "serve", "dist",
    "index.js", "main.py", "--from",
];

/// Tokens of a configured command that should show in the observed
/// process's command line: package, script and binary names.
fn distinctive_tokens(s: &ConfiguredServer) -> Vec<String> {
    let mut words: Vec<&str> = Vec::new();
    words.extend(s.command.as_deref());
    words.extend(s.args.iter().map(String::as_str));
    words
        .into_iter()
        .filter(|w| !w.starts_with('-'))
        .filter_map(|w| {
            let base = w.trim_end_matches('/').rsplit('/').next()?;
            // `pkg@1.2.3` → `pkg`; `@scope/pkg` is already `pkg`.
            let base = base.split('@').find(|p| !p.is_empty())?;
            (base.len() >= 4 && !GENERIC.contains(&base) && !base.contains(char::is_whitespace))
                .then(|| base.to_string())
        })
        .collect()
}

fn normalized(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Whether an observed server is (one run of) a configured one.
pub fn matches(s: &ConfiguredServer, o: &ObservedServer) -> bool {
    if let Some(name) = &o.name {
        let (a, b) = (normalized(&s.name), normalized(name));
        if a.len() >= 3 && (a == b || (b.len() >= 4 && (a.contains(&b) || b.contains(&a)))) {
            return true;
        }
    }
    match s.transport.as_str() {
        "stdio" => {
            if o.transport != "pipe" {
                return false;
            }
            let observed = format!("{} {}", o.exe.as_deref().unwrap_or(""), o.cmdline.join(" "));
            distinctive_tokens(s).iter().any(|t| observed.contains(t.as_str()))
        }
        _ => {
            let Some(port) = s.url.as_deref().and_then(url_port) else {
                return false;
            };
            o.transport == "tcp" && o.port == Some(port)
        }
    }
}

fn url_port(url: &str) -> Option<u16> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    match host_port.rsplit_once(':') {
        Some((_, p)) if !p.contains(']') => p.parse().ok(),
        _ => match scheme {
            "https" => Some(443),
            "http" => Some(80),
            _ => None,
        },
    }
}

/// The human-readable report.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let servers: usize = r.files.iter().map(|f| f.file.servers.len()).sum();
    if r.files.is_empty() {
        out.push_str("No MCP client configuration found.\n");
    } else {
        let paths: BTreeSet<&Path> = r.files.iter().map(|f| f.file.path.as_path()).collect();
        out.push_str(&format!(
            "MCP servers configured: {servers} in {} files\n\n",
            paths.len()
        ));
        let mut rows = vec![vec![
            "USER".to_string(),
            "CLIENT".into(),
            "SCOPE".into(),
            "SERVER".into(),
            "TRANSPORT".into(),
            "RUNS".into(),
            "OBSERVED".into(),
        ]];
        for f in &r.files {
            for (s, seen) in f.file.servers.iter().zip(&f.observed) {
                let runs = match (&s.command, &s.url) {
                    (Some(c), _) => {
                        let mut words = vec![mask::mask_text(c).into_owned()];
                        words.extend(s.args.iter().cloned());
                        shorten(&words.join(" "), 60)
                    }
                    (None, Some(u)) => shorten(u, 60),
                    _ => "-".into(),
                };
                let observed = match seen {
                    None => "-".to_string(),
                    Some(o) if o.calls == 0 => "never".into(),
                    Some(o) => format!("{} calls, last {}", o.calls, o.last_seen),
                };
                rows.push(vec![
                    f.file.user.clone(),
                    f.file.client.to_string(),
                    shorten(&f.file.scope, 30),
                    format!("{}{}", s.name, if s.disabled { " (disabled)" } else { "" }),
                    s.transport.clone(),
                    runs,
                    observed,
                ]);
            }
        }
        out.push_str(&table(&rows));
        let broken: Vec<&FileReport> = r.files.iter().filter(|f| f.file.error.is_some()).collect();
        if !broken.is_empty() {
            out.push_str("\nUnreadable configurations:\n");
            for f in broken {
                out.push_str(&format!(
                    "  {} ({}): {}\n",
                    f.file.path.display(),
                    f.file.client,
                    f.file.error.as_deref().unwrap_or("")
                ));
            }
        }
    }
    if r.credentials.is_empty() {
        out.push_str("\nHard-coded credentials: none found.\n");
    } else {
        out.push_str(&format!("\nHard-coded credentials: {}\n\n", r.credentials.len()));
        let mut rows = vec![vec![
            "USER".to_string(),
            "CLIENT".into(),
            "SERVER".into(),
            "FIELD".into(),
            "LOOKS LIKE".into(),
            "FILE".into(),
        ]];
        for c in &r.credentials {
            rows.push(vec![
                c.user.clone(),
                c.client.to_string(),
                c.server.clone(),
                c.field.clone(),
                c.kind.clone(),
                c.path.display().to_string(),
            ]);
        }
        out.push_str(&table(&rows));
    }
    match (&r.observed_not_configured, &r.inventory) {
        (Some(list), Some(path)) => {
            if list.is_empty() {
                out.push_str(&format!(
                    "\nEvery server the agent observed is configured (inventory: {}).\n",
                    path.display()
                ));
            } else {
                out.push_str(&format!(
                    "\nObserved but configured nowhere: {} (inventory: {})\n\n",
                    list.len(),
                    path.display()
                ));
                let mut rows = vec![vec![
                    "SERVER".to_string(),
                    "TRANSPORT".into(),
                    "PROCESS / PORT".into(),
                    "CALLS".into(),
                    "CLIENTS".into(),
                    "USERS".into(),
                    "LAST SEEN".into(),
                ]];
                for o in list {
                    let process = match (&o.exe, o.port) {
                        (Some(exe), Some(p)) => format!("{exe} :{p}"),
                        (Some(exe), None) => exe.clone(),
                        (None, Some(p)) => format!("{}:{p}", o.address.as_deref().unwrap_or("")),
                        (None, None) => "-".into(),
                    };
                    rows.push(vec![
                        o.name.clone().unwrap_or_else(|| "(unnamed)".into()),
                        o.transport.clone(),
                        shorten(&process, 50),
                        o.calls.to_string(),
                        o.clients.iter().cloned().collect::<Vec<_>>().join(","),
                        o.users.iter().cloned().collect::<Vec<_>>().join(","),
                        o.last_seen.clone(),
                    ]);
                }
                out.push_str(&table(&rows));
            }
        }
        _ => out.push_str("\nNo inventory of observed servers (the agent has not run here with this --state-dir).\n"),
    }
    out
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configured(command: &str, args: &[&str]) -> ConfiguredServer {
        ConfiguredServer {
            name: "x".into(),
            transport: "stdio".into(),
            command: Some(command.into()),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn observed(exe: &str, cmdline: &[&str]) -> ObservedServer {
        ObservedServer {
            exe: Some(exe.into()),
            cmdline: cmdline.iter().map(|s| s.to_string()).collect(),
            transport: "pipe".into(),
            observer: "server".into(),
            ..Default::default()
        }
    }

    #[test]
    fn matches_configured_commands_to_observed_processes() {
        let npx = configured("npx", &["-y", "@modelcontextprotocol/server-github@2025.1.1"]);
        assert_eq!(distinctive_tokens(&npx), ["server-github"]);
        assert!(matches(
            &npx,
            &observed(
                "/usr/bin/node",
                &["node", "/root/.npm/_npx/abc/node_modules/.bin/mcp-server-github"]
            )
        ));
        assert!(!matches(&npx, &observed("/usr/bin/node", &["node", "/srv/other.js"])));
        let uvx = configured("uvx", &["mcp-server-git", "--repository", "/src"]);
        assert!(matches(
            &uvx,
            &observed("/usr/bin/python3.11", &["python", "/root/.local/bin/mcp-server-git"])
        ));
        // By serverInfo name.
        let mut named = configured("./run.sh", &[]);
        named.name = "GitHub".into();
        let mut o = observed("/bin/x", &[]);
        o.name = Some("github".into());
        assert!(matches(&named, &o));
        // HTTP by port.
        let http = ConfiguredServer {
            name: "remote".into(),
            transport: "http".into(),
            url: Some("http://127.0.0.1:8931/mcp".into()),
            ..Default::default()
        };
        let o = ObservedServer {
            transport: "tcp".into(),
            port: Some(8931),
            ..Default::default()
        };
        assert!(matches(&http, &o));
        assert_eq!(url_port("https://mcp.example/mcp"), Some(443));
        assert_eq!(url_port("http://[::1]:9000/x"), Some(9000));
    }

    #[test]
    fn flags_typed_in_credentials_not_references() {
        let file = ConfigFile {
            user: "alice".into(),
            client: "cursor",
            scope: "user".into(),
            path: "/home/alice/.cursor/mcp.json".into(),
            error: None,
            servers: vec![ConfiguredServer {
                name: "gh".into(),
                transport: "stdio".into(),
                command: Some("npx".into()),
                raw_args: vec![
                    "server".into(),
                    "--api-key".into(),
                    "abc123secretvalue".into(),
                    "--token=${input:tok}".into(),
                ],
                env: vec![
                    ("GITHUB_TOKEN".into(), "ghp_abcdefghijklmnopqrstuvwxyz0123456789".into()),
                    ("DB_PASSWORD".into(), "hunter2hunter2".into()),
                    ("API_KEY".into(), "${env:API_KEY}".into()),
                    ("OTHER_TOKEN".into(), "<your token>".into()),
                    ("LOG_LEVEL".into(), "debug".into()),
                ],
                headers: vec![
                    (
                        "Authorization".into(),
                        "Bearer sk-ant-api03-abcdefghijklmnopqrstuv".into(),
                    ),
                    ("X-Api-Key".into(), "${input:key}".into()),
                ],
                raw_url: Some("https://user:pa55word@mcp.example/mcp".into()),
                ..Default::default()
            }],
        };
        let found: Vec<(String, String)> = credentials_of(&file).into_iter().map(|c| (c.field, c.kind)).collect();
        assert_eq!(
            found,
            [
                ("env.GITHUB_TOKEN".to_string(), "github_token".to_string()),
                ("env.DB_PASSWORD".into(), "secret_named_value".into()),
                ("headers.Authorization".into(), "bearer,anthropic_key".into()),
                ("args[2]".into(), "secret_flag_value".into()),
                ("url".into(), "url_credentials".into()),
            ]
        );
    }
}
