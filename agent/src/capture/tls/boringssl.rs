//! BoringSSL linked into a stripped executable (Bun, and every program Bun
//! compiles into one file: Claude Code): `SSL_read` and `SSL_write` found
//! by what their code does, never by a guess.
//!
//! BoringSSL reports errors with `OPENSSL_PUT_ERROR(SSL, reason)`, which
//! compiles to `ERR_put_error(ERR_LIB_SSL, 0, reason, __FILE__, __LINE__)`:
//! every such call site in `ssl/ssl_lib.cc` loads the address of that file
//! name and two constants. Those sites survive stripping, and they name
//! their function's source line and reason:
//!
//! - `SSL_write` is the one function whose `ssl_lib.cc` sites are, in
//!   source order, exactly: not for QUIC (`ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED`),
//!   `SSL_R_UNINITIALIZED`, `SSL_R_SSL_HANDSHAKE_FAILURE`, `SSL_R_BAD_LENGTH`.
//! - `SSL_read` (with `SSL_peek` inlined, or `SSL_peek` itself when it is
//!   not) holds the "not for QUIC" site just above `SSL_write` in the
//!   source, and reads through `ssl_read_impl`, whose sites are
//!   `SSL_R_UNINITIALIZED` then `SSL_R_SSL_HANDSHAKE_FAILURE` above it
//!   (inlined, or a function it calls).
//!
//! Each function's entry is then the nearest address before its first site
//! that starts a function: 16-byte aligned after `int3` padding, decoding
//! cleanly to the site, and the target of a direct call elsewhere in the
//! program. Every step must hold and give exactly one answer; otherwise
//! the binary is reported and left alone. Known releases are recognised by
//! build id first ([`KNOWN`]) and their entries still checked.

use std::collections::HashSet;

use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use object::{Object, ObjectSection, ObjectSegment, SegmentFlags};
use thiserror::Error;

use super::target::Probe;
use mcptap_common::names::program;

/// The source file whose error sites are read.
const SSL_LIB: &[u8] = b"ssl/ssl_lib.cc\0";

/// `ERR_LIB_SSL`.
const LIB_SSL: u32 = 16;
/// `ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED` (2 | `ERR_R_FATAL`).
const NOT_FOR_QUIC: u32 = 66;
const UNINITIALIZED: u32 = 226;
const HANDSHAKE_FAILURE: u32 = 215;
const BAD_LENGTH: u32 = 111;

/// How far apart (source lines) the sites of one function may be.
const FUNCTION_LINES: u32 = 60;
/// How far apart `ssl_read_impl`'s sites and `SSL_peek`'s may be.
const READ_IMPL_LINES: u32 = 200;
/// How far before its first site a function entry is looked for.
const MAX_PROLOGUE: u64 = 4096;

/// Releases seen before, by GNU build id: their entries (virtual
/// addresses), checked again before use. Found by this module's search.
pub const KNOWN: &[Known] = &[
    Known {
        build_id: "b5188e4f53b53f3a346614bd78ba53f2ff234402",
        what: "bun 1.4.5 (linux-x64)",
        read: 0x2586500,
        write: 0x2607c30,
    },
    Known {
        build_id: "24889a915d13b00c65a2ee107976d2fea709352c",
        what: "Claude Code 2.1.332 (linux-x64)",
        read: 0x35314b0,
        write: 0x3531300,
    },
];

/// A release seen before.
pub struct Known {
    pub build_id: &'static str,
    pub what: &'static str,
    pub read: u64,
    pub write: u64,
}

/// Why a BoringSSL executable is not probed
/// (`mcptap_tls_unsupported_binaries{reason}`).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BoringError {
    #[error("BoringSSL inside, but {0} cannot be told apart from its code: not probed")]
    NoMatch(&'static str),
    #[error("BoringSSL inside, but {0} matches {1} functions: not probed")]
    Ambiguous(&'static str, usize),
    #[error("only x86_64 executables with BoringSSL inside are probed")]
    Architecture,
}

impl BoringError {
    pub fn reason(&self) -> &'static str {
        match self {
            BoringError::NoMatch(_) | BoringError::Ambiguous(..) => "boringssl_no_match",
            BoringError::Architecture => "architecture",
        }
    }
}

