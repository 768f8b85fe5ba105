//! What mcptap's kernel programs cost, per invocation and to whole
//! processes, on this host and inside each kernel of the test matrix.
//!
//! Per program: with `kernel.bpf_stats_enabled=1` the kernel times every
//! program run; `bpftool prog show` then gives `run_time_ns` and `run_cnt`
//! per program, exact but not free of the machine's noise (a run's time
//! includes cache misses, and on a shared VM the host's steal). Each round
//! of a workload runs it without programs, under the empty programs on the
//! same hooks (`mcptap floor`: what the hook and bpf_stats' own clock
//! reads cost) and under `mcptap run`, side by side; the difference is
//! mcptap's own work, reported over all rounds and round by round (the
//! spread says how far one round's figure can be trusted).
//!
//! Per process: the CPU time (user + system, from `getrusage`) the workload
//! spends per iteration without any program, with the empty ones, and with
//! mcptap, measured side by side, medians of a few rounds.
//!
//! Workloads (none of them speaks MCP, except the last):
//! - `dd bs=64` from /dev/zero to /dev/null on its stdin and stdout: what a
//!   shell pipeline or a log shipper does all day;
//! - 64-byte read+write pairs on other descriptors;
//! - an HTTPS client and server in one Python process (OpenSSL);
//! - an MCP ping-pong: tools/call requests, one at a time, to a minimal
//!   stdio server (the cost per captured message).

use std::{
    collections::{HashMap, HashSet},
    fs,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{Agent, median};
use crate::setup::{peers_dir, venv_python};

/// How much work each workload does: full on a real machine, a tenth under
/// software emulation.
#[derive(Clone, Copy)]
pub struct Scale {
    pub dd_blocks: u64,
    pub loop_iters: u64,
    pub tls_requests: u64,
    pub pingpong_calls: u64,
    pub rounds: usize,
}

impl Scale {
    pub const HOST: Scale = Scale {
        dd_blocks: 2_000_000,
        loop_iters: 1_000_000,
        tls_requests: 3000,
        pingpong_calls: 2000,
        rounds: 3,
    };
    pub const VM: Scale = Scale {
        dd_blocks: 200_000,
        loop_iters: 100_000,
        tls_requests: 300,
        pingpong_calls: 200,
        rounds: 3,
    };
}

/// One program's runs during one workload.
#[derive(Debug, Clone)]
pub struct ProgramRuns {
    pub name: String,
    pub runs: u64,
    pub ns: u64,
}

impl ProgramRuns {
    pub fn ns_per_run(&self) -> f64 {
        if self.runs == 0 {
            f64::NAN
        } else {
            self.ns as f64 / self.runs as f64
        }
    }
}

/// One workload's figures, round by round.
#[derive(Debug, Clone)]
pub struct Workload {
    pub name: &'static str,
    /// Per round: CPU ns per iteration without any program, under the
    /// empty programs, with mcptap (for workloads that have one).
    pub cpu: Vec<(f64, f64, f64)>,
    /// Per round: the runs of the empty programs and of mcptap's.
    pub rounds: Vec<Round>,
    /// MCP messages the workload exchanged in each round (the ping-pong).
    pub messages: Option<u64>,
}

/// The programs' runs during one round of a workload.
#[derive(Debug, Clone, Default)]
pub struct Round {
    pub floor: Vec<ProgramRuns>,
    pub mcptap: Vec<ProgramRuns>,
}

impl Workload {
    /// mcptap's programs, their runs summed over the rounds.
    fn mcptap_total(&self) -> Vec<ProgramRuns> {
        sum_by_name(self.rounds.iter().flat_map(|r| &r.mcptap))
    }

    /// The empty programs, their runs summed over the rounds.
    fn floor_total(&self) -> Vec<ProgramRuns> {
        sum_by_name(self.rounds.iter().flat_map(|r| &r.floor))
    }

    /// Per round, ns per run of `program` above the empty program on its
    /// hook, sorted.
    fn above_per_round(&self, program: &str) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .rounds
            .iter()
            .filter_map(|r| {
                let p = r.mcptap.iter().find(|p| p.name == program)?;
                let f = floor_for(program, &r.floor)?;
                Some(p.ns_per_run() - f.ns_per_run())
            })
            .filter(|d| d.is_finite())
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }
}

