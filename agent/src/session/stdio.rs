//! The stdio streams of watched processes: the stdio path of the sessions
//! stage — records in, outputs out.
//!
//! The kernel sends only what a server read from its stdin (or a copy of
//! it) and wrote to its stdout (or a copy): reads are the client's
//! messages, writes the server's. Per stream: bytes in order
//! (reassembly), newline framing, JSON-RPC, then the session table.

use std::collections::{HashMap, HashSet};

use super::{Direction, Origin, Output, Problem, SessionKey, SessionTable};
use crate::{
    capture::{Chunk, Io},
    protocol::{
        jsonrpc::{self, Parsed},
        ndjson::{Dropped, FramerOutput, LineFramer},
    },
    reassembly::{Reassembler, StreamId},
};

pub struct StdioStreams {
    max_message_bytes: usize,
    reassembler: Reassembler,
    framers: HashMap<StreamId, LineFramer>,
    /// Processes the agent stopped tracking: their records still in the
    /// ring buffer are ignored.
    rejected: HashSet<u32>,
    /// Per server process, the descriptor its client's messages arrive on.
    in_fds: HashMap<u32, i32>,
    framed: Vec<FramerOutput>,
}

/// Which way a stdio chunk's bytes went.
fn direction(io: Io) -> Direction {
    match io {
        Io::Read => Direction::ClientToServer,
        Io::Write => Direction::ServerToClient,
    }
}

impl StdioStreams {
    pub fn new(max_message_bytes: usize) -> StdioStreams {
        StdioStreams {
            max_message_bytes,
            reassembler: Reassembler::default(),
            framers: HashMap::new(),
            rejected: HashSet::new(),
            in_fds: HashMap::new(),
            framed: Vec::new(),
        }
    }

    /// The descriptor a server reads its client's messages on (0 when not
    /// seen yet): how its client is found (enrich).
    pub fn in_fd(&self, tgid: u32) -> i32 {
        self.in_fds.get(&tgid).copied().unwrap_or(0)
    }

    /// Bytes a process read from or wrote to its stdio. `selected`: whether
    /// the operator selected it (never rejected then), asked only when its
    /// session opens (it is a look into the kernel's map); `payloads`:
    /// build payload trees.
    pub fn on_chunk(
        &mut self,
        chunk: &Chunk<'_>,
        selected: impl FnOnce() -> bool,
        payloads: bool,
        sessions: &mut SessionTable,
        out: &mut Vec<Output>,
    ) {
        if self.rejected.contains(&chunk.tgid) {
            return;
        }
        let direction = direction(chunk.direction);
        let key = SessionKey::Stdio { tgid: chunk.tgid };
        if direction == Direction::ClientToServer {
            self.in_fds.insert(chunk.tgid, chunk.fd);
        }
        if !sessions.contains(&key) {
            let origin = if !chunk.discovery && selected() {
                Origin::Selected
            } else {
                Origin::Discovered
            };
            sessions.open(&key, origin, chunk.ts_ns, out);
        }
        let bytes = self.reassembler.push(chunk);
        if bytes.gap_before {
            out.push(Output::Problem(Problem::Gap));
        }
        let max = self.max_message_bytes;
        let framer = self.framers.entry(bytes.stream).or_insert_with(|| LineFramer::new(max));
        framer.push(&bytes, &mut self.framed);

        let framed = std::mem::take(&mut self.framed);
        for item in &framed {
            match item {
                FramerOutput::Frame(frame) => {
                    let parsed = if frame.truncated {
                        out.push(Output::Problem(Problem::Truncated));
                        match jsonrpc::parse_truncated(&frame.bytes, &frame.tail, frame.len) {
                            Ok(m) => Parsed {
                                messages: vec![m],
                                ..Parsed::default()
                            },
                            Err(e) => Parsed {
                                errors: vec![e],
                                ..Parsed::default()
                            },
                        }
                    } else {
                        jsonrpc::parse(&frame.bytes, payloads)
                    };
                    if parsed.utf8_replaced {
                        out.push(Output::Problem(Problem::Parse("invalid_utf8_replaced")));
                    }
                    for err in &parsed.errors {
                        out.push(Output::Problem(Problem::Parse(err.kind())));
                        tracing::debug!(
                            pid = key.tgid(),
                            direction = direction.as_str(),
                            "dropped a frame: {err}"
                        );
                        sessions.on_malformed(&key, direction, out);
                    }
                    for msg in parsed.messages {
                        sessions.on_message(&key, direction, frame.ts_ns, msg, None, out);
                    }
                }
                FramerOutput::Dropped(Dropped::Gap { bytes }) => {
                    out.push(Output::Problem(Problem::Parse("capture_gap")));
                    tracing::debug!(pid = key.tgid(), bytes, "dropped bytes cut by a capture gap");
                }
            }
        }
        self.framed = framed;
        self.framed.clear();
    }

    /// Discovery found the process does not speak MCP: its streams go, and
    /// what of it is still in the ring buffer is ignored.
    pub fn reject(&mut self, tgid: u32) {
        self.rejected.insert(tgid);
        self.forget(tgid);
    }

    /// The process ended: a message cut short is counted.
    pub fn on_exit(&mut self, tgid: u32, out: &mut Vec<Output>) {
        for (id, framer) in self.framers.iter().filter(|(id, _)| id.tgid == tgid) {
            if framer.pending() > 0 {
                out.push(Output::Problem(Problem::Parse("exited_mid_message")));
                tracing::debug!(
                    pid = tgid,
                    channel = ?id.channel,
                    bytes = framer.pending(),
                    "process exited mid-message"
                );
            }
        }
        self.rejected.remove(&tgid);
        self.forget(tgid);
    }

    fn forget(&mut self, tgid: u32) {
        self.in_fds.remove(&tgid);
        self.framers.retain(|id, _| id.tgid != tgid);
        self.reassembler.forget_process(tgid);
    }

    /// Every table, named (`mcptap_table_entries`; the soak test checks
    /// none grows).
    pub fn tables(&self) -> Vec<(&'static str, usize)> {
        let [streams, epochs] = self.reassembler.sizes();
        vec![
            ("stdio_framers", self.framers.len()),
            ("stdio_rejected", self.rejected.len()),
            ("stdio_in_fds", self.in_fds.len()),
            ("stdio_streams", streams),
            ("stdio_loss_epochs", epochs),
        ]
    }
}
