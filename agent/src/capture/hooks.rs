//! The syscall hook families, and which one this kernel gets.
//!
//! - `fexit` (preferred): one program per syscall mcptap reads, on that
//!   syscall's entry point (`__x64_sys_read`, ...). Only those syscalls pay
//!   anything; everything else a process does runs untouched.
//! - `tracepoint` (fallback): one program on the raw `sys_exit`
//!   tracepoint. Every syscall of every process then takes the kernel's
//!   slow syscall path (the floor), hooked or not.
//!
//! Chosen by trying, not by version: with `--hooks auto` (the default) the
//! fexit programs are loaded and attached, and any refusal (a kernel that
//! does not allow tracing programs, a function missing from its BTF, a
//! verifier refusal) undoes them and falls back to the tracepoint, saying
//! why. Both families run the same handler (ebpf/src/syscall.rs) and send
//! the same records.

use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, FExit, ProgramError},
};
use mcptap_common::names::{self, program};

use super::{CaptureError, attach_err, one_line};

/// What the operator asked for (`--hooks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum HookChoice {
    /// fexit where the kernel allows it, else the raw tracepoint.
    #[default]
    Auto,
    /// fexit or fail.
    Fexit,
    /// The raw `sys_exit` tracepoint, even where fexit would work.
    Tracepoint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookFamily {
    Fexit,
    Tracepoint,
}

impl HookFamily {
    pub fn name(self) -> &'static str {
        match self {
            HookFamily::Fexit => "fexit",
            HookFamily::Tracepoint => "tracepoint",
        }
    }
}

/// The family in use and why (`mcptap check`, the log, and
/// `mcptap_capture_hooks_info`).
#[derive(Debug, Clone)]
pub struct Hooks {
    pub family: HookFamily,
    /// A bounded label value: `fexit_allowed`, `forced`, `tracing_refused`,
    /// `function_missing`, `verifier_refused`, `attach_failed`,
    /// `architecture`.
    pub reason: &'static str,
    /// One line for people.
    pub why: String,
}

/// Why fexit could not be used.
struct Refusal {
    reason: &'static str,
    why: String,
}

/// Attaches the syscall hooks (or, with `floor`, their empty twins, for the
/// benchmarks) of the family `choice` leads to.
/// `effects`: also the syscalls hooked only for side effects (fexit).
pub fn attach(
    ebpf: &mut Ebpf,
    btf: &Btf,
    choice: HookChoice,
    floor: bool,
    effects: bool,
) -> Result<Hooks, CaptureError> {
    match choice {
        HookChoice::Tracepoint => {
            attach_tracepoint(ebpf, btf, floor)?;
            Ok(Hooks {
                family: HookFamily::Tracepoint,
                reason: "forced",
                why: "raw sys_exit tracepoint, as asked (--hooks tracepoint)".into(),
            })
        }
        HookChoice::Fexit => match attach_fexit(ebpf, btf, floor, effects) {
            Ok(()) => Ok(Hooks {
                family: HookFamily::Fexit,
                reason: "forced",
                why: "fexit on the syscall entry points, as asked (--hooks fexit)".into(),
            }),
            Err(refusal) => Err(CaptureError::Hooks(format!(
                "--hooks fexit: {}; use --hooks auto to fall back to the raw sys_exit tracepoint",
                refusal.why
            ))),
        },
        HookChoice::Auto => match attach_fexit(ebpf, btf, floor, effects) {
            Ok(()) => Ok(Hooks {
                family: HookFamily::Fexit,
                reason: "fexit_allowed",
                why: "fexit on the syscall entry points: only the syscalls mcptap reads pay anything".into(),
            }),
            Err(refusal) => {
                attach_tracepoint(ebpf, btf, floor)?;
                Ok(Hooks {
                    family: HookFamily::Tracepoint,
                    reason: refusal.reason,
                    why: format!(
                        "raw sys_exit tracepoint, because {}: every syscall of every process takes the kernel's slow path",
                        refusal.why
                    ),
                })
            }
        },
    }
}

fn attach_tracepoint(ebpf: &mut Ebpf, btf: &Btf, floor: bool) -> Result<(), CaptureError> {
    let name = if floor {
        program::SYS_EXIT_FLOOR
    } else {
        program::SYS_EXIT
    };
    let hook = "raw tracepoint sys_exit";
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or(CaptureError::Missing(name))?
        .try_into()
        .map_err(attach_err(name, hook))?;
    prog.load("sys_exit", btf).map_err(attach_err(name, hook))?;
    prog.attach().map_err(attach_err(name, hook))?;
    Ok(())
}

/// The kernel function of a syscall's entry point on this architecture.
pub fn entry_point(syscall: &str) -> Option<String> {
    match std::env::consts::ARCH {
        "x86_64" => Some(format!("__x64_sys_{syscall}")),
        "aarch64" if !names::X86_ONLY.contains(&syscall) => Some(format!("__arm64_sys_{syscall}")),
        _ => None,
    }
}