fn sum_by_name<'a>(runs: impl Iterator<Item = &'a ProgramRuns>) -> Vec<ProgramRuns> {
    let mut by_name: Vec<ProgramRuns> = Vec::new();
    for p in runs {
        match by_name.iter_mut().find(|q| q.name == p.name) {
            Some(q) => {
                q.runs += p.runs;
                q.ns += p.ns;
            }
            None => by_name.push(p.clone()),
        }
    }
    by_name.sort_by(|a, b| b.runs.cmp(&a.runs).then(a.name.cmp(&b.name)));
    by_name
}

/// Everything measured on one kernel.
#[derive(Debug, Clone)]
pub struct KernelCosts {
    pub kernel: String,
    pub family: String,
    pub object: String,
    pub workloads: Vec<Workload>,
}

/// Program id → (name, run_time_ns, run_cnt), from `bpftool prog show`.
fn programs() -> Result<HashMap<u64, (String, u64, u64)>> {
    let out = crate::cmd::output(Command::new("bpftool").args(["-j", "prog", "show"]))
        .context("bpftool is missing (Debian package bpftool)")?;
    let list: Value = serde_json::from_str(&out)?;
    let mut map = HashMap::new();
    for p in list.as_array().context("bpftool output")? {
        let (Some(id), Some(name)) = (p["id"].as_u64(), p["name"].as_str()) else {
            continue;
        };
        map.insert(
            id,
            (
                name.to_string(),
                p["run_time_ns"].as_u64().unwrap_or(0),
                p["run_cnt"].as_u64().unwrap_or(0),
            ),
        );
    }
    Ok(map)
}

/// Runs of the programs in `ids` between two snapshots, by name, those
/// that ran.
fn runs_between(
    ids: &HashSet<u64>,
    before: &HashMap<u64, (String, u64, u64)>,
    after: &HashMap<u64, (String, u64, u64)>,
) -> Vec<ProgramRuns> {
    let mut by_name: HashMap<String, ProgramRuns> = HashMap::new();
    for id in ids {
        let Some((name, ns1, n1)) = after.get(id) else { continue };
        let (ns0, n0) = before.get(id).map_or((0, 0), |(_, ns, n)| (*ns, *n));
        let e = by_name.entry(name.clone()).or_insert(ProgramRuns {
            name: name.clone(),
            runs: 0,
            ns: 0,
        });
        e.runs += n1.saturating_sub(n0);
        e.ns += ns1.saturating_sub(ns0);
    }
    let mut v: Vec<ProgramRuns> = by_name.into_values().filter(|p| p.runs > 0).collect();
    v.sort_by(|a, b| b.runs.cmp(&a.runs).then(a.name.cmp(&b.name)));
    v
}

/// `kernel.bpf_stats_enabled` on for as long as it lives.
struct BpfStats;

impl BpfStats {
    fn on() -> Result<BpfStats> {
        fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").context("cannot enable kernel.bpf_stats_enabled")?;
        Ok(BpfStats)
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    }
}

/// CPU time of this process's waited-for children so far, in ns.
fn children_cpu_ns() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
    // SAFETY: zeroed, then filled.
    let u = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e9 + t.tv_usec as f64 * 1e3;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// A workload: runs once, returns CPU ns per iteration (when it has a
/// meaningful one) and the MCP messages it exchanged.
type Run = dyn Fn() -> Result<(Option<f64>, Option<u64>)>;

fn dd(blocks: u64) -> Result<(Option<f64>, Option<u64>)> {
    let before = children_cpu_ns();
    let status = Command::new("dd")
        .args(["bs=64", &format!("count={blocks}")])
        .stdin(fs::File::open("/dev/zero")?)
        .stdout(fs::OpenOptions::new().write(true).open("/dev/null")?)
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("dd failed");
    }
    Ok((Some((children_cpu_ns() - before) / blocks as f64), None))
}

fn rw_loop(iters: u64) -> Result<(Option<f64>, Option<u64>)> {
    let me = std::env::current_exe()?;
    let out = Command::new(me)
        .args(["bench-peer", "loop", "64", &iters.to_string()])
        .output()?;
    Ok((Some(String::from_utf8_lossy(&out.stdout).trim().parse()?), None))
}

