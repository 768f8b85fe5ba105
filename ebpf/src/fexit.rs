//! The `fexit` syscall hook family (preferred): one fexit program per
//! syscall mcptap reads, attached to that syscall's entry point
//! (`__x64_sys_read`, ...; the agent picks the name for its architecture,
//! see `mcptap_common::names::FEXIT`). Only those syscalls pay anything:
//! a process's other syscalls run untouched, and for the hooked ones an
//! unwatched process pays the trampoline and one or two array loads.
//!
//! The entry points take the saved user registers (`const struct pt_regs *`,
//! typed by BTF), exactly what the raw `sys_exit` tracepoint hands over, so
//! both families share `syscall::on_exit` and send the same records. The
//! fexit context is the function's arguments followed by its return value:
//! `arg(0)` is the registers, `arg(1)` the syscall's result (read this way
//! rather than with `bpf_get_func_ret`, which needs Linux 5.17).
//!
//! Each program has an empty twin (`*_floor`) on the same function, for
//! `cargo xtask bench`: what the hook itself costs, beside mcptap's work;
//! and an `*_untyped` twin for kernels whose BTF only declares the
//! registers' struct for that function (see `regs::UntypedRegs`), which the
//! agent loads when the typed one is refused.

use aya_ebpf::{EbpfContext, macros::fexit, programs::FExitContext};

use crate::{
    emit,
    regs::{Regs, UntypedRegs},
    syscall, sysnr,
};

macro_rules! fexit_syscalls {
    ($(($program:ident, $untyped:ident, $floor:ident, $nr:ident, $function:literal)),* $(,)?) => {
        $(
            #[fexit(function = $function)]
            pub fn $program(ctx: FExitContext) -> i32 {
                let regs = Regs::new(ctx.arg(0));
                let ret: i64 = ctx.arg(1);
                if syscall::on_exit(sysnr::$nr, &regs, ret) {
                    emit::flush();
                }
                0
            }

            #[fexit(function = $function)]
            pub fn $untyped(ctx: FExitContext) -> i32 {
                let regs = UntypedRegs::from_ctx(ctx.as_ptr() as *const u64);
                let ret: i64 = ctx.arg(1);
                if syscall::on_exit(sysnr::$nr, &regs, ret) {
                    emit::flush();
                }
                0
            }

            #[fexit(function = $function)]
            pub fn $floor(_ctx: FExitContext) -> i32 {
                0
            }
        )*
    };
}

// The function named here only labels the ELF section: the agent chooses
// the kernel function at load time (per architecture). Program names are
// `mcptap_common::names::FEXIT`.
fexit_syscalls! {
    (fexit_read, fexit_read_untyped, fexit_read_floor, READ, "__x64_sys_read"),
    (fexit_write, fexit_write_untyped, fexit_write_floor, WRITE, "__x64_sys_write"),
    (fexit_readv, fexit_readv_untyped, fexit_readv_floor, READV, "__x64_sys_readv"),
    (fexit_writev, fexit_writev_untyped, fexit_writev_floor, WRITEV, "__x64_sys_writev"),
    (fexit_recvfrom, fexit_recvfrom_untyped, fexit_recvfrom_floor, RECVFROM, "__x64_sys_recvfrom"),
    (fexit_sendto, fexit_sendto_untyped, fexit_sendto_floor, SENDTO, "__x64_sys_sendto"),
    (fexit_recvmsg, fexit_recvmsg_untyped, fexit_recvmsg_floor, RECVMSG, "__x64_sys_recvmsg"),
    (fexit_sendmsg, fexit_sendmsg_untyped, fexit_sendmsg_floor, SENDMSG, "__x64_sys_sendmsg"),
    (fexit_accept, fexit_accept_untyped, fexit_accept_floor, ACCEPT, "__x64_sys_accept"),
    (fexit_accept4, fexit_accept4_untyped, fexit_accept4_floor, ACCEPT4, "__x64_sys_accept4"),
    (fexit_connect, fexit_connect_untyped, fexit_connect_floor, CONNECT, "__x64_sys_connect"),
    (fexit_dup, fexit_dup_untyped, fexit_dup_floor, DUP, "__x64_sys_dup"),
    (fexit_dup2, fexit_dup2_untyped, fexit_dup2_floor, DUP2, "__x64_sys_dup2"),
    (fexit_dup3, fexit_dup3_untyped, fexit_dup3_floor, DUP3, "__x64_sys_dup3"),
    (fexit_fcntl, fexit_fcntl_untyped, fexit_fcntl_floor, FCNTL, "__x64_sys_fcntl"),
    (fexit_close, fexit_close_untyped, fexit_close_floor, CLOSE, "__x64_sys_close"),
    (fexit_close_range, fexit_close_range_untyped, fexit_close_range_floor, CLOSE_RANGE, "__x64_sys_close_range"),
}
