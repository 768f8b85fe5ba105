//! mcptap's kernel programs.
//!
//! - `dispatch`: one program on the raw `sys_exit` tracepoint that sends
//!   each syscall of interest to its module (see there why one program
//!   instead of one tracepoint per syscall);
//! - `stdio`: the bytes stdio MCP servers read and write on their
//!   stdin/stdout, and discovery of new servers by the first bytes they read;
//! - `sockets`: TCP connections of tracked processes (plain HTTP bytes),
//!   and discovery of MCP over HTTP by the requests untracked processes
//!   serve or send;
//! - `tls`: OpenSSL uprobes for the plaintext of TLS connections;
//! - `fds`: following stdin/stdout when a process moves them, and closes;
//! - `process`: exec/exit tracepoints (executable-name rules, the end of
//!   tracked processes, new programs that may bring TLS libraries);
//! - `emit`: the shared chunk emitter (per-CPU scratch → ring buffer);
//! - `regs`, `sysnr`: syscall arguments and numbers, per architecture;
//! - `maps` and `config`: state shared with the agent.
//!
//! Unrelated processes pay one array read per syscall, nothing more: every
//! program bails out as soon as the calling process is neither tracked nor
//! a discovery candidate.
#![no_std]
#![no_main]
// Atomic bit operations on map values (`maps::set_watched`); the kernel
// programs are built with the nightly toolchain anyway.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod config;
mod dispatch;
mod emit;
mod fds;
mod maps;
mod process;
mod regs;
mod sockets;
mod stdio;
mod sysnr;
mod tls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
