//! `cargo xtask test`: every test.
//!
//! 1. unit tests of every crate (no root, no kernel), and each fuzz target
//!    of fuzz/ for a bounded time (`cargo xtask fuzz` runs them longer);
//! 2. the end-to-end tests (tests/) on this host's kernel: they run the real
//!    agent, which loads the real eBPF programs, against real MCP clients and
//!    servers;
//! 3. the kernel matrix: the end-to-end smoke suite (tests/tests/smoke.rs)
//!    inside each stock kernel of `vm::MATRIX` booted under QEMU, once with
//!    the hook family the kernel allows (fexit) and once forced onto the
//!    fallback (the raw `sys_exit` tracepoint).
//!
//! `--kernel 6.1` instead runs the whole end-to-end suite under that one
//! kernel. The end-to-end tests need root and BPF. Where `mcptap check` says
//! the host cannot run the agent, the task prints why and FAILS: a CI
//! machine that lost BPF must not pass by skipping. `MCPTAP_E2E=skip` skips
//! them on purpose (a developer laptop without root), and says so loudly.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{
    build_agent, cmd, repo_root,
    setup::{self, Needs, peers_dir, venv_python},
    vm,
};

#[derive(clap::Args)]
pub struct TestArgs {
    /// Only the unit tests (no root or BPF needed).
    #[arg(long)]
    unit_only: bool,
    /// Skip the kernel matrix (this host's kernel only).
    #[arg(long)]
    no_matrix: bool,
    /// Only the kernel matrix (after the unit tests).
    #[arg(long, conflicts_with = "no_matrix")]
    matrix_only: bool,
    /// Run the whole end-to-end suite under this kernel of the matrix (5.10,
    /// 6.1, 6.12) instead of this host's, and no matrix.
    #[arg(long, value_name = "SERIES")]
    kernel: Option<String>,
    /// How many end-to-end tests run at once. Each runs its own agent, which
    /// sees the whole host: above 1, host-wide counters (parse errors, loss)
    /// include other tests' traffic and their exact assertions can fail.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Skip the bounded fuzzing runs.
    #[arg(long)]
    no_fuzz: bool,
    /// Seconds each fuzz target runs (`cargo xtask fuzz` runs them longer,
    /// with the address sanitizer).
    #[arg(long, default_value_t = 20)]
    fuzz_seconds: u64,
    /// How many kernels of the matrix boot at once (each machine uses about
    /// 1.2 cores under emulation, and 2 GiB).
    #[arg(long, default_value_t = 3)]
    vm_jobs: usize,
    /// Only end-to-end tests whose name contains this.
    filter: Option<String>,
}

/// Longest a kernel of the matrix may take for its smoke suite (both hook
/// families) under software emulation; the machine is stopped after it.
const SMOKE_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// The kernel the systemd test boots: Debian 12's, as its root is.
const SYSTEMD_KERNEL: &str = "6.1";

/// Longest the whole suite may take under one kernel (`--kernel`).
const SUITE_TIMEOUT: Duration = Duration::from_secs(90 * 60);

/// How long each part of the run took, printed as a table at the end
/// (also when a part failed).
#[derive(Default)]
pub struct Timings {
    parts: Vec<(String, Duration, &'static str)>,
    started: Option<std::time::Instant>,
}

impl Timings {
    /// Runs `f` as part `name`, timing it.
    pub fn part<T>(&mut self, name: impl Into<String>, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.started.get_or_insert_with(std::time::Instant::now);
        let t = std::time::Instant::now();
        let r = f();
        self.parts
            .push((name.into(), t.elapsed(), if r.is_ok() { "ok" } else { "FAILED" }));
        r
    }

    /// A part timed elsewhere (machines run side by side).
    pub fn record(&mut self, name: impl Into<String>, took: Duration, outcome: &'static str) {
        self.parts.push((name.into(), took, outcome));
    }

