//! The systemd unit, run for real: a Debian root filesystem (debootstrap,
//! with systemd as PID 1) booted on a stock kernel of the matrix under QEMU.
//! A unit of the test's runs `tests/systemd/guest.sh` at boot: it installs
//! mcptap with `mcptap install systemd` (the unit shipped, its hardening as
//! is), starts it, drives an MCP server, finds the calls where the unit
//! sends events, restarts it (the state kept), stops it (cleanly), writes
//! what it found to /root/result, and powers the machine off.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::{kernels::KernelImage, qemu};
use crate::{cmd, repo_root};

/// What the root filesystem holds besides Debian's minimal base.
const PACKAGES: &[&str] = &["systemd", "systemd-sysv", "dbus", "python3"];

/// Longest the machine may take: boot, the test, power-off.
pub const TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The root filesystem's tarball, made once (debootstrap) and cached.
fn root_tarball() -> Result<PathBuf> {
    let cache = super::kernels::cache_dir().join("systemd-root-bookworm.tar");
    if cache.exists() {
        return Ok(cache);
    }
    let dir = repo_root().join("target/vm/systemd-root-build");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    eprintln!("vm: making a Debian root with systemd (debootstrap)");
    cmd::run(
        Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={}", PACKAGES.join(",")))
            .arg("bookworm")
            .arg(&dir)
            .arg("http://deb.debian.org/debian"),
    )
    .context("debootstrap failed (Debian package debootstrap; Debian's archive reachable?)")?;
    for sub in [
        "var/cache/apt",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
    ] {
        let _ = fs::remove_dir_all(dir.join(sub));
    }
    fs::create_dir_all(cache.parent().context("cache dir")?)?;
    let tmp = cache.with_extension("tar.tmp");
    cmd::run(Command::new("tar").arg("-C").arg(&dir).arg("-cf").arg(&tmp).arg("."))?;
    fs::rename(&tmp, &cache)?;
    let _ = fs::remove_dir_all(&dir);
    Ok(cache)
}

/// A fresh root for one run, with the agent, the peer and the test in it.
fn prepare_root(agent: &Path) -> Result<PathBuf> {
    let tarball = root_tarball()?;
    let root = repo_root().join("target/vm/systemd-root");
    if root.exists() {
        cmd::run(Command::new("rm").arg("-rf").arg(&root))?;
    }
    fs::create_dir_all(&root)?;
    cmd::run(Command::new("tar").arg("-C").arg(&root).arg("-xf").arg(&tarball))?;
    let tests = repo_root().join("tests");
    fs::copy(agent, root.join("root/mcptap"))?;
    fs::copy(tests.join("peers/hostile.py"), root.join("root/hostile.py"))?;
    fs::copy(tests.join("systemd/guest.sh"), root.join("root/guest.sh"))?;
    fs::write(root.join("etc/hostname"), "mcptap-systemd\n")?;
    // The test's own unit: runs the guest script once the machine is up.
    let units = root.join("etc/systemd/system");
    fs::create_dir_all(units.join("multi-user.target.wants"))?;
    fs::write(
        units.join("mcptap-e2e.service"),
        "[Unit]\nDescription=mcptap's systemd test\nAfter=multi-user.target\n\n[Service]\nType=oneshot\nExecStart=/bin/sh /root/guest.sh\nStandardOutput=journal+console\nStandardError=journal+console\n",
    )?;
    std::os::unix::fs::symlink(
        "/etc/systemd/system/mcptap-e2e.service",
        units.join("multi-user.target.wants/mcptap-e2e.service"),
    )?;
    // No login prompts on the consoles (nobody answers them).
    for getty in ["getty@tty1.service", "serial-getty@ttyS0.service"] {
        std::os::unix::fs::symlink("/dev/null", units.join(getty))?;
    }
    Ok(root)
}

/// Boots, runs the guest script, and reads its result: `ok` or why not.
pub fn run(kernel: &KernelImage, agent: &Path) -> Result<Duration> {
    let root = prepare_root(agent)?;
    let label = format!("systemd on linux {}", kernel.spec.name);
    let outcome = qemu::boot_systemd(kernel, &label, &root, TIMEOUT)?;
    let result = fs::read_to_string(root.join("root/result")).unwrap_or_default();
    let log = fs::read_to_string(root.join("root/guest.log")).unwrap_or_default();
    if outcome.timed_out {
        bail!(
            "{label}: timed out after {} s; guest log:\n{log}\nconsole:\n{}",
            outcome.elapsed.as_secs(),
            qemu::console_tail(&outcome, 40)
        );
    }
    if result.trim() != "ok" {
        bail!(
            "{label}: {}\nguest log:\n{log}\nconsole:\n{}",
            if result.is_empty() {
                "no result (the test never ran to its end)"
            } else {
                result.trim()
            },
            qemu::console_tail(&outcome, 40)
        );
    }
    eprintln!("[{label}] passed in {} s", outcome.elapsed.as_secs());
    Ok(outcome.elapsed)
}
