//! Checks made before loading anything, each failing with a message that
//! says what is wrong and what to do about it.

use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PreflightError {
    #[error(
        "mcptap needs root (or CAP_BPF + CAP_PERFMON + CAP_SYS_RESOURCE) to load its eBPF programs; \
         run it with sudo, or grant the capabilities (see deploy/)"
    )]
    NotPrivileged,
    #[error(
        "tracefs is not mounted and mounting it at /sys/kernel/tracing failed ({0}); \
         mount it with `mount -t tracefs tracefs /sys/kernel/tracing` (in a container: mount the host's \
         /sys/kernel/tracing) and start mcptap again"
    )]
    NoTracefs(std::io::Error),
    #[error("this kernel has no tracepoint {0} (looked in {1}); mcptap needs syscall and sched tracepoints")]
    MissingTracepoint(String, PathBuf),
    #[error("cannot read {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error(
        "Linux {0} exposes no BTF type information (/sys/kernel/btf/vmlinux is missing) and mcptap's kernel hooks \
         are typed by it: run a kernel built with CONFIG_DEBUG_INFO_BTF=y (every major distribution's since 2020)"
    )]
    NoBtf(String),
    #[error("Linux {release} lacks {missing}: mcptap needs Linux 5.10 or later with BPF and BTF")]
    Unsupported { release: String, missing: String },
}

/// Where tracefs is mounted, mounting it when it is absent.
pub fn ensure_tracefs() -> Result<PathBuf, PreflightError> {
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(PathBuf::from(dir));
        }
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: constant, NUL-terminated arguments.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(PreflightError::NoTracefs(std::io::Error::last_os_error()));
    }
    tracing::warn!("tracefs was not mounted: mounted it at /sys/kernel/tracing");
    Ok(PathBuf::from("/sys/kernel/tracing"))
}

/// Fails unless this process may load tracing eBPF programs.
pub fn require_privileges() -> Result<(), PreflightError> {
    if is_privileged() {
        Ok(())
    } else {
        Err(PreflightError::NotPrivileged)
    }
}

/// True when this process may load tracing eBPF programs.
fn is_privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let Some(eff) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    else {
        return false;
    };
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// Offsets in tracepoint records that the kernel programs rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TracepointLayout {
    /// Offset of `group_dead` in sched_process_exit, 0 when absent.
    pub exit_group_dead: u32,
    /// Offset of `child_pid` in sched_process_fork (side effects: the
    /// processes servers start).
    pub fork_child_pid: u16,
    /// Offset of the `filename` data location in sched_process_exec (side
    /// effects: the programs they run).
    pub exec_filename: u16,
}

/// Reads the record layout of the process tracepoints (the one field the
/// programs use moves between kernels, so it is looked up, not assumed).
/// Syscall arguments come from the BTF-typed registers (ebpf/src/regs.rs).
pub fn check_tracepoint_layout(tracefs: &Path) -> Result<TracepointLayout, PreflightError> {
    let exec = format_fields(tracefs, "sched/sched_process_exec")?;
    let exit = format_fields(tracefs, "sched/sched_process_exit")?;
    let fork = format_fields(tracefs, "sched/sched_process_fork")?;
    let offset = |fields: &[(String, usize)], field: &str| {
        fields.iter().find(|(name, _)| name == field).map_or(0, |(_, off)| *off)
    };
    Ok(TracepointLayout {
        exit_group_dead: offset(&exit, "group_dead") as u32,
        // 0 (not found, or beyond a u16): the program does nothing.
        fork_child_pid: u16::try_from(offset(&fork, "child_pid")).unwrap_or(0),
        exec_filename: u16::try_from(offset(&exec, "filename")).unwrap_or(0),
    })
}

/// (field name, offset) pairs of a tracepoint's `format` file.
fn format_fields(tracefs: &Path, tracepoint: &str) -> Result<Vec<(String, usize)>, PreflightError> {
    let path = tracefs.join("events").join(tracepoint).join("format");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(PreflightError::MissingTracepoint(tracepoint.into(), path));
        }
        Err(err) => return Err(PreflightError::Io(path, err)),
    };
    Ok(parse_format(&text))
}

/// Parses lines like `field:unsigned int fd;<TAB>offset:16;<TAB>size:8;<TAB>signed:0;`.
fn parse_format(text: &str) -> Vec<(String, usize)> {
    text.lines()
        .filter_map(|line| {
            let decl = line.trim().strip_prefix("field:")?;
            let (decl, rest) = decl.split_once(';')?;
            let name = decl.split_whitespace().last()?;
            let name = name.split('[').next()?.trim_start_matches('*');
            let offset = rest.split(';').find_map(|p| p.trim().strip_prefix("offset:"))?;
            Some((name.to_string(), offset.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tracefs_format_files() {
        let text = "name: sys_enter_read\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
                    \tfield:unsigned int fd;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:char * buf;\toffset:24;\tsize:8;\tsigned:0;\n\
                    \tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n";
        let fields = parse_format(text);
        assert!(fields.contains(&("fd".into(), 16)));
        assert!(fields.contains(&("buf".into(), 24)));
        assert!(fields.contains(&("comm".into(), 8)));
        assert!(fields.contains(&("common_type".into(), 0)));
    }
}
