//! The `tracepoint` syscall hook family (fallback): one program on the raw
//! `sys_exit` tracepoint (typed by BTF), dispatching on the syscall number.
//!
//! Used where the kernel refuses tracing programs (fexit): these machines'
//! sandboxed kernels, or when forced (`--hooks tracepoint`). Its cost is
//! the kernel's: with any syscall tracepoint enabled every task takes the
//! slow syscall path, for every syscall, hooked or not (the `floor` below
//! measures it). Why one raw tracepoint rather than a tracepoint per
//! syscall: the per-syscall tracepoints add a perf record build per call
//! (~100 ns each, measured), while the raw one calls the program with the
//! saved registers and the return value directly.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::{
    emit,
    regs::{Args, Regs},
    syscall,
};

#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: BtfTracePointContext) -> i32 {
    // sys_exit(struct pt_regs *regs, long ret)
    let regs = Regs::new(ctx.arg(0));
    let ret: i64 = ctx.arg(1);
    // Side effects: not in the compat object (see `syscall::on_exit`).
    if syscall::on_exit::<{ crate::HAS_BPF_LOOP }>(regs.nr(), &regs, ret) {
        emit::flush();
    }
    0
}

/// An empty program on the same hook, for `cargo xtask bench`: what any
/// program on the raw `sys_exit` tracepoint costs every syscall of every
/// process, measured beside mcptap's own cost. Never attached by
/// `mcptap run`.
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit_floor(_ctx: BtfTracePointContext) -> i32 {
    0
}
