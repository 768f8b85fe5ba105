//! Boots a kernel under QEMU with this host's root shared over virtio-fs,
//! runs one script in it (see `initramfs`), and collects its output and
//! exit code, with a timeout on every machine.
//!
//! Software emulation (`-accel tcg -cpu max`): this machine's /dev/kvm is
//! paravirtual and cannot boot stock kernels. Everything runs ~10× slower
//! than on the host; only ratios measured inside one VM mean something.

use std::{
    fs,
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{initramfs, kernels::KernelImage};
use crate::repo_root;

/// How one run ended.
#[derive(Debug)]
pub struct Outcome {
    /// The script's exit code; `None` when the machine died, hung or never
    /// ran it (see `console`).
    pub exit: Option<i32>,
    /// Where the kernel's console and the script's output were written.
    pub console: PathBuf,
    pub output: PathBuf,
    pub elapsed: Duration,
    pub timed_out: bool,
}

/// Where virtiofsd lives on Debian 12 (the C one, shipped with QEMU).
const VIRTIOFSD: &[&str] = &["/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd"];

/// Kills a child on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `script` (a shell script on this host) inside `kernel`, with
/// `writable` host folders writable there. `label` prefixes the lines of
/// output echoed while it runs. Fails only when the machine could not be
/// started; a script that fails or a machine that hangs is an [`Outcome`].
pub fn run(
    kernel: &KernelImage,
    label: &str,
    script: &Path,
    writable: &[PathBuf],
    timeout: Duration,
) -> Result<Outcome> {
    let run_dir = repo_root().join("target/vm").join(kernel.spec.name);
    let _ = fs::remove_dir_all(&run_dir);
    fs::create_dir_all(&run_dir)?;
    let mut writable = writable.to_vec();
    writable.push(run_dir.clone());
    let initrd = run_dir.join("initramfs.cpio");
    initramfs::build(
        kernel,
        &initramfs::Run {
            writable: &writable,
            script,
            out: &run_dir,
        },
        &initrd,
    )?;
    let mut outcome = boot(kernel, label, &initrd, Path::new("/"), &run_dir, "quiet", timeout)?;
    if outcome.exit.is_none() && !outcome.timed_out {
        outcome.exit = fs::read_to_string(run_dir.join("exit"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
    }
    Ok(outcome)
}

/// Boots `kernel` with systemd as PID 1 on `root` (a Debian root
/// filesystem, shared read-write over virtio-fs): its units run what the
/// test put there, and one powers the machine off. Its console goes to
/// `<run dir>/console.log`.
pub fn boot_systemd(kernel: &KernelImage, label: &str, root: &Path, timeout: Duration) -> Result<Outcome> {
    let run_dir = repo_root()
        .join("target/vm")
        .join(format!("{}-systemd", kernel.spec.name));
    let _ = fs::remove_dir_all(&run_dir);
    fs::create_dir_all(&run_dir)?;
    let initrd = run_dir.join("initramfs.cpio");
    initramfs::build_systemd(kernel, &initrd)?;
    boot(
        kernel,
        label,
        &initrd,
        root,
        &run_dir,
        "systemd.show_status=1 systemd.log_color=0",
        timeout,
    )
}

/// Boots `kernel` with `initrd`, the virtio-fs share of `source` (tag
/// `hostroot`), and `append` on the command line, until it powers off or
/// `timeout`.
fn boot(
    kernel: &KernelImage,
    label: &str,
    initrd: &Path,
    source: &Path,
    run_dir: &Path,
    append: &str,
    timeout: Duration,
) -> Result<Outcome> {
    let socket = run_dir.join("virtiofs.sock");
    let virtiofsd = VIRTIOFSD
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .context("virtiofsd is missing (Debian package qemu-system-x86)")?;
    // No --syslog: its seccomp filter kills it on this machine.
    let fs_log = fs::File::create(run_dir.join("virtiofsd.log"))?;
    let _virtiofsd = Guard(
        Command::new(virtiofsd)
            .arg(format!("--socket-path={}", socket.display()))
            .args([
                "-o",
                &format!("source={}", source.display()),
                "-o",
                "cache=auto",
                "-o",
                "sandbox=chroot",
            ])
            .stdout(Stdio::null())
            .stderr(fs_log)
            .spawn()
            .context("cannot start virtiofsd")?,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        if Instant::now() > deadline {
            bail!("virtiofsd did not create {} (see virtiofsd.log)", socket.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let console = run_dir.join("console.log");
    let output = run_dir.join("output.log");
    let memory = "2G";
    let start = Instant::now();
    let qemu = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", memory])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .args([
            "-object",
            &format!("memory-backend-memfd,id=mem,size={memory},share=on"),
            "-numa",
            "node,memdev=mem",
        ])
        .args(["-chardev", &format!("socket,id=vfs,path={}", socket.display())])
        .args(["-device", "vhost-user-fs-pci,chardev=vfs,tag=hostroot"])
        .arg("-kernel")
        .arg(kernel.vmlinuz()?)
        .arg("-initrd")
        .arg(initrd)
        .args(["-serial", &format!("file:{}", console.display())])
        .args(["-serial", &format!("file:{}", output.display())])
        .args(["-append", &format!("console=ttyS0 panic=-1 rdinit=/init {append}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(run_dir.join("qemu.log"))?)
        .spawn()
        .context("cannot start qemu-system-x86_64 (Debian package qemu-system-x86)")?;
    let mut qemu = Guard(qemu);

    let mut shown = 0u64;
    let timed_out = loop {
        shown = echo_new(&output, shown, label);
        if qemu.0.try_wait()?.is_some() {
            break false;
        }
        if start.elapsed() > timeout {
            break true;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    drop(qemu);
    echo_new(&output, shown, label);
    let elapsed = start.elapsed();
    if timed_out {
        eprintln!(
            "[{label}] TIMED OUT after {} s: the machine was stopped",
            timeout.as_secs()
        );
    }
    Ok(Outcome {
        exit: None,
        timed_out,
        console,
        output,
        elapsed,
    })
}

/// Prints what `path` gained since `from`, each line prefixed; returns the
/// new length.
fn echo_new(path: &Path, from: u64, label: &str) -> u64 {
    let Ok(mut f) = fs::File::open(path) else { return from };
    if f.seek(SeekFrom::Start(from)).is_err() {
        return from;
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return from;
    }
    // Only whole lines; the rest next time.
    let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
        return from;
    };
    for line in String::from_utf8_lossy(&buf[..end]).lines() {
        eprintln!("[{label}] {line}");
    }
    from + end as u64 + 1
}

/// The last lines of the kernel console, for a failure message.
pub fn console_tail(outcome: &Outcome, lines: usize) -> String {
    let text = fs::read_to_string(&outcome.console).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
