//! From what the kernel saw to what the operator reads: relative paths made
//! absolute (against the process's working directory or the directory
//! descriptor it named, read from /proc while the process lives), `..`
//! folded lexically (so a policy prefix cannot be walked out of), the
//! arguments of a program run (masked), a listener's address, the host
//! name behind a connection (`naming`).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::{Component, Path, PathBuf},
};

use super::{
    Effect, EffectKind,
    naming::{self, HostFrom},
};
use crate::capture::{PathArg, RawEffect, RawEffectKind};

const AT_FDCWD: i32 = -100;
const O_ACCMODE: u64 = 0o3;
const O_CREAT: u64 = 0o100;
const O_TRUNC: u64 = 0o1000;
const EACCES: i64 = -13;
const EPERM: i64 = -1;
const EINPROGRESS: i64 = -115;

/// Most bound sockets remembered until they listen (past it the table
/// starts over: a listener then shows the address the socket has, when
/// it still has one).
const MAX_BINDS: usize = 4096;

/// Most resolved addresses remembered (past it the table starts over: a
/// later connection then shows its address alone).
const MAX_NAMES: usize = 4096;

/// What a kernel effect resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Effect(Effect),
    /// Process `pid` named the host of its connection on `fd` in its first
    /// bytes (for `EffectTable::name_host`).
    Host {
        pid: u32,
        fd: i32,
        host: String,
        from: HostFrom,
    },
}

/// What became of the bytes that name hosts (`mcptap_effect_names_total`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NamingCounts {
    /// DNS answers read, and the addresses they named.
    pub dns_answers: u64,
    /// Bytes read from port 53 that were no DNS answer (counted, logged).
    pub dns_unreadable: u64,
    /// First bytes of a connection that named its host, and that did not
    /// (another protocol, or a ClientHello cut before its server name).
    pub hello_named: u64,
    pub hello_unnamed: u64,
}

/// Turns kernel effects into effects; remembers what a socket was bound
/// to, for the listen that follows, and the names a process resolved, for
/// the connections that follow.
#[derive(Debug, Default)]
pub struct Resolver {
    binds: HashMap<(u32, i32), SocketAddr>,
    /// Per process, the name each address it resolved answers for.
    names: HashMap<(u32, IpAddr), String>,
    pub naming: NamingCounts,
    /// Programs run, waiting for their arguments (the kernel sends them
    /// just after, at the execve's exit).
    execs: HashMap<u32, Effect>,
    /// Whether the kernel sends arguments (not with the compat object's
    /// raw tracepoint, which records no effects at syscall exits).
    expect_args: bool,
    /// Programs whose arguments never came.
    pub execs_without_args: u64,
}

impl Resolver {
    /// `expect_args`: the kernel follows each exec with its arguments.
    pub fn new(expect_args: bool) -> Resolver {
        Resolver {
            expect_args,
            ..Resolver::default()
        }
    }

    /// `None` for what is not an effect of its own (a bind, a program
    /// waiting for its arguments, a DNS answer).
    pub fn resolve(&mut self, raw: &RawEffect, proc_root: &Path) -> Option<Resolved> {
        self.effect(raw, proc_root).map(|r| match r {
            Resolved::Effect(mut e) if e.kind == EffectKind::Connect => {
                if let Some(name) = e.address.and_then(|a| self.names.get(&(raw.tgid, a.ip()))) {
                    e.host = Some(name.clone());
                    e.host_from = Some(HostFrom::Dns);
                }
                Resolved::Effect(e)
            }
            other => other,
        })
    }

