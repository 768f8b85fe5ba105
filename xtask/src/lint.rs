//! `cargo xtask lint`: clippy with `-D warnings` on the host crates (agent,
//! common, xtask, tests) and on the eBPF crate (nightly, built for the BPF
//! target, both objects). CI runs it (`.ci/run`).

use std::process::Command;

use anyhow::{Context, Result};

use crate::{cmd, repo_root, setup};

pub fn lint() -> Result<()> {
    setup::setup(setup::Needs {
        toolchain: true,
        peers: false,
        vms: false,
    })?;
    eprintln!("== clippy: host crates");
    cmd::run(
        Command::new("cargo")
            .args([
                "clippy",
                "--workspace",
                "--exclude",
                "mcptap-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
            .current_dir(repo_root()),
    )?;
    eprintln!("== clippy: kernel programs (nightly, bpfel-unknown-none)");
    let arch = match std::env::consts::ARCH {
        "aarch64" => "aarch64",
        _ => "x86_64",
    };
    cmd::run(
        Command::new("cargo")
            .args([
                "+nightly",
                "clippy",
                "--release",
                "-Z",
                "build-std=core",
                "--target",
                "bpfel-unknown-none",
                "--",
                "-D",
                "warnings",
            ])
            // What aya-build passes when it builds them (agent/build.rs).
            .env("CARGO_ENCODED_RUSTFLAGS", format!("--cfg=bpf_target_arch=\"{arch}\""))
            .env("CARGO_TARGET_DIR", repo_root().join("target/clippy-ebpf"))
            .current_dir(repo_root().join("ebpf")),
    )
    .context("clippy on the kernel programs failed (it needs the nightly toolchain's clippy component)")?;
    Ok(())
}
