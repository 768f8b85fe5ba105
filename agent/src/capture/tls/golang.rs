//! Go programs' TLS: where `crypto/tls.(*Conn).Read` and `Write` are in a
//! Go executable, and where each returns.
//!
//! - Functions are found in `.gopclntab`, the table the Go runtime itself
//!   needs for stack traces: it survives `-s -w` (no symbol table, no
//!   DWARF), `-trimpath` and PIE builds. Go 1.16 to 1.17 and 1.18+ layouts.
//! - Returns are found by disassembling each function (iced-x86): a uprobe
//!   sits on every `ret`. uretprobes cannot be used: they rewrite the
//!   return address on the stack, and Go moves goroutine stacks.
//! - Go's register ABI (1.17+ on amd64) passes the receiver and the byte
//!   slice in RAX, RBX, RCX and returns n in RAX; the running goroutine is
//!   in R14. A function that does not check its stack against R14 in its
//!   prologue is not taken for register-ABI code: such a binary is
//!   reported, never probed at a guess. Older Go (stack ABI) is reported.
//! - The socket: `tls.Conn` starts with its `net.Conn` (an interface: type,
//!   data); for a `*net.TCPConn` the data points at a `*netFD`, whose
//!   `poll.FD` holds `Sysfd` after a 16-byte mutex. These layouts have not
//!   changed since Go 1.9 ([`FD_CHAIN`]); the kernel side follows them.

use iced_x86::{Decoder, DecoderOptions, Mnemonic, Register};
use object::{Object, ObjectSection, ObjectSegment};
use thiserror::Error;

use super::target::Probe;
use mcptap_common::names::program;

/// The functions probed.
pub const READ: &str = "crypto/tls.(*Conn).Read";
pub const WRITE: &str = "crypto/tls.(*Conn).Write";
pub const CLOSE: &str = "crypto/tls.(*Conn).Close";

/// Offsets from a `*tls.Conn` to its socket's descriptor: `conn.data`
/// (the interface's second word), then `TCPConn.fd`, then
/// `netFD.pfd.Sysfd` (Go 1.9 and later, amd64 and arm64).
pub const FD_CHAIN: [u64; 3] = [8, 0, 16];

/// One probed function: its entry and every `ret`, as file offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Func {
    pub entry: u64,
    pub rets: Vec<u64>,
}

/// A Go executable's TLS functions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoTls {
    /// `go1.19.8`, from the build info (when it has one).
    pub version: Option<String>,
    pub read: Func,
    pub write: Func,
    /// Its entry ends the session (absent when the linker dropped it:
    /// sessions then end with their socket).
    pub close: Option<Func>,
}

