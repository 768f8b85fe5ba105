//! `cargo xtask bench`: the agent's cost, measured side by side in one run
//! and reported as ratios (docs/benchmarks.md explains each figure).
//!
//! 1. Round-trip latency of real stdio MCP servers (FastMCP, and Node's
//!    server-everything) without and with the agent, alternating blocks of
//!    calls so that drift hits both sides alike: p50/p99 and their ratio.
//! 2. The highest message rate captured with zero loss: a synthetic stdio
//!    server answers pipelined tools/call requests sent at increasing
//!    rates; a rate passes when every request became an event and nothing
//!    was lost or dropped. Agent CPU and RSS at each rate.
//! 3. The cost to an unrelated process: a read/write loop on /dev/zero and
//!    /dev/null, without and with the agent.

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{
    build_agent, repo_root,
    setup::{self, Needs, peers_dir, venv_python},
};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Calls per latency block.
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    /// Blocks per side (without / with the agent), alternating.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per rate step.
    #[arg(long, default_value_t = 3)]
    rate_seconds: u64,
}

/// Hidden helper processes the benchmark runs (`xtask bench-peer ...`).
#[derive(clap::Subcommand)]
pub enum Peer {
    /// A minimal stdio MCP server: one response line per request line.
    Server,
    /// An unrelated process: `iters` read+write pairs of `size` bytes.
    Loop { size: usize, iters: usize },
}

pub fn peer(p: Peer) -> Result<()> {
    match p {
        Peer::Server => serve_stdio(),
        Peer::Loop { size, iters } => {
            let mut zero = fs::File::open("/dev/zero")?;
            let mut null = fs::OpenOptions::new().write(true).open("/dev/null")?;
            let mut buf = vec![0u8; size];
            let start = Instant::now();
            for _ in 0..iters {
                zero.read_exact(&mut buf)?;
                null.write_all(&buf)?;
            }
            println!("{}", start.elapsed().as_nanos() as f64 / iters as f64);
            Ok(())
        }
    }
}

