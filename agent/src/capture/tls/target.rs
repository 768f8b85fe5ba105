//! What TLS library a file carries and where its probes go: one answer per
//! file, from its ELF contents only (never from its name alone, never at a
//! guessed offset).

use std::path::Path;

use super::{boringssl, golang, openssl, rustls};

/// A TLS implementation mcptap reads plaintext from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Library {
    /// OpenSSL's API, found by its exported symbols.
    OpenSsl,
    /// Go's crypto/tls, found in `.gopclntab`.
    Go,
    /// BoringSSL in a stripped executable (Bun), found by its code.
    BoringSsl,
    /// rustls in a Rust program with symbols.
    Rustls,
}

impl Library {
    pub const ALL: [Library; 4] = [Library::OpenSsl, Library::Go, Library::BoringSsl, Library::Rustls];

    pub fn as_str(self) -> &'static str {
        match self {
            Library::OpenSsl => "openssl",
            Library::Go => "go",
            Library::BoringSsl => "boringssl",
            Library::Rustls => "rustls",
        }
    }
}

/// How the file is used: a shared library every process may map, or a
/// program's executable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    SharedLibrary,
    Executable,
}

impl FileKind {
    pub const ALL: [FileKind; 2] = [FileKind::SharedLibrary, FileKind::Executable];

    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::SharedLibrary => "shared_library",
            FileKind::Executable => "executable",
        }
    }
}

/// One uprobe: the kernel program, where (file offset), on what function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub program: &'static str,
    pub offset: u64,
    pub function: &'static str,
}

/// A file's TLS library and its probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub library: Library,
    pub kind: FileKind,
    pub probes: Vec<Probe>,
    /// What was recognised (`go1.19.8`), for the log.
    pub detail: Option<String>,
    /// The file is the program itself (a compiled Go program), not a
    /// library or a runtime many programs share (libssl, `node`): once it
    /// speaks MCP, every process running it is probed.
    pub program_file: bool,
}

/// A file mcptap recognises but will not probe: the reason is a bounded
/// label (`mcptap_tls_unsupported_binaries{reason}`), the message says the
/// rest in one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    pub reason: &'static str,
    pub message: String,
}

/// Every reason a file is not probed
/// (`mcptap_tls_unsupported_binaries{reason}`, at zero from the start): the
/// libraries' own (`golang`, `boringssl`, `rustls`), the files not looked at
/// (`inspect::Refused::reason`), and a kernel that refused the programs.
pub const UNSUPPORTED_REASONS: &[&str] = &[
    "go_stack_abi",
    "go_pclntab",
    "go_code_shape",
    "boringssl_no_match",
    "rustls_stripped",
    "rustls_code_shape",
    "architecture",
    "not_a_regular_file",
    "not_the_mapped_file",
    "too_large",
    "unreadable",
    "inspection_timeout",
    "inspection_queue_full",
    "kernel_refused_programs",
];

/// What a program's executable says about MCP, before it runs: what lets
/// its first HTTPS request be seen (the exec gate, `gate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Program {
    /// Nothing that says MCP (most programs).
    Plain,
    /// Runs scripts that may load an MCP SDK: the files its processes
    /// open are looked at for one (`ebpf/src/interp.rs`).
    Interpreter(Interpreter),
    /// A compiled program that carries its TLS library and names MCP's
    /// HTTP headers (`Mcp-Session-Id`, `Mcp-Protocol-Version`, in any
    /// case): probed for every process that runs it from its first exec.
    SpeaksMcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interpreter {
    Python,
    Node,
    Bun,
}

impl Interpreter {
    pub fn as_str(self) -> &'static str {
        match self {
            Interpreter::Python => "python",
            Interpreter::Node => "node",
            Interpreter::Bun => "bun",
        }
    }
}

impl Program {
    pub fn as_str(self) -> &'static str {
        match self {
            Program::Plain => "plain",
            Program::Interpreter(i) => i.as_str(),
            Program::SpeaksMcp => "speaks_mcp",
        }
    }
}

/// A file's TLS finding, and what it is as a program (executables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub finding: Finding,
    pub program: Program,
}