    pub fn print(&self) {
        if self.parts.is_empty() {
            return;
        }
        eprintln!("\n== time per part");
        let width = self.parts.iter().map(|p| p.0.len()).max().unwrap_or(0);
        for (name, took, outcome) in &self.parts {
            eprintln!("{name:<width$}  {:>7.1} s  {outcome}", took.as_secs_f64());
        }
        if let Some(t) = self.started {
            eprintln!("{:<width$}  {:>7.1} s", "total", t.elapsed().as_secs_f64());
        }
    }
}

pub fn test(args: TestArgs) -> Result<()> {
    let mut timings = Timings::default();
    let result = run_all(args, &mut timings);
    timings.print();
    result
}

fn run_all(args: TestArgs, timings: &mut Timings) -> Result<()> {
    let e2e = !args.unit_only;
    let vms = e2e && (args.kernel.is_some() || !args.no_matrix);
    timings.part("setup (install what is missing)", || {
        setup::setup(Needs {
            toolchain: true,
            peers: e2e,
            vms,
        })
    })?;
    let agent = timings.part("build the agent (release)", build_agent)?;

    eprintln!("\n== unit tests");
    timings.part("unit tests", || {
        cmd::run(
            Command::new("cargo")
                .args([
                    "test",
                    "--workspace",
                    "--exclude",
                    "mcptap-tests",
                    "--exclude",
                    "mcptap-ebpf",
                ])
                .current_dir(repo_root()),
        )
    })?;
    if !args.no_fuzz && !args.matrix_only && args.kernel.is_none() {
        eprintln!("\n== fuzz targets ({} s each, fuzz/)", args.fuzz_seconds);
        timings.part(
            format!(
                "fuzz ({} targets × {} s)",
                crate::fuzz::TARGETS.len(),
                args.fuzz_seconds
            ),
            || {
                setup::ensure_cargo_fuzz()?;
                crate::fuzz::run(crate::fuzz::TARGETS, args.fuzz_seconds, crate::fuzz::Sanitizer::None)
            },
        )?;
    }
    if args.unit_only {
        eprintln!("\nend-to-end tests NOT run (--unit-only)");
        return Ok(());
    }

    eprintln!("\n== can this host run the agent? (mcptap check)");
    let check = Command::new(&agent).arg("check").output()?;
    if !check.status.success() {
        let why = String::from_utf8_lossy(&check.stderr).trim().to_string();
        eprintln!("\n**************************************************************");
        eprintln!("END-TO-END TESTS CANNOT RUN ON THIS HOST:\n  {why}");
        eprintln!("**************************************************************");
        if std::env::var("MCPTAP_E2E").as_deref() == Ok("skip") {
            eprintln!("MCPTAP_E2E=skip: end-to-end tests SKIPPED on request; only unit tests ran.");
            return Ok(());
        }
        bail!(
            "end-to-end tests cannot run here (see above): they need root and BPF. Set MCPTAP_E2E=skip to run only the unit tests on purpose"
        );
    }
    eprint!("{}", String::from_utf8_lossy(&check.stdout));

    let artifacts = repo_root().join("target/e2e-artifacts");
    std::fs::create_dir_all(&artifacts)?;
    if let Some(series) = &args.kernel {
        return whole_suite_in(series, &agent, &artifacts, args.filter.as_deref());
    }
    if !args.matrix_only {
        eprintln!("\n== end-to-end tests (this host's kernel)");
        let binaries = timings.part("build the end-to-end tests", e2e_binaries)?;
        // The DaemonSet's test runs the image: built here (podman), with its
        // base and a peer image made from Debian's archive.
        let images = timings.part("container images (cargo xtask image)", || {
            setup::ensure_image_packages()?;
            crate::image::for_tests(&agent)
        })?;
        // Every suite runs, whatever an earlier one did: one run shows
        // every failure.
        let mut failed = Vec::new();
        for (name, exe) in &binaries {
            eprintln!("\n== {name}");
            let mut c = Command::new(exe);
            c.args(["--nocapture"])
                .arg(format!("--test-threads={}", args.jobs.max(1)))
                .current_dir(repo_root().join("tests"))
                .envs(e2e_env(&agent, &artifacts))
                .envs(images.iter().map(|(k, v)| (k, v)));
            if let Some(filter) = &args.filter {
                c.arg(filter);
            }
            if timings.part(format!("e2e {name}"), || cmd::run(&mut c)).is_err() {
                failed.push(name.clone());
            }
        }
        if !failed.is_empty() {
            bail!("end-to-end suites failed: {}", failed.join(", "));
        }
    }
    if !args.no_matrix {
        matrix(&agent, &artifacts, timings, args.vm_jobs)?;
        eprintln!(
            "\n== the systemd unit under systemd (Debian root, Linux {})",
            SYSTEMD_KERNEL
        );
        timings.part(format!("systemd unit (Linux {SYSTEMD_KERNEL})"), || {
            let kernel = vm::kernels::fetch(&[vm::spec(SYSTEMD_KERNEL)?])?
                .pop()
                .context("no kernel fetched")?;
            vm::systemd::run(&kernel, &agent)
        })?;
    }
    eprintln!(
        "\nall tests passed (agent logs and events of each end-to-end test: {})",
        artifacts.display()
    );
    Ok(())
}

/// The variables the end-to-end harness (tests/src/lib.rs) reads.
fn e2e_env(agent: &Path, artifacts: &Path) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("MCPTAP_BIN", agent.to_path_buf()),
        ("MCPTAP_PEERS", peers_dir()),
        ("MCPTAP_PYTHON", venv_python()),
        ("MCPTAP_ARTIFACTS", artifacts.to_path_buf()),
        ("MCPTAP_GO_PEERS", setup::go_peers_dir()),
        ("MCPTAP_RUST_PEERS", setup::rust_peers_dir()),
    ]
}

