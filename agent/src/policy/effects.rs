//! The side effects a server (or one of its tools) may have: path prefixes
//! it may read and write, programs it may run, where it may connect and
//! listen. An effect outside its scope raises `effect_outside_scope`.
//!
//! ```toml
//! [[server]]
//! name = "filesystem"
//! [server.effects]
//! read = ["/srv/data", "/usr/lib"]     # path prefixes (whole components)
//! write = ["/srv/data/out"]            # writes, creations, deletions, renames
//! exec = ["/usr/bin/git"]              # executables (globs)
//! connect = ["127.0.0.0/8", "db.internal:5432", "*:443"]
//! listen = ["127.0.0.1"]
//! [server.tool_effects."run_*"]        # a tool's own scope (glob on the tool),
//! exec = ["/usr/bin/git", "/usr/bin/curl"]   # per kind, instead of the server's
//! ```
//!
//! A kind the scope does not name is not restricted. Host names are
//! resolved when the policy is loaded (and at each SIGHUP): the addresses
//! they have then are the ones allowed.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use ipnet::IpNet;
use serde::Deserialize;

use super::Pattern;
use crate::effects::{Effect, EffectKind};

/// A scope as the file spells it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeFile {
    pub read: Option<Vec<String>>,
    pub write: Option<Vec<String>>,
    pub exec: Option<Vec<String>>,
    pub connect: Option<Vec<String>>,
    pub listen: Option<Vec<String>>,
}

/// A scope, compiled.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub read: Option<Vec<String>>,
    pub write: Option<Vec<String>>,
    pub exec: Option<Vec<Pattern>>,
    pub connect: Option<Vec<Destination>>,
    pub listen: Option<Vec<Destination>>,
}

/// Where a socket may go: addresses (a network, or a host's addresses at
/// load time) or host names, and a port, either optional.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    pub text: String,
    /// `None`: any address.
    nets: Option<Vec<IpNet>>,
    /// A host name (lower case), matched against the name a connection
    /// carries (`Effect::host`: what the server resolved, or named in SNI or
    /// `Host`); `*.example.com` matches its subdomains.
    name: Option<String>,
    /// `None`: any port.
    port: Option<u16>,
}

