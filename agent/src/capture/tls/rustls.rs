//! rustls in Rust programs that keep their symbols: where the plaintext
//! goes in and comes out (see `ebpf/src/rustls.rs` for what each probe
//! reads), every assumption checked in the code before attaching.
//!
//! - Writes: `<rustls::conn::ConnectionCommon<T> as PlaintextSink>::write`
//!   and `::write_vectored` (one per connection type the program uses).
//! - Reads: `rustls::common_state::CommonState::take_received_plaintext`,
//!   which must read its `Payload` argument's words at +0 (capacity, or the
//!   borrowed variant's marker), +8 (pointer) and +16 (length).
//! - One session key for both: `send_plaintext` (the writes' path) must
//!   hand `buffer_plaintext` the connection's own address, i.e. the
//!   `CommonState` the reads see sits at offset 0 of `ConnectionCommon`.
//!
//! Stripped programs have none of these names: when rustls is inside one
//! (its source paths are), it is reported and left alone.

use std::collections::HashMap;

use iced_x86::{Code, Decoder, DecoderOptions, Mnemonic, OpKind, Register};
use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};
use thiserror::Error;

use super::target::Probe;
use mcptap_common::names::program;

const WRITE: &str = "<rustls::conn::ConnectionCommon<T> as rustls::conn::connection::PlaintextSink>::write";
const WRITE_VECTORED: &str =
    "<rustls::conn::ConnectionCommon<T> as rustls::conn::connection::PlaintextSink>::write_vectored";
const SEND_PLAINTEXT: &str = "rustls::conn::connection::<impl rustls::conn::ConnectionCommon<T>>::send_plaintext";
const BUFFER_PLAINTEXT: &str = "rustls::common_state::CommonState::buffer_plaintext";
const TAKE_RECEIVED: &str = "rustls::common_state::CommonState::take_received_plaintext";
/// The drop glue of a connection (one per connection type): the session
/// ends (the next connection may be allocated at the same address).
const DROP: &str = "core::ptr::drop_in_place<rustls::conn::ConnectionCommon<";

/// Why a program with rustls inside is not probed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RustlsError {
    #[error("rustls inside a stripped executable: its functions cannot be told apart without symbols, not probed")]
    Stripped,
    #[error("rustls inside, but {0}: not probed")]
    Shape(&'static str),
    #[error("only x86_64 executables with rustls inside are probed")]
    Architecture,
}

impl RustlsError {
    pub fn reason(&self) -> &'static str {
        match self {
            RustlsError::Stripped => "rustls_stripped",
            RustlsError::Shape(_) => "rustls_code_shape",
            RustlsError::Architecture => "architecture",
        }
    }
}

/// File offsets of rustls' functions in a program.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RustlsTls {
    pub write: Vec<u64>,
    pub write_vectored: Vec<u64>,
    pub read: Vec<u64>,
    pub drop: Vec<u64>,
}

impl RustlsTls {
    pub fn probes(&self) -> Vec<Probe> {
        let mut out = Vec::new();
        for &offset in &self.write {
            out.push(Probe {
                program: program::RUSTLS_WRITE_ENTER,
                offset,
                function: "PlaintextSink::write",
            });
            out.push(Probe {
                program: program::RUSTLS_WRITE_EXIT,
                offset,
                function: "PlaintextSink::write",
            });
        }
        for &offset in &self.write_vectored {
            out.push(Probe {
                program: program::RUSTLS_WRITEV_ENTER,
                offset,
                function: "PlaintextSink::write_vectored",
            });
            out.push(Probe {
                program: program::RUSTLS_WRITE_EXIT,
                offset,
                function: "PlaintextSink::write_vectored",
            });
        }
        for &offset in &self.drop {
            out.push(Probe {
                program: program::RUSTLS_CLOSE,
                offset,
                function: "drop_in_place<ConnectionCommon>",
            });
        }
        for &offset in &self.read {
            out.push(Probe {
                program: program::RUSTLS_READ,
                offset,
                function: "CommonState::take_received_plaintext",
            });
        }
        out
    }
}

/// The kernel programs.
pub const PROGRAMS: &[&str] = &[
    program::RUSTLS_WRITE_ENTER,
    program::RUSTLS_WRITEV_ENTER,
    program::RUSTLS_WRITE_EXIT,
    program::RUSTLS_READ,
    program::RUSTLS_CLOSE,
];

