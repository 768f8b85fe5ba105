//! Newline framing of the stdio transport: one JSON-RPC message per line.
//!
//! Bounded: a line longer than `max_bytes` keeps its first `max_bytes`
//! bytes (and its last [`TAIL_BYTES`]) and is handed on flagged truncated
//! with its real length, so that the message can still be correlated by
//! what its prefix says. After lost bytes the framer resynchronises on the
//! next line instead of gluing unrelated bytes together.

use crate::reassembly::StreamBytes;

/// Bytes kept from the end of an oversized line (see `jsonrpc::truncated`).
pub const TAIL_BYTES: usize = 4096;

/// A complete line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The line without its terminator; only the first `max_bytes` bytes
    /// when `truncated`.
    pub bytes: Vec<u8>,
    /// The line's last bytes, only when `truncated`.
    pub tail: Vec<u8>,
    /// Real length of the line.
    pub len: usize,
    pub truncated: bool,
    /// When the line's last byte moved (its newline).
    pub ts_ns: u64,
}

/// Something that is not a frame but must be counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Bytes of a line cut by a capture gap.
    Gap { bytes: usize },
}

#[derive(Debug)]
enum State {
    /// Accumulating a line in `buf`.
    Line,
    /// The line outgrew `max_bytes`: `buf` holds its prefix.
    Oversized { len: usize, tail: Vec<u8> },
    /// After a gap: skipping to the next newline.
    Resync { skipped: usize },
}

#[derive(Debug)]
pub struct LineFramer {
    max_bytes: usize,
    buf: Vec<u8>,
    state: State,
}

#[derive(Debug, PartialEq, Eq)]
pub enum FramerOutput {
    Frame(Frame),
    Dropped(Dropped),
}

impl LineFramer {
    pub fn new(max_bytes: usize) -> Self {
        LineFramer {
            max_bytes,
            buf: Vec::new(),
            state: State::Line,
        }
    }

    /// Bytes held for an unfinished line.
    pub fn pending(&self) -> usize {
        match &self.state {
            State::Line => self.buf.len(),
            State::Oversized { len, .. } => *len,
            State::Resync { .. } => 0,
        }
    }

    pub fn push(&mut self, input: &StreamBytes<'_>, out: &mut Vec<FramerOutput>) {
        let mut data = input.data;
        if input.gap_before {
            let cut = self.pending();
            if cut > 0 {
                out.push(FramerOutput::Dropped(Dropped::Gap { bytes: cut }));
            }
            self.buf.clear();
            // Writers send whole messages per call; new bytes that open a
            // JSON value most likely start one. Otherwise skip to the next
            // newline. A wrong guess becomes a counted parse error.
            self.state = if starts_json(data) {
                State::Line
            } else {
                State::Resync { skipped: 0 }
            };
        }
        while !data.is_empty() {
            let newline = memchr::memchr(b'\n', data);
            let (piece, rest, complete) = match newline {
                Some(i) => (&data[..i], &data[i + 1..], true),
                None => (data, &data[data.len()..], false),
            };
            self.append(piece);
            if complete {
                self.finish_line(input.ts_ns, out);
            }
            data = rest;
        }
    }

    fn append(&mut self, piece: &[u8]) {
        match &mut self.state {
            State::Resync { skipped } => *skipped += piece.len(),
            State::Oversized { len, tail } => {
                *len += piece.len();
                keep_tail(tail, piece);
            }
            State::Line => {
                let room = self.max_bytes.saturating_sub(self.buf.len());
                if piece.len() <= room {
                    self.buf.extend_from_slice(piece);
                } else {
                    self.buf.extend_from_slice(&piece[..room]);
                    let mut tail = Vec::with_capacity(TAIL_BYTES);
                    keep_tail(&mut tail, &self.buf);
                    keep_tail(&mut tail, &piece[room..]);
                    self.state = State::Oversized {
                        len: self.buf.len() + piece.len() - room,
                        tail,
                    };
                }
            }
        }
    }

    fn finish_line(&mut self, ts_ns: u64, out: &mut Vec<FramerOutput>) {
        let state = std::mem::replace(&mut self.state, State::Line);
        let mut bytes = std::mem::take(&mut self.buf);
        match state {
            State::Resync { skipped } => {
                if skipped > 0 {
                    out.push(FramerOutput::Dropped(Dropped::Gap { bytes: skipped }));
                }
            }
            State::Oversized { len, tail } => {
                out.push(FramerOutput::Frame(Frame {
                    bytes,
                    tail,
                    len,
                    truncated: true,
                    ts_ns,
                }));
            }
            State::Line => {
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    return; // blank line: not a message
                }
                let len = bytes.len();
                out.push(FramerOutput::Frame(Frame {
                    bytes,
                    tail: Vec::new(),
                    len,
                    truncated: false,
                    ts_ns,
                }));
                // Do not keep a huge allocation alive for the next small line.
                if self.buf.capacity() > 1 << 20 {
                    self.buf = Vec::new();
                }
            }
        }
    }
}

