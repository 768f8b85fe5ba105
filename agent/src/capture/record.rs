//! Decoding of the kernel's ring buffer records into typed values.

use mcptap_common::{
    CHUNK_HEADER_LEN, ChunkHeader, ProcessRecord, SocketRecord, TlsCloseRecord, channel, chunk_flags, op, record,
    sock_role,
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
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
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

fn peer_addr(rec: &SocketRecord) -> Option<std::net::SocketAddr> {
    const AF_INET: u16 = 2;
    const AF_INET6: u16 = 10;
    let ip: std::net::IpAddr = match rec.family {
        AF_INET => std::net::Ipv4Addr::new(rec.addr[0], rec.addr[1], rec.addr[2], rec.addr[3]).into(),
        AF_INET6 => std::net::Ipv6Addr::from(rec.addr).into(),
        _ => return None,
    };
    Some(std::net::SocketAddr::new(ip, rec.port))
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
            CaptureRecord::decode(&[9, 0, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::UnknownKind(9))
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
