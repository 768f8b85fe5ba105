//! mcptap's kernel programs for kernels without `bpf_loop` (Linux 5.10 to
//! 5.16): the same programs (see `programs.rs`), with the chunk copy loop
//! bounded and walked by the verifier instead (see `emit`).
#![no_std]
#![no_main]

/// The chunk copy loop is a bounded loop (see `emit`).
const HAS_BPF_LOOP: bool = false;

include!("programs.rs");
