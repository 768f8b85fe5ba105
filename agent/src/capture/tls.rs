//! Finding OpenSSL and hooking it: every `libssl.so*` a process maps, and
//! every executable that links OpenSSL statically and exports its symbols
//! (Node), gets the TLS uprobes once per file (device + inode), whatever
//! path or mount namespace it is seen through.
//!
//! Where files are found: the well-known library directories at start,
//! the memory maps of every running process at start, of every program
//! started later (the kernel reports each exec; libraries load after exec,
//! Python even loads libssl on its first `import ssl`, so a new process is
//! looked at several times), and of tracked processes every few seconds.
//! A file mapped by a process in another mount namespace (a container) is
//! opened through `/proc/PID/root`, so the probe lands on the file that
//! process really uses.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    programs::{UProbe, uprobe::UProbeScope},
};
use object::{Object, ObjectSection, ObjectSymbol};

/// One uprobe: program name, symbol, whether the symbol is required.
const PROBES: &[(&str, &str, bool)] = &[
    ("ssl_read_enter", "SSL_read", true),
    ("ssl_rw_exit", "SSL_read", true),
    ("ssl_write_enter", "SSL_write", true),
    ("ssl_rw_exit", "SSL_write", true),
    ("ssl_read_ex_enter", "SSL_read_ex", false),
    ("ssl_rw_ex_exit", "SSL_read_ex", false),
    ("ssl_write_ex_enter", "SSL_write_ex", false),
    ("ssl_rw_ex_exit", "SSL_write_ex", false),
    ("ssl_free", "SSL_free", false),
];

/// Programs of PROBES, loaded once.
pub const PROGRAMS: &[&str] = &[
    "ssl_read_enter",
    "ssl_read_ex_enter",
    "ssl_write_enter",
    "ssl_write_ex_enter",
    "ssl_rw_exit",
    "ssl_rw_ex_exit",
    "ssl_free",
];

/// Directories where distributions put libssl.
const LIB_DIRS: &[&str] = &[
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
];

/// When to look at a new process again after its exec.
const RESCAN_AFTER: &[Duration] = &[
    Duration::from_millis(50),
    Duration::from_millis(500),
    Duration::from_secs(3),
];

/// How often tracked processes are looked at again (late dlopen).
const TRACKED_RESCAN: Duration = Duration::from_secs(5);

/// A file identity: device and inode.
type FileId = (u64, u64);

/// What was hooked, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hooked {
    pub path: PathBuf,
    /// `shared_library` or `executable`.
    pub kind: &'static str,
    pub symbols: Vec<&'static str>,
}

#[derive(Default)]
pub struct TlsHooks {
    /// Files already looked at, hooked or not.
    seen: HashSet<FileId>,
    pub hooked: Vec<Hooked>,
    pub errors: u64,
    /// Exec'd processes to look at, when.
    due: VecDeque<(Instant, u32, usize)>,
    last_tracked_scan: Option<Instant>,
}

