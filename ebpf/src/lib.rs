//! Empty on purpose: this lib target lets the agent declare a build
//! dependency on the kernel programs (so cargo rebuilds it when they
//! change). The programs themselves are the `mcptap` binary target.
#![no_std]
