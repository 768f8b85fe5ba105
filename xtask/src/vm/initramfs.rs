//! A busybox initramfs that turns a stock kernel into a test host: it
//! loads the kernel's own virtio-pci and virtio-fs modules, mounts this
//! host's root (shared by virtiofsd, tag `hostroot`) read-only, mounts
//! proc, sysfs, devtmpfs, tracefs, bpffs, cgroup2 and tmpfs /tmp and /run
//! over it, bind-mounts the few host folders that must be writable, and
//! runs one script chrooted there. The script's output goes to the second
//! serial port, its exit code to `<out>/exit`; then the machine powers off.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use super::kernels::KernelImage;
use crate::cmd;

/// Modules the init loads (with their dependencies), when the kernel has
/// them as modules rather than built in.
const MODULES: &[&str] = &["virtio_pci", "virtiofs"];

/// What the init needs to know about the run.
pub struct Run<'a> {
    /// Host folders the script may write to (bind-mounted read-write).
    pub writable: &'a [PathBuf],
    /// The script to run (a host path, seen at the same path inside).
    pub script: &'a Path,
    /// Where the init writes `exit` (must be among `writable`).
    pub out: &'a Path,
}

const INIT: &str = r#"#!/bin/busybox sh
# mcptap test VM init (xtask/src/vm/initramfs.rs)
B=/bin/busybox
. /params
fail() { echo "init: $*"; $B poweroff -f; }
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
for m in $($B cat /modules/order); do $B insmod /modules/$m || echo "init: insmod $m failed"; done
$B mount -t virtiofs hostroot /host || fail "cannot mount the host's root (virtiofs)"
$B mount --bind /host /mnt
$B mount -o remount,bind,ro /mnt
for d in proc sys dev; do $B mount --move /$d /mnt/$d; done
$B mount -t tracefs tracefs /mnt/sys/kernel/tracing
$B mount -t bpf bpf /mnt/sys/fs/bpf
$B mount -t tmpfs tmpfs /mnt/sys/fs/cgroup && $B mkdir -p /mnt/sys/fs/cgroup/unified && $B mount -t cgroup2 cgroup2 /mnt/sys/fs/cgroup/unified
$B mkdir -p /mnt/dev/pts /mnt/dev/shm
$B mount -t devpts devpts /mnt/dev/pts
$B mount -t tmpfs tmpfs /mnt/dev/shm
$B mount -t tmpfs tmpfs /mnt/tmp
$B mount -t tmpfs tmpfs /mnt/run
# The repository stays visible (read-only) even under /tmp or /run.
for d in $VISIBLE; do $B mkdir -p /mnt$d 2>/dev/null; { $B mount --bind /host$d /mnt$d && $B mount -o remount,bind,ro /mnt$d; } || echo "init: cannot show $d"; done
for d in $WRITABLE; do $B mount --bind /host$d /mnt$d || fail "cannot bind $d"; done
$B ip link set lo up
$B hostname mcptap-vm
$B chroot /mnt /bin/sh "$SCRIPT" > /mnt/dev/ttyS1 2>&1
echo $? > /mnt$OUT/exit
$B sync
$B poweroff -f
"#;

const INIT_SYSTEMD: &str = r#"#!/bin/busybox sh
# mcptap systemd test VM init (xtask/src/vm/initramfs.rs): the shared
# folder is a Debian root; systemd takes over as PID 1.
B=/bin/busybox
fail() { echo "init: $*"; $B poweroff -f; }
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
for m in $($B cat /modules/order); do $B insmod /modules/$m || echo "init: insmod $m failed"; done
$B mount -t virtiofs hostroot /mnt || fail "cannot mount the root (virtiofs)"
$B umount /proc /sys
$B mount --move /dev /mnt/dev
exec $B switch_root /mnt /lib/systemd/systemd
"#;