/// Where BoringSSL's functions are in an executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoringTls {
    /// File offsets of the entries.
    pub read: u64,
    pub write: u64,
    /// A Bun executable with a program inside (`bun build --compile`):
    /// the file is the program. The `bun` runtime itself is not.
    pub standalone: bool,
    /// The release, when known by build id.
    pub known: Option<&'static str>,
}

impl BoringTls {
    /// The OpenSSL programs serve: BoringSSL keeps OpenSSL's signatures.
    pub fn probes(&self) -> Vec<Probe> {
        vec![
            Probe {
                program: program::SSL_READ_ENTER,
                offset: self.read,
                function: "SSL_read",
            },
            Probe {
                program: program::SSL_RW_EXIT,
                offset: self.read,
                function: "SSL_read",
            },
            Probe {
                program: program::SSL_WRITE_ENTER,
                offset: self.write,
                function: "SSL_write",
            },
            Probe {
                program: program::SSL_RW_EXIT,
                offset: self.write,
                function: "SSL_write",
            },
        ]
    }
}

/// The executable code: its bytes and where they are mapped and stored.
struct Text<'a> {
    data: &'a [u8],
    address: u64,
    file_offset: u64,
}

impl Text<'_> {
    fn contains(&self, address: u64) -> bool {
        address >= self.address && address < self.address + self.data.len() as u64
    }

    fn bytes_from(&self, address: u64) -> &[u8] {
        if !self.contains(address) {
            return &[];
        }
        &self.data[(address - self.address) as usize..]
    }

    fn file_offset(&self, address: u64) -> u64 {
        address - self.address + self.file_offset
    }
}

/// One `OPENSSL_PUT_ERROR(SSL, reason)` in `ssl_lib.cc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Site {
    address: u64,
    reason: u32,
    line: u32,
}

/// Looks at an ELF file: `Ok(None)` when it holds no BoringSSL, `Err` when
/// it does but its functions cannot be told apart.
pub fn inspect_elf(elf: &object::File<'_>, data: &[u8]) -> Result<Option<BoringTls>, BoringError> {
    let Some(at) = memchr::memmem::find(data, SSL_LIB) else {
        return Ok(None);
    };
    if elf.architecture() != object::Architecture::X86_64 {
        return Err(BoringError::Architecture);
    }
    let text = executable(elf).ok_or(BoringError::NoMatch("its code"))?;
    let standalone = is_standalone(elf, data);
    // The file name's address: where the string containing it starts.
    let start = data[..at].iter().rposition(|&b| b == 0).map_or(0, |p| p + 1);
    let string = file_to_address(elf, start as u64).ok_or(BoringError::NoMatch("ssl_lib.cc"))?;
    let build = build_id(elf);
    if let Some(known) = KNOWN.iter().find(|k| Some(k.build_id) == build.as_deref())
        && entry_checks(&text, known.read, string)
        && entry_checks(&text, known.write, string)
    {
        return Ok(Some(BoringTls {
            read: text.file_offset(known.read),
            write: text.file_offset(known.write),
            standalone,
            known: Some(known.what),
        }));
    }
    let (read, write) = search(&text, string)?;
    Ok(Some(BoringTls {
        read: text.file_offset(read),
        write: text.file_offset(write),
        standalone,
        known: None,
    }))
}

/// Where Bun keeps the program it runs (Bun 1.3.14 and later, Claude Code
/// from 2.1.110); earlier releases append it to the file.
const BUN_SECTION: &str = ".bun";
/// What ends the program Bun compiled into an executable, in the section
/// or at the end of the file: the runtime alone has none.
const BUN_TRAILER: &[u8] = b"\n---- Bun! ----\n";
/// The version Bun gives the symbols it exports (`BUN_1.0`, `BUN_1.2`):
/// in every Bun release measured, 1.1.0 to 1.4.5.
const BUN_VERSION_NAME: &[u8] = b"\0BUN_1.";

