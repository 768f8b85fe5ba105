//! `cargo xtask setup`: installs what building and testing need, once.
//!
//! Every step first checks whether its result is already there, so a second
//! run does nothing and takes a second. A step that fails stops everything
//! with a message naming the step and what to do.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{cmd, repo_root};

/// The LLVM major version bpf-linker is built against; it must match the
/// nightly rustc's LLVM (docs/toolchain.md).
const LLVM_MAJOR: &str = "22";
const BPF_LINKER_VERSION: &str = "0.13.0";

fn llvm_prefix() -> PathBuf {
    PathBuf::from(format!("/usr/lib/llvm-{LLVM_MAJOR}"))
}

/// What to set up.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    /// LLVM, the nightly toolchain with rust-src, bpf-linker.
    pub toolchain: bool,
    /// The MCP peers of the end-to-end tests (Python venv, npm packages).
    pub peers: bool,
    /// What booting the kernel matrix needs (QEMU, virtiofsd, busybox, kmod,
    /// cpio, xz) and bpftool for the benchmarks.
    pub vms: bool,
}

pub fn setup(needs: Needs) -> Result<()> {
    if needs.toolchain {
        step("LLVM 22 development files", ensure_llvm)?;
        step("nightly Rust with rust-src", ensure_nightly)?;
        step("bpf-linker", ensure_bpf_linker)?;
        step(
            "dashboard front-end packages (ui/package-lock.json)",
            ensure_ui_packages,
        )?;
    }
    if needs.peers {
        step("Debian packages of the tests' receivers", ensure_test_packages)?;
        step("Python MCP peers (tests/peers/requirements.txt)", ensure_python_peers)?;
        step("Node MCP peers (tests/peers/package-lock.json)", ensure_node_peers)?;
        step(
            "Go MCP peers (tests/peers/go, built into target/peers/go)",
            ensure_go_peers,
        )?;
        step(
            "Rust MCP peers (tests/peers/rust: rmcp from crates.io, built into target/peers/rust)",
            ensure_rust_peers,
        )?;
    }
    if needs.vms {
        step(
            "Debian packages of the kernel matrix (QEMU, busybox, kmod, cpio, bpftool)",
            || ensure_debs(VM_PACKAGES),
        )?;
    }
    Ok(())
}

fn step(name: &str, f: impl FnOnce() -> Result<Option<String>>) -> Result<()> {
    match f() {
        Ok(None) => {
            eprintln!("setup: {name}: present");
            Ok(())
        }
        Ok(Some(done)) => {
            eprintln!("setup: {name}: {done}");
            Ok(())
        }
        Err(err) => Err(err.context(format!("setup step `{name}` failed"))),
    }
}

pub fn is_root() -> bool {
    // `id -u` avoids a libc dependency for one call.
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Runs a command as root: directly when root, else through sudo.
fn as_root(program: &str, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new(program);
        c.args(args);
        c
    } else {
        let mut c = Command::new("sudo");
        c.arg("-E").arg(program).args(args);
        c
    }
}

fn ensure_llvm() -> Result<Option<String>> {
    if llvm_prefix().join("bin/llvm-config").exists() {
        return Ok(None);
    }
    let package = format!("llvm-{LLVM_MAJOR}-dev");
    cmd::run(as_root("apt-get", &["update"]).env("DEBIAN_FRONTEND", "noninteractive"))
        .context("apt-get update failed (is this a Debian/Ubuntu host with network access?)")?;
    cmd::run(
        as_root("apt-get", &["install", "-y", "--no-install-recommends", &package])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("apt-get install {package} failed; install LLVM {LLVM_MAJOR} by hand"))?;
    if !llvm_prefix().join("bin/llvm-config").exists() {
        bail!(
            "{package} is installed but {} is missing",
            llvm_prefix().join("bin/llvm-config").display()
        );
    }
    Ok(Some(format!("installed {package}")))
}

/// Real receivers and tools the end-to-end tests drive: rsyslog (syslog
/// delivery, with its GnuTLS driver for syslog over TLS).
/// Chromium drives the dashboard's browser test (with a font: installs
/// here skip recommended packages, and the screenshots should be legible);
/// promtool (Debian's prometheus package) checks the alerting rules; tmux
/// drives `mcptap top`.
const TEST_PACKAGES: &[&str] = &[
    "rsyslog",
    "rsyslog-gnutls",
    "chromium",
    "fonts-liberation",
    "prometheus",
    "tmux",
    // The lifecycle test looks for programs left in the kernel.
    "bpftool",
    // The Go MCP peers (tests/peers/go) are built with Debian's Go.
    "golang-go",
    // Stripped copies of the Rust MCP peers (tests/peers/rust).
    "binutils",
    // The container image and the DaemonSet's test (deploy/container;
    // runc: crun refuses these machines' cgroups), its base and the
    // systemd test's root made from Debian's archive.
    "podman",
    "runc",
    "debootstrap",
];

