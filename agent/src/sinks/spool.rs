//! The on-disk spool of a network sink: events wait here until the
//! receiver has acknowledged them, so an outage of minutes (or an agent
//! restart) loses nothing.
//!
//! Layout: segment files `00000000000000000001.ndjson`, ... holding one
//! event per line, and `cursor` holding "SEGMENT OFFSET" of the first
//! event not yet acknowledged. The writer appends to the newest segment;
//! the delivery task reads from the cursor and moves it only after the
//! receiver said yes; fully read segments are deleted. Bounded: past
//! `max_bytes` of unacknowledged events, new ones are refused (and the
//! caller counts them).
//!
//! Delivery is exactly once across receiver outages; a crash between a
//! delivery and the cursor write can send that one batch again (event ids
//! let receivers tell).

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::Mutex,
};

/// Where the next unacknowledged event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.segment, self.offset)
    }
}

/// Events read from the spool, not yet acknowledged.
#[derive(Debug)]
pub struct Batch {
    pub lines: Vec<String>,
    /// Where this batch starts (a stable id for it, across retries and
    /// restarts) and where the next one starts.
    pub start: Position,
    pub end: Position,
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    /// Bytes written and flushed: the reader's limit.
    len: u64,
}

#[derive(Debug)]
struct State {
    segments: VecDeque<Segment>,
    read: Position,
    /// Bytes written but not acknowledged.
    pending: u64,
    /// The writer is gone: nothing more will come.
    closed: bool,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    state: Mutex<State>,
    /// Wakes the delivery task when events arrive (or the writer closes).
    pub ready: tokio::sync::Notify,
}

