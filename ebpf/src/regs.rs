//! A syscall's number and arguments, read at its exit from the registers
//! the kernel saved when the task entered it (the `sys_exit` raw
//! tracepoint hands over that `struct pt_regs`).
//!
//! Reading them at exit, instead of stashing them at entry, means one hook
//! instead of two, no map between the two, and no blind spot for calls
//! already in progress when the agent attached (a server blocked in read()
//! when mcptap starts is seen at that very read). The `pt_regs` pointer is
//! typed by BTF, so the verifier lets these plain loads through and checks
//! each offset against the kernel's own layout.

use aya_ebpf::programs::BtfTracePointContext;

/// Slots (8 bytes each) of `struct pt_regs` holding the syscall number and
/// arguments 0 to 3.
#[cfg(bpf_target_arch = "x86_64")]
mod layout {
    /// `orig_ax`
    pub const NR: usize = 15;
    /// di, si, dx, r10
    pub const ARGS: [usize; 4] = [14, 13, 12, 7];
}

/// arm64 overwrites x0 with the return value: the first argument survives
/// in `orig_x0`; `syscallno` is an s32 right after it.
#[cfg(bpf_target_arch = "aarch64")]
mod layout {
    pub const NR_BYTE_OFFSET: usize = 280;
    /// orig_x0, regs[1], regs[2], regs[3]
    pub const ARGS: [usize; 4] = [34, 1, 2, 3];
}

#[derive(Clone, Copy)]
pub struct Regs {
    regs: *const u64,
}

impl Regs {
    /// The registers of a `sys_exit(struct pt_regs *regs, long ret)` event.
    #[inline(always)]
    pub fn of(ctx: &BtfTracePointContext) -> Regs {
        Regs { regs: ctx.arg(0) }
    }

    #[cfg(bpf_target_arch = "x86_64")]
    #[inline(always)]
    pub fn nr(&self) -> u64 {
        unsafe { *self.regs.add(layout::NR) }
    }

    #[cfg(bpf_target_arch = "aarch64")]
    #[inline(always)]
    pub fn nr(&self) -> u64 {
        unsafe { *(self.regs as *const u8).add(layout::NR_BYTE_OFFSET).cast::<i32>() as u64 }
    }

    #[inline(always)]
    pub fn arg0(&self) -> u64 {
        unsafe { *self.regs.add(layout::ARGS[0]) }
    }

    #[inline(always)]
    pub fn arg1(&self) -> u64 {
        unsafe { *self.regs.add(layout::ARGS[1]) }
    }

    #[inline(always)]
    pub fn arg2(&self) -> u64 {
        unsafe { *self.regs.add(layout::ARGS[2]) }
    }
}
