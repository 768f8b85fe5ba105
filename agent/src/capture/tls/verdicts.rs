//! HTTPS discovery's verdicts per program, kept across restarts.
//!
//! A program (its executable and command line) found to speak MCP over TLS
//! is probed from its exec on, so that its first requests are seen; one
//! found not to is left alone for a while. Without memory, every agent
//! restart (an upgrade, a node reboot) would have each MCP program
//! discovered again by its first exchange, missed while its probes land,
//! and would probe every unrelated HTTPS program again. So the verdicts are
//! written to the state directory (`tls_programs.json`, rewritten whole at
//! most every [`SAVE_EVERY`] and when the agent stops) and read at start;
//! MCP programs already running then are probed at once.
//!
//! A program is its executable and what of its command line names the
//! program rather than this run of it ([`stable_args`]): the script an
//! interpreter runs (or its `-m` module, or a subcommand), never the
//! ports, URLs, tokens or temporary paths that change from one run to the
//! next. A command line can carry a secret (`--token …`): the file keeps
//! the SHA-256 of that part, never the text. The file is the agent's own (its state
//! directory is root's, mode 0700); one it cannot read is logged and
//! ignored, never fatal.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use super::target::FileKind;

/// How long a program found to speak MCP is probed from its exec on.
pub const MCP_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a program found not to speak MCP over TLS is left alone (and
/// how long one that ended undecided is probed from its exec).
pub const NOT_MCP_TTL: Duration = Duration::from_secs(600);

/// Programs remembered, at most (the oldest verdicts go first).
const MAX_PROGRAMS: usize = 4096;

/// How often changed verdicts are written, at most.
pub const SAVE_EVERY: Duration = Duration::from_secs(10);

/// The file's name in the state directory.
pub const FILE_NAME: &str = "tls_programs.json";

/// A program: its executable, and the SHA-256 of its [`stable_args`].
pub type ProgramKey = (PathBuf, [u8; 32]);

/// The program a process runs (`None` once it is gone from /proc, or when
/// its command line cannot be read in time: see `procmem`).
pub fn program_key(proc_root: &Path, pid: u32) -> Option<ProgramKey> {
    let exe = fs::read_link(proc_root.join(pid.to_string()).join("exe")).ok()?;
    let cmdline = crate::procmem::cmdline(proc_root, pid)?;
    Some((exe, cmdline_digest(&cmdline)))
}

/// What of a command line (NUL-separated, as /proc has it) names the
/// program rather than this run of it: the module of `-m MODULE`, else
/// the script an interpreter runs (an argument ending in `.py`, `.js`,
/// `.mjs`, `.cjs`, `.ts`), else a subcommand (the first bare word that is
/// no option's value); nothing for a compiled program run with options
/// only. Everything else is left out: a server's port, a client's URL, a
/// token, a temporary file change from one run of the same program to the
/// next.
pub fn stable_args(cmdline: &[u8]) -> Vec<u8> {
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).skip(1).filter(|a| !a.is_empty()).collect();
    if let Some(i) = args.iter().position(|a| *a == b"-m") {
        let mut out = b"-m\0".to_vec();
        out.extend_from_slice(args.get(i + 1).copied().unwrap_or_default());
        return out;
    }
    const SCRIPTS: [&[u8]; 5] = [b".py", b".js", b".mjs", b".cjs", b".ts"];
    if let Some(script) = args
        .iter()
        .find(|a| !a.starts_with(b"-") && SCRIPTS.iter().any(|x| a.ends_with(x)))
    {
        return script.to_vec();
    }
    for (i, a) in args.iter().enumerate() {
        if a.starts_with(b"-") {
            continue;
        }
        // The value of the option before it (`-port 8443`), perhaps.
        let prev = i.checked_sub(1).map(|p| args[p]);
        if prev.is_some_and(|p| p.starts_with(b"-") && !p.contains(&b'=')) {
            continue;
        }
        let word = a.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b));
        if word && !a.iter().all(u8::is_ascii_digit) {
            return a.to_vec();
        }
    }
    Vec::new()
}

