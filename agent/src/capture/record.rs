//! Decoding of the kernel's ring buffer records into typed values.

use mcptap_common::{
    CHUNK_HEADER_LEN, ChunkHeader, EffectRecord, ProcessRecord, SocketRecord, TlsCloseRecord, channel, chunk_flags,
    effect, op, record, sock_role,
};
use thiserror::Error;

/// What the pipeline receives from the kernel, one ring buffer record each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureRecord<'a> {
    Chunk(Chunk<'a>),
    ProcessExit {
        tgid: u32,
        ts_ns: u64,
    },
    ProcessExec {
        tgid: u32,
        ts_ns: u64,
    },
    /// Some process ran a new program (TLS library discovery).
    ExecAny {
        tgid: u32,
    },
    SocketOpen(SocketOpen),
    SocketClose {
        tgid: u32,
        fd: i32,
        ts_ns: u64,
    },
    TlsClose {
        tgid: u32,
        ssl: u64,
        ts_ns: u64,
    },
    /// A side effect of a server process or of one it started.
    Effect(RawEffect),
}

/// A side effect as the kernel saw it: paths as the process passed them
/// (the effects stage makes them absolute and attributes the effect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEffect {
    /// The server process it belongs to.
    pub owner: u32,
    /// The process that did it (the server or one it started).
    pub tgid: u32,
    pub ts_ns: u64,
    /// The syscall's result: a descriptor, 0, or -errno.
    pub ret: i64,
    pub what: RawEffectKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawEffectKind {
    Open {
        path: PathArg,
        flags: u64,
    },
    Unlink {
        path: PathArg,
        dir: bool,
    },
    Rename {
        from: PathArg,
        to: PathArg,
    },
    Exec {
        path: String,
    },
    /// The arguments of the program just executed (after argv[0]); `cut`
    /// when they ran past what the kernel copies.
    ExecArgs {
        args: Vec<String>,
        cut: bool,
    },
    Connect {
        fd: i32,
        peer: std::net::SocketAddr,
    },
    Listen {
        fd: i32,
    },
    /// An internet socket was bound: the address a later `Listen` on the
    /// same descriptor opens.
    Bind {
        fd: i32,
        addr: std::net::SocketAddr,
    },
    /// The first bytes written on socket `fd` after its connect (up to
    /// 512): where a ClientHello's SNI or an HTTP `Host` is.
    Hello {
        fd: i32,
        bytes: Vec<u8>,
    },
    /// Bytes read from a socket connected to port 53 (up to 512).
    DnsAnswer {
        bytes: Vec<u8>,
    },
}

/// A path argument: relative ones are relative to `dirfd` (-100: the
/// working directory). `cut`: longer than the kernel copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathArg {
    pub dirfd: i32,
    pub path: String,
    pub cut: bool,
}

/// A watched process accepted (`server`) or connected (`!server`) a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOpen {
    pub tgid: u32,
    pub fd: i32,
    pub ts_ns: u64,
    pub server: bool,
    /// The peer's address as the syscall saw it, when it did.
    pub peer: Option<std::net::SocketAddr>,
    /// accept(): the listening socket, whose address is the local one.
    pub listen_fd: Option<i32>,
}

/// Where a chunk's bytes travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// A stdio descriptor (stdin/stdout or a copy).
    Stdio(i32),
    /// A TCP socket.
    Socket(i32),
    /// A TLS session (`SSL*`); `Chunk::fd` is its socket when known.
    Tls(u64),
}

/// Bytes a traced process read or wrote in one syscall (or part of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk<'a> {
    pub tgid: u32,
    pub tid: u32,
    pub channel: Channel,
    /// The descriptor of the call; for TLS the socket this thread last
    /// moved ciphertext on, or -1.
    pub fd: i32,
    pub direction: Io,
    pub ts_ns: u64,
    /// Bytes the whole call moved.
    pub call_len: u64,
    /// Offset of `data` within the call's bytes.
    pub offset: u64,
    pub truncated: bool,
    pub discovery: bool,
    pub loss_before: bool,
    pub data: &'a [u8],
}