/// A function found by name: its address and file offset.
#[derive(Debug, Clone, Copy)]
struct Func {
    address: u64,
    offset: u64,
}

/// Looks at an ELF file: `Ok(None)` when no rustls is inside, `Err` when it
/// is but cannot be probed safely.
pub fn inspect_elf(elf: &object::File<'_>, data: &[u8]) -> Result<Option<RustlsTls>, RustlsError> {
    let mut found: HashMap<&'static str, Vec<Func>> = HashMap::new();
    for sym in elf.symbols() {
        if sym.is_undefined() || sym.address() == 0 {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        if !name.contains("rustls") {
            continue; // cheap: most symbols are not
        }
        let demangled = format!("{:#}", rustc_demangle::demangle(name));
        let want = if demangled.starts_with(DROP) {
            DROP
        } else {
            let Some(&want) = [WRITE, WRITE_VECTORED, SEND_PLAINTEXT, BUFFER_PLAINTEXT, TAKE_RECEIVED]
                .iter()
                .find(|w| **w == demangled)
            else {
                continue;
            };
            want
        };
        let Some(offset) = super::openssl::file_offset(elf, &sym) else {
            continue;
        };
        found.entry(want).or_default().push(Func {
            address: sym.address(),
            offset,
        });
    }
    if found.is_empty() {
        // rustls' own source paths (panic locations) survive stripping.
        return if memchr::memmem::find(data, b"/rustls-0.").is_some() && !has_symbols(elf) {
            Err(RustlsError::Stripped)
        } else {
            Ok(None)
        };
    }
    if elf.architecture() != object::Architecture::X86_64 {
        return Err(RustlsError::Architecture);
    }
    let get = |name: &'static str| found.get(name).cloned().unwrap_or_default();
    let (write, writev, send, buffer, take) = (
        get(WRITE),
        get(WRITE_VECTORED),
        get(SEND_PLAINTEXT),
        get(BUFFER_PLAINTEXT),
        get(TAKE_RECEIVED),
    );
    if write.is_empty() || take.is_empty() {
        return Err(RustlsError::Shape("its plaintext functions are not all there"));
    }
    // One session key: send_plaintext passes its connection, unmoved, to
    // buffer_plaintext (CommonState at offset 0).
    let buffer_at: Vec<u64> = buffer.iter().map(|f| f.address).collect();
    let got = got_targets(elf);
    if send.is_empty() || buffer_at.is_empty() || !send.iter().all(|f| passes_self_to(elf, f.address, &buffer_at, &got))
    {
        return Err(RustlsError::Shape(
            "its connection's layout is not the one mcptap reads",
        ));
    }
    if !take.iter().all(|f| reads_payload(elf, f.address)) {
        return Err(RustlsError::Shape(
            "its received plaintext's layout is not the one mcptap reads",
        ));
    }
    Ok(Some(RustlsTls {
        write: write.iter().map(|f| f.offset).collect(),
        write_vectored: writev.iter().map(|f| f.offset).collect(),
        read: take.iter().map(|f| f.offset).collect(),
        drop: get(DROP).iter().map(|f| f.offset).collect(),
    }))
}

fn has_symbols(elf: &object::File<'_>) -> bool {
    elf.symbols().next().is_some()
}

/// The code at `address` (up to `len` bytes).
fn code<'a>(elf: &object::File<'a>, address: u64, len: u64) -> Option<&'a [u8]> {
    elf.sections()
        .find(|s| address >= s.address() && address < s.address() + s.size())
        .and_then(|s| {
            let data = s.data().ok()?;
            let start = (address - s.address()) as usize;
            let end = (start + len as usize).min(data.len());
            data.get(start..end)
        })
}

/// Where calls through the GOT go (`call [rip+x]` in PIE programs): slot
/// address → target, from the dynamic relocations.
fn got_targets(elf: &object::File<'_>) -> HashMap<u64, u64> {
    let mut out = HashMap::new();
    if let Some(relocs) = elf.dynamic_relocations() {
        for (at, r) in relocs {
            if matches!(r.target(), RelocationTarget::Absolute) && r.addend() > 0 {
                out.insert(at, r.addend() as u64);
            }
        }
    }
    out
}

