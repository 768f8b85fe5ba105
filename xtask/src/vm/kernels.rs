//! Debian's stock kernels, by package name, never installed on the host.
//!
//! A private apt state (its own sources list, lists, status and cache, in
//! the cache folder) knows the suites of [`super::MATRIX`]; the current
//! image of a series is what its `linux-image-cloud-amd64` metapackage
//! depends on (ABI names like 6.1.0-57 change and old ones leave the
//! archive: never pinned). `apt-get download` fetches its `-unsigned`
//! package, `dpkg-deb -x` unpacks it into the cache, where later runs find
//! it. Without network, the newest cached image of the series is used,
//! with a warning.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result};

use super::{KernelSpec, MATRIX};
use crate::cmd;

/// An unpacked kernel package.
#[derive(Debug, Clone)]
pub struct KernelImage {
    pub spec: KernelSpec,
    /// e.g. `6.1.192-3`.
    pub version: String,
    /// Where the package was unpacked (`boot/`, `lib/modules/`).
    pub root: PathBuf,
}

impl KernelImage {
    pub fn vmlinuz(&self) -> Result<PathBuf> {
        first_entry(&self.root.join("boot"), "vmlinuz-")
    }

    /// `uname -r` of the image (its modules folder), when it has modules.
    pub fn release(&self) -> Option<String> {
        let dir = fs::read_dir(self.root.join("lib/modules")).ok()?;
        dir.flatten()
            .next()
            .map(|e| e.file_name().to_string_lossy().into_owned())
    }
}

fn first_entry(dir: &Path, prefix: &str) -> Result<PathBuf> {
    fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
        .with_context(|| format!("no {prefix}* in {}", dir.display()))
}

/// Where kernels are kept between runs: `$MCPTAP_KERNEL_CACHE`, else
/// `$XDG_CACHE_HOME/mcptap/kernels`, else `~/.cache/mcptap/kernels`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MCPTAP_KERNEL_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache"));
    base.join("mcptap/kernels")
}

/// The private apt state.
struct Apt {
    dir: PathBuf,
}

impl Apt {
    fn new(cache: &Path) -> Result<Apt> {
        let dir = cache.join("apt");
        for sub in ["lists/partial", "cache/archives/partial", "etc"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let status = dir.join("status");
        if !status.exists() {
            fs::write(&status, "")?;
        }
        let mut sources = String::new();
        for spec in MATRIX {
            for (uri, suite) in spec.suites {
                sources.push_str(&format!(
                    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {uri} {suite} main\n"
                ));
            }
        }
        fs::write(dir.join("etc/sources.list"), sources)?;
        Ok(Apt { dir })
    }

    fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        vec![
            format!("-oDir::Etc::sourcelist={d}/etc/sources.list"),
            "-oDir::Etc::sourceparts=-".into(),
            format!("-oDir::State::Lists={d}/lists"),
            format!("-oDir::State::status={d}/status"),
            format!("-oDir::Cache={d}/cache"),
            // Only package lists: no translations, no DEP-11 metadata.
            "-oAcquire::Languages=none".into(),
            "-oAcquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
            "-oAcquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".into(),
            "-oAPT::Sandbox::User=root".into(),
        ]
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.args(self.options());
        c
    }

    /// `apt-get update`, at most once an hour.
    fn update(&self) -> Result<()> {
        let stamp = self.dir.join("updated");
        let fresh = fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < Duration::from_secs(3600));
        if fresh {
            return Ok(());
        }
        cmd::output(self.command("apt-get").args(["-q", "update"]))
            .context("apt-get update of the kernel suites failed (no network to deb.debian.org?)")?;
        fs::write(stamp, "")?;
        Ok(())
    }

    /// (version, image package) of the newest `linux-image-cloud-amd64` of
    /// the series.
    fn resolve(&self, spec: &KernelSpec) -> Result<(String, String)> {
        let text = cmd::output(self.command("apt-cache").args(["show", "linux-image-cloud-amd64"]))?;
        let mut best: Option<(String, String)> = None;
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_string())
            };
            let (Some(version), Some(depends)) = (field("Version:"), field("Depends:")) else {
                continue;
            };
            if !version.starts_with(spec.version_prefix) {
                continue;
            }
            // "linux-image-6.1.0-57-cloud-amd64 (= 6.1.192-3)"
            let Some(image) = depends
                .split(',')
                .map(str::trim)
                .find(|d| d.starts_with("linux-image-"))
                .and_then(|d| d.split_whitespace().next())
            else {
                continue;
            };
            let newer = match &best {
                Some((v, _)) => version_newer(&version, v),
                None => true,
            };
            if newer {
                best = Some((version, image.to_string()));
            }
        }
        best.with_context(|| {
            format!(
                "Debian's {} suites list no linux-image-cloud-amd64 {}*",
                spec.debian, spec.version_prefix
            )
        })
    }
}

/// `dpkg --compare-versions a gt b`.
fn version_newer(a: &str, b: &str) -> bool {
    Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .is_ok_and(|s| s.success())
}

/// The current image of each series, fetched when not cached.
pub fn fetch(specs: &[KernelSpec]) -> Result<Vec<KernelImage>> {
    let cache = cache_dir();
    fs::create_dir_all(&cache).with_context(|| format!("cannot create {}", cache.display()))?;
    let apt = Apt::new(&cache)?;
    let online = match apt.update() {
        Ok(()) => true,
        Err(err) => {
            eprintln!("vm: {err:#}; using cached kernels");
            false
        }
    };
    specs
        .iter()
        .map(|spec| {
            if online {
                fetch_one(&apt, &cache, spec)
            } else {
                cached(&cache, spec)
            }
        })
        .collect()
}

fn fetch_one(apt: &Apt, cache: &Path, spec: &KernelSpec) -> Result<KernelImage> {
    let (version, image) = apt.resolve(spec)?;
    let package = format!("{image}-unsigned");
    let root = cache.join(format!("{package}_{version}"));
    let done = root.join(".unpacked");
    if !done.exists() {
        eprintln!("vm: fetching {package} {version} (Linux {})", spec.name);
        let downloads = cache.join("downloads");
        let _ = fs::remove_dir_all(&downloads);
        fs::create_dir_all(&downloads)?;
        cmd::output(
            apt.command("apt-get")
                .args(["-q", "download"])
                .arg(format!("{package}={version}"))
                .current_dir(&downloads),
        )
        .with_context(|| format!("cannot download {package} {version}"))?;
        let deb = first_entry(&downloads, &package)?;
        let _ = fs::remove_dir_all(&root);
        cmd::output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
        fs::remove_dir_all(&downloads)?;
        fs::write(&done, "")?;
    }
    Ok(KernelImage {
        spec: *spec,
        version,
        root,
    })
}

/// The newest image of the series already in the cache.
fn cached(cache: &Path, spec: &KernelSpec) -> Result<KernelImage> {
    let mut found: Option<(String, PathBuf)> = None;
    for entry in fs::read_dir(cache)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((_, version)) = name.split_once("-cloud-amd64-unsigned_") else {
            continue;
        };
        if !version.starts_with(spec.version_prefix) || !entry.path().join(".unpacked").exists() {
            continue;
        }
        if found.as_ref().is_none_or(|(v, _)| version_newer(version, v)) {
            found = Some((version.to_string(), entry.path()));
        }
    }
    let (version, root) = found.with_context(|| {
        format!(
            "no Linux {} in {} and no network to fetch it",
            spec.name,
            cache.display()
        )
    })?;
    Ok(KernelImage {
        spec: *spec,
        version,
        root,
    })
}