fn deb_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| o.stdout.ends_with(b"install ok installed"))
}

/// Booting Debian's stock kernels under QEMU (xtask/src/vm), and bpftool
/// for the benchmarks' per-program costs.
const VM_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "kmod",
    "cpio",
    "xz-utils",
    "bpftool",
];

/// What `cargo xtask image` needs.
pub const IMAGE_PACKAGES: &[&str] = &["podman", "runc", "debootstrap"];

pub fn ensure_image_packages() -> Result<Option<String>> {
    ensure_debs(IMAGE_PACKAGES)
}

fn ensure_test_packages() -> Result<Option<String>> {
    ensure_debs(TEST_PACKAGES)
}

fn ensure_debs(packages: &[&str]) -> Result<Option<String>> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !deb_installed(p)).collect();
    if missing.is_empty() {
        return Ok(None);
    }
    cmd::run(as_root("apt-get", &["update"]).env("DEBIAN_FRONTEND", "noninteractive"))
        .context("apt-get update failed (is this a Debian/Ubuntu host with network access?)")?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(&missing);
    cmd::run(as_root("apt-get", &args).env("DEBIAN_FRONTEND", "noninteractive"))
        .with_context(|| format!("apt-get install {} failed", missing.join(" ")))?;
    Ok(Some(format!("installed {}", missing.join(" "))))
}

fn ensure_nightly() -> Result<Option<String>> {
    let mut did = Vec::new();
    let installed = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output();
    let installed = match installed {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        _ => {
            cmd::run(Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]))
            .context("installing the nightly toolchain failed")?;
            did.push("installed the nightly toolchain");
            String::from("rust-src")
        }
    };
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        cmd::run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
            .context("rustup could not add rust-src to the nightly toolchain (needed for -Z build-std=core)")?;
        did.push("added rust-src");
    }
    // `cargo xtask lint` runs clippy on the kernel programs with it.
    if !installed.lines().any(|l| l.starts_with("clippy")) {
        cmd::run(Command::new("rustup").args(["component", "add", "clippy", "--toolchain", "nightly"]))
            .context("rustup could not add clippy to the nightly toolchain (cargo xtask lint needs it)")?;
        did.push("added clippy");
    }
    // bpf-linker and the nightly's LLVM must agree on the major version.
    let version = cmd::output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let llvm = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .unwrap_or("?");
    if !llvm.starts_with(&format!("{LLVM_MAJOR}.")) {
        bail!(
            "the nightly toolchain uses LLVM {llvm}, but bpf-linker is built against LLVM {LLVM_MAJOR}; see docs/toolchain.md"
        );
    }
    Ok((!did.is_empty()).then(|| did.join(", ")))
}

fn bpf_linker_path() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo"));
    home.join("bin/bpf-linker")
}