/// The writing end: owned by one thread.
pub struct SpoolWriter {
    out: BufWriter<File>,
    seq: u64,
    /// Bytes in the current segment, flushed or not.
    written: u64,
    /// Bytes accepted since the last flush.
    unflushed: u64,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, keeping whatever a previous
    /// run left unacknowledged.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<(Spool, SpoolWriter)> {
        Spool::open_with_segments(dir, max_bytes, 16 << 20)
    }

    pub fn open_with_segments(dir: &Path, max_bytes: u64, segment_bytes: u64) -> io::Result<(Spool, SpoolWriter)> {
        fs::create_dir_all(dir)?;
        let mut seqs: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".ndjson")
                    .and_then(|s| s.parse().ok())
            })
            .collect();
        seqs.sort_unstable();
        let mut segments = VecDeque::new();
        for seq in seqs {
            let path = segment_path(dir, seq);
            let len = complete_length(&path)?;
            segments.push_back(Segment { seq, len });
        }
        let mut read = read_cursor(dir).unwrap_or(Position { segment: 0, offset: 0 });
        // Segments before the cursor were delivered; a cursor in a segment
        // that is gone (deleted by hand) starts at the next one.
        while segments.front().is_some_and(|s| s.seq < read.segment) {
            if let Some(s) = segments.pop_front() {
                let _ = fs::remove_file(segment_path(dir, s.seq));
            }
        }
        match segments.front() {
            Some(s) if s.seq != read.segment => {
                read = Position {
                    segment: s.seq,
                    offset: 0,
                }
            }
            Some(s) => read.offset = read.offset.min(s.len),
            None => {}
        }
        // New events go to a new segment: old ones may end mid-way through a
        // line cut by a crash (they are read only up to their last newline).
        let seq = segments.back().map_or(read.segment.max(1), |s| s.seq + 1);
        if segments.is_empty() {
            read = Position {
                segment: seq,
                offset: 0,
            };
        }
        let pending = segments
            .iter()
            .map(|s| {
                if s.seq == read.segment {
                    s.len - read.offset
                } else {
                    s.len
                }
            })
            .sum();
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(dir, seq))?;
        segments.push_back(Segment { seq, len: 0 });
        let spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes,
            state: Mutex::new(State {
                segments,
                read,
                pending,
                closed: false,
            }),
            ready: tokio::sync::Notify::new(),
        };
        let writer = SpoolWriter {
            out: BufWriter::new(out),
            seq,
            written: 0,
            unflushed: 0,
        };
        Ok((spool, writer))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent state
        // (every update is a few assignments): keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes waiting for delivery.
    pub fn pending_bytes(&self) -> u64 {
        self.lock().pending
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Appends one event; `Ok(false)` when the spool is full.
    pub fn append(&self, w: &mut SpoolWriter, line: &str) -> io::Result<bool> {
        let len = line.len() as u64 + 1;
        {
            let st = self.lock();
            if st.pending + w.unflushed + len > self.max_bytes {
                return Ok(false);
            }
        }
        if w.written > 0 && w.written + len > self.segment_bytes {
            self.flush(w)?;
            w.seq += 1;
            w.out = BufWriter::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(segment_path(&self.dir, w.seq))?,
            );
            w.written = 0;
            self.lock().segments.push_back(Segment { seq: w.seq, len: 0 });
        }
        w.out.write_all(line.as_bytes())?;
        w.out.write_all(b"\n")?;
        w.written += len;
        w.unflushed += len;
        Ok(true)
    }

    /// Makes appended events visible to the reader.
    pub fn flush(&self, w: &mut SpoolWriter) -> io::Result<()> {
        if w.unflushed == 0 {
            return Ok(());
        }
        w.out.flush()?;
        {
            let mut st = self.lock();
            if let Some(seg) = st.segments.iter_mut().find(|s| s.seq == w.seq) {
                seg.len = w.written;
            }
            st.pending += w.unflushed;
        }
        w.unflushed = 0;
        self.ready.notify_one();
        Ok(())
    }

    pub fn close(&self, w: &mut SpoolWriter) -> io::Result<()> {
        let r = self.flush(w);
        self.lock().closed = true;
        self.ready.notify_one();
        r
    }

    /// Up to `max_events` events (and about `max_bytes`) from the cursor;
    /// `None` when nothing is waiting.
    pub fn read_batch(&self, max_events: usize, max_bytes: usize) -> io::Result<Option<Batch>> {
        let (start, limit) = {
            let mut st = self.lock();
            // Past the end of a finished segment: on to the next.
            loop {
                let read = st.read;
                let (len, is_last) = match st.segments.iter().position(|s| s.seq == read.segment) {
                    Some(i) => (st.segments[i].len, i + 1 == st.segments.len()),
                    None => return Ok(None),
                };
                if read.offset < len {
                    break (read, len);
                }
                if is_last {
                    return Ok(None);
                }
                let next = st.segments.iter().find(|s| s.seq > read.segment).map(|s| s.seq);
                match next {
                    Some(seq) => {
                        st.read = Position {
                            segment: seq,
                            offset: 0,
                        }
                    }
                    None => return Ok(None),
                }
            }
        };
        let mut file = File::open(segment_path(&self.dir, start.segment))?;
        file.seek(SeekFrom::Start(start.offset))?;
        let available = limit - start.offset;
        let mut buf = Vec::new();
        (&mut file)
            .take(available.min(max_bytes.max(1) as u64))
            .read_to_end(&mut buf)?;
        // A line longer than max_bytes: read on to its end.
        if !buf.contains(&b'\n') {
            let mut rest = Vec::new();
            (&mut file).take(available - buf.len() as u64).read_to_end(&mut rest)?;
            let end = rest.iter().position(|&b| b == b'\n').map_or(rest.len(), |i| i + 1);
            buf.extend_from_slice(&rest[..end]);
        }
        let mut lines = Vec::new();
        let mut used = 0usize;
        for line in buf.split_inclusive(|&b| b == b'\n') {
            if lines.len() == max_events || !line.ends_with(b"\n") {
                break;
            }
            used += line.len();
            let text = &line[..line.len() - 1];
            match std::str::from_utf8(text) {
                Ok(s) if !s.is_empty() => lines.push(s.to_string()),
                // Never written by us: skip rather than block the spool.
                _ => tracing::warn!(segment = start.segment, "unreadable line in the spool skipped"),
            }
        }
        Ok(Some(Batch {
            lines,
            start,
            end: Position {
                segment: start.segment,
                offset: start.offset + used as u64,
            },
        }))
    }

    /// The receiver has the batch: move the cursor past it, persist the
    /// cursor, delete segments read to their end.
    pub fn acknowledge(&self, batch: &Batch) -> io::Result<()> {
        let delete: Vec<u64> = {
            let mut st = self.lock();
            if batch.end <= st.read {
                return Ok(());
            }
            st.pending = st.pending.saturating_sub(batch.end.offset - batch.start.offset);
            st.read = batch.end;
            let mut gone = Vec::new();
            while st.segments.len() > 1 && st.segments.front().is_some_and(|s| s.seq < st.read.segment) {
                if let Some(s) = st.segments.pop_front() {
                    gone.push(s.seq);
                }
            }
            // The cursor's own segment, read to its end: the next read moves
            // on, and the acknowledgement after that deletes it.
            gone
        };
        write_cursor(&self.dir, batch.end)?;
        for seq in delete {
            let _ = fs::remove_file(segment_path(&self.dir, seq));
        }
        Ok(())
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.ndjson"))
}

/// The length up to the last newline: a crash can leave half a line.
fn complete_length(path: &Path) -> io::Result<u64> {
    let data = fs::read(path)?;
    Ok(data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i as u64 + 1))
}