/// MCP's HTTP header names: every Streamable HTTP client and server
/// sends or reads one of them, and programs that are not MCP peers have
/// no reason to hold either (measured: Node, Bun, Python, Chromium, curl,
/// Prometheus hold neither; every MCP peer of the tests does).
const MCP_HEADERS: [&str; 2] = ["mcp-session-id", "mcp-protocol-version"];

/// Whether `data` holds one of [`MCP_HEADERS`], in any case.
pub fn names_mcp_headers(data: &[u8]) -> bool {
    static FINDER: std::sync::OnceLock<Option<aho_corasick::AhoCorasick>> = std::sync::OnceLock::new();
    FINDER
        .get_or_init(|| {
            aho_corasick::AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(MCP_HEADERS)
                .ok()
        })
        .as_ref()
        .is_some_and(|f| f.is_match(data))
}

/// Symbols that make an executable an interpreter: CPython's entry point
/// (exported by a static libpython, imported from a shared one), Node's
/// addon API.
const PYTHON_MAIN: &str = "Py_BytesMain";
const NODE_API: &str = "napi_module_register";

/// What an executable is as a program, given its TLS finding.
fn program_of(elf: &object::File<'_>, data: &[u8], finding: &Finding) -> Program {
    use object::{Object, ObjectSymbol};
    if let Finding::Tls(t) = finding {
        match t.library {
            // Bun itself (not a program Bun compiled): a runtime.
            Library::BoringSsl if !t.program_file && boringssl::is_bun(elf) => {
                return Program::Interpreter(Interpreter::Bun);
            }
            _ if t.program_file && names_mcp_headers(data) => return Program::SpeaksMcp,
            _ => {}
        }
    }
    for sym in elf.dynamic_symbols() {
        match sym.name() {
            Ok(PYTHON_MAIN) => return Program::Interpreter(Interpreter::Python),
            Ok(NODE_API) if sym.is_definition() => return Program::Interpreter(Interpreter::Node),
            _ => {}
        }
    }
    Program::Plain
}

/// As [`identify_bytes`], with what the file is as a program when it is
/// used as an executable.
pub fn profile_bytes(data: &[u8], kind: FileKind) -> Profile {
    match object::File::parse(data) {
        Ok(elf) => {
            let finding = identify_elf(&elf, data, kind);
            let program = match kind {
                FileKind::Executable => program_of(&elf, data, &finding),
                FileKind::SharedLibrary => Program::Plain,
            };
            Profile { finding, program }
        }
        Err(_) => Profile {
            finding: Finding::Nothing,
            program: Program::Plain,
        },
    }
}

/// What a file is, for TLS capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    Tls(Target),
    /// No TLS library mcptap knows (most files).
    Nothing,
    Unsupported(Unsupported),
}