    fn effect(&mut self, raw: &RawEffect, proc_root: &Path) -> Option<Resolved> {
        match &raw.what {
            RawEffectKind::DnsAnswer { bytes } => {
                match naming::dns_answers(bytes) {
                    Ok(answers) => {
                        self.naming.dns_answers += 1;
                        if self.names.len() + answers.len() > MAX_NAMES {
                            self.names.clear();
                        }
                        for (ip, name) in answers {
                            self.names.insert((raw.tgid, ip), name);
                        }
                    }
                    Err(e) => {
                        self.naming.dns_unreadable += 1;
                        tracing::debug!(pid = raw.tgid, "bytes read from port 53 dropped: {e}");
                    }
                }
                None
            }
            RawEffectKind::Hello { fd, bytes } => match naming::hello_host(bytes) {
                Some((host, from)) => {
                    self.naming.hello_named += 1;
                    Some(Resolved::Host {
                        pid: raw.tgid,
                        fd: *fd,
                        host,
                        from,
                    })
                }
                None => {
                    self.naming.hello_unnamed += 1;
                    None
                }
            },
            RawEffectKind::Exec { .. } if self.expect_args => {
                if self.execs.len() >= MAX_BINDS {
                    self.execs_without_args += self.execs.len() as u64;
                    self.execs.clear();
                }
                let mut e = resolve(raw, proc_root);
                e.args = None;
                if self.execs.insert(raw.tgid, e).is_some() {
                    self.execs_without_args += 1;
                }
                None
            }
            RawEffectKind::ExecArgs { args, cut } => {
                let mut e = self.execs.remove(&raw.tgid)?;
                let mut args = crate::mask::mask_cmdline(args);
                if *cut {
                    args.push("…".into());
                }
                e.args = Some(args);
                Some(Resolved::Effect(e))
            }
            RawEffectKind::Bind { fd, addr } => {
                if self.binds.len() >= MAX_BINDS {
                    self.binds.clear();
                }
                self.binds.insert((raw.tgid, *fd), *addr);
                None
            }
            RawEffectKind::Listen { fd } => {
                let mut e = resolve(raw, proc_root);
                // A port 0 bind: the kernel chose the port; the socket has
                // it (while it is open).
                e.address = match self.binds.remove(&(raw.tgid, *fd)) {
                    Some(a) if a.port() != 0 => Some(a),
                    bound => crate::procnet::socket_addrs_local(raw.tgid, *fd).or(bound),
                };
                Some(Resolved::Effect(e))
            }
            _ => Some(Resolved::Effect(resolve(raw, proc_root))),
        }
    }

    /// The process is gone.
    pub fn forget(&mut self, tgid: u32) {
        self.binds.retain(|(t, _), _| *t != tgid);
        self.names.retain(|(t, _), _| *t != tgid);
        self.execs.remove(&tgid);
    }

