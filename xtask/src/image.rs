//! `cargo xtask image`: the container image of deploy/container/Containerfile
//! (the release agent on a slim Debian base given as a build argument),
//! tagged `mcptap:latest` and `mcptap:<version>`, with podman (or docker
//! where that is what the machine has).
//!
//! Where no registry can be reached (these CI machines), `--base debootstrap`
//! makes the base from Debian's archive (`debootstrap --variant=minbase`,
//! imported as `localhost/mcptap-base:bookworm`): the same bookworm the
//! default base is.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{cmd, repo_root};

/// The default base: what users with a registry build on.
pub const DEFAULT_BASE: &str = "debian:bookworm-slim";
/// The base made from Debian's archive.
pub const DEBOOTSTRAP_BASE: &str = "localhost/mcptap-base:bookworm";

#[derive(clap::Args, Clone)]
pub struct ImageArgs {
    /// The base image (`--build-arg BASE`), or `debootstrap` to make one
    /// from Debian's archive (no registry needed).
    #[arg(long, default_value = DEFAULT_BASE)]
    pub base: String,
}

/// The container engine of this machine, with what it needs here.
pub struct Engine {
    program: &'static str,
    /// podman on a machine whose cgroups crun refuses (v1 controllers and
    /// a v2 `unified` mount): runc (docs/toolchain.md, ../shared facts).
    runtime: Option<PathBuf>,
    /// Limits within this machine's hard limits (podman raises them past
    /// them by default, and fails).
    ulimits: Vec<String>,
}

impl Engine {
    pub fn find() -> Result<Engine> {
        let has = |p: &str| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let program = if has("podman") {
            "podman"
        } else if has("docker")
            && Command::new("docker")
                .arg("info")
                .output()
                .is_ok_and(|o| o.status.success())
        {
            "docker"
        } else {
            bail!("no container engine: install podman (`apt-get install podman runc`), or run a docker daemon");
        };
        let hybrid_cgroups = !Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let runtime = (program == "podman" && hybrid_cgroups)
            .then(|| PathBuf::from("/usr/sbin/runc"))
            .filter(|r| r.exists());
        // SAFETY: getrlimit fills the struct or fails.
        let hard = |what| unsafe {
            let mut l: libc::rlimit = std::mem::zeroed();
            (libc::getrlimit(what, &mut l) == 0).then_some(l.rlim_max)
        };
        let mut ulimits = Vec::new();
        if program == "podman" {
            if let Some(n) = hard(libc::RLIMIT_NOFILE).filter(|n| *n < 1 << 20) {
                ulimits.push(format!("nofile={n}:{n}"));
            }
            if let Some(n) = hard(libc::RLIMIT_NPROC).filter(|n| *n < 1 << 20) {
                let n = n.min(4096);
                ulimits.push(format!("nproc={n}:{n}"));
            }
        }
        Ok(Engine {
            program,
            runtime,
            ulimits,
        })
    }

    /// What the tests add to their own podman commands: the runtime (before
    /// the verb) and the limits (`--ulimit`, after `run`).
    pub fn test_args(&self) -> String {
        let mut out = Vec::new();
        if let Some(r) = &self.runtime {
            out.push(format!("--runtime {}", r.display()));
        }
        for u in &self.ulimits {
            out.push(format!("--ulimit={u}"));
        }
        out.join(" ")
    }

    /// `podman`/`docker` with the machine's runtime and limits, then `verb`.
    pub fn command(&self, verb: &str) -> Command {
        let mut c = Command::new(self.program);
        if let Some(runtime) = &self.runtime {
            c.arg("--runtime").arg(runtime);
        }
        c.arg(verb);
        if matches!(verb, "build" | "run" | "create") {
            for u in &self.ulimits {
                c.args(["--ulimit", u]);
            }
        }
        c
    }

    pub fn has_image(&self, name: &str) -> bool {
        let mut c = Command::new(self.program);
        match self.program {
            "podman" => c.args(["image", "exists", name]),
            _ => c.args(["image", "inspect", name]),
        };
        c.output().is_ok_and(|o| o.status.success())
    }
}

/// A Debian bookworm root made with debootstrap (`extra` packages
/// included), imported as `name` unless it exists already.
pub fn debootstrap_image(engine: &Engine, name: &str, extra: &[&str]) -> Result<()> {
    if engine.has_image(name) {
        return Ok(());
    }
    let dir = repo_root()
        .join("target/debootstrap")
        .join(name.replace(['/', ':'], "_"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    eprintln!("image: making {name} from Debian's archive (debootstrap)");
    let mut c = Command::new("debootstrap");
    c.arg("--variant=minbase");
    if !extra.is_empty() {
        c.arg(format!("--include={}", extra.join(",")));
    }
    cmd::run(c.args(["bookworm"]).arg(&dir).arg("http://deb.debian.org/debian"))
        .context("debootstrap failed (apt-get install debootstrap; Debian's archive reachable?)")?;
    // What a slim image leaves out: package caches and lists, docs, locales.
    for sub in [
        "var/cache/apt",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
        "usr/share/info",
    ] {
        let _ = std::fs::remove_dir_all(dir.join(sub));
    }
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .args(["-c", "."])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("tar")?;
    let mut import = Command::new(engine.program);
    import
        .args(["import", "-", name])
        .stdin(tar.stdout.context("tar's output")?);
    cmd::run(&mut import)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The peer image of the DaemonSet's test: Debian with python3 (and so its
/// own libssl).
pub const PEER_IMAGE: &str = "localhost/mcptap-peer:bookworm";

/// What the DaemonSet's test needs: the agent's image (on a base made from
/// Debian's archive), the peer image; the variables that name them.
pub fn for_tests(agent: &Path) -> Result<Vec<(&'static str, String)>> {
    let engine = Engine::find()?;
    let tags = build(agent, "debootstrap")?;
    debootstrap_image(&engine, PEER_IMAGE, &["python3"])?;
    Ok(vec![
        ("MCPTAP_IMAGE", tags[0].clone()),
        ("MCPTAP_PEER_IMAGE", PEER_IMAGE.to_string()),
        ("MCPTAP_PODMAN_ARGS", engine.test_args()),
    ])
}

/// Builds the image from `agent` (a release binary); returns its tags.
pub fn build(agent: &Path, base: &str) -> Result<Vec<String>> {
    let engine = Engine::find()?;
    let base = if base == "debootstrap" {
        debootstrap_image(&engine, DEBOOTSTRAP_BASE, &[])?;
        DEBOOTSTRAP_BASE.to_string()
    } else {
        base.to_string()
    };
    let context = repo_root().join("target/image");
    std::fs::create_dir_all(&context)?;
    std::fs::copy(agent, context.join("mcptap")).context("copy the agent into the image's context")?;
    let version = env!("CARGO_PKG_VERSION");
    let tags = vec!["mcptap:latest".to_string(), format!("mcptap:{version}")];
    let mut c = engine.command("build");
    c.arg("-f")
        .arg(repo_root().join("deploy/container/Containerfile"))
        .arg("--build-arg")
        .arg(format!("BASE={base}"));
    for t in &tags {
        c.args(["-t", t]);
    }
    cmd::run(c.arg(&context))?;
    let size = cmd::output(
        engine
            .command("image")
            .args(["inspect", "--format", "{{.Size}}", &tags[0]]),
    )?;
    let mib = size.trim().parse::<f64>().unwrap_or(0.0) / (1 << 20) as f64;
    eprintln!("image: {} ({mib:.1} MiB, on {base})", tags.join(", "));
    Ok(tags)
}
