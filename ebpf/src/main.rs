//! mcptap's kernel programs.
//!
//! - `syscalls`: read/write/readv/writev exit tracepoints that copy the
//!   bytes MCP processes exchange over their stdin/stdout, and that discover
//!   new MCP processes by the first bytes they read;
//! - `fds`: dup/dup2/dup3/fcntl/close tracepoints that follow stdin and
//!   stdout when a process moves them to other descriptors;
//! - `args`: a syscall's arguments, read at its exit;
//! - `process`: exec/exit tracepoints that apply executable-name rules and
//!   tell the agent when a tracked process ends;
//! - `emit`: the shared chunk emitter (per-CPU scratch → ring buffer);
//! - `maps` and `config`: state shared with the agent.
//!
//! Unrelated processes pay one hash lookup per hooked syscall, nothing more:
//! every program bails out as soon as the calling process is neither tracked
//! nor a discovery candidate.
#![no_std]
#![no_main]

mod args;
mod config;
mod emit;
mod fds;
mod maps;
mod process;
mod syscalls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