/// Why a Go executable's TLS is not probed (`mcptap_tls_unsupported_binaries{reason}`).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum GoError {
    #[error("Go {0} passes arguments on the stack (register ABI since Go 1.17): not probed")]
    StackAbi(String),
    #[error("unknown .gopclntab layout (magic {0:#x})")]
    UnknownPclntab(u32),
    #[error("malformed .gopclntab: {0}")]
    Malformed(&'static str),
    #[error("{0} has no return instruction mcptap can find")]
    NoReturn(&'static str),
    #[error("{0} does not start like register-ABI Go code")]
    NotRegisterAbi(&'static str),
    #[error("only x86_64 Go executables are probed")]
    Architecture,
}

impl GoError {
    /// A bounded label value.
    pub fn reason(&self) -> &'static str {
        match self {
            GoError::StackAbi(_) => "go_stack_abi",
            GoError::UnknownPclntab(_) | GoError::Malformed(_) => "go_pclntab",
            GoError::NoReturn(_) | GoError::NotRegisterAbi(_) => "go_code_shape",
            GoError::Architecture => "architecture",
        }
    }
}

/// Looks at an ELF file: `Ok(None)` when it is not a Go program that uses
/// crypto/tls, `Err` when it is one mcptap cannot probe safely.
pub fn inspect_elf(elf: &object::File<'_>) -> Result<Option<GoTls>, GoError> {
    // PIE builds keep it among the relocated read-only data.
    let Some(pclntab) = [".gopclntab", ".data.rel.ro.gopclntab"]
        .into_iter()
        .find_map(|name| elf.section_by_name(name)?.data().ok())
    else {
        return Ok(None);
    };
    let version = build_version(elf);
    let mut funcs = Pclntab::parse(pclntab)?;
    if funcs.relative && funcs.text_start == 0 {
        // PIE: the start of text is a dynamic relocation, zero in the
        // file; it is where `.text` starts.
        funcs.text_start = elf
            .section_by_name(".text")
            .map(|t| t.address())
            .ok_or(GoError::Malformed("no .text"))?;
    }
    let (Some(read), Some(write)) = (funcs.find(READ), funcs.find(WRITE)) else {
        return Ok(None); // a Go program without crypto/tls
    };
    if let Some(v) = &version
        && !register_abi(v)
    {
        return Err(GoError::StackAbi(v.clone()));
    }
    if elf.architecture() != object::Architecture::X86_64 {
        return Err(GoError::Architecture);
    }
    Ok(Some(GoTls {
        version,
        read: locate(elf, READ, read)?,
        write: locate(elf, WRITE, write)?,
        close: funcs.find(CLOSE).map(|f| locate(elf, CLOSE, f)).transpose()?,
    }))
}

impl GoTls {
    /// Entry probes remember the call; one probe per `ret` reads `n`.
    pub fn probes(&self) -> Vec<Probe> {
        let mut out = vec![
            Probe {
                program: program::GO_TLS_READ_ENTER,
                offset: self.read.entry,
                function: READ,
            },
            Probe {
                program: program::GO_TLS_WRITE_ENTER,
                offset: self.write.entry,
                function: WRITE,
            },
        ];
        if let Some(close) = &self.close {
            out.push(Probe {
                program: program::GO_TLS_CLOSE,
                offset: close.entry,
                function: CLOSE,
            });
        }
        // Writes are copied at entry (see the kernel side): only reads
        // need their returns.
        out.extend(self.read.rets.iter().map(|&offset| Probe {
            program: program::GO_TLS_RET,
            offset,
            function: READ,
        }));
        out
    }
}

/// The kernel programs Go executables get.
pub const PROGRAMS: &[&str] = &[
    program::GO_TLS_READ_ENTER,
    program::GO_TLS_WRITE_ENTER,
    program::GO_TLS_RET,
    program::GO_TLS_CLOSE,
];

/// Go 1.17 and later pass arguments in registers on amd64.
fn register_abi(version: &str) -> bool {
    let Some(rest) = version.strip_prefix("go1.") else {
        return true; // devel builds: judged by their code
    };
    let minor: u32 = rest
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    minor >= 17
}

/// The function's entry and returns as file offsets, checked to look like
/// register-ABI Go code.
fn locate(elf: &object::File<'_>, name: &'static str, (start, end): (u64, u64)) -> Result<Func, GoError> {
    let (code, entry) = bytes_at(elf, start, end).ok_or(GoError::Malformed("function outside the file"))?;
    let mut decoder = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
    let mut rets = Vec::new();
    let mut stack_check = false;
    for (seen, insn) in decoder.iter().enumerate() {
        if insn.is_invalid() {
            break;
        }
        // The prologue compares the stack pointer with the goroutine's
        // stack guard, reached through R14 (the goroutine) in the
        // register ABI: `cmp rsp, [r14+0x10]` or a `lea` of RSP compared
        // the same way.
        if seen < 4 && insn.memory_base() == Register::R14 {
            stack_check = true;
        }
        if matches!(insn.mnemonic(), Mnemonic::Ret) {
            rets.push(entry + (insn.ip() - start));
        }
    }
    if !stack_check {
        return Err(GoError::NotRegisterAbi(name));
    }
    if rets.is_empty() {
        return Err(GoError::NoReturn(name));
    }
    Ok(Func { entry, rets })
}

/// The bytes of [start, end) (virtual addresses) and the file offset of
/// `start`.
fn bytes_at<'a>(elf: &object::File<'a>, start: u64, end: u64) -> Option<(&'a [u8], u64)> {
    for seg in elf.segments() {
        let (addr, size) = (seg.address(), seg.size());
        if start < addr || end > addr + size {
            continue;
        }
        let (file_off, file_size) = seg.file_range();
        let rel = start - addr;
        if rel + (end - start) > file_size {
            return None;
        }
        let data = seg.data().ok()?;
        return Some((&data[rel as usize..(rel + end - start) as usize], file_off + rel));
    }
    None
}

