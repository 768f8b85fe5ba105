//! Reassembly stage: turns kernel chunks into ordered byte runs per stream,
//! flagging every place where bytes are missing.
//!
//! The kernel sends the chunks of one call back to back and calls of one
//! stream in order (one thread's calls cannot overlap, and the ring buffer
//! orders records by reservation). Bytes go missing when the ring buffer is
//! full, a copy fails, or a call exceeds the capture cap; the next bytes of
//! that stream then carry `gap_before` so the framer can resynchronise
//! instead of gluing unrelated bytes together.

use std::collections::HashMap;

use crate::capture::{Channel, Chunk, Io};

/// One direction of one channel (stdio descriptor, socket, TLS session) of
/// one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    pub tgid: u32,
    pub channel: Channel,
    pub io: Io,
}

/// Bytes of a stream, in order, with what is known about what came before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamBytes<'a> {
    pub stream: StreamId,
    pub ts_ns: u64,
    pub data: &'a [u8],
    /// Bytes of this stream were lost right before these.
    pub gap_before: bool,
    /// The kernel sniffed these bytes from a process it did not track yet.
    pub discovery: bool,
}

#[derive(Debug, Default)]
struct StreamState {
    /// Offset the next chunk of the current call should have.
    next_offset: u64,
    /// Bytes the current call moved.
    call_len: u64,
    /// Loss epoch of the process this stream has accounted for.
    seen_loss_epoch: u64,
}

#[derive(Debug, Default)]
pub struct Reassembler {
    streams: HashMap<StreamId, StreamState>,
    /// Per process: how many times the kernel reported lost data.
    loss_epochs: HashMap<u32, u64>,
    /// Gaps found (each is a place where bytes were lost).
    pub gaps: u64,
}

impl Reassembler {
    /// Streams and processes held (the soak test watches them).
    pub fn sizes(&self) -> [usize; 2] {
        [self.streams.len(), self.loss_epochs.len()]
    }

    pub fn push<'a>(&mut self, chunk: &Chunk<'a>) -> StreamBytes<'a> {
        let stream = StreamId {
            tgid: chunk.tgid,
            channel: chunk.channel,
            io: chunk.direction,
        };
        let epoch = self.loss_epochs.entry(chunk.tgid).or_default();
        if chunk.loss_before {
            // The kernel does not know which stream lost bytes: all of the
            // process's streams resynchronise.
            *epoch = epoch.wrapping_add(1);
        }
        let epoch = *epoch;
        let state = self.streams.entry(stream).or_default();

        let mut gap = state.seen_loss_epoch < epoch;
        state.seen_loss_epoch = epoch;
        if chunk.offset == 0 {
            // A new call: the previous one must have been complete.
            gap |= state.next_offset < state.call_len;
        } else {
            gap |= chunk.offset != state.next_offset;
        }
        state.call_len = chunk.call_len;
        // Decoded chunks cannot overflow here (`DecodeError::BadOffset`);
        // saturating all the same: this stage takes chunks from anywhere.
        state.next_offset = chunk.offset.saturating_add(chunk.data.len() as u64);
        if gap {
            self.gaps += 1;
        }
        StreamBytes {
            stream,
            ts_ns: chunk.ts_ns,
            data: chunk.data,
            gap_before: gap,
            discovery: chunk.discovery,
        }
    }

    /// Forgets a process's streams (it exited or was rejected).
    pub fn forget_process(&mut self, tgid: u32) {
        self.streams.retain(|id, _| id.tgid != tgid);
        self.loss_epochs.remove(&tgid);
    }

    /// Forgets both directions of one channel (a connection closed).
    pub fn forget_channel(&mut self, tgid: u32, channel: Channel) {
        for io in [Io::Read, Io::Write] {
            self.streams.remove(&StreamId { tgid, channel, io });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(offset: u64, call_len: u64, data: &'static [u8]) -> Chunk<'static> {
        Chunk {
            tgid: 1,
            tid: 1,
            channel: Channel::Stdio(0),
            fd: 0,
            direction: Io::Read,
            ts_ns: 0,
            call_len,
            offset,
            truncated: false,
            discovery: false,
            loss_before: false,
            data,
        }
    }

    #[test]
    fn an_offset_at_the_end_of_the_range_is_a_gap_not_a_panic() {
        // Found by the `records` fuzz target (an offset near u64::MAX).
        let mut r = Reassembler::default();
        assert!(r.push(&chunk(u64::MAX - 1, 6, b"abcdef")).gap_before);
        assert!(!r.push(&chunk(0, 2, b"gh")).gap_before);
        assert_eq!(r.gaps, 1);
    }

    #[test]
    fn contiguous_chunks_have_no_gap() {
        let mut r = Reassembler::default();
        assert!(!r.push(&chunk(0, 6, b"abc")).gap_before);
        assert!(!r.push(&chunk(3, 6, b"def")).gap_before);
        assert!(!r.push(&chunk(0, 2, b"gh")).gap_before);
        assert_eq!(r.gaps, 0);
    }

    #[test]
    fn missing_middle_or_tail_is_a_gap() {
        let mut r = Reassembler::default();
        r.push(&chunk(0, 9, b"abc"));
        assert!(r.push(&chunk(6, 9, b"ghi")).gap_before, "middle chunk lost");
        r.push(&chunk(0, 6, b"abc"));
        assert!(
            r.push(&chunk(0, 1, b"x")).gap_before,
            "tail of previous call lost (e.g. truncated)"
        );
        assert_eq!(r.gaps, 2);
    }

    #[test]
    fn kernel_loss_marks_every_stream_of_the_process() {
        let mut r = Reassembler::default();
        r.push(&chunk(0, 1, b"a"));
        let mut w = chunk(0, 1, b"b");
        w.direction = Io::Write;
        w.channel = Channel::Stdio(1);
        r.push(&w);
        let mut lost = chunk(0, 1, b"c");
        lost.loss_before = true;
        assert!(r.push(&lost).gap_before);
        assert!(r.push(&w).gap_before, "the write stream learns of the loss too");
        assert!(!r.push(&w).gap_before);
    }
}