/// Whether the executable is Bun (the runtime, or a program compiled by it).
pub fn is_bun(elf: &object::File<'_>) -> bool {
    elf.section_by_name(BUN_SECTION).is_some()
        || elf
            .section_by_name(".dynstr")
            .and_then(|s| s.data().ok())
            .is_some_and(|d| memchr::memmem::find(d, BUN_VERSION_NAME).is_some())
}

/// Whether a program was compiled into this Bun executable.
fn is_standalone(elf: &object::File<'_>, data: &[u8]) -> bool {
    let in_section = elf
        .section_by_name(BUN_SECTION)
        .and_then(|s| s.data().ok())
        .is_some_and(|d| d.ends_with(BUN_TRAILER));
    in_section || (is_bun(elf) && data.ends_with(BUN_TRAILER))
}

/// Finds `SSL_read` and `SSL_write` (virtual addresses).
fn search(text: &Text<'_>, string: u64) -> Result<(u64, u64), BoringError> {
    let sites = sites(text, string);
    if sites.is_empty() {
        return Err(BoringError::NoMatch("ssl_lib.cc's error sites"));
    }
    // Entries of the functions holding each site.
    let candidates: Vec<(Site, Vec<u64>)> = sites.iter().map(|s| (*s, entry_candidates(text, s.address))).collect();
    let wanted: HashSet<u64> = candidates.iter().flat_map(|(_, c)| c.iter().copied()).collect();
    let called = call_targets(text, &wanted);
    let function_of = |site: &Site| -> Option<u64> {
        candidates
            .iter()
            .find(|(s, _)| s == site)
            .and_then(|(_, c)| c.iter().copied().find(|a| called.contains(a)))
    };
    let mut by_function: Vec<(u64, Vec<Site>)> = Vec::new();
    for site in &sites {
        let Some(f) = function_of(site) else { continue };
        match by_function.iter_mut().find(|(e, _)| *e == f) {
            Some((_, list)) => list.push(*site),
            None => by_function.push((f, vec![*site])),
        }
    }
    for (_, list) in &mut by_function {
        list.sort_by_key(|s| s.line);
    }

    // SSL_write: exactly these reasons, in this order, close together. A
    // function that follows it and is never called directly (Bun 1.1.0's
    // `SSL_shutdown`) has no entry of its own here, so its sites may come
    // after these: only the first four are SSL_write's.
    let writes: Vec<(u64, u32)> = by_function
        .iter()
        .filter(|(_, list)| {
            let reasons: Vec<u32> = list.iter().take(4).map(|s| s.reason).collect();
            reasons == [NOT_FOR_QUIC, UNINITIALIZED, HANDSHAKE_FAILURE, BAD_LENGTH]
                && list[3].line - list[0].line <= FUNCTION_LINES
        })
        .map(|(f, list)| (*f, list[0].line))
        .collect();
    let (write, write_line) = match writes.as_slice() {
        [one] => *one,
        [] => return Err(BoringError::NoMatch("SSL_write")),
        many => return Err(BoringError::Ambiguous("SSL_write", many.len())),
    };

    // SSL_peek's "not for QUIC": the nearest such site above SSL_write's.
    let peek = sites
        .iter()
        .filter(|s| s.reason == NOT_FOR_QUIC && s.line < write_line && write_line - s.line <= FUNCTION_LINES)
        .max_by_key(|s| s.line)
        .copied()
        .ok_or(BoringError::NoMatch("SSL_read"))?;
    let read = function_of(&peek).ok_or(BoringError::NoMatch("SSL_read"))?;
    // ssl_read_impl: UNINITIALIZED then HANDSHAKE_FAILURE above SSL_peek,
    // inlined into it or called by it.
    let impl_sites: Vec<&Site> = sites
        .iter()
        .filter(|s| s.line < peek.line && peek.line - s.line <= READ_IMPL_LINES)
        .collect();
    let read_impl = impl_sites
        .iter()
        .filter(|s| s.reason == UNINITIALIZED)
        .filter_map(|u| {
            let f = function_of(u)?;
            impl_sites
                .iter()
                .any(|h| h.reason == HANDSHAKE_FAILURE && h.line > u.line && function_of(h) == Some(f))
                .then_some(f)
        })
        .collect::<HashSet<u64>>();
    let reads_through_impl =
        read_impl.contains(&read) || calls(text, read, peek.address).iter().any(|t| read_impl.contains(t));
    if read == write || !reads_through_impl {
        return Err(BoringError::NoMatch("SSL_read"));
    }
    if !entry_checks(text, read, string) || !entry_checks(text, write, string) {
        return Err(BoringError::NoMatch("the functions' entries"));
    }
    Ok((read, write))
}

