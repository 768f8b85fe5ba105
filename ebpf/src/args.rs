//! A syscall's arguments, read at its exit from the registers the kernel
//! saved when the task entered it.
//!
//! Reading them at exit, instead of stashing them at entry, means one hook
//! per syscall instead of two, no map between the two, and no blind spot
//! for calls already in progress when the agent attached (a server blocked
//! in read() when mcptap starts is seen at that very read).

use aya_ebpf::helpers::{
    bpf_probe_read_kernel,
    generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
};

/// Offsets of the first three syscall arguments in `struct pt_regs`.
#[cfg(bpf_target_arch = "x86_64")]
const ARG_OFFSETS: [usize; 3] = [112, 104, 96]; // di, si, dx
/// arm64 overwrites x0 with the return value: the first argument survives
/// in `orig_x0`.
#[cfg(bpf_target_arch = "aarch64")]
const ARG_OFFSETS: [usize; 3] = [272, 8, 16]; // orig_x0, regs[1], regs[2]
#[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
compile_error!("mcptap reads syscall arguments from pt_regs: add this architecture's offsets to args.rs");

/// The calling syscall's arguments 0, 1 and 2.
#[inline(always)]
pub fn syscall_args() -> Option<[u64; 3]> {
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
    if regs.is_null() {
        return None;
    }
    let read = |off: usize| unsafe { bpf_probe_read_kernel(regs.add(off) as *const u64) }.ok();
    Some([read(ARG_OFFSETS[0])?, read(ARG_OFFSETS[1])?, read(ARG_OFFSETS[2])?])
}

/// The calling syscall's first argument.
#[inline(always)]
pub fn syscall_arg0() -> Option<u64> {
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
    if regs.is_null() {
        return None;
    }
    unsafe { bpf_probe_read_kernel(regs.add(ARG_OFFSETS[0]) as *const u64) }.ok()
}
