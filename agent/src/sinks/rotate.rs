//! An append-only JSON Lines file that rotates by size and by age, and
//! keeps a bounded number of rotated files for a bounded time.
//!
//! `events.jsonl` is always the file being written; a rotation renames it to
//! `events-20261122T080000Z.jsonl` (UTC, when it was rotated) so rotated
//! files sort by name, which is their age. Retention only ever deletes
//! rotated files, never the live one.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use super::config::FileOptions;

pub struct RotatingFile {
    opts: FileOptions,
    out: BufWriter<File>,
    /// Bytes in the live file.
    size: u64,
    /// When the live file was started (for `rotate_interval`).
    started: SystemTime,
    /// The latest rotated name's stamp and number: rotations within one
    /// second count up, even when retention already deleted the previous.
    last_name: Option<(String, u64)>,
    /// Device and inode of the live file: another file (or none) at its
    /// path means it was deleted or moved away (logrotate), and it is
    /// opened again.
    id: (u64, u64),
    /// When the path was last checked.
    checked: std::time::Instant,
}

/// Opens the live file: appended to, the agent's only (0600).
fn open_live(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

fn file_id(meta: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

impl RotatingFile {
    pub fn open(opts: FileOptions, now: SystemTime) -> io::Result<RotatingFile> {
        if let Some(parent) = opts.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)?;
        }
        let file = open_live(&opts.path)?;
        let meta = file.metadata()?;
        // An existing file started when it was created (or last written, if
        // the filesystem does not record creation), not when we reopened it.
        let started = if meta.len() == 0 {
            now
        } else {
            meta.created().or_else(|_| meta.modified()).unwrap_or(now)
        };
        Ok(RotatingFile {
            size: meta.len(),
            opts,
            out: BufWriter::new(file),
            started,
            last_name: None,
            id: file_id(&meta),
            checked: std::time::Instant::now(),
        })
    }

    /// Opens the file at the path again when the live one was deleted or
    /// moved away (or when `force`d: SIGHUP), so that events do not go on
    /// into a file nobody can find. Checked at most once a second unless
    /// forced. Returns whether it reopened.
    pub fn reopen_if_moved(&mut self, force: bool) -> io::Result<bool> {
        if !force && self.checked.elapsed() < std::time::Duration::from_secs(1) {
            return Ok(false);
        }
        self.checked = std::time::Instant::now();
        let same = fs::metadata(&self.opts.path).is_ok_and(|m| file_id(&m) == self.id);
        if same && !force {
            return Ok(false);
        }
        self.out.flush()?;
        let file = open_live(&self.opts.path)?;
        let meta = file.metadata()?;
        self.id = file_id(&meta);
        self.size = meta.len();
        self.started = SystemTime::now();
        self.out = BufWriter::new(file);
        if !same {
            tracing::warn!(file = %self.opts.path.display(), "the events file was deleted or moved away: opened again");
        }
        Ok(true)
    }

    /// Appends one line (without its newline), rotating first when the live
    /// file is full or old enough.
    pub fn write_line(&mut self, line: &str, now: SystemTime) -> io::Result<()> {
        let len = line.len() as u64 + 1;
        let full = self
            .opts
            .rotate_size
            .is_some_and(|max| self.size > 0 && self.size + len > max);
        if full || self.is_due(now) {
            self.rotate(now)?;
        }
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.size += len;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Time-based rotation is also checked while idle, so a quiet day
    /// still gets its own file.
    pub fn is_due(&self, now: SystemTime) -> bool {
        self.size > 0
            && self
                .opts
                .rotate_interval
                .is_some_and(|every| now.duration_since(self.started).unwrap_or_default() >= every)
    }

    pub fn rotate(&mut self, now: SystemTime) -> io::Result<()> {
        self.out.flush()?;
        let target = self.free_name(now);
        fs::rename(&self.opts.path, &target)?;
        let file = open_live(&self.opts.path)?;
        self.id = file_id(&file.metadata()?);
        self.out = BufWriter::new(file);
        self.size = 0;
        self.started = now;
        tracing::info!(file = %target.display(), "event file rotated");
        if let Err(err) = self.prune(now) {
            tracing::warn!("removing old event files failed: {err}");
        }
        Ok(())
    }

    fn free_name(&mut self, now: SystemTime) -> PathBuf {
        let stamp = chrono::DateTime::<chrono::Utc>::from(now)
            .format("%Y%m%dT%H%M%SZ")
            .to_string();
        let (stem, ext) = stem_ext(&self.opts.path);
        let dir = self.opts.path.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut n = match &self.last_name {
            Some((last, n)) if *last == stamp => n + 1,
            _ => 0,
        };
        loop {
            let name = match n {
                0 => format!("{stem}-{stamp}{ext}"),
                n => format!("{stem}-{stamp}.{n}{ext}"),
            };
            let p = dir.join(name);
            if !p.exists() {
                self.last_name = Some((stamp, n));
                return p;
            }
            n += 1;
        }
    }

    /// Rotated files of this sink, oldest first.
    pub fn rotated(&self) -> io::Result<Vec<PathBuf>> {
        let (stem, ext) = stem_ext(&self.opts.path);
        let prefix = format!("{stem}-");
        let dir = match self.opts.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with(&prefix)
                    && name.ends_with(&ext)
                    && name[prefix.len()..].starts_with(|c: char| c.is_ascii_digit())
            })
            .map(|e| e.path())
            .collect();
        // By time stamp, then by the `.N` of rotations within one second.
        files.sort_by_cached_key(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let middle = name[prefix.len()..name.len() - ext.len()].to_string();
            match middle.split_once("Z.") {
                Some((stamp, n)) => (stamp.to_string(), n.parse::<u64>().unwrap_or(u64::MAX)),
                None => (middle.trim_end_matches('Z').to_string(), 0),
            }
        });
        Ok(files)
    }

    fn prune(&self, now: SystemTime) -> io::Result<()> {
        let files = self.rotated()?;
        let over = self.opts.keep_files.map_or(0, |keep| files.len().saturating_sub(keep));
        for (i, f) in files.iter().enumerate() {
            let too_many = i < over;
            let too_old = self.opts.max_age.is_some_and(|max| {
                fs::metadata(f)
                    .and_then(|m| m.modified())
                    .is_ok_and(|m| now.duration_since(m).unwrap_or(Duration::ZERO) > max)
            });
            if too_many || too_old {
                fs::remove_file(f)?;
            }
        }
        Ok(())
    }
}