fn ensure_bpf_linker() -> Result<Option<String>> {
    let linker = bpf_linker_path();
    if linker.exists()
        && Command::new(&linker)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    {
        return Ok(None);
    }
    let path = format!(
        "{}:{}",
        llvm_prefix().join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    cmd::run(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{LLVM_MAJOR}"))
            .env("PATH", path)
            .env("LLVM_PREFIX", llvm_prefix()),
    )
    .context("building bpf-linker failed (it needs llvm-22-dev; see docs/toolchain.md)")?;
    Ok(Some(format!("installed bpf-linker {BPF_LINKER_VERSION}")))
}

const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// cargo-fuzz (crates.io), for the fuzz targets.
pub fn ensure_cargo_fuzz() -> Result<()> {
    step("cargo-fuzz", || {
        let ok = Command::new("cargo")
            .args(["fuzz", "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(None);
        }
        cmd::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked", "--version", CARGO_FUZZ_VERSION]))
            .context("cargo install cargo-fuzz failed")?;
        Ok(Some(format!("installed cargo-fuzz {CARGO_FUZZ_VERSION}")))
    })
}

pub fn peers_dir() -> PathBuf {
    repo_root().join("tests/peers")
}

pub fn venv_python() -> PathBuf {
    peers_dir().join(".venv/bin/python")
}

/// Whether `stamp` holds exactly the contents of `source` (what was
/// installed last time).
fn up_to_date(stamp: &Path, source: &Path) -> Result<bool> {
    let want = fs::read(source).with_context(|| format!("cannot read {}", source.display()))?;
    Ok(fs::read(stamp).is_ok_and(|have| have == want))
}

fn ensure_python_peers() -> Result<Option<String>> {
    let dir = peers_dir();
    let requirements = dir.join("requirements.txt");
    let stamp = dir.join(".venv/.mcptap-installed");
    if venv_python().exists() && up_to_date(&stamp, &requirements)? {
        return Ok(None);
    }
    if !venv_python().exists() {
        cmd::run(Command::new("python3").args(["-m", "venv"]).arg(dir.join(".venv")))
            .context("python3 -m venv failed: install Python 3.10+ with venv support")?;
    }
    cmd::run(
        Command::new(venv_python())
            .args(["-m", "pip", "install", "--disable-pip-version-check", "-q", "-r"])
            .arg(&requirements),
    )
    .context("pip could not install the Python peers")?;
    fs::copy(&requirements, &stamp)?;
    Ok(Some("installed into tests/peers/.venv".into()))
}

/// Where the Go peers are built, and their builds: plain, stripped with
/// `-trimpath`, position-independent and stripped.
pub fn go_peers_dir() -> PathBuf {
    repo_root().join("target/peers/go")
}

const GO_BUILDS: &[(&str, &str, &[&str])] = &[
    ("server", "./server", &[]),
    ("server-stripped", "./server", &["-ldflags=-s -w", "-trimpath"]),
    (
        "server-pie",
        "./server",
        &["-buildmode=pie", "-ldflags=-s -w", "-trimpath"],
    ),
    ("client", "./client", &[]),
    ("client-stripped", "./client", &["-ldflags=-s -w", "-trimpath"]),
];

/// Builds the Go peers (standard library only: no download); Go's own
/// cache makes a rebuild of unchanged sources take a second.
fn ensure_go_peers() -> Result<Option<String>> {
    let out = go_peers_dir();
    fs::create_dir_all(&out)?;
    for (name, package, flags) in GO_BUILDS {
        cmd::run(
            Command::new("go")
                .arg("build")
                .args(*flags)
                .arg("-o")
                .arg(out.join(name))
                .arg(package)
                .current_dir(peers_dir().join("go"))
                .env("GOCACHE", out.join("cache"))
                .env("GOPATH", out.join("gopath"))
                .env("GOFLAGS", "-mod=mod")
                .env("GOTOOLCHAIN", "local")
                .env("GOPROXY", "off"),
        )
        .with_context(|| format!("go build of the Go peer {name} failed (Debian's golang-go)"))?;
    }
    Ok(None)
}

/// Where the Rust peers are built: `rmcp-server` and `rmcp-client` with
/// their symbols, and stripped copies (`-stripped`).
pub fn rust_peers_dir() -> PathBuf {
    repo_root().join("target/peers/rust")
}

/// Builds the Rust peers (the official Rust SDK, rmcp, on rustls) from
/// their own lock file; Cargo skips an unchanged build.
fn ensure_rust_peers() -> Result<Option<String>> {
    let out = rust_peers_dir();
    cmd::run(
        Command::new("cargo")
            .args(["build", "--release", "--locked", "--manifest-path"])
            .arg(peers_dir().join("rust/Cargo.toml"))
            .env("CARGO_TARGET_DIR", &out),
    )
    .context("cargo build of the Rust peers (tests/peers/rust) failed")?;
    for name in ["rmcp-server", "rmcp-client"] {
        let built = out.join("release").join(name);
        let stripped = out.join(format!("{name}-stripped"));
        cmd::run(Command::new("strip").arg("-o").arg(&stripped).arg(&built))
            .with_context(|| format!("strip of {} failed (binutils)", built.display()))?;
        fs::copy(&built, out.join(name))?;
    }
    Ok(None)
}

/// The dashboard's build tooling (Vite, React, TypeScript), from the lock
/// file; `build_agent` then builds ui/dist, which the agent embeds.
fn ensure_ui_packages() -> Result<Option<String>> {
    npm_ci(
        &repo_root().join("ui"),
        "ui",
        "the dashboard needs Node.js 20.19+ and npm",
    )
}

fn ensure_node_peers() -> Result<Option<String>> {
    npm_ci(&peers_dir(), "tests/peers", "install Node.js 20+ and npm")
}

/// `npm ci` in `dir` unless its lock file is what was installed last.
fn npm_ci(dir: &Path, name: &str, hint: &str) -> Result<Option<String>> {
    let lock = dir.join("package-lock.json");
    let stamp = dir.join("node_modules/.mcptap-installed");
    if up_to_date(&stamp, &lock)? {
        return Ok(None);
    }
    cmd::run(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir),
    )
    .with_context(|| format!("npm ci in {name} failed: {hint}"))?;
    fs::copy(&lock, &stamp)?;
    Ok(Some(format!("installed into {name}/node_modules")))
}
