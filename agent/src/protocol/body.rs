//! Bounded message bodies and HTTP/1.1 chunked transfer decoding.
//!
//! A body keeps at most `max` bytes from its start (where a JSON-RPC
//! message says who it is) and the last [`TAIL_BYTES`] (where a tool result
//! says `isError`), and its real length: a 50 MiB upload costs `max` bytes
//! of memory, not 50 MiB, and is still correlated.

use thiserror::Error;

use super::ndjson::TAIL_BYTES;

/// A body being received.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BodyBuf {
    max: usize,
    pub bytes: Vec<u8>,
    pub tail: Vec<u8>,
    pub len: usize,
}

impl BodyBuf {
    pub fn new(max: usize) -> Self {
        BodyBuf {
            max,
            ..BodyBuf::default()
        }
    }

    pub fn truncated(&self) -> bool {
        self.len > self.bytes.len()
    }

    pub fn push(&mut self, piece: &[u8]) {
        self.len += piece.len();
        let room = self.max.saturating_sub(self.bytes.len());
        if room > 0 {
            self.bytes.extend_from_slice(&piece[..piece.len().min(room)]);
        }
        if self.len > self.max {
            keep_tail(&mut self.tail, piece);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn take(&mut self) -> BodyBuf {
        let max = self.max;
        std::mem::replace(self, BodyBuf::new(max))
    }
}

fn keep_tail(tail: &mut Vec<u8>, piece: &[u8]) {
    if piece.len() >= TAIL_BYTES {
        tail.clear();
        tail.extend_from_slice(&piece[piece.len() - TAIL_BYTES..]);
        return;
    }
    let excess = (tail.len() + piece.len()).saturating_sub(TAIL_BYTES);
    tail.drain(..excess);
    tail.extend_from_slice(piece);
}

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    #[error("chunk size line is not hexadecimal")]
    BadSize,
    #[error("chunk size line too long")]
    LongLine,
    #[error("chunk data not followed by CRLF")]
    MissingCrlf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

/// Incremental decoder of `Transfer-Encoding: chunked`.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    line: Vec<u8>,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: State::Size,
            line: Vec::new(),
        }
    }
}

const MAX_LINE: usize = 1024;

impl Chunked {
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input`, handing payload to `sink`. Returns the bytes
    /// consumed (less than `input.len()` only once done: the rest belongs
    /// to the next message).
    pub fn feed(&mut self, input: &[u8], mut sink: impl FnMut(&[u8])) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Size | State::Trailer => {
                    let Some(nl) = memchr::memchr(b'\n', &input[i..]) else {
                        self.line.extend_from_slice(&input[i..]);
                        if self.line.len() > MAX_LINE {
                            return Err(ChunkError::LongLine);
                        }
                        return Ok(input.len());
                    };
                    self.line.extend_from_slice(&input[i..i + nl]);
                    i += nl + 1;
                    if self.line.len() > MAX_LINE {
                        return Err(ChunkError::LongLine);
                    }
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    if self.state == State::Trailer {
                        if line.is_empty() {
                            self.state = State::Done;
                            return Ok(i);
                        }
                        continue; // a trailer field: skipped
                    }
                    // size [; extensions]
                    let size = line.split(|b| *b == b';').next().unwrap_or_default();
                    let size = std::str::from_utf8(size).map_err(|_| ChunkError::BadSize)?.trim();
                    if size.is_empty() || size.len() > 16 {
                        return Err(ChunkError::BadSize);
                    }
                    let n = u64::from_str_radix(size, 16).map_err(|_| ChunkError::BadSize)?;
                    self.state = if n == 0 { State::Trailer } else { State::Data(n) };
                }
                State::Data(left) => {
                    let n = ((input.len() - i) as u64).min(left) as usize;
                    sink(&input[i..i + n]);
                    i += n;
                    self.state = if left == n as u64 {
                        State::DataEnd
                    } else {
                        State::Data(left - n as u64)
                    };
                }
                State::DataEnd => {
                    // CRLF (or a bare LF) after the data.
                    match input[i] {
                        b'\r' if self.line.is_empty() => {
                            self.line.push(b'\r');
                            i += 1;
                        }
                        b'\n' => {
                            self.line.clear();
                            self.state = State::Size;
                            i += 1;
                        }
                        _ => return Err(ChunkError::MissingCrlf),
                    }
                }
                State::Done => return Ok(i),
            }
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(pieces: &[&[u8]]) -> Result<(Vec<u8>, bool, usize), ChunkError> {
        let mut d = Chunked::default();
        let mut out = Vec::new();
        let mut rest = 0;
        for p in pieces {
            let used = d.feed(p, |b| out.extend_from_slice(b))?;
            rest += p.len() - used;
        }
        Ok((out, d.done(), rest))
    }

    #[test]
    fn decodes_chunks_split_anywhere() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        for split in 0..wire.len() {
            let (out, done, rest) = decode(&[&wire[..split], &wire[split..]]).unwrap();
            assert_eq!(out, b"hello, world");
            assert!(done);
            assert_eq!(rest, 4, "the next message's bytes are left over");
        }
    }

    #[test]
    fn rejects_bogus_sizes() {
        assert_eq!(decode(&[b"zz\r\nabc"]).unwrap_err(), ChunkError::BadSize);
        assert_eq!(decode(&[b"\r\n"]).unwrap_err(), ChunkError::BadSize);
        assert_eq!(decode(&[b"3\r\nabcX"]).unwrap_err(), ChunkError::MissingCrlf);
        assert_eq!(decode(&[&[b'1'; 2000]]).unwrap_err(), ChunkError::LongLine);
        assert_eq!(decode(&[b"fffffffffffffffff\r\n"]).unwrap_err(), ChunkError::BadSize);
    }

    #[test]
    fn bodies_keep_prefix_tail_and_length() {
        let mut b = BodyBuf::new(4);
        b.push(b"ab");
        b.push(b"cdefgh");
        assert_eq!((b.bytes.as_slice(), b.len, b.truncated()), (&b"abcd"[..], 8, true));
        assert!(b.tail.ends_with(b"gh"));
        let mut small = BodyBuf::new(100);
        small.push(b"{}");
        assert!(!small.truncated() && small.tail.is_empty());
    }
}