/// Whether the traced process read or wrote the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Io {
    Read,
    Write,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is too short")]
    Short(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("chunk says {said} payload bytes but the record holds {held}")]
    BadLength { said: usize, held: usize },
    #[error("unknown chunk op {0}")]
    UnknownOp(u8),
    #[error("unknown chunk channel {0}")]
    UnknownChannel(u8),
    #[error("chunk at offset {offset} of its call runs past the largest offset")]
    BadOffset { offset: u64 },
    #[error("unknown effect kind {0}")]
    UnknownEffect(u8),
    #[error("effect with unknown address family {0}")]
    UnknownFamily(u16),
}

impl<'a> CaptureRecord<'a> {
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let Some(kind) = bytes.get(..4) else {
            return Err(DecodeError::Short(bytes.len()));
        };
        let kind = u32::from_ne_bytes([kind[0], kind[1], kind[2], kind[3]]);
        match kind {
            record::CHUNK => decode_chunk(bytes).map(CaptureRecord::Chunk),
            record::PROCESS_EXIT | record::PROCESS_EXEC => {
                let rec: ProcessRecord = read_pod(bytes)?;
                Ok(if kind == record::PROCESS_EXIT {
                    CaptureRecord::ProcessExit {
                        tgid: rec.tgid,
                        ts_ns: rec.ts_ns,
                    }
                } else {
                    CaptureRecord::ProcessExec {
                        tgid: rec.tgid,
                        ts_ns: rec.ts_ns,
                    }
                })
            }
            record::EXEC_ANY => {
                let rec: ProcessRecord = read_pod(bytes)?;
                Ok(CaptureRecord::ExecAny { tgid: rec.tgid })
            }
            record::SOCKET_OPEN => {
                let rec: SocketRecord = read_pod(bytes)?;
                Ok(CaptureRecord::SocketOpen(SocketOpen {
                    tgid: rec.tgid,
                    fd: rec.fd,
                    ts_ns: rec.ts_ns,
                    server: rec.role == sock_role::SERVER,
                    peer: peer_addr(&rec),
                    listen_fd: (rec.listen_fd >= 0 && rec.role == sock_role::SERVER).then_some(rec.listen_fd),
                }))
            }
            record::SOCKET_CLOSE => {
                let rec: SocketRecord = read_pod(bytes)?;
                Ok(CaptureRecord::SocketClose {
                    tgid: rec.tgid,
                    fd: rec.fd,
                    ts_ns: rec.ts_ns,
                })
            }
            record::TLS_CLOSE => {
                let rec: TlsCloseRecord = read_pod(bytes)?;
                Ok(CaptureRecord::TlsClose {
                    tgid: rec.tgid,
                    ssl: rec.ssl,
                    ts_ns: rec.ts_ns,
                })
            }
            record::EFFECT => decode_effect(&read_pod::<EffectRecord>(bytes)?).map(CaptureRecord::Effect),
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}

fn decode_effect(rec: &EffectRecord) -> Result<RawEffect, DecodeError> {
    let path = |dirfd: i32, bytes: &[u8]| {
        let end = bytes.iter().position(|&b| b == 0);
        PathArg {
            dirfd,
            path: String::from_utf8_lossy(&bytes[..end.unwrap_or(bytes.len())]).into_owned(),
            cut: end.is_none(),
        }
    };
    let what = match rec.effect {
        effect::OPEN => RawEffectKind::Open {
            path: path(rec.fd, &rec.path),
            flags: rec.flags,
        },
        effect::UNLINK => RawEffectKind::Unlink {
            path: path(rec.fd, &rec.path),
            dir: rec.flags & effect::AT_REMOVEDIR != 0,
        },
        effect::RENAME => RawEffectKind::Rename {
            from: path(rec.fd, &rec.path),
            // The new name's directory descriptor rides in `flags`.
            to: path(rec.flags as i64 as i32, &rec.path2),
        },
        effect::EXEC => RawEffectKind::Exec {
            path: path(rec.fd, &rec.path).path,
        },
        effect::CONNECT => RawEffectKind::Connect {
            fd: rec.fd,
            peer: inet_addr(rec.family, rec.addr, rec.port).ok_or(DecodeError::UnknownFamily(rec.family))?,
        },
        effect::LISTEN => RawEffectKind::Listen { fd: rec.fd },
        effect::EXEC_ARGS => {
            let (args, cut) = exec_args(&region(rec), rec.flags);
            RawEffectKind::ExecArgs { args, cut }
        }
        effect::HELLO => RawEffectKind::Hello {
            fd: rec.fd,
            bytes: region(rec),
        },
        effect::DNS_ANSWER => RawEffectKind::DnsAnswer { bytes: region(rec) },
        effect::BIND => RawEffectKind::Bind {
            fd: rec.fd,
            addr: inet_addr(rec.family, rec.addr, rec.port).ok_or(DecodeError::UnknownFamily(rec.family))?,
        },
        other => return Err(DecodeError::UnknownEffect(other)),
    };
    Ok(RawEffect {
        owner: rec.owner,
        tgid: rec.tgid,
        ts_ns: rec.ts_ns,
        ret: rec.ret,
        what,
    })
}

/// The bytes of a record whose `path` and `path2` are one region, `ret` of
/// them used (EXEC_ARGS, HELLO, DNS_ANSWER).
fn region(rec: &EffectRecord) -> Vec<u8> {
    let used = usize::try_from(rec.ret).unwrap_or(0);
    let first = used.min(rec.path.len());
    let second = (used - first).min(rec.path2.len());
    let mut out = Vec::with_capacity(first + second);
    out.extend_from_slice(&rec.path[..first]);
    out.extend_from_slice(&rec.path2[..second]);
    out
}

fn decode_chunk(bytes: &[u8]) -> Result<Chunk<'_>, DecodeError> {
    let header: ChunkHeader = read_pod(bytes)?;
    let said = header.len as usize;
    let data = bytes
        .get(CHUNK_HEADER_LEN..CHUNK_HEADER_LEN + said)
        .ok_or(DecodeError::BadLength {
            said,
            held: bytes.len().saturating_sub(CHUNK_HEADER_LEN),
        })?;
    if header.offset.checked_add(said as u64).is_none() {
        return Err(DecodeError::BadOffset { offset: header.offset });
    }
    let direction = match header.op {
        op::READ => Io::Read,
        op::WRITE => Io::Write,
        other => return Err(DecodeError::UnknownOp(other)),
    };
    let channel = match header.channel {
        channel::STDIO => Channel::Stdio(header.fd),
        channel::SOCKET => Channel::Socket(header.fd),
        channel::TLS => Channel::Tls(header.ssl),
        other => return Err(DecodeError::UnknownChannel(other)),
    };
    Ok(Chunk {
        tgid: (header.pid_tgid >> 32) as u32,
        tid: header.pid_tgid as u32,
        channel,
        fd: header.fd,
        direction,
        ts_ns: header.ts_ns,
        call_len: header.call_len,
        offset: header.offset,
        truncated: header.flags & chunk_flags::TRUNCATED != 0,
        discovery: header.flags & chunk_flags::DISCOVERY != 0,
        loss_before: header.flags & chunk_flags::LOSS_BEFORE != 0,
        data,
    })
}