    /// Entries held (binds, programs waiting for their arguments, names).
    pub fn len(&self) -> usize {
        self.binds.len() + self.execs.len() + self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Resolves a kernel effect; `proc_root` is /proc (tests: a fake tree).
fn resolve(raw: &RawEffect, proc_root: &Path) -> Effect {
    let denied = raw.ret == EACCES || raw.ret == EPERM;
    let mut e = Effect {
        kind: EffectKind::FileRead,
        pid: raw.tgid,
        ts_ns: raw.ts_ns,
        path: None,
        to: None,
        args: None,
        address: None,
        host: None,
        host_from: None,
        fd: None,
        denied,
        failed: false,
    };
    match &raw.what {
        RawEffectKind::Open { path, flags } => {
            let writes = flags & O_ACCMODE != 0 || flags & (O_CREAT | O_TRUNC) != 0;
            e.kind = if writes {
                EffectKind::FileWrite
            } else {
                EffectKind::FileRead
            };
            e.path = Some(absolute(path, raw.tgid, proc_root));
        }
        RawEffectKind::Unlink { path, .. } => {
            e.kind = EffectKind::FileDelete;
            e.path = Some(absolute(path, raw.tgid, proc_root));
        }
        RawEffectKind::Rename { from, to } => {
            e.kind = EffectKind::FileRename;
            e.path = Some(absolute(from, raw.tgid, proc_root));
            e.to = Some(absolute(to, raw.tgid, proc_root));
        }
        RawEffectKind::Exec { path } => {
            e.kind = EffectKind::Exec;
            e.path = Some(normalize(Path::new(path)));
            e.args = cmdline(raw.tgid, proc_root).map(|args| crate::mask::mask_cmdline(&args));
        }
        RawEffectKind::Connect { fd, peer } => {
            e.kind = EffectKind::Connect;
            e.address = Some(*peer);
            e.fd = Some(*fd);
            e.failed = raw.ret != 0 && raw.ret != EINPROGRESS && !denied;
        }
        RawEffectKind::Listen { .. } => e.kind = EffectKind::Listen,
        // Joined to its exec by `Resolver` (never resolved alone).
        RawEffectKind::ExecArgs { .. } => e.kind = EffectKind::Exec,
        RawEffectKind::Bind { addr, .. } => {
            e.kind = EffectKind::Listen;
            e.address = Some(*addr);
        }
        // Never effects of their own (`Resolver` turns them into names).
        RawEffectKind::Hello { .. } | RawEffectKind::DnsAnswer { .. } => e.kind = EffectKind::Connect,
    }
    e
}

/// The path made absolute; relative to a directory mcptap could not read
/// (the process is gone) it stays relative, prefixed with `./` so no
/// policy prefix matches it by accident.
fn absolute(arg: &PathArg, pid: u32, proc_root: &Path) -> String {
    let p = Path::new(&arg.path);
    let mut out = if p.is_absolute() {
        normalize(p)
    } else {
        let base = if arg.dirfd == AT_FDCWD {
            proc_root.join(pid.to_string()).join("cwd")
        } else {
            proc_root.join(pid.to_string()).join("fd").join(arg.dirfd.to_string())
        };
        match std::fs::read_link(base) {
            Ok(dir) if dir.is_absolute() => normalize(&dir.join(p)),
            _ => format!("./{}", normalize(p)),
        }
    };
    if arg.cut {
        out.push('…');
    }
    // A path can carry a secret too (a token in a file name): masked by
    // the same rules as payloads.
    crate::mask::mask_text(&out).into_owned()
}

/// Folds `.` and `..` without touching the filesystem.
pub fn normalize(p: &Path) -> String {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::RootDir => out.push("/"),
            Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    out.to_string_lossy().into_owned()
}

/// The program's arguments after its name, while the process lives.
fn cmdline(pid: u32, proc_root: &Path) -> Option<Vec<String>> {
    let raw = std::fs::read(proc_root.join(pid.to_string()).join("cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.split(|&b| b == 0)
            .skip(1)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TGID: u32 = 4242;

    fn raw(what: RawEffectKind, ret: i64) -> RawEffect {
        RawEffect {
            owner: 1,
            tgid: TGID,
            ts_ns: 0,
            ret,
            what,
        }
    }

    fn arg(dirfd: i32, path: &str) -> PathArg {
        PathArg {
            dirfd,
            path: path.into(),
            cut: false,
        }
    }

    #[test]
    fn paths_become_absolute_against_the_process_directories() {
        let root = tempfile::tempdir().unwrap();
        let pid_dir = root.path().join("4242");
        std::fs::create_dir_all(pid_dir.join("fd")).unwrap();
        std::os::unix::fs::symlink("/srv/work", pid_dir.join("cwd")).unwrap();
        std::os::unix::fs::symlink("/etc", pid_dir.join("fd").join("7")).unwrap();
        std::fs::write(pid_dir.join("cmdline"), b"git\0push\0--token\0s3cret\0").unwrap();

        let e = resolve(
            &raw(
                RawEffectKind::Open {
                    path: arg(AT_FDCWD, "a/../notes.txt"),
                    flags: 0,
                },
                3,
            ),
            root.path(),
        );
        assert_eq!(
            (e.kind, e.path.as_deref()),
            (EffectKind::FileRead, Some("/srv/work/notes.txt"))
        );
        let e = resolve(
            &raw(
                RawEffectKind::Open {
                    path: arg(7, "passwd"),
                    flags: 0o101,
                },
                3,
            ),
            root.path(),
        );
        assert_eq!(
            (e.kind, e.path.as_deref()),
            (EffectKind::FileWrite, Some("/etc/passwd"))
        );
        // Walking out of a directory is folded, not kept.
        let e = resolve(
            &raw(
                RawEffectKind::Open {
                    path: arg(AT_FDCWD, "/srv/work/../../root/.ssh/id_rsa"),
                    flags: 0,
                },
                -13,
            ),
            root.path(),
        );
        assert_eq!(e.path.as_deref(), Some("/root/.ssh/id_rsa"));
        assert!(e.denied);
        let e = resolve(
            &raw(
                RawEffectKind::Exec {
                    path: "/usr/bin/git".into(),
                },
                0,
            ),
            root.path(),
        );
        assert_eq!(e.kind, EffectKind::Exec);
        assert_eq!(
            e.args,
            Some(vec!["push".to_string(), "--token".into(), crate::mask::REDACTED.into()])
        );
        // The process is gone: the path stays visibly relative.
        let mut gone = raw(
            RawEffectKind::Unlink {
                path: arg(AT_FDCWD, "x"),
                dir: false,
            },
            0,
        );
        gone.tgid = 999_999;
        let e = resolve(&gone, root.path());
        assert_eq!((e.kind, e.path.as_deref()), (EffectKind::FileDelete, Some("./x")));
        let e = resolve(
            &raw(
                RawEffectKind::Connect {
                    fd: 3,
                    peer: "10.0.0.1:5432".parse().unwrap(),
                },
                -111,
            ),
            root.path(),
        );
        assert!(e.failed && !e.denied);
    }

    fn effect_of(r: Option<Resolved>) -> Effect {
        match r {
            Some(Resolved::Effect(e)) => e,
            other => panic!("not an effect: {other:?}"),
        }
    }

    #[test]
    fn a_connection_gets_the_name_its_process_resolved_or_sent() {
        use simple_dns::rdata::{A, RData};
        let mut r = Resolver::default();
        let root = Path::new("/nonexistent");
        let answer = RawEffectKind::DnsAnswer {
            bytes: naming::tests::dns_answer(
                "db.mcptap.test",
                &[("db.mcptap.test", RData::A(A { address: 0x0a00_0001 }))],
            ),
        };
        assert_eq!(r.resolve(&raw(answer, 9), root), None);
        assert_eq!(r.naming.dns_answers, 1);
        let connect = |fd, peer: &str| RawEffectKind::Connect {
            fd,
            peer: peer.parse().unwrap(),
        };
        // The resolved address, by the process that resolved it: named.
        let e = effect_of(r.resolve(&raw(connect(4, "10.0.0.1:5432"), 0), root));
        assert_eq!(
            (e.host.as_deref(), e.host_from, e.fd),
            (Some("db.mcptap.test"), Some(HostFrom::Dns), Some(4))
        );
        // Another address, or another process: not.
        let e = effect_of(r.resolve(&raw(connect(5, "10.0.0.2:5432"), 0), root));
        assert_eq!(e.host, None);
        let mut other = raw(connect(5, "10.0.0.1:5432"), 0);
        other.tgid += 1;
        assert_eq!(effect_of(r.resolve(&other, root)).host, None);
        // Bytes from port 53 that are no answer: counted, nothing else.
        assert_eq!(
            r.resolve(
                &raw(
                    RawEffectKind::DnsAnswer {
                        bytes: b"junk".to_vec()
                    },
                    4
                ),
                root
            ),
            None
        );
        assert_eq!(r.naming.dns_unreadable, 1);
        // First bytes that name the host: a name for the connection.
        let hello = RawEffectKind::Hello {
            fd: 5,
            bytes: b"GET / HTTP/1.1\r\nHost: api.mcptap.test\r\n\r\n".to_vec(),
        };
        assert_eq!(
            r.resolve(&raw(hello, 40), root),
            Some(Resolved::Host {
                pid: TGID,
                fd: 5,
                host: "api.mcptap.test".into(),
                from: HostFrom::Http
            })
        );
        let binary = RawEffectKind::Hello {
            fd: 6,
            bytes: vec![0, 0, 0, 8, 4, 210, 22, 47],
        };
        assert_eq!(r.resolve(&raw(binary, 8), root), None);
        assert_eq!((r.naming.hello_named, r.naming.hello_unnamed), (1, 1));
        // Its names go with the process.
        r.forget(TGID);
        assert!(r.is_empty());
    }

    #[test]
    fn a_program_gets_the_arguments_that_follow_it() {
        let mut r = Resolver::new(true);
        let root = Path::new("/nonexistent");
        assert_eq!(
            r.resolve(
                &raw(
                    RawEffectKind::Exec {
                        path: "/usr/bin/curl".into()
                    },
                    0
                ),
                root
            ),
            None
        );
        let args = RawEffectKind::ExecArgs {
            args: vec![
                "-H".into(),
                "Authorization: Bearer abc.def.ghi".into(),
                "https://x".into(),
            ],
            cut: true,
        };
        let e = effect_of(r.resolve(&raw(args.clone(), 0), root));
        assert_eq!((e.kind, e.path.as_deref()), (EffectKind::Exec, Some("/usr/bin/curl")));
        let a = e.args.unwrap();
        assert_eq!(a[0], "-H");
        assert!(!a[1].contains("abc.def.ghi"), "masked: {a:?}");
        assert_eq!(a.last().map(String::as_str), Some("…"));
        // Arguments with no program before them: nothing.
        assert_eq!(r.resolve(&raw(args, 0), root), None);
        assert!(r.is_empty());
    }

    #[test]
    fn a_listener_gets_the_address_its_socket_was_bound_to() {
        let mut r = Resolver::default();
        let root = Path::new("/nonexistent");
        let addr: SocketAddr = "127.0.0.1:8931".parse().unwrap();
        assert_eq!(r.resolve(&raw(RawEffectKind::Bind { fd: 5, addr }, 0), root), None);
        let e = effect_of(r.resolve(&raw(RawEffectKind::Listen { fd: 5 }, 0), root));
        assert_eq!((e.kind, e.address), (EffectKind::Listen, Some(addr)));
        assert!(r.is_empty());
        r.resolve(&raw(RawEffectKind::Bind { fd: 6, addr }, 0), root);
        r.forget(4242);
        assert_eq!(r.len(), 0);
    }
}
