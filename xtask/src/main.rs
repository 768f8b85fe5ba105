//! Project tasks: `cargo xtask <task>`.
//!
//! - `setup`: install the toolchain (LLVM 22, nightly rust-src, bpf-linker)
//!   and the test peers; idempotent.
//! - `build`: setup, then build the release agent (kernel programs embedded).
//! - `run`: build, then run the agent (as root) with the given arguments.
//! - `test`: setup, then every test: unit tests, then the end-to-end tests
//!   that load the real eBPF programs and drive real MCP peers.
//! - `bench`: the benchmarks of docs/benchmarks.md, reported as ratios.

mod bench;
mod cmd;
mod fuzz;
mod image;
mod lint;
mod setup;
mod test;
mod vm;

use std::{path::PathBuf, process::Command};

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (idempotent).
    Setup {
        /// Only the build toolchain, not the test peers.
        #[arg(long)]
        toolchain_only: bool,
    },
    /// Build the release agent.
    Build,
    /// Build the container image (deploy/container/Containerfile), tagged
    /// mcptap:latest and mcptap:<version>: `--base debootstrap` where no
    /// registry is reachable.
    Image(image::ImageArgs),
    /// Build, then run the agent: `cargo xtask run -- --events events.jsonl`.
    Run {
        /// Arguments for `mcptap run`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test (unit and end-to-end).
    Test(test::TestArgs),
    /// clippy with -D warnings on the host crates and the kernel programs.
    Lint,
    /// Run the fuzz targets (fuzz/), each for a bounded time.
    Fuzz(fuzz::FuzzArgs),
    /// Run the benchmarks and print the report.
    Bench(bench::BenchArgs),
    /// Boot a stock kernel of the test matrix under QEMU and run a command in
    /// it (this host's root, read-only): `cargo xtask vm --kernel 5.10 -- mcptap check`.
    Vm(VmArgs),
    /// The systemd test alone (part of `cargo xtask test`).
    #[command(hide = true)]
    SystemdTest,
    /// Processes the benchmark runs (not for direct use).
    #[command(hide = true, subcommand)]
    BenchPeer(bench::Peer),
}

#[derive(clap::Args)]
struct VmArgs {
    /// The kernel series (5.10, 6.1, 6.12).
    #[arg(long)]
    kernel: String,
    /// The command (run with sh -c); its output is shown as it runs.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

/// `cargo xtask vm`: one command in one kernel of the matrix.
fn vm_command(args: VmArgs) -> Result<()> {
    setup::setup(setup::Needs {
        toolchain: false,
        peers: false,
        vms: true,
    })?;
    let kernel = vm::kernels::fetch(&[vm::spec(&args.kernel)?])?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no kernel fetched"))?;
    let dir = repo_root().join("target/vm-command");
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("command.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp
cd '{}'
{}
",
            repo_root().display(),
            args.command.join(" ")
        ),
    )?;
    let outcome = vm::qemu::run(
        &kernel,
        &format!("linux {}", args.kernel),
        &script,
        &[dir],
        std::time::Duration::from_secs(60 * 60),
    )?;
    match outcome.exit {
        Some(0) => Ok(()),
        Some(code) => anyhow::bail!("the command exited {code}"),
        None => anyhow::bail!(
            "the machine stopped without an exit code; console:
{}",
            vm::qemu::console_tail(&outcome, 30)
        ),
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repository")
        .to_path_buf()
}

/// Builds the dashboard (ui/dist), then the release agent that embeds it
/// and the kernel programs; returns the binary's path.
pub fn build_agent() -> Result<PathBuf> {
    build_ui()?;
    cmd::run(
        Command::new("cargo")
            .args(["build", "--release", "-p", "mcptap"])
            .current_dir(repo_root()),
    )?;
    Ok(repo_root().join("target/release/mcptap"))
}

/// `npm run build` in ui/ when a source is newer than ui/dist (a rebuilt
/// dist makes cargo re-embed it, so it is not rebuilt for nothing).
fn build_ui() -> Result<()> {
    let ui = repo_root().join("ui");
    let built = std::fs::metadata(ui.join("dist/index.html"))
        .and_then(|m| m.modified())
        .ok();
    let sources = [
        "src",
        "index.html",
        "package-lock.json",
        "vite.config.ts",
        "tsconfig.json",
    ];
    let newest = sources.iter().filter_map(|s| newest_mtime(&ui.join(s))).max();
    if let (Some(built), Some(newest)) = (built, newest)
        && built >= newest
    {
        return Ok(());
    }
    cmd::run(Command::new("npm").args(["run", "--silent", "build"]).current_dir(&ui))
}

fn newest_mtime(path: &std::path::Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| newest_mtime(&e.path()))
        .max()
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup { toolchain_only } => setup::setup(setup::Needs {
            toolchain: true,
            peers: !toolchain_only,
            vms: !toolchain_only,
        }),
        Task::Image(args) => {
            setup::setup(setup::Needs {
                toolchain: true,
                peers: false,
                vms: false,
            })?;
            setup::ensure_image_packages()?;
            let agent = build_agent()?;
            image::build(&agent, &args.base).map(|_| ())
        }
        Task::SystemdTest => {
            setup::setup(setup::Needs {
                toolchain: true,
                peers: false,
                vms: true,
            })?;
            setup::ensure_image_packages()?;
            let agent = build_agent()?;
            let kernel = vm::kernels::fetch(&[vm::spec("6.1")?])?
                .pop()
                .ok_or_else(|| anyhow::anyhow!("no kernel fetched"))?;
            vm::systemd::run(&kernel, &agent).map(|_| ())
        }
        Task::Build => {
            setup::setup(setup::Needs {
                toolchain: true,
                peers: false,
                vms: false,
            })?;
            build_agent().map(|_| ())
        }
        Task::Run { args } => {
            setup::setup(setup::Needs {
                toolchain: true,
                peers: false,
                vms: false,
            })?;
            let agent = build_agent()?;
            let mut c = if setup::is_root() {
                Command::new(&agent)
            } else {
                eprintln!("xtask: mcptap needs root to load eBPF programs: running it with sudo");
                let mut c = Command::new("sudo");
                c.arg(&agent);
                c
            };
            c.arg("run").args(&args);
            cmd::run(&mut c)
        }
        Task::Test(args) => test::test(args),
        Task::Lint => lint::lint(),
        Task::Fuzz(args) => fuzz::fuzz(args),
        Task::Vm(args) => vm_command(args),
        Task::Bench(args) => bench::bench(args),
        Task::BenchPeer(peer) => bench::peer(peer),
    }
}