fn tls_loop(requests: u64, cert: &Path, key: &Path) -> Result<(Option<f64>, Option<u64>)> {
    let out = Command::new(venv_python())
        .arg(peers_dir().join("bench_tls_unrelated.py"))
        .arg(requests.to_string())
        .arg(cert)
        .arg(key)
        .output()?;
    if !out.status.success() {
        bail!("bench_tls_unrelated.py: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((Some(String::from_utf8_lossy(&out.stdout).trim().parse()?), None))
}

/// The file the open workloads open: in the temporary directory, a tmpfs
/// inside the VMs (their root is the host's, shared over virtiofs, where
/// each open is a round trip to the host: the loop would time that).
fn bench_file() -> Result<PathBuf> {
    let path = std::env::temp_dir().join("mcptap-bench-open.txt");
    if !path.exists() {
        fs::write(&path, "mcptap bench\n")?;
    }
    Ok(path)
}

/// An unrelated process opening, reading and closing a file: the side
/// effect hooks, for a process mcptap does not watch.
fn open_loop(iters: u64) -> Result<(Option<f64>, Option<u64>)> {
    let me = std::env::current_exe()?;
    let out = Command::new(me)
        .arg("bench-peer")
        .arg("open-loop")
        .arg(bench_file()?)
        .arg(iters.to_string())
        .output()?;
    Ok((Some(String::from_utf8_lossy(&out.stdout).trim().parse()?), None))
}

/// `calls` tools/call requests, one at a time, to the bench's minimal stdio
/// server (which opens `open` on each call: one side effect per call);
/// returns the messages exchanged.
fn pingpong(calls: u64, open: Option<&str>) -> Result<(Option<f64>, Option<u64>)> {
    let me = std::env::current_exe()?;
    let mut server = Command::new(me)
        .args(["bench-peer", "server"])
        .args(open.map(|p| ["--open", p]).into_iter().flatten())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = server.stdin.take().context("stdin")?;
    let mut stdout = BufReader::new(server.stdout.take().context("stdout")?);
    let mut line = String::new();
    stdin.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},\"clientInfo\":{\"name\":\"bench-pingpong\",\"version\":\"1\"}}}\n")?;
    stdout.read_line(&mut line)?;
    for id in 1..=calls {
        stdin.write_all(
            format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\"params\":{{\"name\":\"ping\",\"arguments\":{{}}}}}}\n")
                .as_bytes(),
        )?;
        line.clear();
        if stdout.read_line(&mut line)? == 0 {
            bail!("the ping-pong server stopped answering");
        }
    }
    drop(stdin);
    server.wait()?;
    Ok((None, Some(2 * (calls + 1))))
}