impl TlsHooks {
    /// Hooks what is installed and what running processes map.
    pub fn start(&mut self, ebpf: &mut Ebpf) {
        for dir in LIB_DIRS {
            let Ok(entries) = fs::read_dir(dir) else { continue };
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if is_libssl(&name) {
                    self.consider(ebpf, &e.path(), None, "shared_library");
                }
            }
        }
        for exe in ["node", "nodejs"] {
            if let Some(path) = which(exe) {
                self.consider(ebpf, &path, None, "executable");
            }
        }
        for pid in pids() {
            self.scan_process(ebpf, pid);
        }
    }

    /// A process ran a new program: look at it a few times as it loads.
    pub fn on_exec(&mut self, pid: u32) {
        let now = Instant::now();
        if self.due.len() > 100_000 {
            return; // an exec storm: the periodic scans still catch up
        }
        self.due.push_back((now + RESCAN_AFTER[0], pid, 0));
    }

    /// Periodic work: due scans of new processes, rescans of tracked ones.
    pub fn tick(&mut self, ebpf: &mut Ebpf, tracked: &[u32]) {
        let now = Instant::now();
        while let Some(&(at, pid, step)) = self.due.front() {
            if at > now {
                break;
            }
            self.due.pop_front();
            if !Path::new("/proc").join(pid.to_string()).exists() {
                continue;
            }
            self.scan_process(ebpf, pid);
            if let Some(next) = RESCAN_AFTER.get(step + 1) {
                // Keep the queue ordered: later deadlines go to the back.
                let at = now + (*next - RESCAN_AFTER[step]);
                let pos = self.due.partition_point(|(t, _, _)| *t <= at);
                self.due.insert(pos, (at, pid, step + 1));
            }
        }
        if self.last_tracked_scan.is_none_or(|t| now - t >= TRACKED_RESCAN) {
            self.last_tracked_scan = Some(now);
            for &pid in tracked {
                self.scan_process(ebpf, pid);
            }
        }
    }

    /// Looks at the files a process maps.
    pub fn scan_process(&mut self, ebpf: &mut Ebpf, pid: u32) {
        let proc_dir = Path::new("/proc").join(pid.to_string());
        let Ok(maps) = fs::read_to_string(proc_dir.join("maps")) else {
            return;
        };
        let exe = fs::read_link(proc_dir.join("exe")).ok();
        let mut done = HashSet::new();
        for line in maps.lines() {
            let Some(m) = parse_maps_line(line) else { continue };
            if !done.insert(m.id) || self.seen.contains(&m.id) {
                continue;
            }
            let name = m.path.rsplit('/').next().unwrap_or_default();
            let kind = if is_libssl(name) {
                "shared_library"
            } else if exe.as_deref() == Some(Path::new(m.path)) {
                "executable"
            } else {
                continue;
            };
            // The path as that process sees it, from our mount namespace.
            let path = proc_dir.join("root").join(m.path.trim_start_matches('/'));
            self.consider(ebpf, &path, Some(m.id), kind);
        }
    }

    /// Hooks one file if it exports OpenSSL and was not hooked yet.
    fn consider(&mut self, ebpf: &mut Ebpf, path: &Path, id: Option<FileId>, kind: &'static str) {
        let Ok(meta) = fs::metadata(path) else { return };
        // Overlay filesystems show another device and inode through the
        // path than in the maps (the real file): remember both.
        let file_id = (meta.dev(), meta.ino());
        if !self.seen.insert(file_id) {
            return;
        }
        if let Some(id) = id {
            self.seen.insert(id);
        }
        let offsets = match symbol_offsets(path) {
            Ok(o) => o,
            Err(err) => {
                tracing::debug!(path = %path.display(), "not an ELF file with symbols: {err}");
                return;
            }
        };
        let exports = PROBES
            .iter()
            .filter(|(_, _, required)| *required)
            .all(|(_, sym, _)| offsets.contains_key(sym));
        if !exports {
            return;
        }
        let mut symbols = Vec::new();
        for &(program, symbol, _) in PROBES {
            let Some(&offset) = offsets.get(symbol) else { continue };
            let result = ebpf
                .program_mut(program)
                .ok_or_else(|| format!("no program {program}"))
                .and_then(|p| <&mut UProbe>::try_from(p).map_err(|e| e.to_string()))
                .and_then(|p| {
                    p.attach(offset, path, UProbeScope::AllProcesses)
                        .map_err(|e| e.to_string())
                });
            match result {
                Ok(_) => {
                    if !symbols.contains(&symbol) {
                        symbols.push(symbol);
                    }
                }
                Err(err) => {
                    self.errors += 1;
                    tracing::warn!(path = %path.display(), symbol, "cannot attach the TLS probe: {err}");
                }
            }
        }
        if !symbols.is_empty() {
            tracing::info!(path = %path.display(), kind, ?symbols, "hooked OpenSSL");
            self.hooked.push(Hooked {
                path: path.to_path_buf(),
                kind,
                symbols,
            });
        }
    }
}

fn is_libssl(name: &str) -> bool {
    name.starts_with("libssl.so")
}