/// The end-to-end test executables, built (not run), by test name.
fn e2e_binaries() -> Result<Vec<(String, PathBuf)>> {
    let out = cmd::output(
        Command::new("cargo")
            .args(["test", "-p", "mcptap-tests", "--no-run", "--message-format=json"])
            .current_dir(repo_root()),
    )?;
    let mut found = Vec::new();
    for line in out.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact"
            || !msg["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "test"))
        {
            continue;
        }
        if let (Some(name), Some(exe)) = (msg["target"]["name"].as_str(), msg["executable"].as_str()) {
            found.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    found.sort();
    Ok(found)
}

/// A hook family a VM runs the tests under: `--hooks` value, the family
/// the agent must report, and tests to leave out of that run.
struct FamilyRun {
    hooks: &'static str,
    expect: &'static str,
    skip: &'static [&'static str],
}

/// A shell script, run inside a VM, that runs `binaries` under each hook
/// family of `families`, and exits non-zero when any failed.
fn guest_script(
    agent: &Path,
    artifacts: &Path,
    binaries: &[(String, PathBuf)],
    families: &[FamilyRun],
    filter: Option<&str>,
) -> String {
    let mut s = String::from("#!/bin/sh\n# written by cargo xtask test (xtask/src/test.rs)\n");
    s.push_str("export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp LANG=C.UTF-8\n");
    for (k, v) in e2e_env(agent, artifacts) {
        if k != "MCPTAP_ARTIFACTS" {
            s.push_str(&format!("export {k}='{}'\n", v.display()));
        }
    }
    s.push_str(&format!("cd '{}'\n", repo_root().display()));
    s.push_str("echo \"== Linux $(uname -r)\"\n\"$MCPTAP_BIN\" check || exit 1\nstatus=0\n");
    for run in families {
        let (hooks, expect) = (run.hooks, run.expect);
        let dir = artifacts.join(hooks);
        s.push_str(&format!(
            "export MCPTAP_E2E_HOOKS={hooks} MCPTAP_E2E_EXPECT_HOOKS={expect} MCPTAP_ARTIFACTS='{}'\nmkdir -p \"$MCPTAP_ARTIFACTS\"\n",
            dir.display()
        ));
        let skips: String = run.skip.iter().map(|t| format!(" --skip {t}")).collect();
        for (name, exe) in binaries {
            s.push_str(&format!(
                "echo \"== {name} (--hooks {hooks})\"\n'{}' --test-threads=1 --nocapture{skips} {} || status=1\n",
                exe.display(),
                filter.unwrap_or("")
            ));
        }
    }
    s.push_str("exit $status\n");
    s
}

/// Boots `kernel` and runs `script` in it; fails unless it exits 0.
fn run_in(kernel: &vm::kernels::KernelImage, script: String, artifacts: &Path, timeout: Duration) -> Result<Duration> {
    let script_path = artifacts.join("guest.sh");
    std::fs::create_dir_all(artifacts)?;
    std::fs::write(&script_path, script)?;
    let label = format!("linux {}", kernel.spec.name);
    let outcome = vm::qemu::run(kernel, &label, &script_path, &[artifacts.to_path_buf()], timeout)?;
    match outcome.exit {
        Some(0) => Ok(outcome.elapsed),
        Some(code) => bail!(
            "Linux {} ({}): the tests failed (exit {code}); output in {}, agent logs in {}",
            kernel.spec.name,
            kernel.version,
            outcome.output.display(),
            artifacts.display()
        ),
        None => bail!(
            "Linux {} ({}): the machine stopped without an exit code (hung, or crashed); console:\n{}",
            kernel.spec.name,
            kernel.version,
            vm::qemu::console_tail(&outcome, 30)
        ),
    }
}

/// The smoke suite inside every kernel of the matrix, through both hook
/// families.
fn matrix(agent: &Path, artifacts: &Path, timings: &mut Timings, jobs: usize) -> Result<()> {
    eprintln!("\n== kernel matrix: the smoke suite under each stock kernel (QEMU, software emulation)");
    let kernels = vm::kernels::fetch(vm::MATRIX)?;
    let smoke: Vec<(String, PathBuf)> = e2e_binaries()?
        .into_iter()
        .filter(|(name, _)| name == "smoke")
        .collect();
    if smoke.is_empty() {
        bail!("the smoke test binary (tests/tests/smoke.rs) was not built");
    }
    // Every kernel of the matrix allows tracing programs: `auto` must pick
    // fexit there; `tracepoint` proves the fallback on the same kernel, in
    // the same boot. The BTF test fails before any hook is chosen: once is
    // enough.
    let families = [
        FamilyRun {
            hooks: "auto",
            expect: "fexit",
            skip: &[],
        },
        FamilyRun {
            hooks: "tracepoint",
            expect: "tracepoint",
            skip: &["a_kernel_without_btf_is_one_clear_line"],
        },
    ];
    // The machines run `jobs` at a time: one machine keeps about 1.2 of
    // this host's cores busy (emulation, with the guest mostly waiting on
    // one process at a time), so two or three side by side finish sooner
    // than one after another (measured: docs/benchmarks.md, CI).
    let started = std::time::Instant::now();
    let results: Vec<(String, Result<Duration>)> = std::thread::scope(|scope| {
        let mut results = Vec::new();
        for batch in kernels.chunks(jobs.max(1)) {
            let handles: Vec<_> = batch
                .iter()
                .map(|kernel| {
                    let dir = artifacts.join(format!("linux-{}", kernel.spec.name));
                    let _ = std::fs::remove_dir_all(&dir);
                    let script = guest_script(agent, &dir, &smoke, &families, None);
                    eprintln!(
                        "== Linux {} ({}, Debian {}): booting",
                        kernel.spec.name, kernel.version, kernel.spec.debian
                    );
                    let name = kernel.spec.name.to_string();
                    (name, scope.spawn(move || run_in(kernel, script, &dir, SMOKE_TIMEOUT)))
                })
                .collect();
            for (name, handle) in handles {
                let result = handle
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the machine's thread panicked")));
                results.push((name, result));
            }
        }
        results
    });
    let mut failures = Vec::new();
    for (name, result) in results {
        match result {
            Ok(took) => {
                eprintln!("Linux {name} passed in {} s", took.as_secs());
                timings.record(format!("kernel matrix: Linux {name}"), took, "ok");
            }
            Err(err) => {
                timings.record(format!("kernel matrix: Linux {name}"), Duration::ZERO, "FAILED");
                failures.push(format!("{err:#}"));
            }
        }
    }
    timings.record(
        format!("kernel matrix, {} machines {} at a time", kernels.len(), jobs.max(1)),
        started.elapsed(),
        if failures.is_empty() { "ok" } else { "FAILED" },
    );
    if !failures.is_empty() {
        bail!("kernel matrix failed:\n{}", failures.join("\n"));
    }
    Ok(())
}

/// The whole end-to-end suite under one kernel of the matrix.
fn whole_suite_in(series: &str, agent: &Path, artifacts: &Path, filter: Option<&str>) -> Result<()> {
    let spec = vm::spec(series)?;
    let kernel = vm::kernels::fetch(&[spec])?.pop().context("no kernel fetched")?;
    let dir = artifacts.join(format!("linux-{series}-suite"));
    let _ = std::fs::remove_dir_all(&dir);
    let binaries = e2e_binaries()?;
    eprintln!(
        "\n== the whole end-to-end suite under Linux {series} ({})",
        kernel.version
    );
    let auto = FamilyRun {
        hooks: "auto",
        expect: "",
        skip: &[],
    };
    let script = guest_script(agent, &dir, &binaries, &[auto], filter);
    let took = run_in(&kernel, script, &dir, SUITE_TIMEOUT)?;
    eprintln!("\nLinux {series}: every end-to-end test passed in {} s", took.as_secs());
    Ok(())
}