/// `events.jsonl` → ("events", ".jsonl").
fn stem_ext(path: &Path) -> (String, String) {
    let stem = path
        .file_stem()
        .map_or_else(|| "events".into(), |s| s.to_string_lossy().into_owned());
    let ext = path
        .extension()
        .map_or_else(String::new, |e| format!(".{}", e.to_string_lossy()));
    (stem, ext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_or_moved_events_file_is_opened_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let now = SystemTime::now();
        let mut f = RotatingFile::open(
            FileOptions {
                path: path.clone(),
                ..FileOptions::default()
            },
            now,
        )
        .unwrap();
        f.write_line("one", now).unwrap();
        f.flush().unwrap();
        {
            use std::os::unix::fs::MetadataExt;
            assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        }
        // Deleted by hand: the next line goes to a new file at the path.
        fs::remove_file(&path).unwrap();
        assert!(f.reopen_if_moved(true).unwrap());
        f.write_line("two", now).unwrap();
        f.flush().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two\n");
        // Moved away (logrotate without copytruncate).
        fs::rename(&path, dir.path().join("events.jsonl.1")).unwrap();
        f.checked -= std::time::Duration::from_secs(2);
        assert!(f.reopen_if_moved(false).unwrap());
        f.write_line("three", now).unwrap();
        f.flush().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "three\n");
        // Still there: nothing to do.
        f.checked -= std::time::Duration::from_secs(2);
        assert!(!f.reopen_if_moved(false).unwrap());
    }

    fn opts(dir: &Path) -> FileOptions {
        FileOptions {
            path: dir.join("events.jsonl"),
            ..FileOptions::default()
        }
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn lines_of(dir: &Path) -> Vec<String> {
        let mut all: Vec<PathBuf> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        all.sort();
        all.iter()
            .flat_map(|p| {
                fs::read_to_string(p)
                    .unwrap()
                    .lines()
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn rotates_by_size_without_splitting_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = RotatingFile::open(
            FileOptions {
                rotate_size: Some(100),
                ..opts(dir.path())
            },
            t(0),
        )
        .unwrap();
        for i in 0..30 {
            f.write_line(&format!("{{\"n\":{i:03}}}"), t(i)).unwrap(); // 9 bytes + newline
        }
        f.flush().unwrap();
        let rotated = f.rotated().unwrap();
        assert_eq!(rotated.len(), 2, "{rotated:?}"); // 10 lines per 100 bytes
        for p in &rotated {
            assert!(fs::metadata(p).unwrap().len() <= 100);
        }
        assert_eq!(
            fs::read_to_string(dir.path().join("events.jsonl"))
                .unwrap()
                .lines()
                .count(),
            10
        );
        // Every line, in order, none lost or cut.
        let mut rotated_then_live: Vec<String> = rotated
            .iter()
            .flat_map(|p| {
                fs::read_to_string(p)
                    .unwrap()
                    .lines()
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect();
        rotated_then_live.extend(
            fs::read_to_string(dir.path().join("events.jsonl"))
                .unwrap()
                .lines()
                .map(String::from),
        );
        let want: Vec<String> = (0..30).map(|i| format!("{{\"n\":{i:03}}}")).collect();
        assert_eq!(rotated_then_live, want);
    }

    #[test]
    fn a_line_larger_than_the_limit_gets_a_file_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = RotatingFile::open(
            FileOptions {
                rotate_size: Some(10),
                ..opts(dir.path())
            },
            t(0),
        )
        .unwrap();
        let big = "x".repeat(50);
        f.write_line(&big, t(0)).unwrap();
        f.write_line(&big, t(1)).unwrap();
        f.flush().unwrap();
        assert_eq!(f.rotated().unwrap().len(), 1);
        assert_eq!(lines_of(dir.path()).len(), 2);
    }

    #[test]
    fn rotates_by_time_and_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = RotatingFile::open(
            FileOptions {
                rotate_interval: Some(Duration::from_secs(3600)),
                ..opts(dir.path())
            },
            t(0),
        )
        .unwrap();
        f.write_line("a", t(0)).unwrap();
        f.write_line("b", t(3599)).unwrap();
        assert!(!f.is_due(t(3599)));
        f.write_line("c", t(3600)).unwrap(); // rotates before writing
        assert_eq!(f.rotated().unwrap().len(), 1);
        assert!(f.is_due(t(7200)));
        f.rotate(t(7200)).unwrap();
        // An empty live file is never rotated.
        assert!(!f.is_due(t(20000)));
        f.flush().unwrap();
        let names: Vec<String> = f
            .rotated()
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["events-20270115T090000Z.jsonl", "events-20270115T100000Z.jsonl"]
        );
        assert_eq!(lines_of(dir.path()), ["a", "b", "c"]);
    }

    #[test]
    fn retention_keeps_the_newest_files_and_leaves_others_alone() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("other.log"), "not ours\n").unwrap();
        fs::write(dir.path().join("events-notes.jsonl"), "not rotated by us\n").unwrap();
        let mut f = RotatingFile::open(
            FileOptions {
                rotate_size: Some(2),
                keep_files: Some(2),
                ..opts(dir.path())
            },
            t(0),
        )
        .unwrap();
        for i in 0..6 {
            f.write_line(&i.to_string(), t(i)).unwrap();
        }
        f.flush().unwrap();
        assert_eq!(f.rotated().unwrap().len(), 2);
        // events-2027...(3), events-2027...(4), events-notes, events (5), other
        assert_eq!(lines_of(dir.path()), ["3", "4", "not rotated by us", "5", "not ours"]);
    }

    #[test]
    fn retention_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = RotatingFile::open(
            FileOptions {
                rotate_size: Some(2),
                max_age: Some(Duration::from_secs(3600)),
                ..opts(dir.path())
            },
            SystemTime::now(),
        )
        .unwrap();
        let now = SystemTime::now();
        f.write_line("1", now).unwrap();
        f.write_line("2", now).unwrap();
        let first = f.rotated().unwrap();
        assert_eq!(first.len(), 1);
        // That file was last written two hours ago: past max_age.
        File::options()
            .write(true)
            .open(&first[0])
            .unwrap()
            .set_modified(now - Duration::from_secs(7200))
            .unwrap();
        f.write_line("3", now + Duration::from_secs(1)).unwrap();
        let rotated = f.rotated().unwrap();
        assert_eq!(rotated.len(), 1, "{rotated:?}");
        assert_eq!(fs::read_to_string(&rotated[0]).unwrap(), "2\n");
    }

    /// Writes lines 0..13 within one second to a 2-byte rotating file made
    /// with `options`; returns the rotated files' contents, oldest first.
    fn rotate_13_lines_at_once(options: impl FnOnce(&Path) -> FileOptions) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let mut f = RotatingFile::open(options(dir.path()), t(0)).unwrap();
        for i in 0..13 {
            f.write_line(&i.to_string(), t(0)).unwrap();
        }
        f.flush().unwrap();
        f.rotated()
            .unwrap()
            .iter()
            .map(|p| fs::read_to_string(p).unwrap())
            .collect()
    }

    #[test]
    fn rotations_within_one_second_keep_their_order() {
        let content = rotate_13_lines_at_once(|dir| FileOptions {
            rotate_size: Some(2),
            ..opts(dir)
        });
        let want: Vec<String> = (0..12).map(|i| format!("{i}\n")).collect();
        assert_eq!(content, want);
        // With retention deleting the oldest, numbers still count up.
        let content = rotate_13_lines_at_once(|dir| FileOptions {
            rotate_size: Some(2),
            keep_files: Some(2),
            ..opts(dir)
        });
        assert_eq!(content, ["10\n", "11\n"]);
    }

    #[test]
    fn reopening_appends() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = RotatingFile::open(opts(dir.path()), t(0)).unwrap();
        f.write_line("a", t(0)).unwrap();
        f.flush().unwrap();
        drop(f);
        let mut f = RotatingFile::open(opts(dir.path()), t(1)).unwrap();
        f.write_line("b", t(1)).unwrap();
        f.flush().unwrap();
        assert_eq!(lines_of(dir.path()), ["a", "b"]);
    }
}
