//! What this kernel offers mcptap, probed at start (never inferred from its
//! version number: distributions backport BPF features, RHEL 9's 5.14 has
//! most of 6.x's):
//!
//! - BTF (`/sys/kernel/btf/vmlinux`): every syscall hook is typed by it;
//! - BPF ring buffers (Linux 5.8): how records reach the agent;
//! - `bpf_loop` (5.17): which of the two embedded objects is loaded. The
//!   main one drives its chunk copies with `bpf_loop`; the compat one
//!   (5.10 to 5.16) with a bounded loop the verifier walks, which carries
//!   at most [`COMPAT_MAX_CALL_BYTES`] per call;
//! - `kernel.pid_max`: the size of the per-process watch maps.
//!
//! Whether the kernel allows tracing programs (fexit) is probed by
//! attaching them (`hooks`).

use std::path::Path;

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_map_supported},
};
use mcptap_common::COMPAT_MAX_CALL_BYTES;

use super::preflight::PreflightError;

/// The kernel programs, built by build.rs and embedded in the binary.
static MAIN_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mcptap"));
static COMPAT_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mcptap-compat"));

/// Which embedded object suits this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// Chunk copies driven by `bpf_loop` (Linux 5.17+).
    BpfLoop,
    /// Chunk copies in a bounded loop (Linux 5.10 to 5.16).
    Compat,
}

impl ObjectKind {
    pub fn bytes(self) -> &'static [u8] {
        match self {
            ObjectKind::BpfLoop => MAIN_OBJECT,
            ObjectKind::Compat => COMPAT_OBJECT,
        }
    }

    /// Label value (`mcptap_capture_hooks_info{kernel_object}`).
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::BpfLoop => "bpf_loop",
            ObjectKind::Compat => "compat",
        }
    }

    /// Most bytes one call may carry with this object.
    pub fn max_call_bytes(self, wanted: u64) -> u64 {
        match self {
            ObjectKind::BpfLoop => wanted,
            ObjectKind::Compat => wanted.min(COMPAT_MAX_CALL_BYTES),
        }
    }
}

/// What was probed.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `uname -r`.
    pub release: String,
    pub object: ObjectKind,
    pub pid_max: u32,
}

/// Probes the running kernel; fails with one line saying what is missing.
pub fn probe() -> Result<Kernel, PreflightError> {
    let release = release();
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(PreflightError::NoBtf(release));
    }
    // A kernel without BPF at all, or without ring buffers (before 5.8).
    match is_map_supported(MapType::RingBuf) {
        Ok(true) => {}
        Ok(false) => {
            return Err(PreflightError::Unsupported {
                release,
                missing: "BPF ring buffers (Linux 5.8 or later)".into(),
            });
        }
        Err(err) => {
            return Err(PreflightError::Unsupported {
                release,
                missing: format!("a working bpf() syscall ({err})"),
            });
        }
    }
    let bpf_loop = is_helper_supported(ProgramType::TracePoint, BpfHelper::BPF_FUNC_loop).unwrap_or(false);
    let object = if bpf_loop {
        ObjectKind::BpfLoop
    } else {
        ObjectKind::Compat
    };
    Ok(Kernel {
        release,
        object,
        pid_max: pid_max(Path::new("/proc/sys/kernel/pid_max")),
    })
}

/// Linux's largest pid_max when the file cannot be read.
fn pid_max(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(mcptap_common::watch::MAX_TGID)
        .min(mcptap_common::watch::MAX_TGID)
}

/// `uname -r`.
pub fn release() -> String {
    let mut uname: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a local.
    if unsafe { libc::uname(&mut uname) } != 0 {
        return "unknown".into();
    }
    // SAFETY: uname NUL-terminates its fields.
    unsafe { std::ffi::CStr::from_ptr(uname.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_max_is_read_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pid_max");
        std::fs::write(&f, "32768\n").unwrap();
        assert_eq!(pid_max(&f), 32768);
        std::fs::write(&f, "99999999\n").unwrap();
        assert_eq!(pid_max(&f), mcptap_common::watch::MAX_TGID);
        std::fs::write(&f, "junk").unwrap();
        assert_eq!(pid_max(&f), mcptap_common::watch::MAX_TGID);
        assert_eq!(pid_max(&dir.path().join("absent")), mcptap_common::watch::MAX_TGID);
    }

    #[test]
    fn compat_object_caps_calls() {
        assert_eq!(ObjectKind::BpfLoop.max_call_bytes(16 << 20), 16 << 20);
        assert_eq!(ObjectKind::Compat.max_call_bytes(16 << 20), COMPAT_MAX_CALL_BYTES);
        assert_eq!(ObjectKind::Compat.max_call_bytes(1 << 20), 1 << 20);
        // What the compat loop carries: the default capture cap.
        assert_eq!(COMPAT_MAX_CALL_BYTES, 16 << 20);
    }

    #[test]
    fn both_objects_are_embedded() {
        assert!(ObjectKind::BpfLoop.bytes().starts_with(b"\x7fELF"));
        assert!(ObjectKind::Compat.bytes().starts_with(b"\x7fELF"));
    }
}