/// Loads and attaches every fexit program; on any failure, unloads what it
/// loaded (their links go with them) and says why.
fn attach_fexit(ebpf: &mut Ebpf, btf: &Btf, floor: bool, effects: bool) -> Result<(), Refusal> {
    if !matches!(std::env::consts::ARCH, "x86_64" | "aarch64") {
        return Err(Refusal {
            reason: "architecture",
            why: format!("no syscall entry points are known for {}", std::env::consts::ARCH),
        });
    }
    let mut loaded: Vec<&'static str> = Vec::new();
    let result = (|| {
        let mut targets = Vec::new();
        for &(syscall, typed, untyped, floor_name) in names::FEXIT {
            let Some(target) = entry_point(syscall) else { continue };
            if !effects && names::EFFECT_ONLY.contains(&syscall) {
                continue;
            }
            let name = if floor {
                floor_name
            } else {
                match load_fexit(ebpf, btf, typed, &target) {
                    Ok(()) => typed,
                    // This kernel's BTF declares the registers' struct for
                    // this function without defining it (5.10's network
                    // syscalls): the twin reads them untyped.
                    Err(err) if untyped_registers(&err) => {
                        tracing::debug!(function = %target, "registers untyped in this kernel's BTF: loading {untyped}");
                        untyped
                    }
                    Err(err) => return Err(refusal(&err, typed, &target, true)),
                }
            };
            if name != typed {
                load_fexit(ebpf, btf, name, &target).map_err(|e| refusal(&e, name, &target, true))?;
            }
            loaded.push(name);
            targets.push((name, target));
        }
        for (name, target) in targets {
            let prog = fexit_program(ebpf, name)?;
            prog.attach().map_err(|e| refusal(&e, name, &target, false))?;
        }
        Ok(())
    })();
    if result.is_err() {
        for name in loaded {
            if let Ok(prog) = fexit_program(ebpf, name) {
                let _ = prog.unload();
            }
        }
    }
    result
}

fn load_fexit(ebpf: &mut Ebpf, btf: &Btf, name: &'static str, target: &str) -> Result<(), ProgramError> {
    let prog = ebpf
        .program_mut(name)
        .and_then(|p| <&mut FExit>::try_from(p).ok())
        .ok_or(ProgramError::InvalidName { name: name.into() })?;
    prog.load(target, btf)
}

/// The verifier refused the program's first read of its context: the
/// function's argument is a pointer to a struct this kernel's BTF only
/// declares.
fn untyped_registers(err: &ProgramError) -> bool {
    matches!(err, ProgramError::LoadError { io_error, verifier_log }
        if io_error.raw_os_error() == Some(libc::EACCES)
            && verifier_log.to_string().contains("invalid bpf_context access"))
}

fn fexit_program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut FExit, Refusal> {
    ebpf.program_mut(name)
        .and_then(|p| <&mut FExit>::try_from(p).ok())
        .ok_or(Refusal {
            reason: "verifier_refused",
            why: format!("the embedded object has no fexit program {name} (rebuild mcptap)"),
        })
}

fn refusal(err: &ProgramError, name: &str, target: &str, loading: bool) -> Refusal {
    match err {
        ProgramError::LoadError { io_error, verifier_log } if io_error.raw_os_error() == Some(libc::EPERM) => {
            tracing::debug!(
                program = name,
                "fexit refused: {io_error}; verifier log: {verifier_log}"
            );
            Refusal {
                reason: "tracing_refused",
                why: "this kernel refuses tracing programs (fexit: EPERM)".into(),
            }
        }
        ProgramError::Btf(_) => Refusal {
            reason: "function_missing",
            why: format!("{target} is not in this kernel's BTF"),
        },
        _ if loading => Refusal {
            reason: "verifier_refused",
            why: format!("loading {name} on {target} failed: {}", one_line(err)),
        },
        _ => Refusal {
            reason: "attach_failed",
            why: format!("attaching {name} to {target} failed: {}", one_line(err)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_per_architecture() {
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(entry_point("read").as_deref(), Some("__x64_sys_read"));
            assert_eq!(entry_point("dup2").as_deref(), Some("__x64_sys_dup2"));
        }
    }

    #[test]
    fn every_fexit_program_has_its_twins() {
        for &(syscall, program, untyped, floor) in names::FEXIT {
            assert_eq!(program, format!("fx_{syscall}"));
            assert_eq!(untyped, format!("fxu_{syscall}"));
            assert_eq!(floor, format!("fxf_{syscall}"));
            // Whole in `bpftool prog` (the kernel keeps 15 characters).
            assert!(untyped.len() <= 15);
        }
    }
}