/// Measures every workload on the running kernel, the agent run with
/// `--hooks hooks`.
pub fn measure(agent: &Path, dir: &Path, hooks: &str, scale: Scale) -> Result<KernelCosts> {
    fs::create_dir_all(dir)?;
    let _stats = BpfStats::on()?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if !cert.exists() {
        crate::cmd::run(
            Command::new(venv_python())
                .arg(peers_dir().join("make_cert.py"))
                .arg(&cert)
                .arg(&key),
        )?;
    }
    let runs: Vec<Box<Run>> = vec![
        Box::new(move || dd(scale.dd_blocks)),
        Box::new(move || rw_loop(scale.loop_iters)),
        Box::new({
            let (cert, key) = (cert.clone(), key.clone());
            move || tls_loop(scale.tls_requests, &cert, &key)
        }),
        Box::new(move || pingpong(scale.pingpong_calls, None)),
        Box::new(move || open_loop(scale.loop_iters)),
        Box::new(move || {
            let file = bench_file()?;
            pingpong(scale.pingpong_calls, file.to_str())
        }),
    ];
    let workloads: Vec<(&'static str, Box<Run>)> = WORKLOADS.iter().copied().zip(runs).collect();
    let mut costs = KernelCosts {
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        family: String::new(),
        object: String::new(),
        workloads: Vec::new(),
    };
    for (name, run) in &workloads {
        eprintln!("bench: kernel programs: {name}");
        let mut w = Workload {
            name,
            cpu: Vec::new(),
            rounds: Vec::new(),
            messages: None,
        };
        for round in 0..scale.rounds {
            let off = run()?.0;
            // The empty programs on the same hooks.
            let before = programs()?;
            let f = Agent::floor_with(agent, dir, &["--hooks", hooks])?;
            let loaded = programs()?;
            let ids: HashSet<u64> = loaded.keys().filter(|id| !before.contains_key(id)).copied().collect();
            let (floor, _) = run()?;
            let after = programs()?;
            f.stop()?;
            let floor_runs = runs_between(&ids, &loaded, &after);
            // mcptap.
            let before = programs()?;
            let a = Agent::start_with(agent, dir, &["--hooks", hooks])?;
            if round == 0 {
                costs.family = a.metric_label("mcptap_capture_hooks_info", "family")?;
                costs.object = a.metric_label("mcptap_capture_hooks_info", "kernel_object")?;
            }
            let loaded = programs()?;
            let ids: HashSet<u64> = loaded.keys().filter(|id| !before.contains_key(id)).copied().collect();
            let (on, msgs) = run()?;
            let after = programs()?;
            a.stop()?;
            if let (Some(off), Some(floor), Some(on)) = (off, floor, on) {
                w.cpu.push((off, floor, on));
            }
            w.rounds.push(Round {
                floor: floor_runs,
                mcptap: runs_between(&ids, &loaded, &after),
            });
            w.messages = msgs;
        }
        costs.workloads.push(w);
    }
    Ok(costs)
}

fn runs_json(v: &[ProgramRuns]) -> Value {
    Value::Array(
        v.iter()
            .map(|p| json!({"name": p.name, "runs": p.runs, "ns": p.ns}))
            .collect(),
    )
}

fn runs_from(v: &Value) -> Vec<ProgramRuns> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|p| ProgramRuns {
            name: p["name"].as_str().unwrap_or_default().to_string(),
            runs: p["runs"].as_u64().unwrap_or(0),
            ns: p["ns"].as_u64().unwrap_or(0),
        })
        .collect()
}

impl KernelCosts {
    pub fn to_json(&self) -> Value {
        json!({
            "kernel": self.kernel, "family": self.family, "object": self.object,
            "workloads": self.workloads.iter().map(|w| json!({
                "name": w.name,
                "cpu": w.cpu.iter().map(|(a, b, c)| vec![*a, *b, *c]).collect::<Vec<_>>(),
                "rounds": w.rounds.iter().map(|r| json!({
                    "floor": runs_json(&r.floor),
                    "mcptap": runs_json(&r.mcptap),
                })).collect::<Vec<_>>(),
                "messages": w.messages,
            })).collect::<Vec<_>>(),
        })
    }

    pub fn from_json(v: &Value) -> Result<KernelCosts> {
        let workloads = v["workloads"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| {
                let name = w["name"].as_str().unwrap_or_default();
                let name = WORKLOADS
                    .iter()
                    .copied()
                    .find(|n| *n == name)
                    .with_context(|| format!("a workload this xtask does not know: {name:?}"))?;
                Ok(Workload {
                    name,
                    cpu: w["cpu"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|c| Some((c.get(0)?.as_f64()?, c.get(1)?.as_f64()?, c.get(2)?.as_f64()?)))
                        .collect(),
                    rounds: w["rounds"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|r| Round {
                            floor: runs_from(&r["floor"]),
                            mcptap: runs_from(&r["mcptap"]),
                        })
                        .collect(),
                    messages: w["messages"].as_u64(),
                })
            })
            .collect::<Result<_>>()?;
        Ok(KernelCosts {
            kernel: v["kernel"].as_str().unwrap_or_default().to_string(),
            family: v["family"].as_str().unwrap_or_default().to_string(),
            object: v["object"].as_str().unwrap_or_default().to_string(),
            workloads,
        })
    }
}

/// The workloads, in the order they run (also how a VM's JSON names them).
pub const WORKLOADS: &[&str] = &[
    "dd bs=64, stdin → stdout (/dev/zero → /dev/null)",
    "64-byte read+write pairs on other descriptors",
    "HTTPS GET loop, OpenSSL, not MCP (one Python process)",
    "MCP ping-pong over stdio (captured)",
    "open+read+close of a file, not MCP (side-effect hooks, unwatched)",
    "MCP ping-pong, the server opens a file per call (one side effect per call)",
];

