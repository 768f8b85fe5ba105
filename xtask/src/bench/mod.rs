//! `cargo xtask bench`: the agent's cost, measured side by side in one run
//! and reported as ratios (docs/benchmarks.md explains each figure).
//!
//! 1. Round-trip latency of real MCP servers without and with the agent,
//!    in alternating rounds so that drift hits both sides alike: stdio
//!    (FastMCP, Node's server-everything) and HTTPS (FastMCP on uvicorn,
//!    TLS through libssl). p50/p99 of the pooled round trips, their ratio,
//!    and the spread of the per-round p50 ratios.
//! 2. The highest message rate captured with zero loss: a synthetic stdio
//!    server answers pipelined tools/call requests sent at increasing
//!    rates; a rate passes when every request became an event and nothing
//!    was lost (capture) or dropped (sinks, the event store included).
//!    Agent CPU and RSS at each rate.
//! 3. The cost to unrelated processes: a read/write loop on /dev/zero and
//!    /dev/null, and an HTTPS client/server (no MCP), without the agent,
//!    with only an empty program on the same syscall hook (the kernel's
//!    floor: what any syscall hook costs on a kernel without kprobes or
//!    fentry), and with the agent.

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

mod kernel;
mod soak;

use crate::{
    build_agent, repo_root,
    setup::{self, Needs, peers_dir, venv_python},
};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Calls per latency block.
    #[arg(long, default_value_t = 500)]
    calls: usize,
    /// Blocks per side (without / with the agent), alternating.
    #[arg(long, default_value_t = 8)]
    rounds: usize,
    /// Seconds per rate step.
    #[arg(long, default_value_t = 3)]
    rate_seconds: u64,
    /// Run only these sections (default: all).
    #[arg(long, value_enum)]
    only: Vec<Section>,
    /// Kernels of the matrix the kernel-program section also measures in
    /// (under QEMU); default: all of them; `none` for this host only.
    #[arg(long, value_name = "SERIES")]
    vm_kernel: Vec<String>,
    /// Only the soak: mixed traffic with churn for `--soak-seconds`, loss,
    /// RSS and table sizes over time.
    #[arg(long)]
    soak: bool,
    #[arg(long, default_value_t = 600)]
    soak_seconds: u64,
    /// Requests per second of each of the soak's two stdio streams.
    #[arg(long, default_value_t = 1250)]
    soak_stdio_rate: u64,
    /// Requests per second of the soak's HTTP client.
    #[arg(long, default_value_t = 250)]
    soak_http_rate: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    Latency,
    Rate,
    Unrelated,
    /// Per-program cost (bpf_stats) and whole-process CPU, on this host and
    /// inside each kernel of the matrix.
    Kernel,
}

/// Hidden helper processes the benchmark runs (`xtask bench-peer ...`).
#[derive(clap::Subcommand)]
pub enum Peer {
    /// A minimal stdio MCP server: one response line per request line.
    Server {
        /// Open and read this file on each tools/call (a side effect).
        #[arg(long)]
        open: Option<PathBuf>,
    },
    /// An unrelated process: `iters` open+read+close of `path`.
    OpenLoop { path: PathBuf, iters: usize },
    /// A minimal Streamable HTTP MCP server on loopback (the soak's): prints
    /// its port, then serves until killed.
    HttpServer,
    /// An unrelated process: `iters` read+write pairs of `size` bytes.
    Loop { size: usize, iters: usize },
    /// The kernel-program measurements, run inside a VM of the matrix.
    KernelCosts(kernel::InnerArgs),
}