fn read_cursor(dir: &Path) -> Option<Position> {
    let text = fs::read_to_string(dir.join("cursor")).ok()?;
    let mut parts = text.split_whitespace();
    Some(Position {
        segment: parts.next()?.parse().ok()?,
        offset: parts.next()?.parse().ok()?,
    })
}

fn write_cursor(dir: &Path, pos: Position) -> io::Result<()> {
    crate::statefile::write_atomically(
        &dir.join("cursor"),
        format!("{} {}\n", pos.segment, pos.offset).as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(spool: &Spool, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(b) = spool.read_batch(max, 1 << 20).unwrap() {
            if b.lines.is_empty() && b.start == b.end {
                break;
            }
            out.extend(b.lines.iter().cloned());
            spool.acknowledge(&b).unwrap();
        }
        out
    }

    #[test]
    fn delivers_in_order_across_segments_and_deletes_them() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, mut w) = Spool::open_with_segments(dir.path(), 1 << 20, 100).unwrap();
        for i in 0..50 {
            assert!(spool.append(&mut w, &format!("{{\"i\":{i}}}")).unwrap());
        }
        spool.flush(&mut w).unwrap();
        let got = drain(&spool, 7);
        let want: Vec<String> = (0..50).map(|i| format!("{{\"i\":{i}}}")).collect();
        assert_eq!(got, want);
        assert_eq!(spool.pending_bytes(), 0);
        let segments = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "ndjson"))
            .count();
        assert!(segments <= 2, "read segments are deleted ({segments} left)");
    }

    #[test]
    fn unacknowledged_batches_are_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, mut w) = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 0..5 {
            spool.append(&mut w, &i.to_string()).unwrap();
        }
        // Not flushed: not visible yet.
        assert!(spool.read_batch(3, 1 << 20).unwrap().is_none());
        spool.flush(&mut w).unwrap();
        let a = spool.read_batch(3, 1 << 20).unwrap().unwrap();
        let again = spool.read_batch(3, 1 << 20).unwrap().unwrap();
        assert_eq!(a.lines, again.lines);
        assert_eq!(a.start, again.start);
        spool.acknowledge(&a).unwrap();
        assert_eq!(spool.read_batch(3, 1 << 20).unwrap().unwrap().lines, ["3", "4"]);
    }

    #[test]
    fn survives_a_restart_and_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (spool, mut w) = Spool::open_with_segments(dir.path(), 1 << 20, 64).unwrap();
            for i in 0..20 {
                spool.append(&mut w, &format!("event-{i:02}")).unwrap();
            }
            spool.flush(&mut w).unwrap();
            let b = spool.read_batch(4, 1 << 20).unwrap().unwrap();
            spool.acknowledge(&b).unwrap();
        }
        // A crash mid-write left half a line at the end of the newest segment.
        let mut newest: Vec<PathBuf> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
            .collect();
        newest.sort();
        let last = newest.last().unwrap().clone();
        let mut f = OpenOptions::new().append(true).open(&last).unwrap();
        f.write_all(b"event-torn").unwrap();
        drop(f);

        let (spool, mut w) = Spool::open_with_segments(dir.path(), 1 << 20, 64).unwrap();
        spool.append(&mut w, "after-restart").unwrap();
        spool.flush(&mut w).unwrap();
        let got = drain(&spool, 100);
        let mut want: Vec<String> = (4..20).map(|i| format!("event-{i:02}")).collect();
        want.push("after-restart".into());
        assert_eq!(got, want);
    }

    #[test]
    fn refuses_events_past_its_bound_and_takes_them_again_once_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, mut w) = Spool::open(dir.path(), 100).unwrap();
        let line = "x".repeat(19); // 20 bytes with the newline
        let accepted = (0..10).filter(|_| spool.append(&mut w, &line).unwrap()).count();
        assert_eq!(accepted, 5);
        spool.flush(&mut w).unwrap();
        assert_eq!(spool.pending_bytes(), 100);
        let b = spool.read_batch(2, 1 << 20).unwrap().unwrap();
        spool.acknowledge(&b).unwrap();
        assert!(spool.append(&mut w, &line).unwrap());
        assert!(spool.append(&mut w, &line).unwrap());
        assert!(!spool.append(&mut w, &line).unwrap());
    }

    #[test]
    fn a_line_longer_than_the_batch_size_still_goes() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, mut w) = Spool::open(dir.path(), 1 << 20).unwrap();
        let big = "y".repeat(5000);
        spool.append(&mut w, &big).unwrap();
        spool.append(&mut w, "small").unwrap();
        spool.flush(&mut w).unwrap();
        let b = spool.read_batch(10, 100).unwrap().unwrap();
        assert_eq!(b.lines, [big]);
        spool.acknowledge(&b).unwrap();
        assert_eq!(spool.read_batch(10, 100).unwrap().unwrap().lines, ["small"]);
    }
}