impl Destination {
    /// `10.0.0.0/8`, `10.1.2.3`, `[::1]:8080`, `db.internal:5432`,
    /// `*.example.com:443`, `*:443`, `:443`. A host name must resolve at
    /// load (a typo is an error, not a rule that never matches), except a
    /// `*.` pattern, which only matches names.
    pub fn parse(text: &str) -> Result<Destination, String> {
        let bad = |why: &str| format!("bad destination {text:?}: {why}");
        let (host, port) = split_port(text).ok_or_else(|| bad("the port is not a number"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let mut name = None;
        let nets = match host {
            "" | "*" => None,
            h if h.starts_with("*.") && h.len() > 2 => {
                name = Some(h.to_ascii_lowercase());
                Some(Vec::new())
            }
            h => Some(if let Ok(net) = h.parse::<IpNet>() {
                vec![net]
            } else if let Ok(ip) = h.parse::<IpAddr>() {
                vec![IpNet::from(ip)]
            } else {
                name = Some(h.trim_end_matches('.').to_ascii_lowercase());
                let resolved: Vec<IpNet> = (h, port.unwrap_or(0))
                    .to_socket_addrs()
                    .map_err(|e| bad(&format!("cannot resolve {h:?}: {e}")))?
                    .map(|a| IpNet::from(a.ip()))
                    .collect();
                if resolved.is_empty() {
                    return Err(bad(&format!("{h:?} has no address")));
                }
                resolved
            }),
        };
        Ok(Destination {
            text: text.to_string(),
            nets,
            name,
            port,
        })
    }

    /// Whether a socket to `addr`, which the server knew as `host`, is
    /// allowed here.
    pub fn allows(&self, addr: SocketAddr, host: Option<&str>) -> bool {
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let named = match (&self.name, host) {
            (Some(pattern), Some(host)) => match pattern.strip_prefix('*') {
                Some(suffix) => host.ends_with(suffix),
                None => pattern == host,
            },
            _ => false,
        };
        self.port.is_none_or(|p| p == addr.port())
            && (named || self.nets.as_ref().is_none_or(|n| n.iter().any(|n| n.contains(&ip))))
    }
}

/// `host:port` → (host, Some(port)); a bare address or network → (it, None).
fn split_port(text: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = text.strip_prefix('[') {
        // [v6]:port or [v6]
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(p) => Some((host, Some(p.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match text.rsplit_once(':') {
        // More than one colon: an IPv6 address or network without a port.
        Some((host, _)) if host.contains(':') => Some((text, None)),
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((text, None)),
    }
}

impl Scope {
    pub fn compile(f: &ScopeFile) -> Result<Scope, String> {
        let prefixes = |v: &Option<Vec<String>>| -> Result<Option<Vec<String>>, String> {
            v.as_ref()
                .map(|v| {
                    v.iter()
                        .map(|p| {
                            if p.starts_with('/') {
                                Ok(crate::effects::resolve::normalize(std::path::Path::new(p)))
                            } else {
                                Err(format!("path prefix {p:?} is not absolute"))
                            }
                        })
                        .collect()
                })
                .transpose()
        };
        let dests = |v: &Option<Vec<String>>| -> Result<Option<Vec<Destination>>, String> {
            v.as_ref()
                .map(|v| v.iter().map(|d| Destination::parse(d)).collect())
                .transpose()
        };
        Ok(Scope {
            read: prefixes(&f.read)?,
            write: prefixes(&f.write)?,
            exec: f
                .exec
                .as_ref()
                .map(|v| v.iter().map(|p| Pattern::new(p)).collect::<Result<Vec<_>, _>>())
                .transpose()?,
            connect: dests(&f.connect)?,
            listen: dests(&f.listen)?,
        })
    }

    /// This scope, with `over`'s kinds in place of its own where `over`
    /// names them (a tool's scope over its server's).
    pub fn overlaid(&self, over: &Scope) -> Scope {
        Scope {
            read: over.read.clone().or_else(|| self.read.clone()),
            write: over.write.clone().or_else(|| self.write.clone()),
            exec: over.exec.clone().or_else(|| self.exec.clone()),
            connect: over.connect.clone().or_else(|| self.connect.clone()),
            listen: over.listen.clone().or_else(|| self.listen.clone()),
        }
    }

    /// Which part of the scope an effect breaks (`read`, `write`...), with
    /// what it allows; `None` when the effect is within it.
    pub fn outside(&self, e: &Effect) -> Option<(&'static str, String)> {
        let in_prefixes = |allowed: &[String], path: &str| allowed.iter().any(|p| under(path, p));
        let paths = |allowed: &Option<Vec<String>>, key: &'static str, paths: &[Option<&String>]| {
            let allowed = allowed.as_ref()?;
            let bad = paths.iter().flatten().any(|p| !in_prefixes(allowed, p));
            bad.then(|| (key, format!("{allowed:?}")))
        };
        match e.kind {
            EffectKind::FileRead => paths(&self.read, "read", &[e.path.as_ref()]),
            EffectKind::FileWrite | EffectKind::FileDelete | EffectKind::FileRename => {
                paths(&self.write, "write", &[e.path.as_ref(), e.to.as_ref()])
            }
            EffectKind::Exec => {
                let allowed = self.exec.as_ref()?;
                let exe = e.path.as_deref().unwrap_or("");
                (!allowed.iter().any(|p| p.matches(exe))).then(|| {
                    (
                        "exec",
                        format!("{:?}", allowed.iter().map(|p| &p.text).collect::<Vec<_>>()),
                    )
                })
            }
            EffectKind::Connect | EffectKind::Listen => {
                let (allowed, key) = if e.kind == EffectKind::Connect {
                    (self.connect.as_ref()?, "connect")
                } else {
                    (self.listen.as_ref()?, "listen")
                };
                let ok = e
                    .address
                    .is_some_and(|a| allowed.iter().any(|d| d.allows(a, e.host.as_deref())));
                (!ok).then(|| {
                    (
                        key,
                        format!("{:?}", allowed.iter().map(|d| &d.text).collect::<Vec<_>>()),
                    )
                })
            }
        }
    }
}

/// Whether `path` is `prefix` or under it (whole components: `/srv/data`
/// does not allow `/srv/database`).
fn under(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return path.starts_with('/');
    }
    path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn effect(kind: EffectKind, path: Option<&str>, address: Option<&str>) -> Effect {
        Effect {
            kind,
            pid: 1,
            ts_ns: 0,
            path: path.map(str::to_string),
            to: None,
            args: None,
            address: address.map(|a| a.parse().unwrap()),
            host: None,
            host_from: None,
            fd: None,
            denied: false,
            failed: false,
        }
    }

    #[test]
    fn prefixes_are_whole_components() {
        assert!(under("/srv/data/a.txt", "/srv/data"));
        assert!(under("/srv/data", "/srv/data"));
        assert!(!under("/srv/database", "/srv/data"));
        assert!(under("/x", "/"));
    }

    #[test]
    fn destinations() {
        let d = |t: &str| Destination::parse(t).unwrap();
        assert!(d("127.0.0.0/8").allows("127.0.0.2:5".parse().unwrap(), None));
        assert!(!d("127.0.0.0/8").allows("10.0.0.1:5".parse().unwrap(), None));
        assert!(d("*:443").allows("1.2.3.4:443".parse().unwrap(), None));
        assert!(!d(":443").allows("1.2.3.4:80".parse().unwrap(), None));
        assert!(d("10.1.2.3:5432").allows("10.1.2.3:5432".parse().unwrap(), None));
        assert!(d("[::1]:8080").allows("[::1]:8080".parse().unwrap(), None));
        assert!(d("::1").allows("[::1]:1".parse().unwrap(), None));
        // An IPv4 peer of an IPv6 socket.
        assert!(d("127.0.0.1").allows("[::ffff:127.0.0.1]:9".parse().unwrap(), None));
        assert!(d("localhost:80").allows("127.0.0.1:80".parse().unwrap(), None));
        assert!(Destination::parse("db:http").is_err());
        assert!(Destination::parse("no-such-host.invalid").is_err());
        // Names: the one the connection carries, whatever its address.
        let a: SocketAddr = "10.9.9.9:443".parse().unwrap();
        assert!(d("localhost:443").allows(a, Some("localhost")));
        assert!(!d("localhost:443").allows(a, Some("localhost.evil.test")));
        assert!(!d("localhost:80").allows(a, Some("localhost")));
        let wild = d("*.Example.com:443");
        assert!(wild.allows(a, Some("api.example.com")));
        assert!(!wild.allows(a, Some("example.com")));
        assert!(!wild.allows(a, Some("badexample.com")));
        assert!(!wild.allows(a, None));
    }

    #[test]
    fn effects_outside_the_scope_say_which_part() {
        let scope = Scope::compile(&ScopeFile {
            read: Some(vec!["/srv/data".into()]),
            write: Some(vec!["/srv/data/out".into()]),
            exec: Some(vec!["/usr/bin/git".into()]),
            connect: Some(vec!["127.0.0.0/8".into()]),
            listen: None,
        })
        .unwrap();
        assert_eq!(
            scope.outside(&effect(EffectKind::FileRead, Some("/srv/data/a"), None)),
            None
        );
        assert_eq!(
            scope
                .outside(&effect(EffectKind::FileRead, Some("/etc/shadow"), None))
                .unwrap()
                .0,
            "read"
        );
        assert_eq!(
            scope
                .outside(&effect(EffectKind::FileWrite, Some("/srv/data/a"), None))
                .unwrap()
                .0,
            "write"
        );
        let mut rename = effect(EffectKind::FileRename, Some("/srv/data/out/a"), None);
        rename.to = Some("/tmp/a".into());
        assert_eq!(scope.outside(&rename).unwrap().0, "write");
        assert_eq!(
            scope
                .outside(&effect(EffectKind::Exec, Some("/usr/bin/curl"), None))
                .unwrap()
                .0,
            "exec"
        );
        assert_eq!(
            scope.outside(&effect(EffectKind::Exec, Some("/usr/bin/git"), None)),
            None
        );
        assert_eq!(
            scope
                .outside(&effect(EffectKind::Connect, None, Some("10.0.0.1:80")))
                .unwrap()
                .0,
            "connect"
        );
        // Not restricted.
        assert_eq!(
            scope.outside(&effect(EffectKind::Listen, None, Some("0.0.0.0:80"))),
            None
        );
        let tool = Scope::compile(&ScopeFile {
            exec: Some(vec!["/usr/bin/*".into()]),
            ..ScopeFile::default()
        })
        .unwrap();
        let both = scope.overlaid(&tool);
        assert_eq!(
            both.outside(&effect(EffectKind::Exec, Some("/usr/bin/curl"), None)),
            None
        );
        assert!(
            both.outside(&effect(EffectKind::FileRead, Some("/etc/shadow"), None))
                .is_some()
        );
        assert!(
            Scope::compile(&ScopeFile {
                read: Some(vec!["relative".into()]),
                ..ScopeFile::default()
            })
            .is_err()
        );
    }
}
