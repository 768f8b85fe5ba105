//! Decoding of the kernel's ring buffer records into typed values.

use mcptap_common::{CHUNK_HEADER_LEN, ChunkHeader, ProcessRecord, chunk_flags, op, record};
use thiserror::Error;

/// What the pipeline receives from the kernel, one ring buffer record each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureRecord<'a> {
    Chunk(Chunk<'a>),
    ProcessExit { tgid: u32, ts_ns: u64 },
    ProcessExec { tgid: u32, ts_ns: u64 },
}

/// Bytes a traced process read or wrote in one syscall (or part of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk<'a> {
    pub tgid: u32,
    pub tid: u32,
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
    let direction = match header.op {
        op::READ => Io::Read,
        op::WRITE => Io::Write,
        other => return Err(DecodeError::UnknownOp(other)),
    };
    Ok(Chunk {
        tgid: (header.pid_tgid >> 32) as u32,
        tid: header.pid_tgid as u32,
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
        let header = ChunkHeader {
            kind: record::CHUNK,
            len: data.len() as u32,
            ts_ns: 42,
            pid_tgid: (u64::from(tgid) << 32) | u64::from(tgid),
            call_len,
            offset,
            fd,
            op,
            flags,
            _reserved: [0; 2],
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
        assert_eq!((c.tgid, c.fd, c.direction, c.data), (7, 0, Io::Read, &b"{}\n"[..]));
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