/// The `ssl_lib.cc` error sites: the file name loaded as an argument
/// (`mov r32, imm32` in non-PIE code, `lea r64, [rip+disp]` in PIE code)
/// with `ERR_put_error`'s other arguments as constants. BoringSSL's
/// `ERR_put_error` took five arguments until 2024 (`library, unused,
/// reason, file, line`: the file in RCX) and takes four since (`library,
/// reason, file, line`: the file in RDX); Bun and Claude Code builds carry
/// both, so both are read.
fn sites(text: &Text<'_>, string: u64) -> Vec<Site> {
    let mut out = Vec::new();
    let mut loads = Vec::new();
    if let Ok(absolute) = u32::try_from(string) {
        for opcode in [MOV_ECX_IMM32, MOV_EDX_IMM32] {
            let needle = [&[opcode][..], &absolute.to_le_bytes()].concat();
            loads.extend(memchr::memmem::find_iter(text.data, &needle).map(|i| text.address + i as u64));
        }
    }
    for modrm in [LEA_RCX_RIP, LEA_RDX_RIP] {
        for i in memchr::memmem::find_iter(text.data, &[0x48, 0x8d, modrm]) {
            let Some(disp) = text.data.get(i + 3..i + 7) else {
                continue;
            };
            let disp = i32::from_le_bytes([disp[0], disp[1], disp[2], disp[3]]);
            let address = text.address + i as u64;
            if address.wrapping_add(7).wrapping_add_signed(i64::from(disp)) == string {
                loads.push(address);
            }
        }
    }
    loads.sort_unstable();
    for address in loads {
        if let Some(site) = read_site(text, address) {
            out.push(site);
        }
    }
    out
}

/// `mov ecx, imm32` and `mov edx, imm32`.
const MOV_ECX_IMM32: u8 = 0xb9;
const MOV_EDX_IMM32: u8 = 0xba;
/// The ModRM bytes of `lea rcx, [rip+disp32]` and `lea rdx, [rip+disp32]`.
const LEA_RCX_RIP: u8 = 0x0d;
const LEA_RDX_RIP: u8 = 0x15;

/// The constants loaded with the file name, up to the call (or the jump
/// to a call shared by several sites). Which register holds which
/// argument follows from where the file name went.
fn read_site(text: &Text<'_>, address: u64) -> Option<Site> {
    let mut decoder = Decoder::with_ip(64, text.bytes_from(address), address, DecoderOptions::NONE);
    let first = decoder.iter().next()?;
    let (reason_reg, line_reg) = match first.op0_register() {
        Register::ECX | Register::RCX => (Register::EDX, Register::R8D),
        Register::EDX | Register::RDX => (Register::ESI, Register::ECX),
        _ => return None,
    };
    let mut decoder = Decoder::with_ip(64, text.bytes_from(address), address, DecoderOptions::NONE);
    let (mut lib, mut reason, mut line) = (None, None, None);
    for insn in decoder.iter().take(8) {
        if insn.is_invalid() {
            return None;
        }
        if matches!(insn.mnemonic(), Mnemonic::Call | Mnemonic::Jmp) {
            break;
        }
        if insn.code() == Code::Mov_r32_imm32 {
            let value = insn.immediate32();
            match insn.op0_register() {
                Register::EDI => lib = Some(value),
                r if r == reason_reg => reason = Some(value),
                r if r == line_reg => line = Some(value),
                _ => {}
            }
        }
    }
    (lib? == LIB_SSL).then_some(Site {
        address,
        reason: reason?,
        line: line?,
    })
}

