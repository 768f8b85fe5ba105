// mcptap's kernel programs: the module list both objects (`main.rs`,
// `compat.rs`) are built from.
//
// Hook families, one module each:
// - `fexit`: one program per syscall on its entry point, where the kernel
//   allows tracing programs (only those syscalls pay anything);
// - `tracepoint`: one program on the raw `sys_exit` tracepoint, dispatching
//   on the syscall number (where fexit is refused);
// - `process`: exec/exit tracepoints (executable-name rules, the end of
//   tracked processes, new programs that may bring TLS libraries);
// - `tls`: OpenSSL uprobes for the plaintext of TLS connections, and the
//   plaintext handling every TLS library shares;
// - `gotls`: Go's crypto/tls (uprobes at entry and at each return);
// - `rustls`: rustls in Rust programs with symbols;
// - `interp`: interpreters the agent pointed out at their exec, whose
//   first open of an MCP SDK file it hears of (before their first TLS
//   byte);
// - `effects`: side effects of MCP servers and the processes they start
//   (files, programs, connections, listeners), and the fork tracepoint
//   that marks those processes.
//
// What the syscall hooks do, shared by both families:
// - `syscall`: the handler, dispatching each syscall of interest;
// - `stdio`: the bytes stdio MCP servers read and write on their
//   stdin/stdout, and discovery of new servers by the first bytes they read;
// - `sockets`: TCP connections of tracked processes (plain HTTP bytes),
//   and discovery of MCP over HTTP by the requests untracked processes
//   serve or send;
// - `fds`: following stdin/stdout when a process moves them, and closes;
// - `regs`, `sysnr`: syscall arguments and numbers, per architecture.
//
// And below them: `emit` (the chunk emitter: per-CPU scratch → ring
// buffer), `maps` and `config` (state shared with the agent).
//
// Unrelated processes pay one or two array loads per hooked syscall,
// nothing more: every program bails out as soon as the calling process is
// neither tracked nor a discovery candidate.

mod config;
mod effects;
mod emit;
mod fds;
mod fexit;
mod gotls;
mod interp;
mod maps;
mod process;
mod regs;
mod rustls;
mod sockets;
mod stdio;
mod syscall;
mod sysnr;
mod tls;
mod tracepoint;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