/// The first `argc` NUL-terminated strings of `bytes`, without argv[0].
fn exec_args(bytes: &[u8], argc: u64) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut cut = false;
    for _ in 0..argc.min(bytes.len() as u64) {
        match rest.iter().position(|&b| b == 0) {
            Some(end) => {
                out.push(String::from_utf8_lossy(&rest[..end]).into_owned());
                rest = &rest[end + 1..];
            }
            None => {
                // Past the copy: this one is cut, the others are missing.
                if !rest.is_empty() {
                    out.push(format!("{}…", String::from_utf8_lossy(rest)));
                }
                cut = true;
                break;
            }
        }
    }
    if out.len() < argc as usize {
        cut = true;
    }
    if !out.is_empty() {
        out.remove(0);
    }
    (out, cut)
}

fn peer_addr(rec: &SocketRecord) -> Option<std::net::SocketAddr> {
    inet_addr(rec.family, rec.addr, rec.port)
}

fn inet_addr(family: u16, addr: [u8; 16], port: u16) -> Option<std::net::SocketAddr> {
    const AF_INET: u16 = 2;
    const AF_INET6: u16 = 10;
    let ip: std::net::IpAddr = match family {
        AF_INET => std::net::Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).into(),
        AF_INET6 => std::net::Ipv6Addr::from(addr).into(),
        _ => return None,
    };
    Some(std::net::SocketAddr::new(ip, port))
}