/// Addresses before `site` that may start its function, nearest first:
/// 16-byte aligned, after `int3` padding or right after a function's last
/// instruction (a `ret` or a jump that ends exactly on the boundary, where
/// no padding was needed: Claude Code 2.1.142 to 2.1.218's `SSL_write`),
/// decoding cleanly up to the site without crossing padding (the compiler
/// pads between functions with `int3`, never inside one: an early return's
/// code may come before the site, the end of a function may not). The
/// caller keeps only those that are the target of a direct call, and
/// [`entry_checks`] the one it keeps.
fn entry_candidates(text: &Text<'_>, site: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut a = site & !15;
    while site - a <= MAX_PROLOGUE && a > text.address {
        if follows_function_end(text, a) && decodes_to(text, a, site) {
            out.push(a);
        }
        a -= 16;
    }
    out
}

/// Whether the bytes before `a` end a function: `int3` padding, `nop`
/// padding (one of the forms compilers emit: Bun 1.1.0 pads with them),
/// or a `ret`, `jmp rel32` or `jmp rel8` ending exactly there.
fn follows_function_end(text: &Text<'_>, a: u64) -> bool {
    let start = a.saturating_sub(16).max(text.address);
    let before = &text.bytes_from(start)[..(a - start) as usize];
    FUNCTION_ENDS.iter().any(|end| before.ends_with(end))
        || before.len() >= 5 && before[before.len() - 5] == 0xe9
        || before.len() >= 2 && before[before.len() - 2] == 0xeb
}

/// Byte sequences that end a function or the padding after one.
const FUNCTION_ENDS: &[&[u8]] = &[
    &[0xcc],
    &[0xc3],
    &[0x90],
    &[0x0f, 0x1f, 0x00],
    &[0x0f, 0x1f, 0x40, 0x00],
    &[0x0f, 0x1f, 0x44, 0x00, 0x00],
    &[0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00],
    &[0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
];

/// Whether decoding from `from` lands on `to` with no invalid instruction
/// and no padding on the way.
fn decodes_to(text: &Text<'_>, from: u64, to: u64) -> bool {
    let bytes = text.bytes_from(from);
    let len = ((to - from) as usize).min(bytes.len());
    let mut decoder = Decoder::with_ip(64, &bytes[..len], from, DecoderOptions::NONE);
    let mut insn = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut insn);
        if insn.is_invalid() || insn.mnemonic() == Mnemonic::Int3 {
            return false;
        }
    }
    decoder.ip() == to
}

/// Which of `wanted` are the target of a direct call or jump somewhere in
/// the code (one pass over it).
fn call_targets(text: &Text<'_>, wanted: &HashSet<u64>) -> HashSet<u64> {
    let mut found = HashSet::new();
    if wanted.is_empty() {
        return found;
    }
    let d = text.data;
    for i in memchr::memchr2_iter(0xe8, 0xe9, d) {
        let Some(rel) = d.get(i + 1..i + 5) else { break };
        let rel = i32::from_le_bytes([rel[0], rel[1], rel[2], rel[3]]);
        let target = (text.address + i as u64 + 5).wrapping_add_signed(i64::from(rel));
        if wanted.contains(&target) {
            found.insert(target);
        }
    }
    found
}

