//! Syscall numbers of the calls mcptap looks at, per architecture.

#[cfg(bpf_target_arch = "x86_64")]
mod numbers {
    pub const READ: u64 = 0;
    pub const WRITE: u64 = 1;
    pub const CLOSE: u64 = 3;
    pub const READV: u64 = 19;
    pub const WRITEV: u64 = 20;
    pub const DUP: u64 = 32;
    pub const DUP2: u64 = 33;
    pub const CONNECT: u64 = 42;
    pub const ACCEPT: u64 = 43;
    pub const SENDTO: u64 = 44;
    pub const RECVFROM: u64 = 45;
    pub const SENDMSG: u64 = 46;
    pub const RECVMSG: u64 = 47;
    pub const FCNTL: u64 = 72;
    pub const ACCEPT4: u64 = 288;
    pub const DUP3: u64 = 292;
    pub const CLOSE_RANGE: u64 = 436;
    pub const OPEN: u64 = 2;
    pub const OPENAT: u64 = 257;
    pub const OPENAT2: u64 = 437;
    pub const UNLINK: u64 = 87;
    pub const UNLINKAT: u64 = 263;
    pub const RMDIR: u64 = 84;
    pub const RENAME: u64 = 82;
    pub const RENAMEAT: u64 = 264;
    pub const RENAMEAT2: u64 = 316;
    pub const LISTEN: u64 = 50;
    pub const BIND: u64 = 49;
    pub const EXECVE: u64 = 59;
    pub const EXECVEAT: u64 = 322;
}

#[cfg(bpf_target_arch = "aarch64")]
mod numbers {
    pub const READ: u64 = 63;
    pub const WRITE: u64 = 64;
    pub const CLOSE: u64 = 57;
    pub const READV: u64 = 65;
    pub const WRITEV: u64 = 66;
    pub const DUP: u64 = 23;
    /// arm64 has no dup2: a number no syscall has.
    pub const DUP2: u64 = u64::MAX;
    pub const CONNECT: u64 = 203;
    pub const ACCEPT: u64 = 202;
    pub const SENDTO: u64 = 206;
    pub const RECVFROM: u64 = 207;
    pub const SENDMSG: u64 = 211;
    pub const RECVMSG: u64 = 212;
    pub const FCNTL: u64 = 25;
    pub const ACCEPT4: u64 = 242;
    pub const DUP3: u64 = 24;
    pub const CLOSE_RANGE: u64 = 436;
    // arm64 has only the *at forms: numbers no syscall has.
    pub const OPEN: u64 = u64::MAX - 1;
    pub const OPENAT: u64 = 56;
    pub const OPENAT2: u64 = 437;
    pub const UNLINK: u64 = u64::MAX - 2;
    pub const UNLINKAT: u64 = 35;
    pub const RMDIR: u64 = u64::MAX - 3;
    pub const RENAME: u64 = u64::MAX - 4;
    pub const RENAMEAT: u64 = 38;
    pub const RENAMEAT2: u64 = 276;
    pub const LISTEN: u64 = 201;
    pub const BIND: u64 = 200;
    pub const EXECVE: u64 = 221;
    pub const EXECVEAT: u64 = 281;
}

#[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
compile_error!("mcptap needs this architecture's syscall numbers in sysnr.rs and its pt_regs layout in regs.rs");

pub use numbers::*;

/// Whether `syscall::on_exit` does anything for syscall `nr`.
#[inline(always)]
pub fn is_handled(nr: u64) -> bool {
    matches!(
        nr,
        READ | WRITE
            | READV
            | WRITEV
            | RECVFROM
            | SENDTO
            | RECVMSG
            | SENDMSG
            | ACCEPT
            | ACCEPT4
            | CONNECT
            | DUP
            | DUP2
            | DUP3
            | FCNTL
            | CLOSE
            | CLOSE_RANGE
    ) || is_effect(nr)
}

/// Whether syscall `nr` reads or writes bytes (the ones a naming socket's
/// are copied from: `effects::on_socket_io`).
#[inline(always)]
pub fn moves_bytes(nr: u64) -> bool {
    matches!(nr, READ | WRITE | READV | WRITEV | RECVFROM | SENDTO | RECVMSG | SENDMSG)
}

/// Whether syscall `nr` opens a file.
#[inline(always)]
pub fn is_open(nr: u64) -> bool {
    matches!(nr, OPEN | OPENAT | OPENAT2)
}

/// Whether syscall `nr` is a side effect `effects::on_exit` records
/// (connect is both: a socket to capture and an effect).
#[inline(always)]
pub fn is_effect(nr: u64) -> bool {
    matches!(
        nr,
        OPEN | OPENAT | OPENAT2 | UNLINK | UNLINKAT | RMDIR | RENAME | RENAMEAT | RENAMEAT2 | LISTEN | BIND | CONNECT | EXECVE | EXECVEAT
    )
}