/// The initramfs that hands a shared Debian root to systemd.
pub fn build_systemd(kernel: &KernelImage, dest: &Path) -> Result<()> {
    let stage = dest.with_extension("d");
    let _ = fs::remove_dir_all(&stage);
    for d in ["bin", "proc", "sys", "dev", "mnt", "modules"] {
        fs::create_dir_all(stage.join(d))?;
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .context("busybox is missing (Debian package busybox-static)")?;
    fs::copy(busybox, stage.join("bin/busybox"))?;
    let order = modules(kernel, &stage.join("modules"))?;
    fs::write(stage.join("modules/order"), order.join("\n"))?;
    let init = stage.join("init");
    fs::write(&init, INIT_SYSTEMD)?;
    cmd::run(Command::new("chmod").arg("755").arg(&init))?;
    cpio(&stage, dest)?;
    fs::remove_dir_all(&stage)?;
    Ok(())
}

/// Builds the initramfs for `kernel` and `run` at `dest` (an uncompressed
/// newc cpio archive, which every kernel accepts).
pub fn build(kernel: &KernelImage, run: &Run, dest: &Path) -> Result<()> {
    let stage = dest.with_extension("d");
    let _ = fs::remove_dir_all(&stage);
    for d in ["bin", "proc", "sys", "dev", "host", "mnt", "modules"] {
        fs::create_dir_all(stage.join(d))?;
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .context("busybox is missing (Debian package busybox-static)")?;
    fs::copy(busybox, stage.join("bin/busybox"))?;
    let order = modules(kernel, &stage.join("modules"))?;
    fs::write(stage.join("modules/order"), order.join("\n"))?;
    let writable: Vec<String> = run.writable.iter().map(|p| p.display().to_string()).collect();
    fs::write(
        stage.join("params"),
        format!(
            "VISIBLE='{}'\nWRITABLE='{}'\nSCRIPT='{}'\nOUT='{}'\n",
            crate::repo_root().display(),
            writable.join(" "),
            run.script.display(),
            run.out.display()
        ),
    )?;
    let init = stage.join("init");
    fs::write(&init, INIT)?;
    cmd::run(Command::new("chmod").arg("755").arg(&init))?;
    cpio(&stage, dest)?;
    fs::remove_dir_all(&stage)?;
    Ok(())
}

/// Copies the modules of [`MODULES`] and their dependencies into `dir`, in
/// load order (decompressed: busybox's insmod takes plain `.ko` files).
/// Returns their file names in that order.
fn modules(kernel: &KernelImage, dir: &Path) -> Result<Vec<String>> {
    let Some(release) = kernel.release() else {
        return Ok(Vec::new()); // everything built in
    };
    let root = kernel.root.display().to_string();
    cmd::output(Command::new("depmod").args(["-b", &root, &release])).context("depmod failed (Debian package kmod)")?;
    let mut order: Vec<PathBuf> = Vec::new();
    for module in MODULES {
        let deps = cmd::output(Command::new("modprobe").args(["-d", &root, "-S", &release, "--show-depends", module]))?;
        for line in deps.lines() {
            // "insmod /path/to/virtio.ko" or "builtin virtio_pci"
            if let Some(path) = line.strip_prefix("insmod ") {
                let path = PathBuf::from(path.split_whitespace().next().unwrap_or_default());
                if !order.contains(&path) {
                    order.push(path);
                }
            }
        }
    }
    let mut names = Vec::new();
    for (i, path) in order.iter().enumerate() {
        let file = path.file_name().context("module path")?.to_string_lossy().into_owned();
        let name = format!("{i:02}-{}", file.trim_end_matches(".xz").trim_end_matches(".zst"));
        if file.ends_with(".xz") {
            let out = fs::File::create(dir.join(&name))?;
            let status = Command::new("xz").arg("-dc").arg(path).stdout(out).status()?;
            if !status.success() {
                bail!("xz -dc {} failed", path.display());
            }
        } else if file.ends_with(".zst") {
            cmd::output(Command::new("zstd").arg("-dqo").arg(dir.join(&name)).arg(path))?;
        } else {
            fs::copy(path, dir.join(&name))?;
        }
        names.push(name);
    }
    Ok(names)
}

/// `find . | cpio -o -H newc > dest`, from inside `stage`.
fn cpio(stage: &Path, dest: &Path) -> Result<()> {
    let list = cmd::output(Command::new("find").arg(".").current_dir(stage))?;
    let out = fs::File::create(dest)?;
    let mut child = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(stage)
        .stdin(Stdio::piped())
        .stdout(out)
        .spawn()
        .context("cpio is missing (Debian package cpio)")?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("cpio stdin")?;
        stdin.write_all(list.as_bytes())?;
    }
    if !child.wait()?.success() {
        bail!("cpio failed");
    }
    Ok(())
}