/// The direct calls a function makes between its entry and shortly after
/// `past` (where its entry block ends).
fn calls(text: &Text<'_>, entry: u64, past: u64) -> Vec<u64> {
    let end = past + 256;
    let bytes = text.bytes_from(entry);
    let len = ((end - entry) as usize).min(bytes.len());
    let mut decoder = Decoder::with_ip(64, &bytes[..len], entry, DecoderOptions::NONE);
    decoder
        .iter()
        .take_while(|i| !i.is_invalid())
        .filter(|i| i.mnemonic() == Mnemonic::Call && i.op0_kind() == OpKind::NearBranch64)
        .map(|i| i.near_branch_target())
        .collect()
}

/// An entry's shape: the function tests a field of its first argument
/// (`SSL *` in RDI, maybe copied first) against zero (`SSL_is_quic`) and
/// reaches an `ssl_lib.cc` error site, all before any return.
fn entry_checks(text: &Text<'_>, entry: u64, string: u64) -> bool {
    if !text.contains(entry) || !follows_function_end(text, entry) || !entry.is_multiple_of(16) {
        return false;
    }
    let mut decoder = Decoder::with_ip(64, text.bytes_from(entry), entry, DecoderOptions::NONE);
    let mut ssl_regs = vec![Register::RDI];
    let mut tested = false;
    for insn in decoder.iter().take(40) {
        if insn.is_invalid() || insn.mnemonic() == Mnemonic::Ret {
            return false;
        }
        if insn.mnemonic() == Mnemonic::Mov
            && insn.op0_kind() == OpKind::Register
            && insn.op1_kind() == OpKind::Register
            && ssl_regs.contains(&insn.op1_register())
        {
            ssl_regs.push(insn.op0_register());
        }
        if insn.mnemonic() == Mnemonic::Cmp
            && insn.op0_kind() == OpKind::Memory
            && ssl_regs.contains(&insn.memory_base())
            && insn.op1_kind() == OpKind::Immediate8to64
            && insn.immediate(1) == 0
        {
            tested = true;
        }
        if tested && read_site(text, insn.ip()).is_some() && loads_string(&insn, string) {
            return true;
        }
    }
    false
}

fn loads_string(insn: &Instruction, string: u64) -> bool {
    (insn.code() == Code::Mov_r32_imm32 && u64::from(insn.immediate32()) == string)
        || (insn.mnemonic() == Mnemonic::Lea
            && insn.is_ip_rel_memory_operand()
            && insn.ip_rel_memory_address() == string)
}

/// The executable segment.
fn executable<'a>(elf: &object::File<'a>) -> Option<Text<'a>> {
    elf.segments()
        .find(|s| matches!(s.flags(), SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0))
        .and_then(|s| {
            Some(Text {
                data: s.data().ok()?,
                address: s.address(),
                file_offset: s.file_range().0,
            })
        })
}

fn file_to_address(elf: &object::File<'_>, offset: u64) -> Option<u64> {
    elf.segments().find_map(|s| {
        let (start, size) = s.file_range();
        (offset >= start && offset < start + size).then(|| s.address() + offset - start)
    })
}

