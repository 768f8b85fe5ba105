//! Which application a client process belongs to: the desktop and IDE
//! clients people use (Claude Desktop, Claude Code, Cursor, VS Code,
//! Windsurf), or a Python or Node program running an agent. A stdio server
//! is spawned by a helper process of its application (an extension host, a
//! `node` child of Claude Code): the process and its ancestors are matched,
//! nearest first, and the first known application wins.
//!
//! **Evidence, not claims.** A process is matched by its executable (the
//! kernel's `/proc/PID/exe`) and, for a JavaScript runtime (node, bun,
//! deno), by the script it runs; never by `argv[0]` or `comm`, which any
//! process sets to whatever it likes. (A user may still run a copy of a
//! program, or a script, from a path that looks like a known client's:
//! docs/deploy.md's threat model says so.)

use serde::Serialize;

use super::ProcessInfo;

/// One ancestor of a client process, as events show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ancestor {
    pub pid: u32,
    pub comm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
}

impl Ancestor {
    pub fn of(p: &ProcessInfo) -> Ancestor {
        Ancestor {
            pid: p.pid,
            comm: p.comm.clone(),
            exe: p.exe.clone(),
        }
    }
}

/// Known client applications: name, and what identifies their processes
/// (matched against the executable path, `comm` and the first arguments,
/// lower-cased).
const APPS: &[(&str, &[&str])] = &[
    (
        "claude-code",
        &["@anthropic-ai/claude-code", "/claude-code/", "/.claude/local/"],
    ),
    (
        "claude-desktop",
        &["/claude-desktop", "/opt/claude/", "claude desktop", "/anthropic/claude"],
    ),
    (
        "cursor",
        &["/cursor/", "cursor.appimage", "/.cursor-server/", "/cursor-"],
    ),
    ("windsurf", &["/windsurf", "codeium"]),
    (
        "vscode",
        &[
            "/code/code",
            "/vscode/",
            "/.vscode-server/",
            "/code-insiders",
            "/usr/share/code/",
            "/vscode-",
        ],
    ),
];

/// The file name of a process's executable.
fn exe_name(p: &ProcessInfo) -> &str {
    p.exe
        .as_deref()
        .map(|e| e.trim_end_matches(" (deleted)"))
        .and_then(|e| e.rsplit('/').next())
        .unwrap_or_default()
}

fn is_js_runtime(name: &str) -> bool {
    matches!(name, "node" | "nodejs" | "bun" | "deno")
}

/// The script a JavaScript runtime runs: its first argument after the
/// runtime's own options (`node --max-old-space-size=4096 cli.js`).
fn script_of(p: &ProcessInfo) -> Option<&str> {
    if !is_js_runtime(exe_name(p)) {
        return None;
    }
    p.cmdline
        .iter()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(String::as_str)
}

/// What a single process looks like, if it is a known application: by its
/// executable's path, and a JavaScript runtime's script.
pub fn app_of(p: &ProcessInfo) -> Option<&'static str> {
    let mut hay = p.exe.as_deref().unwrap_or_default().to_ascii_lowercase();
    if let Some(script) = script_of(p) {
        hay.push(' ');
        hay.push_str(&script.to_ascii_lowercase());
    }
    for (name, needles) in APPS {
        if needles.iter().any(|n| hay.contains(n)) {
            return Some(name);
        }
    }
    // Claude Code's binary is `claude`; Cursor's and Windsurf's main
    // executables are named after them.
    match exe_name(p) {
        "claude" => Some("claude-code"),
        "cursor" | "Cursor" => Some("cursor"),
        "windsurf" => Some("windsurf"),
        "code" | "code-insiders" => Some("vscode"),
        _ => None,
    }
}

/// The application behind a client process, given it and its ancestors
/// (nearest first): a known application, else a Python or Node agent
/// runner (the nearest such process), else nothing.
pub fn app_of_chain(chain: &[&ProcessInfo]) -> Option<&'static str> {
    if let Some(app) = chain.iter().find_map(|p| app_of(p)) {
        return Some(app);
    }
    chain.iter().find_map(|p| {
        let name = exe_name(p);
        if name.starts_with("python") {
            Some("python-agent")
        } else if is_js_runtime(name) {
            Some("node-agent")
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(comm: &str, exe: &str, cmdline: &[&str]) -> ProcessInfo {
        ProcessInfo {
            pid: 1,
            comm: comm.into(),
            exe: Some(exe.into()),
            cmdline: cmdline.iter().map(|s| s.to_string()).collect(),
            ..ProcessInfo::default()
        }
    }

    #[test]
    fn known_applications() {
        let cases = [
            (
                proc(
                    "node",
                    "/usr/bin/node",
                    &["node", "/usr/lib/node_modules/@anthropic-ai/claude-code/cli.js"],
                ),
                "claude-code",
            ),
            (proc("claude", "/home/a/.local/bin/claude", &["claude"]), "claude-code"),
            (
                proc(
                    "cursor",
                    "/opt/Cursor/cursor",
                    &["/opt/Cursor/cursor", "--type=utility"],
                ),
                "cursor",
            ),
            (
                proc(
                    "code",
                    "/usr/share/code/code",
                    &["/usr/share/code/code", "--type=extensionHost"],
                ),
                "vscode",
            ),
            (proc("node", "/home/a/.vscode-server/bin/x/node", &["node"]), "vscode"),
            (proc("windsurf", "/opt/windsurf/windsurf", &["windsurf"]), "windsurf"),
            (
                proc("claude-desktop", "/usr/lib/claude-desktop/claude-desktop", &[]),
                "claude-desktop",
            ),
        ];
        for (p, want) in cases {
            assert_eq!(app_of(&p), Some(want), "{p:?}");
        }
        assert_eq!(app_of(&proc("bash", "/usr/bin/bash", &["bash"])), None);
    }

    #[test]
    fn argv0_and_comm_are_claims_not_evidence() {
        // Python with argv[0] set to Claude Code's script, comm "claude".
        let fake = proc(
            "claude",
            "/usr/bin/python3.11",
            &["/usr/lib/node_modules/@anthropic-ai/claude-code/cli.js", "agent.py"],
        );
        assert_eq!(app_of(&fake), None);
        assert_eq!(app_of_chain(&[&fake]), Some("python-agent"));
        // Python running a "script" at such a path: a runtime that is not
        // JavaScript does not run Claude Code.
        let py = proc(
            "python3",
            "/usr/bin/python3.11",
            &["python3", "/tmp/@anthropic-ai/claude-code/cli.js"],
        );
        assert_eq!(app_of(&py), None);
        // Node with its options before the script.
        let node = proc(
            "node",
            "/usr/bin/node",
            &[
                "node",
                "--no-warnings",
                "/usr/lib/node_modules/@anthropic-ai/claude-code/cli.js",
            ],
        );
        assert_eq!(app_of(&node), Some("claude-code"));
    }

    #[test]
    fn chains_prefer_known_applications_over_runners() {
        let runner = proc("python3", "/usr/bin/python3.11", &["python3", "agent.py"]);
        let code = proc("code", "/usr/share/code/code", &["code"]);
        assert_eq!(app_of_chain(&[&runner, &code]), Some("vscode"));
        assert_eq!(app_of_chain(&[&runner]), Some("python-agent"));
        let sh = proc("sh", "/usr/bin/dash", &["sh"]);
        assert_eq!(app_of_chain(&[&sh]), None);
    }
}