/// The Go version from `.go.buildinfo` (`go1.19.8`), when present.
fn build_version(elf: &object::File<'_>) -> Option<String> {
    let data = elf.section_by_name(".go.buildinfo")?.data().ok()?;
    const MAGIC: &[u8] = b"\xff Go buildinf:";
    if !data.starts_with(MAGIC) || data.len() < 32 {
        return None;
    }
    let ptr_size = data[14] as usize;
    let flags = data[15];
    if flags & 2 != 0 {
        // Go 1.18+: the version inline, as a varint-prefixed string.
        let (len, used) = uvarint(&data[32..])?;
        let start = 32 + used;
        let s = data.get(start..start + len as usize)?;
        return String::from_utf8(s.to_vec()).ok();
    }
    // Older: a pointer to a Go string header (pointer, length).
    let word = |b: &[u8]| -> Option<u64> {
        Some(match ptr_size {
            8 => u64::from_le_bytes(b.get(..8)?.try_into().ok()?),
            4 => u64::from(u32::from_le_bytes(b.get(..4)?.try_into().ok()?)),
            _ => return None,
        })
    };
    let header_addr = word(&data[16..])?;
    let header = read_addr(elf, header_addr, 2 * ptr_size as u64)?;
    let (str_addr, str_len) = (word(header)?, word(&header[ptr_size..])?);
    let s = read_addr(elf, str_addr, str_len)?;
    String::from_utf8(s.to_vec()).ok()
}

fn read_addr<'a>(elf: &object::File<'a>, addr: u64, len: u64) -> Option<&'a [u8]> {
    bytes_at(elf, addr, addr + len).map(|(b, _)| b)
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// The parts of `.gopclntab` that name functions and say where they are.
struct Pclntab<'a> {
    data: &'a [u8],
    /// Go 1.18+: entries are 32-bit offsets from `text_start`.
    relative: bool,
    ptr_size: usize,
    nfunc: usize,
    text_start: u64,
    funcname: usize,
    functab: usize,
}