/// Runs `measure` inside a kernel of the matrix (the hidden
/// `bench-peer kernel-costs` of this very xtask binary), returns its
/// figures.
pub fn measure_in_vm(series: &str, agent: &Path, hooks: &str) -> Result<KernelCosts> {
    let kernel = crate::vm::kernels::fetch(&[crate::vm::spec(series)?])?
        .pop()
        .context("no kernel")?;
    let dir = crate::repo_root()
        .join("target/bench/vm")
        .join(format!("{series}-{hooks}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let out = dir.join("costs.json");
    let me = std::env::current_exe()?;
    let script = dir.join("bench.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nexport PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp\ncd '{}'\nexec '{}' bench-peer kernel-costs --agent '{}' --hooks {hooks} --dir '{}' --out '{}'\n",
            crate::repo_root().display(),
            me.display(),
            agent.display(),
            dir.display(),
            out.display()
        ),
    )?;
    let outcome = crate::vm::qemu::run(
        &kernel,
        &format!("bench linux {series}"),
        &script,
        std::slice::from_ref(&dir),
        Duration::from_secs(60 * 60),
    )?;
    if outcome.exit != Some(0) {
        bail!(
            "the benchmark failed inside Linux {series}; output in {}",
            outcome.output.display()
        );
    }
    let v: Value = serde_json::from_str(&fs::read_to_string(&out)?)?;
    KernelCosts::from_json(&v)
}

/// The hidden subcommand run inside a VM.
#[derive(clap::Args)]
pub struct InnerArgs {
    #[arg(long)]
    agent: PathBuf,
    #[arg(long)]
    hooks: String,
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    out: PathBuf,
}

pub fn inner(args: InnerArgs) -> Result<()> {
    let costs = measure(&args.agent, &args.dir, &args.hooks, Scale::VM)?;
    fs::write(&args.out, costs.to_json().to_string())?;
    Ok(())
}

/// The report's section.
pub fn render(all: &[KernelCosts]) -> String {
    let mut r = String::new();
    r.push_str("\n## Kernel programs: cost per run (bpf_stats)\n\n");
    r.push_str(
        "`kernel.bpf_stats_enabled=1`, `bpftool prog show`: the kernel's own timing of every run of every program. \
         Each workload runs under the empty programs on the same hooks (`floor`: the hook and bpf_stats' clock reads) \
         and under mcptap; targets: processes mcptap does not watch pay at most **25 ns per run above the empty \
         program**. Under QEMU (software emulation) everything is ~10× slower: compare within a kernel, not across.\n\n",
    );
    r.push_str(
        "ns/run: all rounds together; \"per round\": each round's excess over the empty program \
         (min / median / max), the spread between identical rounds.\n\n",
    );
    r.push_str("| kernel | hooks | workload | program | runs | ns/run | empty program ns/run | above empty | per round (min / median / max) |\n|---|---|---|---|---|---|---|---|---|\n");
    for k in all {
        for w in &k.workloads {
            let floors = w.floor_total();
            for p in &w.mcptap_total() {
                let (f, above) = match floor_for(&p.name, &floors) {
                    Some(f) => (
                        format!("{:.0}", f.ns_per_run()),
                        format!("**{:+.0}**", p.ns_per_run() - f.ns_per_run()),
                    ),
                    None => ("—".into(), "—".into()),
                };
                let rounds = w.above_per_round(&p.name);
                let spread = match (rounds.first(), rounds.last()) {
                    (Some(lo), Some(hi)) => format!("{lo:+.0} / {:+.0} / {hi:+.0}", median(rounds.clone())),
                    _ => "—".into(),
                };
                r.push_str(&format!(
                    "| {} | {} ({}) | {} | {} | {} | {:.0} | {f} | {above} | {spread} |\n",
                    k.kernel,
                    k.family,
                    k.object,
                    w.name,
                    p.name,
                    p.runs,
                    p.ns_per_run()
                ));
            }
            if let Some(msgs) = w.messages {
                let total: u64 = w.mcptap_total().iter().map(|p| p.ns).sum();
                let msgs = msgs * w.rounds.len() as u64;
                r.push_str(&format!(
                    "| {} | {} ({}) | {} | all programs, per captured message | {msgs} messages | {:.0} | | | |\n",
                    k.kernel,
                    k.family,
                    k.object,
                    w.name,
                    total as f64 / msgs.max(1) as f64
                ));
            }
        }
    }
    r.push_str("\n## Whole-process CPU per iteration\n\nCPU time (user + system) per iteration of the workload: without any program, under the empty programs on the same hooks, and with mcptap, side by side in each round (medians over the rounds; the with/without ratio of each round, min / max). Target on fentry kernels: the dd loop's ratio ≤ 1.03.\n\n");
    r.push_str("| kernel | hooks | workload | without | floor | with mcptap | with / without | per round (min / max) | floor / without |\n|---|---|---|---|---|---|---|---|---|\n");
    for k in all {
        for w in &k.workloads {
            if w.cpu.is_empty() {
                continue;
            }
            let off = median(w.cpu.iter().map(|c| c.0).collect());
            let floor = median(w.cpu.iter().map(|c| c.1).collect());
            let on = median(w.cpu.iter().map(|c| c.2).collect());
            let mut ratios: Vec<f64> = w.cpu.iter().map(|c| c.2 / c.0).collect();
            ratios.sort_by(f64::total_cmp);
            r.push_str(&format!(
                "| {} | {} | {} | {off:.0} ns | {floor:.0} ns | {on:.0} ns | **{:.3}** | {:.3} / {:.3} | {:.3} |\n",
                k.kernel,
                k.family,
                w.name,
                on / off,
                ratios[0],
                ratios[ratios.len() - 1],
                floor / off
            ));
        }
    }
    r
}

/// The empty program on the same hook as `program` (names as in
/// `mcptap_common::names`).
fn floor_for<'a>(program: &str, floors: &'a [ProgramRuns]) -> Option<&'a ProgramRuns> {
    let want = match program {
        "sys_exit" => "sys_exit_floor".to_string(),
        p => {
            let syscall = p.strip_prefix("fx_").or_else(|| p.strip_prefix("fxu_"))?;
            format!("fxf_{syscall}")
        }
    };
    floors.iter().find(|f| f.name == want)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(name: &str, runs: u64, ns: u64) -> ProgramRuns {
        ProgramRuns {
            name: name.into(),
            runs,
            ns,
        }
    }

    #[test]
    fn rounds_survive_the_vm_json_and_give_totals_and_spread() {
        let round = |floor_ns, ns| Round {
            floor: vec![runs("fxf_read", 100, floor_ns)],
            mcptap: vec![runs("fx_read", 100, ns)],
        };
        let costs = KernelCosts {
            kernel: "6.1.0-test".into(),
            family: "fexit".into(),
            object: "full".into(),
            workloads: vec![Workload {
                name: WORKLOADS[0],
                cpu: vec![(100.0, 130.0, 131.0), (100.0, 128.0, 140.0), (110.0, 140.0, 121.0)],
                rounds: vec![round(7000, 9000), round(8000, 8500), round(7500, 11500)],
                messages: None,
            }],
        };
        let back = KernelCosts::from_json(&costs.to_json()).unwrap();
        let w = &back.workloads[0];
        assert_eq!(w.rounds.len(), 3);
        assert_eq!(w.mcptap_total()[0].runs, 300);
        // Per round: +20, +5, +40 ns above the empty program.
        assert_eq!(w.above_per_round("fx_read"), vec![5.0, 20.0, 40.0]);
        let report = render(&[back]);
        // All rounds: 29000 ns / 300 runs against 22500 / 300.
        assert!(report.contains("| 97 | 75 | **+22** | +5 / +20 / +40 |"), "{report}");
        // CPU medians 100 / 130 / 131; per-round ratios 1.31, 1.40, 1.10.
        assert!(report.contains("| **1.310** | 1.100 / 1.400 | 1.300 |"), "{report}");
    }

    #[test]
    fn a_workload_the_xtask_does_not_know_is_an_error() {
        let v = json!({"kernel": "x", "workloads": [{"name": "something else", "rounds": []}]});
        assert!(KernelCosts::from_json(&v).is_err());
    }
}