fn which(exe: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(exe))
        .find(|p| p.is_file())
        .and_then(|p| fs::canonicalize(p).ok())
}

fn pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

struct MapsLine<'a> {
    id: FileId,
    path: &'a str,
}

/// `start-end perms offset dev:dev inode path`; only file-backed lines.
fn parse_maps_line(line: &str) -> Option<MapsLine<'_>> {
    let mut f = line.splitn(6, ' ');
    let _range = f.next()?;
    let _perms = f.next()?;
    let _offset = f.next()?;
    let dev = f.next()?;
    let inode: u64 = f.next()?.parse().ok()?;
    let path = f.next()?.trim_start();
    if inode == 0 || !path.starts_with('/') || path.ends_with(" (deleted)") {
        return None;
    }
    let (major, minor) = dev.split_once(':')?;
    let major = u64::from_str_radix(major, 16).ok()?;
    let minor = u64::from_str_radix(minor, 16).ok()?;
    Some(MapsLine {
        id: (libc::makedev(major as u32, minor as u32), inode),
        path,
    })
}

/// File offsets of the exported OpenSSL functions of an ELF file (dynamic
/// symbols first, the full symbol table otherwise).
pub fn symbol_offsets(path: &Path) -> Result<HashMap<&'static str, u64>, String> {
    let file = fs::File::open(path).map_err(|e| e.to_string())?;
    // SAFETY: read-only mapping of a file we only read; a concurrent
    // truncation could fault, which is why only ELF headers and symbol
    // tables are touched, briefly.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| e.to_string())?;
    let elf = object::File::parse(&*map).map_err(|e| e.to_string())?;
    let mut out = HashMap::new();
    let wanted: Vec<&'static str> = PROBES.iter().map(|(_, s, _)| *s).collect();
    for symbols in [elf.dynamic_symbols(), elf.symbols()] {
        for sym in symbols {
            if sym.is_undefined() || sym.address() == 0 {
                continue;
            }
            let Ok(name) = sym.name() else { continue };
            let Some(&want) = wanted.iter().find(|w| **w == name) else {
                continue;
            };
            if out.contains_key(want) {
                continue;
            }
            let Some(index) = sym.section_index() else { continue };
            let Ok(section) = elf.section_by_index(index) else {
                continue;
            };
            let Some((file_offset, _)) = section.file_range() else {
                continue;
            };
            // The kernel wants a file offset, not a virtual address.
            let offset = sym.address() - section.address() + file_offset;
            out.insert(want, offset);
        }
        if !out.is_empty() {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let m = parse_maps_line(
            "7f1c2a400000-7f1c2a45e000 r--p 00000000 fd:01 1311023                    /usr/lib/x86_64-linux-gnu/libssl.so.3",
        )
        .unwrap();
        assert_eq!(m.path, "/usr/lib/x86_64-linux-gnu/libssl.so.3");
        assert_eq!(m.id, (libc::makedev(0xfd, 1), 1311023));
        assert!(parse_maps_line("7ffd1c3d2000-7ffd1c3f3000 rw-p 00000000 00:00 0                          [stack]").is_none());
        assert!(parse_maps_line("7f00-7f01 r--p 00000000 fd:01 12 /tmp/x (deleted)").is_none());
    }

    #[test]
    fn finds_openssl_symbols_in_the_system_libssl() {
        // Present on every machine the end-to-end tests run on (Python's
        // ssl module needs it).
        let Some(lib) = LIB_DIRS
            .iter()
            .filter_map(|d| fs::read_dir(d).ok())
            .flat_map(|d| d.flatten())
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libssl.so.3")))
        else {
            panic!("no libssl.so.3 on this machine");
        };
        let offsets = symbol_offsets(&lib).unwrap();
        for sym in ["SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex", "SSL_free"] {
            assert!(offsets.contains_key(sym), "{sym} missing in {}", lib.display());
        }
        assert!(symbol_offsets(Path::new("/etc/hostname")).is_err());
    }
}
