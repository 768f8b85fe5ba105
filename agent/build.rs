//! Builds the kernel programs (ebpf/) for the BPF target with the nightly
//! toolchain and bpf-linker — two objects, `mcptap` (kernels with bpf_loop)
//! and `mcptap-compat` (5.10 to 5.16), see ebpf/src/programs.rs — so that
//! `mcptap` embeds them and ships as one binary; and embeds the dashboard's
//! files (ui/dist, built by `cargo xtask` with npm). `cargo xtask setup`
//! installs what this needs.
use std::{
    ffi::OsString,
    fmt::Write as _,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, anyhow, bail};

fn main() -> anyhow::Result<()> {
    embed_ui()?;
    build_ebpf("mcptap-ebpf", "../ebpf")
}

/// Builds `package`'s binaries for the BPF target as aya-build does
/// (`rustup run nightly cargo build -Z build-std=core`, BTF, the
/// `bpf_target_arch` cfg) and copies them into `OUT_DIR`. What it says is
/// the compiler's own warnings and errors: a build script can pass output
/// on only as `cargo:warning` lines, and aya-build passes cargo's progress
/// too (53 "warning:" lines on a quiet first build); the progress is shown
/// only when the build fails.
fn build_ebpf(package: &str, root_dir: &str) -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed={root_dir}");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let endian = std::env::var("CARGO_CFG_TARGET_ENDIAN").context("CARGO_CFG_TARGET_ENDIAN not set")?;
    let target = match endian.as_str() {
        "little" => "bpfel-unknown-none",
        "big" => "bpfeb-unknown-none",
        other => bail!("unsupported endian {other}"),
    };
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH not set")?;
    // The names aya-ebpf's `bpf_target_arch` cfg knows.
    let arch = match arch.as_str() {
        a if a.starts_with("riscv64") => "riscv64",
        a => a,
    }
    .to_string();
    let mut rustflags = OsString::new();
    for (i, flag) in [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".into(),
        "-Clink-arg=--btf".into(),
    ]
    .iter()
    .enumerate()
    {
        if i > 0 {
            rustflags.push("\x1f");
        }
        rustflags.push(flag);
    }
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "build", "--package", package, "--bins"])
        .args([
            "--message-format=json-render-diagnostics",
            "--release",
            "--target",
            target,
        ])
        .args(["-Z", "build-std=core", "--target-dir"])
        .arg(out_dir.join("ebpf-target"))
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        // The nightly toolchain's own rustc, not this build's.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("cannot run {cmd:?}"))?;
    let stderr = child.stderr.take().context("stderr")?;
    let stderr = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let mut executables = Vec::new();
    for line in BufReader::new(child.stdout.take().context("stdout")?).lines() {
        let line = line?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && let (Some(name), Some(exe)) = (msg["target"]["name"].as_str(), msg["executable"].as_str())
        {
            executables.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    let status = child.wait()?;
    let stderr = stderr
        .join()
        .map_err(|_| anyhow!("reading the build's output failed"))?;
    // Diagnostics are rendered on stderr: the compiler's warnings and
    // errors are passed on; cargo's progress only when the build failed.
    let mut in_diagnostic = false;
    for line in &stderr {
        let progress = line.trim_start().starts_with(|c: char| c.is_ascii_uppercase())
            && [
                "Compiling",
                "Finished",
                "Updating",
                "Downloading",
                "Downloaded",
                "Locking",
                "Blocking",
                "Fresh",
            ]
            .iter()
            .any(|w| line.trim_start().starts_with(w));
        if line.starts_with("warning") || line.starts_with("error") {
            in_diagnostic = true;
        } else if progress || line.is_empty() {
            in_diagnostic = false;
        }
        if (in_diagnostic && !progress) || !status.success() {
            println!("cargo:warning={line}");
        }
    }
    if !status.success() {
        bail!("building the kernel programs failed ({status}): {cmd:?}");
    }
    for (name, exe) in executables {
        std::fs::copy(&exe, out_dir.join(&name))
            .with_context(|| format!("cannot copy {} into OUT_DIR", exe.display()))?;
    }
    Ok(())
}

/// `ui_assets.rs`: `FILES: &[(path, bytes)]` of every file in ui/dist. A
/// build without it (plain `cargo build`) gets a page saying how to build
/// the dashboard.
fn embed_ui() -> anyhow::Result<()> {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut files = Vec::new();
    collect(&dist, &dist, &mut files)?;
    files.sort();
    let out = Path::new(&std::env::var("OUT_DIR")?).join("ui_assets.rs");
    let mut code = String::from("pub static FILES: &[(&str, &[u8])] = &[\n");
    if files.is_empty() {
        code.push_str(
            "    (\"index.html\", b\"<!doctype html><title>mcptap</title><p>The dashboard was not built into this binary: build it with <code>cargo xtask build</code> (needs npm).\"),\n",
        );
    }
    for (rel, abs) in &files {
        println!("cargo:rerun-if-changed={}", abs.display());
        writeln!(code, "    ({rel:?}, include_bytes!({:?})),", abs.display().to_string())?;
    }
    code.push_str("];\n");
    std::fs::write(out, code)?;
    Ok(())
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, std::path::PathBuf)>) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            collect(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root)?.to_string_lossy().replace('\\', "/");
            out.push((rel, path.canonicalize()?));
        }
    }
    Ok(())
}