fn build_id(elf: &object::File<'_>) -> Option<String> {
    let id = elf.build_id().ok()??;
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A function, as a compiler lays it out: padding, a prologue that
    /// tests `ssl->quic_method`, then the error sites.
    fn function(string: u32, sites: &[(u32, u32)]) -> Vec<u8> {
        let mut f = vec![0xcc; 16];
        // push rbp; mov rbp,rsp; push rbx; mov rbx,rdi; cmp qword [rdi+0x98],0; nop pad
        f.extend([0x55, 0x48, 0x89, 0xe5, 0x53, 0x48, 0x89, 0xfb]);
        f.extend([0x48, 0x83, 0xbf, 0x98, 0x00, 0x00, 0x00, 0x00]);
        for &(reason, line) in sites {
            f.push(0xb9);
            f.extend(string.to_le_bytes());
            f.extend([0xbf, 0x10, 0, 0, 0, 0x31, 0xf6, 0xba]);
            f.extend(reason.to_le_bytes());
            f.extend([0x41, 0xb8]);
            f.extend(line.to_le_bytes());
            f.extend([0xe8, 0, 0, 0, 0]);
        }
        f.push(0xc3);
        while !f.len().is_multiple_of(16) {
            f.push(0xcc);
        }
        f
    }

    #[test]
    fn sites_and_entries_from_code() {
        let string = 0x29e59d;
        let mut code = Vec::new();
        let write = function(string, &[(66, 953), (226, 958), (215, 973), (111, 979)]);
        code.extend(&write);
        // A caller of the function: call rel32 to its entry (offset 16).
        let call_at = code.len() as i64;
        code.extend([0xe8]);
        code.extend(((16 - (call_at + 5)) as i32).to_le_bytes());
        code.extend([0xcc; 11]);
        let text = Text {
            data: &code,
            address: 0x1000,
            file_offset: 0,
        };
        let sites = sites(&text, u64::from(string));
        assert_eq!(sites.len(), 4);
        assert_eq!((sites[0].reason, sites[0].line), (66, 953));
        let entries = entry_candidates(&text, sites[0].address);
        assert_eq!(entries, vec![0x1010]);
        let called = call_targets(&text, &entries.iter().copied().collect());
        assert!(called.contains(&0x1010));
        assert!(entry_checks(&text, 0x1010, u64::from(string)));
        // No SSL_read: nothing is attached.
        assert_eq!(search(&text, u64::from(string)), Err(BoringError::NoMatch("SSL_read")));
    }

    #[test]
    fn a_different_function_is_not_ssl_write() {
        let string = 0x29e59d;
        let code = function(string, &[(66, 953), (226, 958), (215, 973)]);
        let text = Text {
            data: &code,
            address: 0x1000,
            file_offset: 0,
        };
        assert_eq!(search(&text, u64::from(string)), Err(BoringError::NoMatch("SSL_write")));
    }

    /// BoringSSL before 2024: `ERR_put_error(library, reason, file, line)`,
    /// the file name in RDX (Claude Code up to 2.1.218, Bun up to 1.3).
    #[test]
    fn four_argument_sites_are_read() {
        let string: u32 = 0x32d15b;
        // mov edx, file; mov edi, 16; mov esi, 0x42; mov ecx, 0x669; jmp
        let mut code = vec![0xba];
        code.extend(string.to_le_bytes());
        code.extend([
            0xbf, 0x10, 0, 0, 0, 0xbe, 0x42, 0, 0, 0, 0xb9, 0x69, 0x06, 0, 0, 0xeb, 0x00,
        ]);
        let text = Text {
            data: &code,
            address: 0x1000,
            file_offset: 0,
        };
        let found = sites(&text, u64::from(string));
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].reason, found[0].line), (NOT_FOR_QUIC, 0x669));
    }

    /// A function starts after padding or right after another's last jump
    /// or return; not in the middle of an instruction's bytes.
    #[test]
    fn function_ends() {
        let cases: &[(&[u8], bool)] = &[
            (&[0x48, 0x89, 0xc7, 0xcc], true),
            (&[0x5d, 0xc3], true),
            (&[0xe9, 0x03, 0xfe, 0xff, 0xff], true),
            (&[0xeb, 0xcd], true),
            (&[0xeb, 0xcd, 0x90], true),
            (&[0xc3, 0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00], true),
            (&[0x48, 0x89, 0xc7], false),
            (&[0x41, 0xb8, 0x20, 0x04, 0x00, 0x00], false),
        ];
        for (bytes, ends) in cases {
            let mut code = vec![0x55; 16];
            code.extend(*bytes);
            let a = 0x1000 + code.len() as u64;
            code.extend([0x55; 16]);
            let text = Text {
                data: &code,
                address: 0x1000,
                file_offset: 0,
            };
            assert_eq!(follows_function_end(&text, a), *ends, "{bytes:02x?}");
        }
    }
}