pub fn peer(p: Peer) -> Result<()> {
    match p {
        Peer::Server { open } => serve_stdio(open.as_deref()),
        Peer::OpenLoop { path, iters } => {
            let mut buf = [0u8; 64];
            let start = cpu_time_ns();
            for _ in 0..iters {
                let mut f = fs::File::open(&path)?;
                let _ = f.read(&mut buf)?;
            }
            println!("{}", (cpu_time_ns() - start) / iters as f64);
            Ok(())
        }
        Peer::HttpServer => soak::serve_http_process(),
        Peer::KernelCosts(args) => kernel::inner(args),
        Peer::Loop { size, iters } => {
            let mut zero = fs::File::open("/dev/zero")?;
            let mut null = fs::OpenOptions::new().write(true).open("/dev/null")?;
            let mut buf = vec![0u8; size];
            // CPU time (user + system) per iteration: what the hooks add to
            // the process itself, steadier than wall time on a shared host.
            // Five slices, the median: robust to a burst of noise.
            let mut slices = Vec::new();
            for _ in 0..5 {
                let start = cpu_time_ns();
                for _ in 0..iters / 5 {
                    zero.read_exact(&mut buf)?;
                    null.write_all(&buf)?;
                }
                slices.push((cpu_time_ns() - start) / (iters / 5) as f64);
            }
            println!("{}", median(slices));
            Ok(())
        }
    }
}

/// CPU time of this process so far (user + system), in nanoseconds.
fn cpu_time_ns() -> f64 {
    let mut ts = std::mem::MaybeUninit::<[i64; 2]>::uninit();
    // SAFETY: clock_gettime writes a struct timespec (two longs on 64-bit Linux).
    unsafe {
        clock_gettime(2 /* CLOCK_PROCESS_CPUTIME_ID */, ts.as_mut_ptr())
    };
    // SAFETY: written by the call above.
    let [s, ns] = unsafe { ts.assume_init() };
    s as f64 * 1e9 + ns as f64
}

unsafe extern "C" {
    fn clock_gettime(clock: i32, ts: *mut [i64; 2]) -> i32;
}

fn serve_stdio(open: Option<&Path>) -> Result<()> {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line?;
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let Some(id) = msg.get("id") else { continue };
        let result = if msg["method"] == "initialize" {
            json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "bench-peer", "version": "1"}})
        } else {
            if let (Some(path), "tools/call") = (open, msg["method"].as_str().unwrap_or("")) {
                let mut buf = [0u8; 64];
                let _ = fs::File::open(path)?.read(&mut buf)?;
            }
            json!({"content": [{"type": "text", "text": "ok"}], "isError": false})
        };
        let mut text = serde_json::to_string(&json!({"jsonrpc": "2.0", "id": id, "result": result}))?;
        text.push('\n');
        // One write per message, as real servers do.
        out.write_all(text.as_bytes())?;
        out.flush()?;
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running `mcptap run` (or the empty hook, `mcptap floor`).
struct Agent {
    child: Child,
    metrics: Option<String>,
}

impl Agent {
    fn start(bin: &Path, dir: &Path) -> Result<Agent> {
        Agent::start_with(bin, dir, &[])
    }

