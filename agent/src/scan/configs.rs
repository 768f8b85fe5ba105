//! Where MCP clients keep their server lists, and how each reads.
//!
//! | client          | file (under the user's home)                                   | key            |
//! |-----------------|-----------------------------------------------------------------|----------------|
//! | claude-desktop  | `.config/Claude/claude_desktop_config.json` (macOS: `Library/Application Support/Claude/`) | `mcpServers` |
//! | claude-code     | `.claude.json` (user scope, and per project under `projects`), each project's `.mcp.json` | `mcpServers` |
//! | cursor          | `.cursor/mcp.json`                                              | `mcpServers`   |
//! | vscode          | `.config/Code/User/mcp.json` (`servers`), `settings.json` (`mcp.servers`), Insiders and macOS alike | |
//! | windsurf        | `.codeium/windsurf/mcp_config.json`                             | `mcpServers`   |
//! | generic         | any other `mcp.json` / `.mcp.json` a few levels down            | either         |
//!
//! Every file is read as JSON5, which takes VS Code's comments and
//! trailing commas too.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Serialize)]
pub struct ConfigFile {
    pub user: String,
    pub client: &'static str,
    /// `user`, or `project:<dir>` for project-scoped entries.
    pub scope: String,
    pub path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub servers: Vec<ConfiguredServer>,
}

#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct ConfiguredServer {
    pub name: String,
    /// `stdio`, `http` or `sse`.
    pub transport: String,
    // `args` and `url` are masked: reports must not repeat secrets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Names only: values can be secrets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env_names: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub header_names: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// As written (secrets included): for the credential checks only.
    #[serde(skip)]
    pub raw_args: Vec<String>,
    #[serde(skip)]
    pub raw_url: Option<String>,
    #[serde(skip)]
    pub env: Vec<(String, String)>,
    #[serde(skip)]
    pub headers: Vec<(String, String)>,
}

/// The fixed places, relative to a home directory.
const PLACES: &[(&str, &str, Layout)] = &[
    (
        "claude-desktop",
        ".config/Claude/claude_desktop_config.json",
        Layout::McpServers,
    ),
    (
        "claude-desktop",
        "Library/Application Support/Claude/claude_desktop_config.json",
        Layout::McpServers,
    ),
    ("claude-code", ".claude.json", Layout::ClaudeCode),
    ("cursor", ".cursor/mcp.json", Layout::McpServers),
    ("vscode", ".config/Code/User/mcp.json", Layout::Servers),
    ("vscode", ".config/Code/User/settings.json", Layout::VscodeSettings),
    ("vscode", ".config/Code - Insiders/User/mcp.json", Layout::Servers),
    (
        "vscode",
        ".config/Code - Insiders/User/settings.json",
        Layout::VscodeSettings,
    ),
    (
        "vscode",
        "Library/Application Support/Code/User/mcp.json",
        Layout::Servers,
    ),
    (
        "vscode",
        "Library/Application Support/Code/User/settings.json",
        Layout::VscodeSettings,
    ),
    ("vscode", ".vscode-server/data/User/mcp.json", Layout::Servers),
    ("windsurf", ".codeium/windsurf/mcp_config.json", Layout::McpServers),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    /// `{"mcpServers": {...}}`
    McpServers,
    /// `{"servers": {...}}` (VS Code's mcp.json)
    Servers,
    /// `{"mcp": {"servers": {...}}}` (VS Code's settings.json)
    VscodeSettings,
    /// `{"mcpServers": {...}, "projects": {"/dir": {"mcpServers": {...}}}}`
    ClaudeCode,
    /// Either of the first two.
    Any,
}

/// Directories not worth walking for generic `mcp.json` files.
const SKIP_DIRS: &[&str] = &[
    "node_modules",
    ".cache",
    ".npm",
    ".git",
    ".venv",
    "venv",
    ".cargo",
    ".rustup",
    ".local",
    ".vscode-server",
    "Library",
    "target",
];
const GENERIC_DEPTH: usize = 4;

