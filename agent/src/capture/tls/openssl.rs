//! OpenSSL (and LibreSSL/BoringSSL builds that export its API): its
//! functions found by their exported symbols, in a `libssl.so*` or in an
//! executable that links it statically and exports it (Node).

use object::{Object, ObjectSection, ObjectSymbol};

use super::target::Probe;
use mcptap_common::names::program;

/// One uprobe: program name, symbol, whether the symbol is required.
pub const PROBES: &[(&str, &str, bool)] = &[
    (program::SSL_READ_ENTER, "SSL_read", true),
    (program::SSL_RW_EXIT, "SSL_read", true),
    (program::SSL_WRITE_ENTER, "SSL_write", true),
    (program::SSL_RW_EXIT, "SSL_write", true),
    (program::SSL_READ_EX_ENTER, "SSL_read_ex", false),
    (program::SSL_RW_EX_EXIT, "SSL_read_ex", false),
    (program::SSL_WRITE_EX_ENTER, "SSL_write_ex", false),
    (program::SSL_RW_EX_EXIT, "SSL_write_ex", false),
    (program::SSL_FREE, "SSL_free", false),
];

/// The kernel programs of [`PROBES`] (and of BoringSSL found by its code,
/// which has the same API).
pub const PROGRAMS: &[&str] = &[
    program::SSL_READ_ENTER,
    program::SSL_READ_EX_ENTER,
    program::SSL_WRITE_ENTER,
    program::SSL_WRITE_EX_ENTER,
    program::SSL_RW_EXIT,
    program::SSL_RW_EX_EXIT,
    program::SSL_FREE,
];

/// Directories where distributions put libssl (host-wide mode).
pub const LIB_DIRS: &[&str] = &[
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

pub fn is_libssl(name: &str) -> bool {
    name.starts_with("libssl.so")
}

/// The probes of an ELF file that exports OpenSSL's functions; `None` when
/// it does not export the required ones.
pub fn probes(elf: &object::File<'_>) -> Option<Vec<Probe>> {
    let offsets = symbol_offsets(elf);
    let complete = PROBES
        .iter()
        .filter(|(_, _, required)| *required)
        .all(|(_, sym, _)| offsets.iter().any(|(s, _)| s == sym));
    if !complete {
        return None;
    }
    let probes = PROBES
        .iter()
        .filter_map(|&(program, symbol, _)| {
            let (_, offset) = offsets.iter().find(|(s, _)| *s == symbol)?;
            Some(Probe {
                program,
                offset: *offset,
                function: symbol,
            })
        })
        .collect();
    Some(probes)
}

/// File offsets of the exported OpenSSL functions of an ELF file (dynamic
/// symbols first, the full symbol table otherwise).
pub fn symbol_offsets(elf: &object::File<'_>) -> Vec<(&'static str, u64)> {
    let mut out: Vec<(&'static str, u64)> = Vec::new();
    for symbols in [elf.dynamic_symbols(), elf.symbols()] {
        for sym in symbols {
            if sym.is_undefined() || sym.address() == 0 {
                continue;
            }
            let Ok(name) = sym.name() else { continue };
            let Some(&(_, want, _)) = PROBES.iter().find(|(_, w, _)| *w == name) else {
                continue;
            };
            if out.iter().any(|(s, _)| *s == want) {
                continue;
            }
            if let Some(offset) = file_offset(elf, &sym) {
                out.push((want, offset));
            }
        }
        if !out.is_empty() {
            break;
        }
    }
    out
}

/// A symbol's file offset (what the kernel wants, not a virtual address):
/// only when the symbol lies inside its section's bytes in the file (a
/// crafted symbol table may point anywhere; fuzzed: fuzz/fuzz_targets/elf.rs).
pub fn file_offset<'d>(elf: &object::File<'d>, sym: &impl ObjectSymbol<'d>) -> Option<u64> {
    let section = elf.section_by_index(sym.section_index()?).ok()?;
    let (file_offset, _) = section.file_range()?;
    // Its bytes as the file holds them (a header may claim more than the
    // file has: `data` checks the range against the file).
    let bytes = section.data().ok()?;
    let within = sym.address().checked_sub(section.address())?;
    (within < bytes.len() as u64).then(|| file_offset + within)
}

#[cfg(test)]
mod tests {
    use std::{fs, path::Path};

    use super::*;
    use crate::capture::tls::target::with_elf;

    #[test]
    fn finds_openssl_symbols_in_the_system_libssl() {
        // Present on every machine the end-to-end tests run on (Python's
        // ssl module needs it).
        let Some(lib) = LIB_DIRS
            .iter()
            .filter_map(|d| fs::read_dir(d).ok())
            .flat_map(|d| d.flatten())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("libssl.so.3"))
            })
        else {
            panic!("no libssl.so.3 on this machine");
        };
        let offsets = with_elf(&lib, symbol_offsets).unwrap();
        for sym in ["SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex", "SSL_free"] {
            assert!(
                offsets.iter().any(|(s, _)| *s == sym),
                "{sym} missing in {}",
                lib.display()
            );
        }
        let found = with_elf(&lib, probes).unwrap().unwrap();
        assert_eq!(found.len(), PROBES.len());
        assert!(with_elf(Path::new("/etc/hostname"), |_| ()).is_none());
        assert_eq!(with_elf(Path::new("/bin/sh"), probes), Some(None));
    }
}