    fn start_with(bin: &Path, dir: &Path, extra: &[&str]) -> Result<Agent> {
        let port = free_port()?;
        let mut c = Command::new(bin);
        // Defaults otherwise (the event store included), with the run's own
        // state directory and API socket.
        c.args(["run", "--metrics-addr", &format!("127.0.0.1:{port}"), "--events"])
            .arg(dir.join("events.jsonl"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--api-socket")
            .arg(dir.join("api.sock"))
            .args(extra);
        Agent::spawn(c, dir, Some(format!("http://127.0.0.1:{port}/metrics")))
    }

    fn floor(bin: &Path, dir: &Path) -> Result<Agent> {
        Agent::floor_with(bin, dir, &[])
    }

    fn floor_with(bin: &Path, dir: &Path, extra: &[&str]) -> Result<Agent> {
        let mut c = Command::new(bin);
        c.arg("floor").args(extra);
        Agent::spawn(c, dir, None)
    }

    /// The value of `label` on the first series of `name`.
    fn metric_label(&self, name: &str, label: &str) -> Result<String> {
        let url = self.metrics.as_deref().context("no metrics")?;
        let text = ureq::get(url).call()?.into_string()?;
        let series = text
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{")))
            .with_context(|| format!("no {name}"))?;
        let needle = format!("{label}=\"");
        let start = series.find(&needle).with_context(|| format!("no {label} on {name}"))? + needle.len();
        let len = series[start..].find('"').context("unterminated label")?;
        Ok(series[start..start + len].to_string())
    }

    fn spawn(mut c: Command, dir: &Path, metrics: Option<String>) -> Result<Agent> {
        let log = dir.join("agent.log");
        let child = c
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .context("start the agent")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("mcptap is running")
        {
            if Instant::now() > deadline {
                bail!(
                    "the agent did not start: {}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Agent { child, metrics })
    }

    /// The `/metrics` page.
    fn metrics_text(&self) -> Result<String> {
        let url = self.metrics.as_deref().context("no metrics")?;
        Ok(ureq::get(url).call()?.into_string()?)
    }

    /// Sum of a metric's samples whose labels include `labels`.
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        let text = self.metrics_text()?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
                (metric == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
                    .then(|| value.parse::<f64>().ok())
                    .flatten()
            })
            .sum())
    }

    /// CPU seconds used so far and current/peak RSS (MiB).
    fn usage(&self) -> (f64, f64, f64) {
        let pid = self.child.id();
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace().collect())
            .unwrap_or_default();
        let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
            + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (ticks / 100.0, kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
    }

    fn stop(mut self) -> Result<()> {
        Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the agent exited with {status}");
        }
        Ok(())
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// Round trips (µs) printed by a peer script as `{"rtt_us": [...]}`.
fn rtts(script: &str, args: &[String]) -> Result<Vec<f64>> {
    let out = Command::new(venv_python())
        .arg(peers_dir().join(script))
        .args(args)
        .current_dir(peers_dir())
        .output()?;
    if !out.status.success() {
        bail!("{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let report: Value = serde_json::from_slice(&out.stdout)?;
    Ok(report["rtt_us"]
        .as_array()
        .context("rtt_us")?
        .iter()
        .filter_map(Value::as_f64)
        .collect())
}

struct Latency {
    name: &'static str,
    off: Vec<f64>,
    on: Vec<f64>,
    /// p50(with) / p50(without) of each round.
    round_ratios: Vec<f64>,
}

/// Alternating rounds of `block` without and with the agent; after each
/// round with the agent, checks it saw the calls (`expect` tools/call of
/// `tool` at `side`'s metric).
#[allow(clippy::too_many_arguments)]
fn latency(
    agent_bin: &Path,
    dir: &Path,
    rounds: usize,
    agent_args: &[&str],
    name: &'static str,
    (metric, tool, expect): (&str, &str, usize),
    block: &dyn Fn() -> Result<Vec<f64>>,
) -> Result<Latency> {
    let (mut off, mut on, mut round_ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        eprintln!("bench: {name}: round {}/{rounds}", round + 1);
        let without = block()?;
        let agent = Agent::start_with(agent_bin, dir, agent_args)?;
        let before = agent.metric(metric, &[("gen_ai_tool_name", tool)])?;
        let with = block()?;
        // The calls measured with the agent were seen by it.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = agent.metric(metric, &[("gen_ai_tool_name", tool)])? - before;
            if seen >= expect as f64 {
                break;
            }
            if Instant::now() > deadline {
                bail!("{name}: the agent saw {seen} of {expect} calls");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        agent.stop()?;
        round_ratios.push(median(with.clone()) / median(without.clone()));
        off.extend(without);
        on.extend(with);
    }
    off.sort_by(f64::total_cmp);
    on.sort_by(f64::total_cmp);
    round_ratios.sort_by(f64::total_cmp);
    Ok(Latency {
        name,
        off,
        on,
        round_ratios,
    })
}

struct RateStep {
    target: u64,
    achieved: f64,
    seen: f64,
    sent: u64,
    /// Capture losses (kernel, gaps) and events dropped by a sink (the
    /// event store, the events file).
    lost: f64,
    dropped: f64,
    cpu_pct: f64,
    rss_mib: f64,
}

/// Sends `rate` pipelined requests per second for `secs` to a fresh
/// bench-peer server; returns (requests sent, responses, seconds taken).
fn drive_rate(rate: u64, secs: u64) -> Result<(u64, u64, f64)> {
    let me = std::env::current_exe()?;
    let mut server = Command::new(me)
        .args(["bench-peer", "server"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = server.stdin.take().context("stdin")?;
    let stdout = server.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut n = 0u64;
        for line in BufReader::new(stdout).lines() {
            if line.is_err() {
                break;
            }
            n += 1;
            if n == 1 {
                let _ = tx.send(());
            }
        }
        n
    });
    stdin.write_all(
        b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},\"clientInfo\":{\"name\":\"bench-rate\",\"version\":\"1\"}}}\n",
    )?;
    rx.recv_timeout(Duration::from_secs(10))
        .context("no answer to initialize")?;
    let total = rate * secs;
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        // Send what the schedule says should be out by now.
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while sent < due {
            sent += 1;
            let line = format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{sent},\"method\":\"tools/call\",\"params\":{{\"name\":\"bench\",\"arguments\":{{\"i\":{sent}}}}}}}\n"
            );
            stdin.write_all(line.as_bytes())?;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let took = start.elapsed().as_secs_f64();
    drop(stdin);
    let responses = reader.join().map_err(|_| anyhow::anyhow!("reader panicked"))?;
    server.wait()?;
    Ok((sent, responses.saturating_sub(1), took))
}

/// (captured data lost, events dropped by sinks) so far.
fn lost_so_far(agent: &Agent) -> Result<(f64, f64)> {
    Ok((
        agent.metric("mcptap_capture_lost_total", &[])? + agent.metric("mcptap_capture_gaps_total", &[])?,
        agent.metric("mcptap_events_dropped_total", &[])?,
    ))
}

fn rate_steps(agent_bin: &Path, dir: &Path, args: &BenchArgs) -> Result<(Vec<RateStep>, f64)> {
    let agent = Agent::start(agent_bin, dir)?;
    let mut steps = Vec::new();
    for target in [
        1_000u64, 5_000, 10_000, 20_000, 30_000, 50_000, 70_000, 100_000, 200_000,
    ] {
        eprintln!("bench: zero-loss rate: {target} requests/s");
        let lost_before = lost_so_far(&agent)?;
        let ops_before = agent.metric("mcp_server_operations_total", &[("gen_ai_tool_name", "bench")])?;
        let (cpu_before, _, _) = agent.usage();
        let t0 = Instant::now();
        let (sent, responses, took) = drive_rate(target, args.rate_seconds)?;
        if responses != sent {
            bail!("the bench server answered {responses} of {sent}");
        }
        // Let the agent finish what the kernel already captured.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen;
        loop {
            seen = agent.metric("mcp_server_operations_total", &[("gen_ai_tool_name", "bench")])? - ops_before;
            if seen >= sent as f64 || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let (cpu_after, rss, _) = agent.usage();
        let (lost_after, dropped_after) = lost_so_far(&agent)?;
        let (lost, dropped) = (lost_after - lost_before.0, dropped_after - lost_before.1);
        steps.push(RateStep {
            target,
            achieved: sent as f64 / took,
            seen,
            sent,
            lost,
            dropped,
            cpu_pct: 100.0 * (cpu_after - cpu_before) / t0.elapsed().as_secs_f64(),
            rss_mib: rss,
        });
        if !(seen == sent as f64 && lost == 0.0 && dropped == 0.0) {
            break;
        }
    }
    let (_, _, peak) = agent.usage();
    agent.stop()?;
    Ok((steps, peak))
}

/// CPU ns per iteration: without the agent, under the empty hook, with it.
type CpuPerIteration = (f64, f64, f64);

/// Per-iteration cost of an unrelated workload without the agent, with
/// the empty hook only, and with the agent (run with `extra`); medians of
/// `rounds` runs.
fn unrelated(
    agent_bin: &Path,
    dir: &Path,
    rounds: usize,
    extra: &[&str],
    run: &dyn Fn() -> Result<f64>,
) -> Result<(f64, f64, f64)> {
    let (mut off, mut floor, mut on) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        off.push(run()?);
        let f = Agent::floor(agent_bin, dir)?;
        floor.push(run()?);
        f.stop()?;
        let agent = Agent::start_with(agent_bin, dir, extra)?;
        on.push(run()?);
        agent.stop()?;
    }
    Ok((median(off), median(floor), median(on)))
}

/// An unrelated HTTPS process under HTTPS discovery (no flags), beside
/// runs without any agent and with an empty hook: its program's first run
/// under a newly started agent (probed, judged not MCP, probes removed),
/// then its next run (the program known: left alone, the steady state).
fn unrelated_new_program(
    agent_bin: &Path,
    dir: &Path,
    rounds: usize,
    run: &dyn Fn() -> Result<f64>,
) -> Result<(CpuPerIteration, CpuPerIteration)> {
    let (mut off, mut floor, mut first, mut steady) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        off.push(run()?);
        let f = Agent::floor(agent_bin, dir)?;
        floor.push(run()?);
        f.stop()?;
        let agent = Agent::start(agent_bin, dir)?;
        first.push(run()?);
        steady.push(run()?);
        agent.stop()?;
    }
    let (off, floor) = (median(off), median(floor));
    Ok(((off, floor, median(first)), (off, floor, median(steady))))
}

/// The unrelated HTTPS process's figures.
struct TlsUnrelated {
    first: CpuPerIteration,
    steady: CpuPerIteration,
    host_wide: CpuPerIteration,
}

/// One new HTTPS MCP server under a newly started agent (no flags).
struct Discovery {
    /// From the client's first request to the response of the first
    /// operation the agent reported on the server's side.
    latency_ms: f64,
    /// Operations of that first session reported on the server's side.
    seen: usize,
    sent: usize,
    /// Execs the exec gate held while it read their file, and for how long
    /// in all (seconds): the price of first contact.
    holds: f64,
    held_s: f64,
}

/// HTTPS discovery latency: an agent started with no flags, then a new
/// HTTPS MCP server (FastMCP on uvicorn, OpenSSL), then one client session
/// of 100 calls; how long until the server's operations are reported, and
/// how many of that first session's are.
fn discovery_latency(agent_bin: &Path, dir: &Path, rounds: usize) -> Result<Vec<Discovery>> {
    let mut out = Vec::new();
    for _ in 0..rounds {
        let agent = Agent::start(agent_bin, dir)?;
        let https = HttpsServer::start(dir)?;
        let client = Command::new(venv_python())
            .arg(peers_dir().join("bench_https_client.py"))
            .args(["50", &https.port.to_string()])
            .arg(&https.cert)
            .current_dir(peers_dir())
            .output()?;
        if !client.status.success() {
            bail!("bench_https_client.py: {}", String::from_utf8_lossy(&client.stderr));
        }
        let report: Value = serde_json::from_slice(&client.stdout)?;
        let t0 = report["t0"].as_f64().context("t0")?;
        let sent = report["operations"].as_u64().context("operations")? as usize;
        let holds = agent.metric("mcptap_exec_gate_hold_seconds_count", &[])?;
        let held_s = agent.metric("mcptap_exec_gate_hold_seconds_sum", &[])?;
        let pid = https.child.id();
        // Events are written as responses are seen; give the last ones time.
        std::thread::sleep(Duration::from_secs(1));
        let events = fs::read_to_string(dir.join("events.jsonl"))?;
        let seen: Vec<f64> = events
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| {
                e["event.type"] == "mcp.operation"
                    && e["observer"] == "server"
                    && e["server"]["process"]["pid"].as_u64() == Some(pid as u64)
            })
            .filter_map(|e| e["response"]["time"].as_str().and_then(unix_seconds))
            .collect();
        drop(https);
        agent.stop()?;
        let first = seen.iter().copied().fold(f64::INFINITY, f64::min);
        out.push(Discovery {
            latency_ms: (first - t0) * 1000.0,
            seen: seen.len(),
            sent,
            holds,
            held_s,
        });
    }
    Ok(out)
}

fn unix_seconds(rfc3339: &str) -> Option<f64> {
    let t = humantime::parse_rfc3339(rfc3339).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64())
}

fn render_discovery(rounds: &[Discovery]) -> String {
    if rounds.is_empty() {
        return String::new();
    }
    let mut r = String::from(
        "
## HTTPS first contact (agent run without flags, a new HTTPS MCP server, one client session)

         From the client's first request to the response of the first operation reported on the server's side; how many of that first session's operations were reported (all of them when the probes were in before its first TLS byte); and what the exec gate cost meanwhile: the execs it held while reading their file (the server's interpreter, the client's, and any program new to the agent) and their mean hold.

         | round | latency | operations reported / sent | execs held | mean hold |
|---|---|---|---|---|
",
    );
    for (i, d) in rounds.iter().enumerate() {
        r.push_str(&format!(
            "| {} | {:.0} ms | {} / {} | {} | {:.1} ms |
",
            i + 1,
            d.latency_ms,
            d.seen,
            d.sent,
            d.holds,
            if d.holds > 0.0 {
                d.held_s / d.holds * 1000.0
            } else {
                0.0
            }
        ));
    }
    r
}

/// An HTTPS MCP server (FastMCP, JSON responses) for the TLS latency case.
struct HttpsServer {
    child: Child,
    port: u16,
    cert: PathBuf,
}

impl HttpsServer {
    fn start(dir: &Path) -> Result<HttpsServer> {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        crate::cmd::run(
            Command::new(venv_python())
                .arg(peers_dir().join("make_cert.py"))
                .arg(&cert)
                .arg(&key),
        )?;
        let port = free_port()?;
        let child = Command::new(venv_python())
            .arg(peers_dir().join("http_server.py"))
            .args(["--port", &port.to_string(), "--json-response", "--name", "bench-https"])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .current_dir(peers_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("the HTTPS server did not start");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(HttpsServer { child, port, cert })
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn bench(args: BenchArgs) -> Result<()> {
    setup::setup(Needs {
        toolchain: true,
        peers: true,
        vms: true,
    })?;
    let agent = build_agent()?;
    let dir = repo_root().join("target/bench");
    fs::create_dir_all(&dir)?;
    if args.soak {
        let report = soak::soak(
            &agent,
            &dir,
            soak::SoakArgs {
                seconds: args.soak_seconds,
                stdio_rate: args.soak_stdio_rate,
                http_rate: args.soak_http_rate,
            },
        )?;
        fs::write(dir.join("soak.md"), &report)?;
        println!("{report}");
        eprintln!("bench: soak report written to {}", dir.join("soak.md").display());
        return Ok(());
    }
    let py = venv_python().display().to_string();
    let stdio_block = |tool: &'static str, server: Vec<String>| {
        let calls = args.calls;
        move || {
            let mut a = vec![calls.to_string(), tool.to_string(), r#"{"a":1,"b":2}"#.to_string()];
            a.extend(server.clone());
            rtts("bench_client.py", &a)
        }
    };
    let python_server = vec![py.clone(), peers_dir().join("stdio_server.py").display().to_string()];
    let node_server = vec![
        "node".to_string(),
        peers_dir()
            .join("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
            .display()
            .to_string(),
        "stdio".to_string(),
    ];
    let expect = args.calls + 49;
    let want = |s: Section| args.only.is_empty() || args.only.contains(&s);
    let mut lat = Vec::new();
    if want(Section::Latency) {
        lat.extend([
            latency(
                &agent,
                &dir,
                args.rounds,
                &[],
                "FastMCP (Python), stdio",
                ("mcp_server_operations_total", "add", expect),
                &stdio_block("add", python_server),
            )?,
            latency(
                &agent,
                &dir,
                args.rounds,
                &[],
                "server-everything (Node), stdio",
                ("mcp_server_operations_total", "get-sum", expect),
                &stdio_block("get-sum", node_server),
            )?,
        ]);
    }
    if want(Section::Latency) {
        // Started before the agent: picked up by discovery at each round.
        let https = HttpsServer::start(&dir)?;
        let (port, cert) = (https.port, https.cert.display().to_string());
        let calls = args.calls;
        lat.push(latency(
            &agent,
            &dir,
            args.rounds,
            // Selected by its port: its OpenSSL probes are its own.
            &["--port", &port.to_string()],
            "FastMCP on uvicorn, HTTPS",
            ("mcp_server_operations_total", "add", expect),
            &|| {
                rtts(
                    "bench_https_client.py",
                    &[calls.to_string(), port.to_string(), cert.clone()],
                )
            },
        )?);
    }
    let (steps, peak_rss) = if want(Section::Rate) {
        rate_steps(&agent, &dir, &args)?
    } else {
        (Vec::new(), 0.0)
    };
    let me = std::env::current_exe()?;
    let rw_loop = |size: usize| {
        let me = me.clone();
        let iters = if size <= 4096 { 500_000 } else { 100_000 };
        move || -> Result<f64> {
            let out = Command::new(&me)
                .args(["bench-peer", "loop", &size.to_string(), &iters.to_string()])
                .output()?;
            Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
        }
    };
    let rounds = args.rounds.clamp(3, 5);
    let mut loops = Vec::new();
    let mut tls_unrelated = None;
    let mut discovery = Vec::new();
    if want(Section::Unrelated) {
        eprintln!("bench: unrelated read/write loops");
        loops.push((4096usize, unrelated(&agent, &dir, rounds, &[], &rw_loop(4096))?));
        loops.push((65536, unrelated(&agent, &dir, rounds, &[], &rw_loop(65536))?));
        eprintln!("bench: unrelated TLS process");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        if !cert.exists() {
            crate::cmd::run(
                Command::new(venv_python())
                    .arg(peers_dir().join("make_cert.py"))
                    .arg(&cert)
                    .arg(&key),
            )?;
        }
        let tls_loop = || -> Result<f64> {
            let out = Command::new(venv_python())
                .arg(peers_dir().join("bench_tls_unrelated.py"))
                .arg("3000")
                .arg(&cert)
                .arg(&key)
                .output()?;
            if !out.status.success() {
                bail!("bench_tls_unrelated.py: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
        };
        let (first, steady) = unrelated_new_program(&agent, &dir, rounds, &tls_loop)?;
        tls_unrelated = Some(TlsUnrelated {
            first,
            steady,
            host_wide: unrelated(&agent, &dir, rounds, &["--tls-discovery"], &tls_loop)?,
        });
        eprintln!("bench: HTTPS discovery latency");
        discovery = discovery_latency(&agent, &dir, rounds)?;
    }

    let mut kernel_costs = Vec::new();
    if want(Section::Kernel) {
        kernel_costs.push(kernel::measure(
            &agent,
            &dir.join("kernel"),
            "auto",
            kernel::Scale::HOST,
        )?);
        let series: Vec<String> = if args.vm_kernel.is_empty() {
            crate::vm::MATRIX.iter().map(|k| k.name.to_string()).collect()
        } else {
            args.vm_kernel.iter().filter(|k| *k != "none").cloned().collect()
        };
        for s in &series {
            eprintln!("bench: kernel programs inside Linux {s} (QEMU)");
            kernel_costs.push(kernel::measure_in_vm(s, &agent, "auto")?);
        }
    }

    let mut report = render(&args, &lat, &steps, peak_rss, &loops, tls_unrelated);
    report.push_str(&render_discovery(&discovery));
    if !kernel_costs.is_empty() {
        report.push_str(&kernel::render(&kernel_costs));
    }
    fs::write(dir.join("report.md"), &report)?;
    println!("{report}");
    eprintln!("bench: report written to {}", dir.join("report.md").display());
    Ok(())
}

fn render(
    args: &BenchArgs,
    lat: &[Latency],
    steps: &[RateStep],
    peak_rss: f64,
    loops: &[(usize, (f64, f64, f64))],
    tls: Option<TlsUnrelated>,
) -> String {
    let mut r = String::new();
    r.push_str(&format!(
        "# mcptap benchmark\n\nMeasured by `cargo xtask bench` ({} calls × {} rounds per side, alternating; {} s per rate step), {}.\n\n",
        args.calls,
        args.rounds,
        args.rate_seconds,
        host_line()
    ));
    if !lat.is_empty() {
        r.push_str("## Round-trip latency of tools/call, without → with the agent (target: p50 ratio ≤ 1.05)\n\n");
        r.push_str("| server | p50 without | p50 with | p50 ratio | per-round p50 ratios (min / median / max) | p99 without | p99 with | p99 ratio |\n|---|---|---|---|---|---|---|---|\n");
        for l in lat {
            let (p50a, p50b) = (percentile(&l.off, 0.5), percentile(&l.on, 0.5));
            let (p99a, p99b) = (percentile(&l.off, 0.99), percentile(&l.on, 0.99));
            let rr = &l.round_ratios;
            r.push_str(&format!(
                "| {} | {:.0} µs | {:.0} µs | **{:.3}** | {:.3} / {:.3} / {:.3} | {:.0} µs | {:.0} µs | {:.3} |\n",
                l.name,
                p50a,
                p50b,
                p50b / p50a,
                rr.first().copied().unwrap_or(f64::NAN),
                percentile(rr, 0.5),
                rr.last().copied().unwrap_or(f64::NAN),
                p99a,
                p99b,
                p99b / p99a
            ));
        }
    }
    if !steps.is_empty() {
        r.push_str("\n## Capture rate (pipelined requests to a minimal stdio server)\n\n");
        r.push_str("| requests/s asked | achieved | messages/s (both ways) | events / requests | capture lost | events dropped (sinks) | agent CPU | agent RSS |\n|---|---|---|---|---|---|---|---|\n");
        let mut best = None;
        for s in steps {
            if s.seen == s.sent as f64 && s.lost == 0.0 && s.dropped == 0.0 {
                best = Some(s.achieved * 2.0);
            }
            r.push_str(&format!(
                "| {} | {:.0} | {:.0} | {}/{} | {} | {} | {:.0}% | {:.1} MiB |\n",
                s.target,
                s.achieved,
                s.achieved * 2.0,
                s.seen,
                s.sent,
                s.lost,
                s.dropped,
                s.cpu_pct,
                s.rss_mib
            ));
        }
        match best {
            Some(rate) => r.push_str(&format!(
                "\nHighest rate captured with zero loss: **{rate:.0} messages/s**. Agent peak RSS: {peak_rss:.1} MiB.\n"
            )),
            None => r.push_str("\nNo rate was captured without loss.\n"),
        }
    }
    if loops.is_empty() {
        return r;
    }
    r.push_str("\n## Cost to unrelated processes (target: ≤ 3 %)\n\n");
    r.push_str("CPU time (user + system) the process spends per iteration. `floor`: an empty program on the same syscall hook, i.e. what the kernel charges every syscall of every process once any syscall hook is attached; mcptap's own share is the rest.\n\n");
    r.push_str("| workload | without | floor (empty hook) | with mcptap | ratio | of which floor | of which mcptap |\n|---|---|---|---|---|---|---|\n");
    let mut row = |name: String, (off, floor, on): (f64, f64, f64)| {
        r.push_str(&format!(
            "| {name} | {off:.0} ns | {floor:.0} ns | {on:.0} ns | **{:.3}** | {:.3} | {:.3} |\n",
            on / off,
            floor / off,
            on / floor
        ));
    };
    for (size, figures) in loops {
        row(
            format!("read+write loop, {} KiB, /dev/zero → /dev/null", size / 1024),
            *figures,
        );
    }
    if let Some(tls) = tls {
        row(
            "HTTPS GET loop (client and server in one process, 1 KiB bodies, TLS through libssl), steady state: its program already judged not MCP (target ≤ 1.05)".into(),
            tls.steady,
        );
        row(
            "the same, its program's first run under a newly started agent (probed for its first requests, judged, probes removed)".into(),
            tls.first,
        );
        row(
            "the same, agent run with `--tls-discovery` (OpenSSL probed in every process)".into(),
            tls.host_wide,
        );
    }
    r
}

fn host_line() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("Linux {}, {cpus} CPUs", kernel.trim())
}