/// Every MCP client configuration under one home. `root` re-roots absolute
/// paths found inside files (project directories), for fixtures.
pub fn scan_home(root: &Path, home: &Path, user: &str) -> Vec<ConfigFile> {
    let mut files = Vec::new();
    let mut known: Vec<PathBuf> = Vec::new();
    for (client, rel, layout) in PLACES {
        let path = home.join(rel);
        if !path.is_file() {
            continue;
        }
        known.push(path.clone());
        match read_json5(&path) {
            Err(error) => files.push(ConfigFile {
                user: user.into(),
                client,
                scope: "user".into(),
                path,
                error: Some(error),
                servers: Vec::new(),
            }),
            Ok(doc) if *layout == Layout::ClaudeCode => {
                files.push(file_of(
                    user,
                    client,
                    "user",
                    &path,
                    servers_in(&doc, Layout::McpServers),
                ));
                // Per-project entries, and each project's own .mcp.json.
                if let Some(projects) = doc.get("projects").and_then(Value::as_object) {
                    for (dir, project) in projects {
                        let servers = servers_in(project, Layout::McpServers);
                        if !servers.is_empty() {
                            files.push(file_of(user, client, &format!("project:{dir}"), &path, servers));
                        }
                        let shared = reroot(root, Path::new(dir)).join(".mcp.json");
                        if shared.is_file() && !known.contains(&shared) {
                            known.push(shared.clone());
                            files.push(read_file(
                                user,
                                client,
                                &format!("project:{dir}"),
                                &shared,
                                Layout::McpServers,
                            ));
                        }
                    }
                }
            }
            Ok(doc) => files.push(file_of(user, client, "user", &path, servers_in(&doc, *layout))),
        }
    }
    let mut generic = Vec::new();
    find_generic(home, 0, &mut generic);
    for path in generic {
        if known.contains(&path) {
            continue;
        }
        // The directory as the host sees it (without a fixture's root).
        let scope = path
            .parent()
            .map(|d| match d.strip_prefix(root) {
                Ok(rel) if root != Path::new("/") => format!("project:/{}", rel.display()),
                _ => format!("project:{}", d.display()),
            })
            .unwrap_or_else(|| "user".into());
        let client = if path.parent().is_some_and(|d| d.ends_with(".vscode")) {
            "vscode"
        } else if path.parent().is_some_and(|d| d.ends_with(".cursor")) {
            "cursor"
        } else {
            "generic"
        };
        files.push(read_file(user, client, &scope, &path, Layout::Any));
    }
    files
}

fn reroot(root: &Path, p: &Path) -> PathBuf {
    match p.strip_prefix("/") {
        Ok(rel) => root.join(rel),
        Err(_) => p.to_path_buf(),
    }
}

fn find_generic(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else { continue };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if kind.is_file() && (name == "mcp.json" || name == ".mcp.json") {
            out.push(entry.path());
        } else if kind.is_dir() && depth < GENERIC_DEPTH && !SKIP_DIRS.contains(&name.as_ref()) {
            find_generic(&entry.path(), depth + 1, out);
        }
    }
}

fn read_file(user: &str, client: &'static str, scope: &str, path: &Path, layout: Layout) -> ConfigFile {
    match read_json5(path) {
        Ok(doc) => file_of(user, client, scope, path, servers_in(&doc, layout)),
        Err(error) => ConfigFile {
            user: user.into(),
            client,
            scope: scope.into(),
            path: path.to_path_buf(),
            error: Some(error),
            servers: Vec::new(),
        },
    }
}

fn file_of(user: &str, client: &'static str, scope: &str, path: &Path, servers: Vec<ConfiguredServer>) -> ConfigFile {
    ConfigFile {
        user: user.into(),
        client,
        scope: scope.into(),
        path: path.to_path_buf(),
        error: None,
        servers,
    }
}

/// Config files are small; a huge one is not a client's.
const MAX_FILE: u64 = 8 << 20;