impl<'a> Pclntab<'a> {
    fn parse(data: &'a [u8]) -> Result<Pclntab<'a>, GoError> {
        let u32_at = |o: usize| -> Result<u32, GoError> {
            data.get(o..o + 4)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
                .ok_or(GoError::Malformed("short header"))
        };
        let magic = u32_at(0)?;
        let relative = match magic {
            0xffff_fff0 | 0xffff_fff1 => true, // Go 1.18-1.19, 1.20+
            0xffff_fffa => false,              // Go 1.16-1.17
            other => return Err(GoError::UnknownPclntab(other)),
        };
        let ptr_size = *data.get(7).ok_or(GoError::Malformed("short header"))? as usize;
        if ptr_size != 8 && ptr_size != 4 {
            return Err(GoError::Malformed("pointer size"));
        }
        let word = |i: usize| -> Result<u64, GoError> {
            let o = 8 + i * ptr_size;
            let b = data.get(o..o + ptr_size).ok_or(GoError::Malformed("short header"))?;
            Ok(if ptr_size == 8 {
                u64::from_le_bytes(b.try_into().unwrap_or_default())
            } else {
                u64::from(u32::from_le_bytes(b.try_into().unwrap_or_default()))
            })
        };
        // 1.18+: nfunc, nfiles, textStart, funcnameOffset, cuOffset,
        // filetabOffset, pctabOffset, pclnOffset. 1.16: the same without
        // textStart.
        let nfunc = word(0)? as usize;
        let (text_start, funcname, functab) = if relative {
            (word(2)?, word(3)? as usize, word(7)? as usize)
        } else {
            (0, word(2)? as usize, word(6)? as usize)
        };
        if funcname >= data.len() || functab >= data.len() || nfunc > data.len() {
            return Err(GoError::Malformed("offsets past the table"));
        }
        Ok(Pclntab {
            data,
            relative,
            ptr_size,
            nfunc,
            text_start,
            funcname,
            functab,
        })
    }

    /// Entry `i` of the function table: (entry address, offset of its
    /// `_func` from the function table).
    fn entry(&self, i: usize) -> Option<(u64, usize)> {
        if self.relative {
            let o = self.functab + i * 8;
            let b = self.data.get(o..o + 8)?;
            let entry = u32::from_le_bytes(b[..4].try_into().ok()?);
            let func = u32::from_le_bytes(b[4..].try_into().ok()?);
            Some((self.text_start + u64::from(entry), func as usize))
        } else {
            let w = self.ptr_size;
            let o = self.functab + i * 2 * w;
            let b = self.data.get(o..o + 2 * w)?;
            let read = |b: &[u8]| -> Option<u64> {
                Some(if w == 8 {
                    u64::from_le_bytes(b.try_into().ok()?)
                } else {
                    u64::from(u32::from_le_bytes(b.try_into().ok()?))
                })
            };
            Some((read(&b[..w])?, read(&b[w..])? as usize))
        }
    }

    /// A function's name (`_func.nameOff` into the name table).
    fn name(&self, func: usize) -> Option<&'a [u8]> {
        // `_func` starts with the entry (a uint32 offset in 1.18+, a
        // pointer before), then `nameOff int32`.
        let name_field = self.functab + func + if self.relative { 4 } else { self.ptr_size };
        let off = i32::from_le_bytes(self.data.get(name_field..name_field + 4)?.try_into().ok()?);
        let start = self.funcname.checked_add(usize::try_from(off).ok()?)?;
        let rest = self.data.get(start..)?;
        let len = rest.iter().position(|&b| b == 0)?;
        Some(&rest[..len])
    }

    /// (start, end) of the function named `name`.
    fn find(&self, name: &str) -> Option<(u64, u64)> {
        (0..self.nfunc).find_map(|i| {
            let (entry, func) = self.entry(i)?;
            (self.name(func)? == name.as_bytes()).then(|| {
                let end = self.entry(i + 1).map_or(entry, |(next, _)| next);
                (entry, end)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_abi_versions() {
        assert!(!register_abi("go1.16.15"));
        assert!(register_abi("go1.17"));
        assert!(register_abi("go1.19.8"));
        assert!(register_abi("go1.22.2 X:nocoverageredesign"));
        assert!(register_abi("devel go1.23-abcdef"));
    }

    #[test]
    fn varints() {
        assert_eq!(uvarint(&[0x08]), Some((8, 1)));
        assert_eq!(uvarint(&[0x96, 0x01]), Some((150, 2)));
        assert_eq!(uvarint(&[0x80]), None);
    }

    #[test]
    fn junk_tables_are_errors_not_panics() {
        assert_eq!(Pclntab::parse(&[0, 0, 0, 0]).err(), Some(GoError::UnknownPclntab(0)));
        assert!(Pclntab::parse(&[0xf0, 0xff, 0xff, 0xff, 0, 0, 1, 8]).is_err());
        let mut t = vec![0xf0, 0xff, 0xff, 0xff, 0, 0, 1, 8];
        t.extend(std::iter::repeat_n(0xff, 64));
        assert!(Pclntab::parse(&t).is_err());
    }

    #[test]
    fn a_non_go_file_is_not_go() {
        let sh = crate::capture::tls::target::with_elf(std::path::Path::new("/bin/sh"), inspect_elf);
        assert_eq!(sh, Some(Ok(None)));
    }
}