/// Reads a plain `#[repr(C)]` value from the start of `bytes`.
fn read_pod<T: aya::Pod>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: length checked; T is plain data; the read is unaligned-safe.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Builds a chunk record as the kernel lays it out.
    pub fn chunk_record(tgid: u32, fd: i32, op: u8, offset: u64, call_len: u64, flags: u8, data: &[u8]) -> Vec<u8> {
        chunk_record_on(channel::STDIO, 0, tgid, fd, op, offset, call_len, flags, data)
    }

    /// A chunk record of any channel.
    #[allow(clippy::too_many_arguments)]
    pub fn chunk_record_on(
        chan: u8,
        ssl: u64,
        tgid: u32,
        fd: i32,
        op: u8,
        offset: u64,
        call_len: u64,
        flags: u8,
        data: &[u8],
    ) -> Vec<u8> {
        let header = ChunkHeader {
            kind: record::CHUNK,
            len: data.len() as u32,
            ts_ns: 42,
            pid_tgid: (u64::from(tgid) << 32) | u64::from(tgid),
            call_len,
            offset,
            ssl,
            fd,
            op,
            flags,
            channel: chan,
            _reserved: 0,
        };
        let mut out = vec![0u8; CHUNK_HEADER_LEN];
        // SAFETY: ChunkHeader is repr(C) plain data of CHUNK_HEADER_LEN bytes.
        unsafe { std::ptr::write_unaligned(out.as_mut_ptr().cast::<ChunkHeader>(), header) };
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn decodes_a_chunk() {
        let bytes = chunk_record(7, 0, op::READ, 0, 3, chunk_flags::DISCOVERY, b"{}\n");
        let CaptureRecord::Chunk(c) = CaptureRecord::decode(&bytes).unwrap() else {
            panic!()
        };
        assert_eq!(
            (c.tgid, c.channel, c.direction, c.data),
            (7, Channel::Stdio(0), Io::Read, &b"{}\n"[..])
        );
        assert!(c.discovery && !c.truncated && !c.loss_before);
    }

    #[test]
    fn rejects_short_and_lying_records() {
        assert_eq!(CaptureRecord::decode(&[1, 0]), Err(DecodeError::Short(2)));
        let mut bytes = chunk_record(7, 0, op::READ, 0, 3, 0, b"abc");
        bytes.truncate(bytes.len() - 1);
        assert!(matches!(
            CaptureRecord::decode(&bytes),
            Err(DecodeError::BadLength { said: 3, held: 2 })
        ));
        assert_eq!(
            CaptureRecord::decode(&[99, 0, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::UnknownKind(99))
        );
        let past_the_end = chunk_record(7, 0, op::READ, u64::MAX - 1, 3, 0, b"abc");
        assert_eq!(
            CaptureRecord::decode(&past_the_end),
            Err(DecodeError::BadOffset { offset: u64::MAX - 1 })
        );
    }

    #[test]
    fn decodes_process_records() {
        let rec = ProcessRecord {
            kind: record::PROCESS_EXIT,
            tgid: 5,
            ts_ns: 9,
        };
        let mut bytes = vec![0u8; size_of::<ProcessRecord>()];
        unsafe { std::ptr::write_unaligned(bytes.as_mut_ptr().cast::<ProcessRecord>(), rec) };
        assert_eq!(
            CaptureRecord::decode(&bytes),
            Ok(CaptureRecord::ProcessExit { tgid: 5, ts_ns: 9 })
        );
    }
}

#[cfg(test)]
mod socket_tests {
    use super::*;

    /// An effect record as the kernel lays it out.
    #[allow(clippy::too_many_arguments)]
    pub fn effect_record(
        kind: u8,
        owner: u32,
        tgid: u32,
        ret: i64,
        flags: u64,
        fd: i32,
        path: &str,
        path2: &str,
    ) -> Vec<u8> {
        let mut rec = EffectRecord {
            kind: record::EFFECT,
            tgid,
            ts_ns: 7,
            owner,
            effect: kind,
            _pad: 0,
            family: 0,
            ret,
            flags,
            fd,
            port: 0,
            _pad2: 0,
            addr: [0; 16],
            path: [0; mcptap_common::EFFECT_PATH_MAX],
            path2: [0; mcptap_common::EFFECT_PATH_MAX],
        };
        rec.path[..path.len()].copy_from_slice(path.as_bytes());
        rec.path2[..path2.len()].copy_from_slice(path2.as_bytes());
        let mut bytes = vec![0u8; size_of::<EffectRecord>()];
        unsafe { std::ptr::write_unaligned(bytes.as_mut_ptr().cast::<EffectRecord>(), rec) };
        bytes
    }

    #[test]
    fn decodes_effect_records() {
        let open = effect_record(effect::OPEN, 10, 11, 3, 0o1101, -100, "notes.txt", "");
        let CaptureRecord::Effect(e) = CaptureRecord::decode(&open).unwrap() else {
            panic!()
        };
        assert_eq!((e.owner, e.tgid, e.ret), (10, 11, 3));
        assert_eq!(
            e.what,
            RawEffectKind::Open {
                path: PathArg {
                    dirfd: -100,
                    path: "notes.txt".into(),
                    cut: false
                },
                flags: 0o1101
            }
        );
        let rename = effect_record(effect::RENAME, 10, 10, 0, 5, 4, "a", "/tmp/b");
        let CaptureRecord::Effect(e) = CaptureRecord::decode(&rename).unwrap() else {
            panic!()
        };
        assert_eq!(
            e.what,
            RawEffectKind::Rename {
                from: PathArg {
                    dirfd: 4,
                    path: "a".into(),
                    cut: false
                },
                to: PathArg {
                    dirfd: 5,
                    path: "/tmp/b".into(),
                    cut: false
                },
            }
        );
        let long = "x".repeat(mcptap_common::EFFECT_PATH_MAX);
        let cut = effect_record(effect::UNLINK, 1, 1, 0, effect::AT_REMOVEDIR, -100, &long, "");
        let CaptureRecord::Effect(e) = CaptureRecord::decode(&cut).unwrap() else {
            panic!()
        };
        assert!(matches!(
            e.what,
            RawEffectKind::Unlink {
                path: PathArg { cut: true, .. },
                dir: true
            }
        ));
        // The arguments fill the 512 bytes of `path` and `path2`, `ret` of
        // them; what follows is not read.
        let args = effect_record(
            effect::EXEC_ARGS,
            1,
            2,
            20,
            3,
            -100,
            "git\0status\0--short\0HOME=/root",
            "",
        );
        let CaptureRecord::Effect(e) = CaptureRecord::decode(&args).unwrap() else {
            panic!()
        };
        assert_eq!(
            e.what,
            RawEffectKind::ExecArgs {
                args: vec!["status".into(), "--short".into()],
                cut: false
            }
        );
        // More arguments than the copy holds: the last one is cut.
        let long = format!("prog\0{}", "y".repeat(600));
        let (head, tail) = long.split_at(mcptap_common::EFFECT_PATH_MAX);
        let args = effect_record(
            effect::EXEC_ARGS,
            1,
            2,
            512,
            3,
            -100,
            head,
            &tail[..mcptap_common::EFFECT_PATH_MAX],
        );
        let CaptureRecord::Effect(e) = CaptureRecord::decode(&args).unwrap() else {
            panic!()
        };
        let RawEffectKind::ExecArgs { args, cut } = e.what else {
            panic!()
        };
        assert!(cut && args.len() == 1 && args[0].ends_with('…'), "{args:?}");
        // A first write: the region's `ret` bytes, across both halves.
        let head = "h".repeat(mcptap_common::EFFECT_PATH_MAX);
        let hello = effect_record(effect::HELLO, 1, 2, 300, 0, 5, &head, "GET / HTTP/1.1\r\nHost: x\r\n");
        let CaptureRecord::Effect(e) = CaptureRecord::decode(&hello).unwrap() else {
            panic!()
        };
        let RawEffectKind::Hello { fd, bytes } = e.what else {
            panic!()
        };
        assert_eq!(fd, 5);
        assert_eq!(bytes.len(), 300);
        assert!(bytes[256..].starts_with(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        // More than the region holds: only the region.
        let dns = effect_record(effect::DNS_ANSWER, 1, 2, 9999, 0, 5, "ab", "");
        let CaptureRecord::Effect(e) = CaptureRecord::decode(&dns).unwrap() else {
            panic!()
        };
        let RawEffectKind::DnsAnswer { bytes } = e.what else {
            panic!()
        };
        assert_eq!(bytes.len(), 2 * mcptap_common::EFFECT_PATH_MAX);
        // Bad input is an error, not a guess.
        let odd = effect_record(42, 1, 1, 0, 0, 0, "", "");
        assert_eq!(CaptureRecord::decode(&odd), Err(DecodeError::UnknownEffect(42)));
        let unix = effect_record(effect::CONNECT, 1, 1, 0, 0, 0, "", "");
        assert_eq!(CaptureRecord::decode(&unix), Err(DecodeError::UnknownFamily(0)));
        assert!(matches!(
            CaptureRecord::decode(&open[..100]),
            Err(DecodeError::Short(100))
        ));
    }

    #[test]
    fn decodes_socket_and_tls_records() {
        let mut rec = SocketRecord {
            kind: record::SOCKET_OPEN,
            tgid: 9,
            ts_ns: 1,
            fd: 5,
            family: 2,
            port: 8080,
            role: sock_role::CLIENT,
            listen_fd: -1,
            ..SocketRecord::default()
        };
        rec.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let mut bytes = vec![0u8; size_of::<SocketRecord>()];
        unsafe { std::ptr::write_unaligned(bytes.as_mut_ptr().cast::<SocketRecord>(), rec) };
        let CaptureRecord::SocketOpen(open) = CaptureRecord::decode(&bytes).unwrap() else {
            panic!()
        };
        assert!(!open.server);
        assert_eq!(open.peer, Some("127.0.0.1:8080".parse().unwrap()));

        let tls = TlsCloseRecord {
            kind: record::TLS_CLOSE,
            tgid: 3,
            ts_ns: 2,
            ssl: 0xdead,
        };
        let mut bytes = vec![0u8; size_of::<TlsCloseRecord>()];
        unsafe { std::ptr::write_unaligned(bytes.as_mut_ptr().cast::<TlsCloseRecord>(), tls) };
        assert_eq!(
            CaptureRecord::decode(&bytes),
            Ok(CaptureRecord::TlsClose {
                tgid: 3,
                ssl: 0xdead,
                ts_ns: 2
            })
        );
    }
}
