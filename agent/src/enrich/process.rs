//! Process facts from /proc: executable, command line (masked), parent,
//! user, start time; and the client process of a stdio server.

use std::{collections::HashMap, fs, path::PathBuf, sync::LazyLock};

use serde::Serialize;

use crate::mask;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    /// Short name the kernel keeps (`comm`).
    pub comm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Arguments, with secrets masked.
    pub cmdline: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Start time, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// cgroup, container, pod, systemd unit.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub placement: Option<super::cgroup::Placement>,
    /// Start, in clock ticks since boot: with the pid, what tells this
    /// process from a later one given the same pid.
    #[serde(skip)]
    pub start_ticks: Option<u64>,
}

/// Arguments of a command line kept, at most.
const MAX_ARGS: usize = 64;
/// Bytes of one argument kept, at most.
const MAX_ARG: usize = 1024;
/// Bytes of a command line kept, at most.
const MAX_CMDLINE: usize = 4096;

/// Reads a process's facts; `None` when it is gone.
pub fn read(proc_root: &std::path::Path, pid: u32) -> Option<ProcessInfo> {
    let dir = proc_root.join(pid.to_string());
    let stat = fs::read_to_string(dir.join("stat")).ok()?;
    let (comm, fields) = parse_stat(&stat)?;
    // Fields after the comm: state is index 0, ppid 1, starttime 19.
    let ppid = fields.get(1)?.parse().ok()?;
    let start_ticks: Option<u64> = fields.get(19).and_then(|f| f.parse().ok());
    // Read from the process's own memory: within a time budget, and cut
    // (its first MAX_ARGS arguments, each at most MAX_ARG bytes, at most
    // MAX_CMDLINE in all).
    let cmdline = crate::procmem::cmdline(proc_root, pid)
        .map(|raw| {
            let mut total = 0;
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .take(MAX_ARGS)
                .map(|a| crate::protocol::bound::cut_str(&String::from_utf8_lossy(a), MAX_ARG))
                .take_while(|a| {
                    total += a.len();
                    total <= MAX_CMDLINE
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let exe = fs::read_link(dir.join("exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let uid = fs::read_to_string(dir.join("status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:").map(str::to_string)))
        .and_then(|l| l.split_whitespace().next().and_then(|u| u.parse().ok()));
    Some(ProcessInfo {
        pid,
        ppid,
        comm,
        exe,
        cmdline: mask::mask_cmdline(&cmdline),
        uid,
        user: uid.and_then(user_name),
        start_time: start_ticks.and_then(start_time_rfc3339),
        placement: super::cgroup::read(proc_root, pid, std::path::Path::new("/var/log/pods")),
        start_ticks,
    })
}

/// Whether `info` still describes a running process: its pid is there and
/// started when it did (not gone, not a later process given the same pid).
pub fn still_running(proc_root: &std::path::Path, info: &ProcessInfo) -> bool {
    let Ok(stat) = fs::read_to_string(proc_root.join(info.pid.to_string()).join("stat")) else {
        return false;
    };
    let start = parse_stat(&stat).and_then(|(_, fields)| fields.get(19).and_then(|f| f.parse::<u64>().ok()));
    start == info.start_ticks
}

/// Splits /proc/PID/stat into comm and the fields after it (comm may hold
/// spaces and parentheses: it ends at the last ')'): field N of proc(5) is
/// index N - 3.
pub(crate) fn parse_stat(stat: &str) -> Option<(String, Vec<&str>)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let fields = stat.get(close + 1..)?.split_whitespace().collect();
    Some((comm, fields))
}

static USERS: LazyLock<HashMap<u32, String>> = LazyLock::new(|| {
    fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
});

pub fn user_name(uid: u32) -> Option<String> {
    USERS.get(&uid).cloned()
}

static BOOT_TIME_S: LazyLock<Option<u64>> = LazyLock::new(|| {
    fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse().ok()))
});

/// Nanoseconds of `ticks` clock ticks (the unit of /proc/PID/stat times).
pub(crate) fn ticks_ns(ticks: u64) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    ticks.saturating_mul(1_000_000_000 / hz)
}

fn start_time_rfc3339(ticks: u64) -> Option<String> {
    let boot = (*BOOT_TIME_S)?;
    let nanos = boot as i64 * 1_000_000_000 + ticks_ns(ticks) as i64;
    Some(chrono::DateTime::from_timestamp_nanos(nanos).to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// Programs that start a server on a client's behalf without being the
/// client (`npx some-server`, `uv run`, shells, `env`).
const LAUNCHERS: &[&str] = &[
    "npx", "npm", "npm exec", "uv", "uvx", "pipx", "sh", "bash", "dash", "zsh", "env", "timeout", "setsid", "nohup",
    "sudo", "docker",
];

/// How the client of a stdio server was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientFoundBy {
    /// The ancestor holding the write end of the server's stdin pipe.
    PipePeer,
    /// The nearest ancestor that is not a launcher (npx, uv, sh...).
    Ancestor,
    /// The process holding the other end of a loopback TCP connection.
    SocketPeer,
}

impl ClientFoundBy {
    /// Its name in events (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            ClientFoundBy::PipePeer => "pipe_peer",
            ClientFoundBy::Ancestor => "ancestor",
            ClientFoundBy::SocketPeer => "socket_peer",
        }
    }
}

/// The process that spawned a stdio server and talks to it: the nearest
/// ancestor that holds the write end of the pipe the server reads its
/// messages from (`in_fd`: stdin or the copy it moved it to; launchers in
/// between only inherited the read end); failing that (a socketpair), the
/// nearest ancestor that is not a launcher.
pub fn find_client(
    proc_root: &std::path::Path,
    server: &ProcessInfo,
    in_fd: i32,
) -> Option<(ProcessInfo, ClientFoundBy)> {
    let stdin = fs::read_link(
        proc_root
            .join(server.pid.to_string())
            .join("fd")
            .join(in_fd.to_string()),
    )
    .map(|l| l.to_string_lossy().into_owned())
    .unwrap_or_default();
    let mut ancestors = Vec::new();
    let mut pid = server.ppid;
    for _ in 0..12 {
        if pid <= 1 {
            break;
        }
        let Some(info) = read(proc_root, pid) else {
            break;
        };
        pid = info.ppid;
        ancestors.push(info);
    }
    if stdin.starts_with("pipe:") {
        for a in &ancestors {
            if holds_write_end(proc_root, a.pid, &stdin) {
                return Some((a.clone(), ClientFoundBy::PipePeer));
            }
        }
    }
    ancestors
        .into_iter()
        .find(|a| !is_launcher(a))
        .map(|a| (a, ClientFoundBy::Ancestor))
}

fn is_launcher(p: &ProcessInfo) -> bool {
    if LAUNCHERS.contains(&p.comm.as_str()) {
        return true;
    }
    // `npx` runs as `node .../npx-cli.js`; `uv run` as uv.
    p.cmdline
        .iter()
        .take(2)
        .any(|a| a.ends_with("npx-cli.js") || a.ends_with("/npx") || a.ends_with("/uvx"))
}

fn holds_write_end(proc_root: &std::path::Path, pid: u32, link: &str) -> bool {
    let dir = proc_root.join(pid.to_string());
    let Ok(fds) = fs::read_dir(dir.join("fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        let same = fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == link);
        same && {
            let info: PathBuf = dir.join("fdinfo").join(fd.file_name());
            fs::read_to_string(info)
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("flags:"))
                        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
                })
                .is_some_and(|flags| flags & 0o3 == libc::O_WRONLY as u32)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let (comm, f) =
            parse_stat("123 (my (odd) prog) S 1 123 123 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 555 0").unwrap();
        assert_eq!(comm, "my (odd) prog");
        assert_eq!(f[1], "1");
        assert_eq!(f[19], "555");
    }

    #[test]
    fn reads_this_process() {
        let me = read(std::path::Path::new("/proc"), std::process::id()).unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(me.exe.is_some());
        assert!(!me.cmdline.is_empty());
        assert!(me.start_time.is_some());
    }

    #[test]
    fn finds_the_pipe_writer_among_ancestors() {
        // This test process spawns `sh -c 'sleep'` with a pipe on stdin: the
        // test process is the writer, the shell only inherits the read end.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exec sleep 5"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let server = read(std::path::Path::new("/proc"), child.id()).unwrap();
        let (client, how) = find_client(std::path::Path::new("/proc"), &server, 0).unwrap();
        assert_eq!((client.pid, how), (std::process::id(), ClientFoundBy::PipePeer));
        child.kill().unwrap();
        let _ = child.wait();
    }
}