fn serve_stdio() -> Result<()> {
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

struct Agent {
    child: Child,
    metrics: String,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Agent {
    fn start(bin: &Path, dir: &Path) -> Result<Agent> {
        let port = free_port()?;
        let log = dir.join("agent.log");
        let child = Command::new(bin)
            .args(["run", "--metrics-addr", &format!("127.0.0.1:{port}"), "--events"])
            .arg(dir.join("events.jsonl"))
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
        Ok(Agent {
            child,
            metrics: format!("http://127.0.0.1:{port}/metrics"),
        })
    }

    /// Sum of a metric's samples whose labels include `labels`.
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        let text = ureq::get(&self.metrics).call()?.into_string()?;
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

/// One block of round trips from bench_client.py; microseconds.
fn latency_block(calls: usize, (tool, args): (&str, &str), server: &[String]) -> Result<Vec<f64>> {
    let out = Command::new(venv_python())
        .arg(peers_dir().join("bench_client.py"))
        .arg(calls.to_string())
        .args([tool, args])
        .args(server)
        .current_dir(peers_dir())
        .output()?;
    if !out.status.success() {
        bail!("bench_client.py failed: {}", String::from_utf8_lossy(&out.stderr));
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
}

fn latency(
    agent_bin: &Path,
    dir: &Path,
    args: &BenchArgs,
    name: &'static str,
    call: (&str, &str),
    server: &[String],
) -> Result<Latency> {
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        eprintln!("bench: {name}: round {}/{}", round + 1, args.rounds);
        off.extend(latency_block(args.calls, call, server)?);
        let agent = Agent::start(agent_bin, dir)?;
        let before = agent.metric("mcp_server_operations_total", &[("gen_ai_tool_name", call.0)])?;
        on.extend(latency_block(args.calls, call, server)?);
        // The calls measured with the agent were seen by it.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = agent.metric("mcp_server_operations_total", &[("gen_ai_tool_name", call.0)])? - before;
            if seen >= (args.calls + 49) as f64 {
                break;
            }
            if Instant::now() > deadline {
                bail!("{name}: the agent saw {seen} of {} calls", args.calls + 49);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        agent.stop()?;
    }
    off.sort_by(f64::total_cmp);
    on.sort_by(f64::total_cmp);
    Ok(Latency { name, off, on })
}

struct RateStep {
    target: u64,
    achieved: f64,
    seen: f64,
    sent: u64,
    lost: f64,
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

fn rate_steps(agent_bin: &Path, dir: &Path, args: &BenchArgs) -> Result<Vec<RateStep>> {
    let agent = Agent::start(agent_bin, dir)?;
    let mut steps = Vec::new();
    for target in [1_000u64, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000] {
        eprintln!("bench: zero-loss rate: {target} requests/s");
        let lost_before = agent.metric("mcptap_capture_lost_total", &[])?
            + agent.metric("mcptap_events_dropped_total", &[])?
            + agent.metric("mcptap_capture_gaps_total", &[])?;
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
        let lost = agent.metric("mcptap_capture_lost_total", &[])?
            + agent.metric("mcptap_events_dropped_total", &[])?
            + agent.metric("mcptap_capture_gaps_total", &[])?
            - lost_before;
        steps.push(RateStep {
            target,
            achieved: sent as f64 / took,
            seen,
            sent,
            lost,
            cpu_pct: 100.0 * (cpu_after - cpu_before) / t0.elapsed().as_secs_f64(),
            rss_mib: rss,
        });
        let ok = seen == sent as f64 && lost == 0.0;
        if !ok {
            break;
        }
    }
    let (_, _, peak) = agent.usage();
    eprintln!("bench: agent peak RSS {peak:.1} MiB");
    agent.stop()?;
    Ok(steps)
}

/// ns per read+write pair of an unrelated process, without and with agent.
fn unrelated_loop(agent_bin: &Path, dir: &Path, size: usize, rounds: usize) -> Result<(f64, f64)> {
    let iters = if size <= 4096 { 400_000 } else { 60_000 };
    let run = || -> Result<f64> {
        let out = Command::new(std::env::current_exe()?)
            .args(["bench-peer", "loop", &size.to_string(), &iters.to_string()])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        off.push(run()?);
        let agent = Agent::start(agent_bin, dir)?;
        on.push(run()?);
        agent.stop()?;
    }
    Ok((median(off), median(on)))
}

pub fn bench(args: BenchArgs) -> Result<()> {
    setup::setup(Needs {
        toolchain: true,
        peers: true,
    })?;
    let agent = build_agent()?;
    let dir = repo_root().join("target/bench");
    fs::create_dir_all(&dir)?;
    let python_server = vec![
        venv_python().display().to_string(),
        peers_dir().join("stdio_server.py").display().to_string(),
    ];
    let node_server = vec![
        "node".to_string(),
        peers_dir()
            .join("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
            .display()
            .to_string(),
        "stdio".to_string(),
    ];
    let lat = vec![
        latency(
            &agent,
            &dir,
            &args,
            "FastMCP (Python) stdio server",
            ("add", r#"{"a":1,"b":2}"#),
            &python_server,
        )?,
        latency(
            &agent,
            &dir,
            &args,
            "server-everything (Node) stdio server",
            ("get-sum", r#"{"a":1,"b":2}"#),
            &node_server,
        )?,
    ];
    let steps = rate_steps(&agent, &dir, &args)?;
    let loops = [
        (4096, unrelated_loop(&agent, &dir, 4096, args.rounds.max(3))?),
        (65536, unrelated_loop(&agent, &dir, 65536, args.rounds.max(3))?),
    ];

    let mut report = String::new();
    report.push_str(&format!(
        "# mcptap benchmark\n\nMeasured by `cargo xtask bench` ({} calls × {} blocks per side, alternating; {} s per rate step), {}.\n\n",
        args.calls,
        args.rounds,
        args.rate_seconds,
        host_line()
    ));
    report.push_str("## Round-trip latency of stdio tools/call, without → with the agent\n\n");
    report.push_str("| server | p50 without | p50 with | p50 ratio | p99 without | p99 with | p99 ratio |\n|---|---|---|---|---|---|---|\n");
    for l in &lat {
        let (p50a, p50b) = (percentile(&l.off, 0.5), percentile(&l.on, 0.5));
        let (p99a, p99b) = (percentile(&l.off, 0.99), percentile(&l.on, 0.99));
        report.push_str(&format!(
            "| {} | {:.0} µs | {:.0} µs | **{:.3}** | {:.0} µs | {:.0} µs | {:.3} |\n",
            l.name,
            p50a,
            p50b,
            p50b / p50a,
            p99a,
            p99b,
            p99b / p99a
        ));
    }
    report.push_str("\n## Capture rate (pipelined requests to a minimal stdio server)\n\n");
    report.push_str("| requests/s asked | achieved | messages/s (both ways) | events / requests | lost or dropped | agent CPU | agent RSS |\n|---|---|---|---|---|---|---|\n");
    let mut best = None;
    for s in &steps {
        let ok = s.seen == s.sent as f64 && s.lost == 0.0;
        if ok {
            best = Some(s.achieved * 2.0);
        }
        report.push_str(&format!(
            "| {} | {:.0} | {:.0} | {}/{} | {} | {:.0}% | {:.1} MiB |\n",
            s.target,
            s.achieved,
            s.achieved * 2.0,
            s.seen,
            s.sent,
            s.lost,
            s.cpu_pct,
            s.rss_mib
        ));
    }
    match best {
        Some(rate) => report.push_str(&format!(
            "\nHighest rate captured with zero loss: **{rate:.0} messages/s**.\n"
        )),
        None => report.push_str("\nNo rate was captured without loss.\n"),
    }
    report.push_str("\n## Cost to an unrelated process (read+write loop on /dev/zero → /dev/null)\n\n");
    report.push_str("| buffer | without | with | ratio |\n|---|---|---|---|\n");
    for (size, (off, on)) in &loops {
        report.push_str(&format!(
            "| {} KiB | {:.0} ns | {:.0} ns | **{:.3}** |\n",
            size / 1024,
            off,
            on,
            on / off
        ));
    }
    fs::write(dir.join("report.md"), &report)?;
    println!("{report}");
    eprintln!("bench: report written to {}", dir.join("report.md").display());
    Ok(())
}

fn host_line() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("Linux {}, {cpus} CPUs", kernel.trim())
}