fn read_json5(path: &Path) -> Result<Value, String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len > MAX_FILE {
        return Err(format!("{len} bytes: too large for a client configuration"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    json5::from_str(&text).map_err(|e| format!("not JSON: {e}"))
}

fn servers_in(doc: &Value, layout: Layout) -> Vec<ConfiguredServer> {
    let table = match layout {
        Layout::McpServers | Layout::ClaudeCode => doc.get("mcpServers"),
        Layout::Servers => doc.get("servers"),
        Layout::VscodeSettings => doc.get("mcp").and_then(|m| m.get("servers")),
        Layout::Any => doc.get("mcpServers").or_else(|| doc.get("servers")),
    };
    let Some(table) = table.and_then(Value::as_object) else {
        return Vec::new();
    };
    table
        .iter()
        .filter_map(|(name, entry)| entry.as_object().map(|e| server(name, e)))
        .collect()
}

fn server(name: &str, e: &Map<String, Value>) -> ConfiguredServer {
    let text = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_string);
    let pairs = |k: &str| -> Vec<(String, String)> {
        e.get(k)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let command = text("command");
    let url = text("url").or_else(|| text("serverUrl")).or_else(|| text("httpUrl"));
    let declared = text("type")
        .or_else(|| text("transport"))
        .map(|t| t.to_ascii_lowercase());
    let transport = match declared.as_deref() {
        Some("stdio") => "stdio",
        Some("sse") => "sse",
        Some("http" | "streamable-http" | "streamablehttp" | "streamable_http") => "http",
        _ if command.is_some() => "stdio",
        _ if url
            .as_deref()
            .is_some_and(|u| u.trim_end_matches('/').ends_with("/sse")) =>
        {
            "sse"
        }
        _ if url.is_some() => "http",
        _ => "unknown",
    };
    let env = pairs("env");
    let headers = pairs("headers");
    let raw_args: Vec<String> = e
        .get("args")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .collect()
        })
        .unwrap_or_default();
    ConfiguredServer {
        name: name.to_string(),
        transport: transport.into(),
        command,
        args: crate::mask::mask_cmdline(&raw_args),
        raw_args,
        url: url.as_deref().map(|u| crate::mask::mask_text(u).into_owned()),
        raw_url: url,
        env_names: env.iter().map(|(k, _)| k.clone()).collect(),
        header_names: headers.iter().map(|(k, _)| k.clone()).collect(),
        disabled: e.get("disabled").and_then(Value::as_bool).unwrap_or(false),
        env,
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(home: &Path, rel: &str, text: &str) {
        let p = home.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn reads_every_clients_format() {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("home/alice");
        write(
            &home,
            ".config/Claude/claude_desktop_config.json",
            r#"{"mcpServers": {"fs": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]}}}"#,
        );
        write(
            &home,
            ".claude.json",
            r#"{"numStartups": 3, "mcpServers": {"remote": {"type": "http", "url": "https://mcp.example/mcp", "headers": {"Authorization": "Bearer x"}}},
               "projects": {"/home/alice/app": {"mcpServers": {"db": {"type": "stdio", "command": "uvx", "args": ["mcp-server-postgres"]}}}}}"#,
        );
        write(
            &home,
            "app/.mcp.json",
            r#"{"mcpServers": {"shared": {"command": "node", "args": ["srv.js"]}}}"#,
        );
        write(
            &home,
            ".cursor/mcp.json",
            r#"{"mcpServers": {"linear": {"url": "https://mcp.linear.app/sse"}}}"#,
        );
        write(
            &home,
            ".config/Code/User/settings.json",
            "// VS Code settings\n{\n  \"editor.fontSize\": 14,\n  \"mcp\": { \"servers\": { \"git\": { \"type\": \"stdio\", \"command\": \"uvx\", \"args\": [\"mcp-server-git\"], }, }, },\n}\n",
        );
        write(
            &home,
            ".config/Code/User/mcp.json",
            r#"{"inputs": [], "servers": {"gh": {"type": "http", "url": "https://api.githubcopilot.com/mcp/"}}}"#,
        );
        write(
            &home,
            ".codeium/windsurf/mcp_config.json",
            r#"{"mcpServers": {"wind": {"serverUrl": "http://127.0.0.1:8000/mcp", "disabled": true}}}"#,
        );
        write(
            &home,
            "code/tools/mcp.json",
            r#"{"servers": {"local": {"command": "./server"}}}"#,
        );
        write(
            &home,
            "code/node_modules/x/mcp.json",
            r#"{"servers": {"ignored": {"command": "x"}}}"#,
        );
        write(&home, ".cursor/broken/mcp.json", "{not json");

        let files = scan_home(root.path(), &home, "alice");
        let find = |client: &str, name: &str| -> ConfiguredServer {
            files
                .iter()
                .filter(|f| f.client == client)
                .flat_map(|f| f.servers.iter())
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("{client}/{name} in {files:#?}"))
                .clone()
        };
        let fs = find("claude-desktop", "fs");
        assert_eq!((fs.transport.as_str(), fs.command.as_deref()), ("stdio", Some("npx")));
        assert_eq!(fs.args.len(), 3);
        let remote = find("claude-code", "remote");
        assert_eq!(remote.transport, "http");
        assert_eq!(remote.header_names, ["Authorization"]);
        assert_eq!(find("claude-code", "db").command.as_deref(), Some("uvx"));
        assert_eq!(find("claude-code", "shared").args, ["srv.js"]);
        assert!(
            files
                .iter()
                .any(|f| f.scope == "project:/home/alice/app" && f.path.ends_with("app/.mcp.json"))
        );
        assert_eq!(find("cursor", "linear").transport, "sse");
        assert_eq!(find("vscode", "git").args, ["mcp-server-git"]);
        assert_eq!(find("vscode", "gh").transport, "http");
        let wind = find("windsurf", "wind");
        assert!(wind.disabled);
        assert_eq!(wind.url.as_deref(), Some("http://127.0.0.1:8000/mcp"));
        assert_eq!(find("generic", "local").command.as_deref(), Some("./server"));
        assert!(!files.iter().flat_map(|f| &f.servers).any(|s| s.name == "ignored"));
        let broken = files.iter().find(|f| f.path.ends_with("broken/mcp.json")).unwrap();
        assert!(broken.error.as_deref().unwrap().contains("not JSON"));
    }

    #[test]
    fn an_empty_home_has_nothing() {
        let root = tempfile::tempdir().unwrap();
        assert!(scan_home(root.path(), root.path(), "nobody").is_empty());
    }
}
