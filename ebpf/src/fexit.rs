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
//! Each program (`fx_*`) has an empty twin (`fxf_*`) on the same function, for
//! `cargo xtask bench`: what the hook itself costs, beside mcptap's work;
//! and an untyped twin (`fxu_*`) for kernels whose BTF only declares the
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
                if syscall::on_exit::<true>(sysnr::$nr, &regs, ret) {
                    emit::flush();
                }
                0
            }

            #[fexit(function = $function)]
            pub fn $untyped(ctx: FExitContext) -> i32 {
                let regs = UntypedRegs::from_ctx(ctx.as_ptr() as *const u64);
                let ret: i64 = ctx.arg(1);
                if syscall::on_exit::<true>(sysnr::$nr, &regs, ret) {
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
    (fx_read, fxu_read, fxf_read, READ, "__x64_sys_read"),
    (fx_write, fxu_write, fxf_write, WRITE, "__x64_sys_write"),
    (fx_readv, fxu_readv, fxf_readv, READV, "__x64_sys_readv"),
    (fx_writev, fxu_writev, fxf_writev, WRITEV, "__x64_sys_writev"),
    (fx_recvfrom, fxu_recvfrom, fxf_recvfrom, RECVFROM, "__x64_sys_recvfrom"),
    (fx_sendto, fxu_sendto, fxf_sendto, SENDTO, "__x64_sys_sendto"),
    (fx_recvmsg, fxu_recvmsg, fxf_recvmsg, RECVMSG, "__x64_sys_recvmsg"),
    (fx_sendmsg, fxu_sendmsg, fxf_sendmsg, SENDMSG, "__x64_sys_sendmsg"),
    (fx_accept, fxu_accept, fxf_accept, ACCEPT, "__x64_sys_accept"),
    (fx_accept4, fxu_accept4, fxf_accept4, ACCEPT4, "__x64_sys_accept4"),
    (fx_connect, fxu_connect, fxf_connect, CONNECT, "__x64_sys_connect"),
    (fx_dup, fxu_dup, fxf_dup, DUP, "__x64_sys_dup"),
    (fx_dup2, fxu_dup2, fxf_dup2, DUP2, "__x64_sys_dup2"),
    (fx_dup3, fxu_dup3, fxf_dup3, DUP3, "__x64_sys_dup3"),
    (fx_fcntl, fxu_fcntl, fxf_fcntl, FCNTL, "__x64_sys_fcntl"),
    (fx_close, fxu_close, fxf_close, CLOSE, "__x64_sys_close"),
    (fx_close_range, fxu_close_range, fxf_close_range, CLOSE_RANGE, "__x64_sys_close_range"),
    (fx_open, fxu_open, fxf_open, OPEN, "__x64_sys_open"),
    (fx_openat, fxu_openat, fxf_openat, OPENAT, "__x64_sys_openat"),
    (fx_openat2, fxu_openat2, fxf_openat2, OPENAT2, "__x64_sys_openat2"),
    (fx_unlink, fxu_unlink, fxf_unlink, UNLINK, "__x64_sys_unlink"),
    (fx_unlinkat, fxu_unlinkat, fxf_unlinkat, UNLINKAT, "__x64_sys_unlinkat"),
    (fx_rmdir, fxu_rmdir, fxf_rmdir, RMDIR, "__x64_sys_rmdir"),
    (fx_rename, fxu_rename, fxf_rename, RENAME, "__x64_sys_rename"),
    (fx_renameat, fxu_renameat, fxf_renameat, RENAMEAT, "__x64_sys_renameat"),
    (fx_renameat2, fxu_renameat2, fxf_renameat2, RENAMEAT2, "__x64_sys_renameat2"),
    (fx_listen, fxu_listen, fxf_listen, LISTEN, "__x64_sys_listen"),
    (fx_bind, fxu_bind, fxf_bind, BIND, "__x64_sys_bind"),
    (fx_execve, fxu_execve, fxf_execve, EXECVE, "__x64_sys_execve"),
    (fx_execveat, fxu_execveat, fxf_execveat, EXECVEAT, "__x64_sys_execveat"),
}