fn cmdline_digest(cmdline: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, &stable_args(cmdline));
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// What HTTPS discovery concluded about a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It speaks MCP: probed from its exec on.
    Mcp,
    /// Its window passed without MCP: left alone for a while.
    NotMcp,
    /// It exited inside its window with nothing decided (its requests came
    /// before the probes landed: a short-lived client): probed from its
    /// exec next time, `misses` times at most.
    Unsure { misses: u8 },
}

/// A TLS file a program used: its path as the program sees it, its kind,
/// and which file it was (device and inode): at the program's next exec
/// only that very file is probed before it is mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedFile {
    pub path: String,
    pub kind: FileKind,
    pub id: Option<(u64, u64)>,
}

/// A program's verdict, when, and the TLS files it used, probed at its
/// next exec before it maps them.
#[derive(Debug, Clone)]
pub struct Known {
    pub verdict: Verdict,
    pub at: Instant,
    pub files: Vec<UsedFile>,
}

impl Known {
    /// Whether the verdict says to probe the program from its exec.
    pub fn probe_from_exec(&self) -> bool {
        match self.verdict {
            Verdict::Mcp => self.at.elapsed() < MCP_TTL,
            Verdict::Unsure { .. } => self.at.elapsed() < NOT_MCP_TTL,
            Verdict::NotMcp => false,
        }
    }

    /// Whether the program is to be left alone (found not to speak MCP
    /// lately).
    pub fn left_alone(&self) -> bool {
        self.verdict == Verdict::NotMcp && self.at.elapsed() < NOT_MCP_TTL
    }

    fn ttl(&self) -> Duration {
        match self.verdict {
            Verdict::Mcp => MCP_TTL,
            _ => NOT_MCP_TTL,
        }
    }
}

/// The verdicts, and where they are kept.
pub struct Verdicts {
    programs: HashMap<ProgramKey, Known>,
    file: Option<PathBuf>,
    changed: bool,
    saved: Option<Instant>,
}

/// One program in the file.
#[derive(Serialize, Deserialize)]
struct Entry {
    exe: PathBuf,
    /// SHA-256 of the command line (NUL-separated, as /proc has it), hex.
    cmdline_sha256: String,
    /// `mcp`, `not_mcp` or `unsure`.
    verdict: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    misses: u8,
    /// When it was reached, Unix milliseconds.
    at_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    files: Vec<EntryFile>,
}