/// Whether the function at `entry` calls one of `callees` with its own
/// first argument (RDI at entry, maybe copied to another register) as the
/// callee's first argument, unchanged.
fn passes_self_to(elf: &object::File<'_>, entry: u64, callees: &[u64], got: &HashMap<u64, u64>) -> bool {
    let Some(bytes) = code(elf, entry, 2048) else {
        return false;
    };
    let mut decoder = Decoder::with_ip(64, bytes, entry, DecoderOptions::NONE);
    let mut holds_self = vec![Register::RDI];
    for insn in decoder.iter().take(400) {
        if insn.is_invalid() {
            return false;
        }
        if insn.mnemonic() == Mnemonic::Call {
            let target = match insn.op0_kind() {
                OpKind::NearBranch64 => Some(insn.near_branch_target()),
                OpKind::Memory if insn.is_ip_rel_memory_operand() => got.get(&insn.ip_rel_memory_address()).copied(),
                _ => None,
            };
            if target.is_some_and(|t| callees.contains(&t)) {
                return holds_self.contains(&Register::RDI);
            }
            // The callee may clobber the argument registers.
            holds_self.retain(|r| {
                matches!(
                    r,
                    Register::RBX | Register::RBP | Register::R12 | Register::R13 | Register::R14 | Register::R15
                )
            });
            continue;
        }
        if insn.op_count() >= 1 && insn.op0_kind() == OpKind::Register {
            let dst = insn.op0_register().full_register();
            let copies_self = insn.code() == Code::Mov_r64_rm64 || insn.code() == Code::Mov_rm64_r64;
            let from_self =
                copies_self && insn.op1_kind() == OpKind::Register && holds_self.contains(&insn.op1_register());
            holds_self.retain(|r| *r != dst);
            if from_self {
                holds_self.push(dst);
            }
        }
    }
    false
}

/// Whether `take_received_plaintext` reads its `Payload` (RSI) at +0, +8
/// and +16, and checks the first word for the borrowed variant's marker
/// (`neg`, overflowing only for `isize::MIN`), before anything else.
fn reads_payload(elf: &object::File<'_>, entry: u64) -> bool {
    let Some(bytes) = code(elf, entry, 256) else {
        return false;
    };
    let mut decoder = Decoder::with_ip(64, bytes, entry, DecoderOptions::NONE);
    let mut loaded = [None::<Register>; 3];
    let mut marker_checked = false;
    for insn in decoder.iter().take(24) {
        if insn.is_invalid() || matches!(insn.mnemonic(), Mnemonic::Call | Mnemonic::Ret) {
            break;
        }
        if insn.mnemonic() == Mnemonic::Mov
            && insn.op0_kind() == OpKind::Register
            && insn.op1_kind() == OpKind::Memory
            && insn.memory_base() == Register::RSI
            && insn.memory_index() == Register::None
            && let Some(slot) = [0u64, 8, 16].iter().position(|d| *d == insn.memory_displacement64())
        {
            loaded[slot] = Some(insn.op0_register());
        }
        // The marker test comes after the first word is loaded (`mov rax,
        // first; neg rax`, or `neg` on it directly).
        if insn.mnemonic() == Mnemonic::Neg && loaded[0].is_some() {
            marker_checked = true;
        }
    }
    loaded.iter().all(Option::is_some) && marker_checked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_what_rustc_demangles() {
        let mangled = "_ZN99_$LT$rustls..conn..ConnectionCommon$LT$T$GT$$u20$as$u20$rustls..conn..connection..PlaintextSink$GT$5write17h0b01e4411401d4caE";
        assert_eq!(format!("{:#}", rustc_demangle::demangle(mangled)), WRITE);
        let mangled = "_ZN6rustls12common_state11CommonState23take_received_plaintext17h9c7fe661d478cf48E";
        assert_eq!(format!("{:#}", rustc_demangle::demangle(mangled)), TAKE_RECEIVED);
    }

    #[test]
    fn a_program_without_rustls_has_none() {
        let found = crate::capture::tls::target::with_elf_data(std::path::Path::new("/bin/sh"), inspect_elf);
        assert_eq!(found, Some(Ok(None)));
    }
}
