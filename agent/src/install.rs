//! `mcptap install systemd`: the agent as a hardened systemd service.
//!
//! Writes the unit (deploy/systemd/mcptap.service, embedded), the binary
//! it starts, and default configuration in /etc/mcptap — never over an
//! operator's existing configuration. `--root` installs into another
//! tree (an image being built, a test).

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::Context;

pub const UNIT: &str = include_str!("../../deploy/systemd/mcptap.service");
const ENV_FILE: &str = include_str!("../../deploy/systemd/mcptap.env");
const SINKS: &str = include_str!("../../deploy/systemd/mcptap.toml");
/// Where the unit's ExecStart looks for the agent.
const BINARY: &str = "usr/local/bin/mcptap";

#[derive(Debug, clap::Subcommand)]
pub enum Install {
    /// The systemd unit (hardened), the binary in /usr/local/bin and default
    /// configuration in /etc/mcptap; then `systemctl enable --now mcptap`.
    Systemd(SystemdArgs),
}

#[derive(Debug, clap::Args)]
pub struct SystemdArgs {
    /// Install into this directory tree instead of /.
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// Only print the unit file.
    #[arg(long)]
    pub print: bool,
}

pub fn run(what: Install) -> anyhow::Result<()> {
    match what {
        Install::Systemd(args) if args.print => {
            print!("{UNIT}");
            Ok(())
        }
        Install::Systemd(args) => {
            for line in systemd(&args.root)? {
                println!("{line}");
            }
            if args.root == Path::new("/") {
                println!("next: systemctl daemon-reload && systemctl enable --now mcptap");
            }
            Ok(())
        }
    }
}

/// Installs under `root`; returns what it did, one line each.
pub fn systemd(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut did = Vec::new();
    let unit = root.join("etc/systemd/system/mcptap.service");
    write(&unit, UNIT, 0o644)?;
    did.push(format!("wrote {}", unit.display()));

    let binary = root.join(BINARY);
    let me = std::env::current_exe().context("cannot find this program's own path")?;
    if fs::canonicalize(&me).ok() != fs::canonicalize(&binary).ok() {
        if let Some(dir) = binary.parent() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        // Through a temporary name: replacing a running binary in place fails.
        let tmp = binary.with_extension("new");
        fs::copy(&me, &tmp).with_context(|| format!("cannot copy {} to {}", me.display(), tmp.display()))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
        fs::rename(&tmp, &binary)?;
        did.push(format!("installed {}", binary.display()));
    }

    for (name, text) in [("mcptap.env", ENV_FILE), ("mcptap.toml", SINKS)] {
        let path = root.join("etc/mcptap").join(name);
        if path.exists() {
            did.push(format!("kept {} (exists)", path.display()));
        } else {
            write(&path, text, 0o640)?;
            did.push(format!("wrote {}", path.display()));
        }
    }
    Ok(did)
}

fn write(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_into_a_root_and_keeps_existing_configuration() {
        let root = tempfile::tempdir().unwrap();
        let did = systemd(root.path()).unwrap();
        assert!(
            root.path().join("etc/systemd/system/mcptap.service").exists(),
            "{did:?}"
        );
        assert!(root.path().join(BINARY).exists());
        let env = root.path().join("etc/mcptap/mcptap.env");
        assert_eq!(fs::read_to_string(&env).unwrap(), ENV_FILE);
        fs::write(&env, "MCPTAP_ARGS=--ui 127.0.0.1:9465\n").unwrap();
        let again = systemd(root.path()).unwrap();
        assert!(
            again.iter().any(|l| l.starts_with("kept") && l.contains("mcptap.env")),
            "{again:?}"
        );
        assert_eq!(fs::read_to_string(&env).unwrap(), "MCPTAP_ARGS=--ui 127.0.0.1:9465\n");
    }

    #[test]
    fn the_default_sinks_file_is_a_valid_configuration() {
        let sinks = crate::sinks::config::parse(SINKS).unwrap();
        assert_eq!(sinks.len(), 1);
    }
}