/// Runs `f` on a file read whole (tests, on files of this machine); `None`
/// when it cannot be read or is not ELF. The agent reads files it does not
/// own only through [`super::inspect`].
#[cfg(test)]
pub fn with_elf<T>(path: &Path, f: impl FnOnce(&object::File<'_>) -> T) -> Option<T> {
    with_elf_data(path, |elf, _| f(elf))
}

/// As [`with_elf`], with the file's bytes.
#[cfg(test)]
pub fn with_elf_data<T>(path: &Path, f: impl FnOnce(&object::File<'_>, &[u8]) -> T) -> Option<T> {
    let data = std::fs::read(path).ok()?;
    let elf = object::File::parse(&*data).ok()?;
    Some(f(&elf, &data))
}

/// Looks at a file's bytes, used by a process as `kind`: anything, never a
/// panic (fuzzed: `fuzz/fuzz_targets/elf.rs`).
pub fn identify_bytes(data: &[u8], kind: FileKind) -> Finding {
    match object::File::parse(data) {
        Ok(elf) => identify_elf(&elf, data, kind),
        Err(_) => Finding::Nothing,
    }
}

/// Looks at a file by its path, through the same checks as the agent
/// (`mcptap tls-info`, tests).
pub fn identify(path: &Path, kind: FileKind) -> Finding {
    let job = super::inspect::Job {
        source: super::inspect::Source::Path {
            path: path.to_path_buf(),
            only: None,
        },
        kind,
        unless: None,
    };
    let deadline = std::time::Instant::now() + super::inspect::BUDGET;
    match super::inspect::inspect(&job, Path::new("/proc"), deadline) {
        Ok((_, super::inspect::Outcome::Read(profile))) => profile.finding,
        Ok((_, super::inspect::Outcome::Unchanged)) | Err(_) => Finding::Nothing,
    }
}

fn identify_elf(elf: &object::File<'_>, data: &[u8], kind: FileKind) -> Finding {
    if let Some(probes) = openssl::probes(elf) {
        return Finding::Tls(Target {
            library: Library::OpenSsl,
            kind,
            probes,
            detail: None,
            program_file: false,
        });
    }
    if kind == FileKind::SharedLibrary {
        return Finding::Nothing;
    }
    match golang::inspect_elf(elf) {
        Ok(Some(go)) => {
            return Finding::Tls(Target {
                library: Library::Go,
                kind,
                probes: go.probes(),
                detail: go.version.clone(),
                program_file: true,
            });
        }
        Ok(None) => {}
        Err(e) => {
            return Finding::Unsupported(Unsupported {
                reason: e.reason(),
                message: e.to_string(),
            });
        }
    }
    match boringssl::inspect_elf(elf, data) {
        Ok(Some(b)) => {
            return Finding::Tls(Target {
                library: Library::BoringSsl,
                kind,
                probes: b.probes(),
                detail: b.known.map(String::from),
                program_file: b.standalone,
            });
        }
        Ok(None) => {}
        Err(e) => {
            return Finding::Unsupported(Unsupported {
                reason: e.reason(),
                message: e.to_string(),
            });
        }
    }
    match rustls::inspect_elf(elf, data) {
        Ok(Some(r)) => Finding::Tls(Target {
            library: Library::Rustls,
            kind,
            probes: r.probes(),
            detail: None,
            program_file: true,
        }),
        Ok(None) => Finding::Nothing,
        Err(e) => Finding::Unsupported(Unsupported {
            reason: e.reason(),
            message: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzz/fuzz_targets/elf.rs: a symbol table whose `SSL_read`
    /// points past its section's bytes, and a section header claiming
    /// bytes past the end of the file, made probe offsets outside the
    /// file. Every probe lies inside the file, or there is none.
    #[test]
    fn crafted_symbols_never_make_a_probe_outside_the_file() {
        for data in [
            &include_bytes!("testdata/symbol-outside-its-section.elf")[..],
            &include_bytes!("testdata/section-beyond-the-file.elf")[..],
        ] {
            for kind in FileKind::ALL {
                if let Finding::Tls(t) = identify_bytes(data, kind) {
                    assert!(t.probes.iter().all(|p| p.offset < data.len() as u64), "{t:?}");
                }
            }
        }
    }

    #[test]
    fn every_reason_is_listed() {
        use super::super::{boringssl::BoringError, golang::GoError, inspect::Refused, rustls::RustlsError};
        let reasons = [
            GoError::StackAbi("x".into()).reason(),
            GoError::Malformed("x").reason(),
            GoError::NoReturn("x").reason(),
            GoError::Architecture.reason(),
            BoringError::NoMatch("x").reason(),
            RustlsError::Stripped.reason(),
            RustlsError::Shape("x").reason(),
        ]
        .into_iter()
        .chain(
            [
                Refused::NotRegular("x"),
                Refused::Identity,
                Refused::TooLarge(1),
                Refused::Changed,
                Refused::TimedOut,
                Refused::QueueFull,
            ]
            .iter()
            .filter_map(Refused::reason),
        );
        for r in reasons {
            assert!(UNSUPPORTED_REASONS.contains(&r), "{r}");
        }
    }

    #[test]
    fn ordinary_files_carry_nothing() {
        assert_eq!(identify(Path::new("/bin/sh"), FileKind::Executable), Finding::Nothing);
        assert_eq!(
            identify(Path::new("/etc/hostname"), FileKind::Executable),
            Finding::Nothing
        );
        assert_eq!(
            identify(Path::new("/nonexistent"), FileKind::SharedLibrary),
            Finding::Nothing
        );
    }
}