#[derive(Serialize, Deserialize)]
struct EntryFile {
    path: String,
    /// `shared_library` or `executable`.
    kind: String,
    /// Device and inode (absent in files of earlier releases: such a file
    /// is not probed before it is mapped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dev: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ino: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct FileContents {
    programs: Vec<Entry>,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Verdicts {
    /// The verdicts kept in `file` (none when it is `None`, absent or
    /// unreadable: logged), those still in force.
    pub fn load(file: Option<PathBuf>) -> Verdicts {
        let mut v = Verdicts {
            programs: HashMap::new(),
            file,
            changed: false,
            saved: None,
        };
        let Some(path) = v.file.clone() else { return v };
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return v,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read the HTTPS discovery verdicts, starting afresh: {e}");
                return v;
            }
        };
        match serde_json::from_slice::<FileContents>(&text) {
            Ok(contents) => v.restore(contents, SystemTime::now(), Instant::now()),
            Err(e) => tracing::warn!(
                path = %path.display(),
                "the HTTPS discovery verdicts file is not readable, starting afresh: {e}"
            ),
        }
        tracing::info!(programs = v.programs.len(), "HTTPS discovery verdicts restored");
        v
    }

    /// Entries still in force at `now` (wall clock), their ages carried
    /// over to `mono` (the monotonic clock); bad ones are skipped.
    fn restore(&mut self, contents: FileContents, now: SystemTime, mono: Instant) {
        let now_ms = unix_ms(now);
        for e in contents.programs {
            let verdict = match e.verdict.as_str() {
                "mcp" => Verdict::Mcp,
                "not_mcp" => Verdict::NotMcp,
                "unsure" => Verdict::Unsure { misses: e.misses },
                _ => continue,
            };
            let Some(digest) = parse_hex32(&e.cmdline_sha256) else {
                continue;
            };
            // A verdict from the future (the clock was set back) is as old
            // as can be trusted: now.
            let age = Duration::from_millis(now_ms.saturating_sub(e.at_ms));
            let Some(at) = mono.checked_sub(age) else { continue };
            let files = e
                .files
                .into_iter()
                .filter_map(|f| {
                    let kind = FileKind::ALL.into_iter().find(|k| k.as_str() == f.kind)?;
                    Some(UsedFile {
                        path: f.path,
                        kind,
                        id: f.dev.zip(f.ino),
                    })
                })
                .collect();
            let known = Known { verdict, at, files };
            if age < known.ttl() && self.programs.len() < MAX_PROGRAMS {
                self.programs.insert((e.exe, digest), known);
            }
        }
    }

    pub fn get(&self, key: &ProgramKey) -> Option<&Known> {
        self.programs.get(key)
    }

    /// Whether any program is to be probed from its exec (cheap: the exec
    /// path asks this first).
    pub fn any_probed_from_exec(&self) -> bool {
        self.programs.values().any(|k| k.verdict != Verdict::NotMcp)
    }

    /// Whether a program of executable `exe` may be probed from its exec.
    pub fn may_probe_exe(&self, exe: &Path) -> bool {
        self.programs
            .iter()
            .any(|((e, _), k)| e == exe && k.verdict != Verdict::NotMcp)
    }

    pub fn remember(&mut self, key: ProgramKey, verdict: Verdict, files: Vec<UsedFile>) {
        if self.programs.len() >= MAX_PROGRAMS
            && !self.programs.contains_key(&key)
            && let Some(oldest) = self.programs.iter().min_by_key(|(_, v)| v.at).map(|(k, _)| k.clone())
        {
            self.programs.remove(&oldest);
        }
        self.programs.insert(
            key,
            Known {
                verdict,
                at: Instant::now(),
                files,
            },
        );
        self.changed = true;
    }

    /// Writes the verdicts when they changed and the last write is older
    /// than [`SAVE_EVERY`] (or `now` is asked: at shutdown).
    pub fn save(&mut self, now: bool) {
        let due = now || self.saved.is_none_or(|t| t.elapsed() >= SAVE_EVERY);
        if !self.changed || !due {
            return;
        }
        let Some(path) = self.file.clone() else { return };
        self.changed = false;
        self.saved = Some(Instant::now());
        let bytes = match serde_json::to_vec(&self.contents(SystemTime::now())) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("cannot write the HTTPS discovery verdicts: {e}");
                return;
            }
        };
        if let Err(e) = crate::statefile::write_atomically(&path, &bytes) {
            tracing::warn!(path = %path.display(), "cannot write the HTTPS discovery verdicts: {e}");
        }
    }

    fn contents(&self, now: SystemTime) -> FileContents {
        let programs = self
            .programs
            .iter()
            .filter(|(_, k)| k.at.elapsed() < k.ttl())
            .map(|((exe, digest), k)| {
                let (verdict, misses) = match k.verdict {
                    Verdict::Mcp => ("mcp", 0),
                    Verdict::NotMcp => ("not_mcp", 0),
                    Verdict::Unsure { misses } => ("unsure", misses),
                };
                Entry {
                    exe: exe.clone(),
                    cmdline_sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
                    verdict: verdict.into(),
                    misses,
                    at_ms: unix_ms(now.checked_sub(k.at.elapsed()).unwrap_or(UNIX_EPOCH)),
                    files: k
                        .files
                        .iter()
                        .map(|f| EntryFile {
                            path: f.path.clone(),
                            kind: f.kind.as_str().into(),
                            dev: f.id.map(|i| i.0),
                            ino: f.id.map(|i| i.1),
                        })
                        .collect(),
                }
            })
            .collect();
        FileContents { programs }
    }
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(exe: &str, cmdline: &[u8]) -> ProgramKey {
        (PathBuf::from(exe), cmdline_digest(cmdline))
    }

    #[test]
    fn verdicts_survive_a_restart_without_the_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut v = Verdicts::load(Some(path.clone()));
        let files = vec![UsedFile {
            path: "/usr/lib/libssl.so.3".to_string(),
            kind: FileKind::SharedLibrary,
            id: Some((2049, 77)),
        }];
        let server = key("/usr/bin/python3", b"python3\0server.py\0--token\0s3cret\0");
        v.remember(server.clone(), Verdict::Mcp, files.clone());
        v.remember(key("/usr/bin/curl", b"curl\0https://x\0"), Verdict::NotMcp, Vec::new());
        v.remember(
            key("/usr/bin/node", b"node\0c.js\0"),
            Verdict::Unsure { misses: 2 },
            Vec::new(),
        );
        v.save(false);
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains("s3cret") && !text.contains("server.py"), "{text}");

        let back = Verdicts::load(Some(path.clone()));
        let k = back.get(&server).expect("the MCP server's verdict");
        assert_eq!(k.verdict, Verdict::Mcp);
        assert_eq!(k.files, files);
        assert!(k.probe_from_exec());
        assert!(
            back.get(&key("/usr/bin/curl", b"curl\0https://x\0"))
                .unwrap()
                .left_alone()
        );
        assert_eq!(
            back.get(&key("/usr/bin/node", b"node\0c.js\0")).unwrap().verdict,
            Verdict::Unsure { misses: 2 }
        );
        assert!(back.may_probe_exe(Path::new("/usr/bin/python3")));
        assert!(!back.may_probe_exe(Path::new("/usr/bin/curl")));
        // Another command line of the same executable is another program.
        assert!(back.get(&key("/usr/bin/python3", b"python3\0other.py\0")).is_none());
    }

    /// Ports, URLs, tokens and temporary paths change between runs of one
    /// program: its verdict does not.
    #[test]
    fn a_program_is_the_same_whatever_its_run_specific_arguments() {
        let same = [
            (
                &b"python3\0http_server.py\0--port\x0041001\0--tls-cert\0/tmp/a/c.pem\0"[..],
                &b"python3\0http_server.py\0--port\x0052002\0--tls-cert\0/tmp/b/c.pem\0"[..],
            ),
            (
                b"node\0client.mjs\0https://127.0.0.1:1/mcp\0tok\0",
                b"node\0client.mjs\0https://127.0.0.1:2/mcp\0other\0",
            ),
            (b"server\0-port\x001\0-cert\0/tmp/x\0", b"server\0-port\x002\0"),
            (
                b"python3\0-u\0-m\0mcp_server_fetch\0--x\0",
                b"python3\0-m\0mcp_server_fetch\0",
            ),
        ];
        for (a, b) in same {
            assert_eq!(key("/x", a), key("/x", b), "{a:?} {b:?}");
        }
        assert_ne!(key("/x", b"python3\0a.py\0"), key("/x", b"python3\0b.py\0"));
        assert_ne!(key("/x", b"python3\0-m\0a\0"), key("/x", b"python3\0-m\0b\0"));
        assert_ne!(key("/a", b"x\0"), key("/b", b"x\0"));
    }

    #[test]
    fn expired_and_bad_entries_are_dropped_and_a_bad_file_is_not_fatal() {
        let now = SystemTime::now();
        let hex = "ab".repeat(32);
        let entry = |verdict: &str, age: Duration, digest: &str| Entry {
            exe: PathBuf::from("/bin/x"),
            cmdline_sha256: digest.into(),
            verdict: verdict.into(),
            misses: 0,
            at_ms: unix_ms(now - age),
            files: Vec::new(),
        };
        let mut v = Verdicts::load(None);
        v.restore(
            FileContents {
                programs: vec![
                    entry("mcp", Duration::from_secs(3600), &hex),
                    entry("not_mcp", Duration::from_secs(3600), &"cd".repeat(32)),
                    entry("mcp", Duration::from_secs(25 * 3600), &"ef".repeat(32)),
                    entry("maybe", Duration::from_secs(1), &"01".repeat(32)),
                    entry("mcp", Duration::from_secs(1), "not hex"),
                ],
            },
            now,
            Instant::now() + Duration::from_secs(30 * 3600),
        );
        assert_eq!(v.programs.len(), 1, "only the MCP verdict of an hour ago is in force");
        let k = v.get(&(PathBuf::from("/bin/x"), parse_hex32(&hex).unwrap())).unwrap();
        assert!(k.probe_from_exec());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, b"{not json").unwrap();
        assert_eq!(Verdicts::load(Some(path)).programs.len(), 0);
    }
}
