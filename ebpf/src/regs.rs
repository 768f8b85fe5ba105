//! A syscall's number and arguments, read at its exit from the registers
//! the kernel saved when the task entered it (the `sys_exit` raw
//! tracepoint and the syscall entry points hooked by fexit both hand over
//! that `struct pt_regs`).
//!
//! Reading them at exit, instead of stashing them at entry, means one hook
//! instead of two, no map between the two, and no blind spot for calls
//! already in progress when the agent attached (a server blocked in read()
//! when mcptap starts is seen at that very read). The `pt_regs` pointer is
//! typed by BTF, so the verifier lets these plain loads through and checks
//! each offset against the kernel's own layout.

use aya_ebpf::helpers::bpf_probe_read_kernel;

/// Slots (8 bytes each) of `struct pt_regs` holding the syscall number and
/// arguments 0 to 3.
#[cfg(bpf_target_arch = "x86_64")]
mod layout {
    /// `orig_ax`
    pub const NR: usize = 15;
    /// di, si, dx, r10
    pub const ARGS: [usize; 4] = [14, 13, 12, 7];
    /// sp
    pub const SP: usize = 19;
}

/// arm64 overwrites x0 with the return value: the first argument survives
/// in `orig_x0`; `syscallno` is an s32 right after it.
#[cfg(bpf_target_arch = "aarch64")]
mod layout {
    pub const NR_BYTE_OFFSET: usize = 280;
    /// orig_x0, regs[1], regs[2], regs[3]
    pub const ARGS: [usize; 4] = [34, 1, 2, 3];
    /// sp (after regs[0..31])
    pub const SP: usize = 31;
}

/// A syscall's number and first arguments.
pub trait Args {
    fn nr(&self) -> u64;
    fn arg0(&self) -> u64;
    fn arg1(&self) -> u64;
    fn arg2(&self) -> u64;
    fn arg3(&self) -> u64;
    /// The user stack pointer: after a successful execve, the new
    /// program's, pointing at its argc (then argv).
    fn sp(&self) -> u64;
}

/// The registers behind a pointer the verifier knows is a `struct pt_regs`
/// (BTF-typed): read with plain loads, each offset checked at load time.
#[derive(Clone, Copy)]
pub struct Regs {
    regs: *const u64,
}

impl Regs {
    /// The `struct pt_regs *` a hook was handed.
    #[inline(always)]
    pub fn new(regs: *const u64) -> Regs {
        Regs { regs }
    }
}

impl Args for Regs {
    #[cfg(bpf_target_arch = "x86_64")]
    #[inline(always)]
    fn nr(&self) -> u64 {
        unsafe { *self.regs.add(layout::NR) }
    }

    #[cfg(bpf_target_arch = "aarch64")]
    #[inline(always)]
    fn nr(&self) -> u64 {
        unsafe { *(self.regs as *const u8).add(layout::NR_BYTE_OFFSET).cast::<i32>() as u64 }
    }

    #[inline(always)]
    fn arg0(&self) -> u64 {
        unsafe { *self.regs.add(layout::ARGS[0]) }
    }

    #[inline(always)]
    fn arg1(&self) -> u64 {
        unsafe { *self.regs.add(layout::ARGS[1]) }
    }

    #[inline(always)]
    fn arg2(&self) -> u64 {
        unsafe { *self.regs.add(layout::ARGS[2]) }
    }

    #[inline(always)]
    fn arg3(&self) -> u64 {
        unsafe { *self.regs.add(layout::ARGS[3]) }
    }

    #[inline(always)]
    fn sp(&self) -> u64 {
        unsafe { *self.regs.add(layout::SP) }
    }
}

/// The registers of a syscall entry point whose BTF declares `struct
/// pt_regs` without defining it (Linux 5.10's network syscalls: net/socket.c
/// sees only a forward declaration). The verifier then refuses any access
/// to that argument, so the pointer is copied out of the fexit context (an
/// array of u64: the arguments, then the return value) and the registers
/// read through it with `bpf_probe_read_kernel`. The layout is the
/// architecture's ABI, the same offsets as above. Only used when the typed
/// program is refused (the agent tries that first).
#[derive(Clone, Copy)]
pub struct UntypedRegs {
    regs: *const u64,
}

impl UntypedRegs {
    /// The first argument of the fexit context `ctx`.
    #[inline(always)]
    pub fn from_ctx(ctx: *const u64) -> UntypedRegs {
        let regs = unsafe { bpf_probe_read_kernel(ctx) }.unwrap_or(0);
        UntypedRegs {
            regs: regs as *const u64,
        }
    }

    #[inline(always)]
    fn slot(&self, i: usize) -> u64 {
        if self.regs.is_null() {
            return u64::MAX;
        }
        unsafe { bpf_probe_read_kernel(self.regs.add(i)) }.unwrap_or(u64::MAX)
    }
}

impl Args for UntypedRegs {
    #[cfg(bpf_target_arch = "x86_64")]
    #[inline(always)]
    fn nr(&self) -> u64 {
        self.slot(layout::NR)
    }

    #[cfg(bpf_target_arch = "aarch64")]
    #[inline(always)]
    fn nr(&self) -> u64 {
        self.slot(layout::NR_BYTE_OFFSET / 8) & 0xffff_ffff
    }

    #[inline(always)]
    fn arg0(&self) -> u64 {
        self.slot(layout::ARGS[0])
    }

    #[inline(always)]
    fn arg1(&self) -> u64 {
        self.slot(layout::ARGS[1])
    }

    #[inline(always)]
    fn arg2(&self) -> u64 {
        self.slot(layout::ARGS[2])
    }

    #[inline(always)]
    fn arg3(&self) -> u64 {
        self.slot(layout::ARGS[3])
    }

    #[inline(always)]
    fn sp(&self) -> u64 {
        self.slot(layout::SP)
    }
}