fn starts_json(data: &[u8]) -> bool {
    matches!(data.first(), Some(b'{') | Some(b'['))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        capture::{Channel, Io},
        reassembly::StreamId,
    };

    fn bytes(data: &[u8], gap: bool) -> StreamBytes<'_> {
        StreamBytes {
            stream: StreamId {
                tgid: 1,
                channel: Channel::Stdio(0),
                io: Io::Read,
            },
            ts_ns: 7,
            data,
            gap_before: gap,
            discovery: false,
        }
    }

    fn frames(out: &[FramerOutput]) -> Vec<&[u8]> {
        out.iter()
            .filter_map(|o| match o {
                FramerOutput::Frame(f) => Some(&f.bytes[..]),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn splits_lines_and_joins_pieces() {
        let mut f = LineFramer::new(1024);
        let mut out = Vec::new();
        f.push(&bytes(b"{\"a\":1}\n{\"b\"", false), &mut out);
        f.push(&bytes(b":2}\r\n\n", false), &mut out);
        assert_eq!(frames(&out), vec![&b"{\"a\":1}"[..], &b"{\"b\":2}"[..]]);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn a_line_split_over_many_writes_arrives_whole() {
        let line = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#;
        let mut f = LineFramer::new(1024);
        let mut out = Vec::new();
        for b in line.iter() {
            f.push(&bytes(std::slice::from_ref(b), false), &mut out);
        }
        f.push(&bytes(b"\n", false), &mut out);
        assert_eq!(frames(&out), vec![&line[..]]);
    }

    #[test]
    fn oversized_lines_keep_prefix_tail_and_length() {
        let mut f = LineFramer::new(8);
        let mut out = Vec::new();
        let long = [b'x'; 10_000];
        f.push(&bytes(b"{\"id\":", false), &mut out);
        f.push(&bytes(&long, false), &mut out);
        f.push(&bytes(b"end}\n{}\n", false), &mut out);
        let FramerOutput::Frame(frame) = &out[0] else {
            panic!("{out:?}")
        };
        assert!(frame.truncated);
        assert_eq!(frame.len, 6 + 10_000 + 4);
        assert_eq!(&frame.bytes[..], b"{\"id\":xx");
        assert_eq!(frame.tail.len(), TAIL_BYTES);
        assert!(frame.tail.ends_with(b"xend}"));
        assert_eq!(frames(&out)[1], b"{}");
    }

    #[test]
    fn gap_drops_the_cut_line_and_resyncs() {
        let mut f = LineFramer::new(1024);
        let mut out = Vec::new();
        f.push(&bytes(b"{\"partial\":", false), &mut out);
        // Lost bytes, then the tail of some line, then a good line.
        f.push(&bytes(b"tail of something\n{\"ok\":1}\n", true), &mut out);
        assert_eq!(out[0], FramerOutput::Dropped(Dropped::Gap { bytes: 11 }));
        assert_eq!(out[1], FramerOutput::Dropped(Dropped::Gap { bytes: 17 }));
        assert_eq!(frames(&out), vec![&b"{\"ok\":1}"[..]]);
    }

    #[test]
    fn gap_followed_by_a_message_start_keeps_it() {
        let mut f = LineFramer::new(1024);
        let mut out = Vec::new();
        f.push(&bytes(b"{\"ok\":2}\n", true), &mut out);
        assert_eq!(frames(&out), vec![&b"{\"ok\":2}"[..]]);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Frames the stream in one piece, and in pieces cut at `cuts`.
        fn framed(stream: &[u8], cuts: &[usize], max: usize) -> (Vec<FramerOutput>, Vec<FramerOutput>, usize, usize) {
            let mut whole = LineFramer::new(max);
            let mut one = Vec::new();
            whole.push(&bytes(stream, false), &mut one);
            let mut split = LineFramer::new(max);
            let mut many = Vec::new();
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut at = 0;
            for cut in cuts.into_iter().chain([stream.len()]) {
                split.push(&bytes(&stream[at..cut], false), &mut many);
                at = cut;
            }
            (one, many, whole.pending(), split.pending())
        }

        proptest! {
            /// Split anywhere, same messages: what comes out does not depend
            /// on how the writer's bytes were cut into calls, for lines that
            /// fit and lines over the limit alike.
            #[test]
            fn split_anywhere_same_frames(
                lines in prop::collection::vec("[^\n]{0,300}", 0..12),
                cuts in prop::collection::vec(any::<usize>(), 0..40),
                max in 16usize..256,
                unfinished in "[^\n]{0,50}",
            ) {
                let mut stream: Vec<u8> = Vec::new();
                for l in &lines {
                    stream.extend_from_slice(l.as_bytes());
                    stream.push(b'\n');
                }
                stream.extend_from_slice(unfinished.as_bytes());
                let (one, many, pending_one, pending_many) = framed(&stream, &cuts, max);
                prop_assert_eq!(&one, &many);
                prop_assert_eq!(pending_one, pending_many);
                // Each line: its bytes (a trailing CR dropped), blank ones
                // skipped, or its first `max` bytes flagged truncated.
                let mut expected = Vec::new();
                for line in &lines {
                    let b = line.as_bytes();
                    if b.len() > max {
                        expected.push((b[..max].to_vec(), b.len(), true));
                        continue;
                    }
                    let b = b.strip_suffix(b"\r").unwrap_or(b);
                    if !b.iter().all(u8::is_ascii_whitespace) {
                        expected.push((b.to_vec(), b.len(), false));
                    }
                }
                let got: Vec<(Vec<u8>, usize, bool)> = one
                    .iter()
                    .filter_map(|o| match o {
                        FramerOutput::Frame(f) => Some((f.bytes.clone(), f.len, f.truncated)),
                        FramerOutput::Dropped(_) => None,
                    })
                    .collect();
                prop_assert_eq!(got, expected);
            }

            /// Any bytes at all, cut anywhere: the same outputs, no panic.
            #[test]
            fn junk_split_anywhere_same_outputs(
                stream in prop::collection::vec(any::<u8>(), 0..2000),
                cuts in prop::collection::vec(any::<usize>(), 0..40),
                max in 1usize..128,
            ) {
                let (one, many, pending_one, pending_many) = framed(&stream, &cuts, max);
                prop_assert_eq!(one, many);
                prop_assert_eq!(pending_one, pending_many);
            }
        }
    }
}
