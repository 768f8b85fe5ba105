//! Server-sent events (`text/event-stream`): the decoded body of a
//! streaming response, split into events as the WHATWG spec says (lines
//! end with CRLF, LF or CR; `data` lines join with LF; a blank line
//! dispatches). Events may arrive split across any number of reads.
//!
//! Bounded: `data` streams into a [`BodyBuf`] (an event of 50 MiB keeps
//! its prefix, tail and length), other fields keep at most 1 KiB.

use super::body::BodyBuf;

const MAX_FIELD: usize = 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event` field (`None` means the default, "message").
    pub event: Option<String>,
    pub data: BodyBuf,
    pub id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// Reading the field name.
    Name,
    Data,
    Event,
    Id,
    /// `retry`, comments and unknown fields.
    Skip,
}

#[derive(Debug)]
pub struct SseParser {
    field: Field,
    name: Vec<u8>,
    value: Vec<u8>,
    /// The value's first byte is next (a single leading space is dropped).
    value_start: bool,
    /// The previous line ended with CR: a LF right after it is part of it.
    after_cr: bool,
    event: Option<String>,
    id: Option<String>,
    data: BodyBuf,
    has_data: bool,
}

impl SseParser {
    pub fn new(max_data: usize) -> Self {
        SseParser {
            field: Field::Name,
            name: Vec::new(),
            value: Vec::new(),
            value_start: false,
            after_cr: false,
            event: None,
            id: None,
            data: BodyBuf::new(max_data),
            has_data: false,
        }
    }

    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) {
        while !bytes.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if bytes[0] == b'\n' {
                    bytes = &bytes[1..];
                    continue;
                }
            }
            let eol = memchr::memchr2(b'\n', b'\r', bytes);
            let (piece, ended) = match eol {
                Some(i) => (&bytes[..i], true),
                None => (bytes, false),
            };
            self.take(piece);
            if ended {
                let i = eol.unwrap_or_default();
                self.after_cr = bytes[i] == b'\r';
                bytes = &bytes[i + 1..];
                self.end_line(out);
            } else {
                bytes = &[];
            }
        }
    }

    /// Bytes of the current line (no line ending inside).
    fn take(&mut self, mut piece: &[u8]) {
        if self.field == Field::Name {
            match memchr::memchr(b':', piece) {
                Some(i) => {
                    self.push_name(&piece[..i]);
                    piece = &piece[i + 1..];
                    self.field = match self.name.as_slice() {
                        b"data" => Field::Data,
                        b"event" => Field::Event,
                        b"id" => Field::Id,
                        _ => Field::Skip, // comments (empty name), retry, unknown
                    };
                    if self.field == Field::Data {
                        if self.has_data {
                            self.data.push(b"\n");
                        }
                        self.has_data = true;
                    }
                    self.value_start = true;
                }
                None => {
                    self.push_name(piece);
                    return;
                }
            }
        }
        if self.value_start && !piece.is_empty() {
            self.value_start = false;
            if piece[0] == b' ' {
                piece = &piece[1..];
            }
        }
        match self.field {
            Field::Data => self.data.push(piece),
            Field::Event | Field::Id => {
                let room = MAX_FIELD.saturating_sub(self.value.len());
                self.value.extend_from_slice(&piece[..piece.len().min(room)]);
            }
            Field::Skip | Field::Name => {}
        }
    }

    fn push_name(&mut self, piece: &[u8]) {
        let room = 16usize.saturating_sub(self.name.len());
        self.name.extend_from_slice(&piece[..piece.len().min(room)]);
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let field = std::mem::replace(&mut self.field, Field::Name);
        let name = std::mem::take(&mut self.name);
        let value = std::mem::take(&mut self.value);
        self.value_start = false;
        match field {
            Field::Name if name.is_empty() => self.dispatch(out),
            // A field name alone: its value is empty.
            Field::Name => {
                if name == b"data" {
                    if self.has_data {
                        self.data.push(b"\n");
                    }
                    self.has_data = true;
                }
            }
            Field::Event => self.event = Some(String::from_utf8_lossy(&value).into_owned()),
            Field::Id => self.id = Some(String::from_utf8_lossy(&value).into_owned()),
            Field::Data | Field::Skip => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if !self.has_data {
            return; // no data: nothing is dispatched (the spec's rule)
        }
        self.has_data = false;
        out.push(SseEvent {
            event,
            data: self.data.take(),
            id: self.id.clone(),
        });
    }

    /// Bytes held for an event not dispatched yet.
    pub fn pending(&self) -> usize {
        self.data.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(pieces: &[&[u8]]) -> Vec<(Option<String>, Vec<u8>, Option<String>)> {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for piece in pieces {
            p.feed(piece, &mut out);
        }
        out.into_iter().map(|e| (e.event, e.data.bytes, e.id)).collect()
    }

    #[test]
    fn parses_events_split_anywhere() {
        let wire = b"event: endpoint\r\ndata: /messages/?session_id=abc\r\n\r\n: ping\r\n\r\nevent: message\ndata: {\"a\":\ndata: 1}\nid: 7\n\n";
        for split in 0..wire.len() {
            let got = events(&[&wire[..split], &wire[split..]]);
            assert_eq!(got.len(), 2, "split at {split}: {got:?}");
            assert_eq!(got[0].0.as_deref(), Some("endpoint"));
            assert_eq!(got[0].1, b"/messages/?session_id=abc");
            assert_eq!(got[1].0.as_deref(), Some("message"));
            assert_eq!(got[1].1, b"{\"a\":\n1}");
            assert_eq!(got[1].2.as_deref(), Some("7"));
        }
    }

    #[test]
    fn cr_only_line_endings_and_empty_data() {
        let got = events(&[b"data:x\r\rdata\r\r"]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, b"x");
        assert_eq!(got[1].1, b"");
    }

    #[test]
    fn huge_events_are_bounded() {
        let mut p = SseParser::new(16);
        let mut out = Vec::new();
        p.feed(b"data: ", &mut out);
        for _ in 0..1000 {
            p.feed(&[b'x'; 1000], &mut out);
        }
        p.feed(b"\n\n", &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data.len, 1_000_000);
        assert!(out[0].data.truncated());
        assert_eq!(out[0].data.bytes.len(), 16);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// Events may arrive split across any number of reads: the same
            /// events come out however the stream was cut.
            #[test]
            fn split_anywhere_same_events(
                stream in "((event: [a-z]{1,8}\r?\n)?(id: [0-9]{1,4}\r?\n)?(data: [ -~]{0,60}\r?\n){1,3}(: comment\n)?\r?\n){0,8}",
                cuts in prop::collection::vec(any::<usize>(), 0..30),
            ) {
                let stream = stream.as_bytes();
                let mut one = Vec::new();
                SseParser::new(1 << 16).feed(stream, &mut one);
                let mut many = Vec::new();
                let mut parser = SseParser::new(1 << 16);
                let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
                cuts.sort_unstable();
                let mut at = 0;
                for cut in cuts.into_iter().chain([stream.len()]) {
                    parser.feed(&stream[at..cut], &mut many);
                    at = cut;
                }
                prop_assert_eq!(one, many);
            }
        }
    }
}
