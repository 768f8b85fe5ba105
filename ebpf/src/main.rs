//! mcptap's kernel programs, built twice (see `programs.rs`): this object
//! for kernels with `bpf_loop` (Linux 5.17+), `compat.rs` for 5.10 to 5.16.
//! The agent probes the kernel and loads one of them.
#![no_std]
#![no_main]

/// The chunk copy loop uses `bpf_loop` (see `emit`).
const HAS_BPF_LOOP: bool = true;

include!("programs.rs");
