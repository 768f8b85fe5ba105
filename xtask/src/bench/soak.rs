//! `cargo xtask bench --soak`: the agent under steady mixed traffic for a
//! long time (10 minutes by default), with churn: does it lose anything,
//! does its memory stay flat, does any of its tables grow?
//!
//! Load, side by side:
//! - two stdio servers (the bench's minimal server) fed pipelined
//!   `tools/call` requests at a steady rate;
//! - an HTTP MCP server (minimal, keep-alive) called at a steady rate by a
//!   client that resets its connection every so often, once in the middle
//!   of a request;
//! - churn: every few seconds a new stdio server starts, answers a few
//!   calls, and is killed in the middle of one.
//!
//! Every 30 s: the agent's RSS and CPU, its loss counters, and the size of
//! every table it keeps (`mcptap_table_entries`). At the end: what was sent
//! against what became events, RSS after warm-up against RSS at the end,
//! and each table's size then and at the end.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::Agent;

#[derive(Debug, Clone, Copy)]
pub struct SoakArgs {
    pub seconds: u64,
    /// Requests per second of each of the two stdio streams.
    pub stdio_rate: u64,
    /// Requests per second of the HTTP client.
    pub http_rate: u64,
}

/// One sample of the agent.
struct Sample {
    at_s: u64,
    rss_mib: f64,
    cpu_pct: f64,
    lost: f64,
    gaps: f64,
    events: f64,
    tables: Vec<(String, f64)>,
}

/// A steady stream of pipelined requests to one bench stdio server.
fn stdio_stream(rate: u64, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>, answered: Arc<AtomicU64>) -> Result<()> {
    let me = std::env::current_exe()?;
    let mut server = Command::new(me)
        .args(["bench-peer", "server"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = server.stdin.take().context("stdin")?;
    let stdout = server.stdout.take().context("stdout")?;
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if line.is_err() {
                break;
            }
            answered.fetch_add(1, Ordering::Relaxed);
        }
    });
    stdin.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},\"clientInfo\":{\"name\":\"soak\",\"version\":\"1\"}}}\n")?;
    let start = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while n < due {
            n += 1;
            let line = format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{n},\"method\":\"tools/call\",\"params\":{{\"name\":\"bench\",\"arguments\":{{\"i\":{n}}}}}}}\n"
            );
            stdin.write_all(line.as_bytes())?;
            sent.fetch_add(1, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(stdin);
    let _ = reader.join();
    server.wait()?;
    Ok(())
}

/// A minimal HTTP MCP server: JSON-RPC in, JSON-RPC out, keep-alive.
/// `xtask bench-peer http-server`: the soak's HTTP server, a process of its
/// own (in the soak's process it would be its own client, and the agent
/// sees one process at both ends of every connection).
pub fn serve_http_process() -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    http_server(listener);
    Ok(())
}

fn http_server(listener: TcpListener) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        std::thread::spawn(move || {
            let _ = serve_http(conn);
        });
    }
}

fn serve_http(conn: TcpStream) -> Result<()> {
    // Read and write through the one descriptor: mcptap follows a socket by
    // its descriptor, and a copy (`try_clone` is a dup) is not followed.
    let mut reader = BufReader::new(&conn);
    let mut out = &conn;
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(()); // the client went
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse()?;
            }
        }
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body)?;
        let msg: serde_json::Value = serde_json::from_slice(&body)?;
        let result = if msg["method"] == "initialize" {
            serde_json::json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "soak-http", "version": "1"}})
        } else {
            serde_json::json!({"content": [{"type": "text", "text": "ok"}], "isError": false})
        };
        let reply = serde_json::json!({"jsonrpc": "2.0", "id": msg["id"], "result": result}).to_string();
        // One write per response: written piecemeal, Nagle's algorithm and
        // the client's delayed ACK hold every answer for 40 ms.
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        );
        out.write_all(response.as_bytes())?;
    }
}

fn post(id: u64, method: &str, params: &str) -> String {
    let body = format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"{method}\",\"params\":{params}}}");
    format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads one response (head and Content-Length body).
fn read_response(reader: &mut BufReader<&TcpStream>) -> Result<()> {
    let mut len = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("the server closed");
        }
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse()?;
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    Ok(())
}

/// Calls the HTTP server at `rate` requests per second; every 500 calls
/// the connection is dropped and a new one made, every other time in the
/// middle of a request (half of it sent). A connection that fails (the
/// server side of a reset can race the next connect) is counted and
/// replaced: the load goes on for the whole soak, and only ten seconds
/// without a single answered call ends it with an error.
fn http_client(
    port: u16,
    rate: u64,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> Result<()> {
    let start = Instant::now();
    let mut n = 0u64;
    let mut resets = 0u64;
    let mut last_ok = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match http_connection(port, rate, start, &mut n, &mut resets, &stop, &sent) {
            Ok(()) => last_ok = Instant::now(),
            Err(e) => {
                failed.fetch_add(1, Ordering::Relaxed);
                if last_ok.elapsed() > Duration::from_secs(10) {
                    return Err(e.context("the soak's HTTP client got no answer for 10 s"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    Ok(())
}

/// One keep-alive connection of [`http_client`], until its 500th call.
fn http_connection(
    port: u16,
    rate: u64,
    start: Instant,
    n: &mut u64,
    resets: &mut u64,
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> Result<()> {
    let conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_nodelay(true)?;
    // One descriptor for both ways (see `serve_http`).
    let mut reader = BufReader::new(&conn);
    let mut w = &conn;
    w.write_all(post(0, "initialize", r#"{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"soak-http-client","version":"1"}}"#).as_bytes())?;
    read_response(&mut reader)?;
    let mut on_this = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        if *n >= due {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        *n += 1;
        on_this += 1;
        let req = post(*n, "tools/call", r#"{"name":"bench_http","arguments":{}}"#);
        if on_this == 500 {
            *resets += 1;
            if resets.is_multiple_of(2) {
                // Half a request, then the connection goes.
                w.write_all(&req.as_bytes()[..req.len() / 2])?;
            }
            return Ok(());
        }
        w.write_all(req.as_bytes())?;
        read_response(&mut reader)?;
        sent.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// A stdio server that answers a few calls and is killed during the next.
fn churn_once(python: &Path, server: &Path) -> Result<()> {
    let mut child = Command::new(python)
        .arg(server)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    stdin.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},\"clientInfo\":{\"name\":\"soak-churn\",\"version\":\"1\"}}}\n")?;
    stdout.read_line(&mut line)?;
    for id in 2..7 {
        writeln!(
            stdin,
            "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\"params\":{{\"name\":\"echo\",\"arguments\":{{}}}}}}"
        )?;
        line.clear();
        stdout.read_line(&mut line)?;
    }
    // A request it never answers: killed first.
    writeln!(
        stdin,
        "{{\"jsonrpc\":\"2.0\",\"id\":99,\"method\":\"tools/call\",\"params\":{{\"name\":\"echo\",\"arguments\":{{}}}}}}"
    )?;
    child.kill()?;
    child.wait()?;
    Ok(())
}

fn sample(agent: &Agent, at_s: u64, last_cpu: &mut (f64, Instant)) -> Result<Sample> {
    let (cpu_s, rss, _) = agent.usage();
    let cpu_pct = 100.0 * (cpu_s - last_cpu.0) / last_cpu.1.elapsed().as_secs_f64();
    *last_cpu = (cpu_s, Instant::now());
    let text = agent.metrics_text()?;
    let mut tables = Vec::new();
    for l in text.lines().filter(|l| l.starts_with("mcptap_table_entries{")) {
        let Some((series, v)) = l.rsplit_once(' ') else {
            continue;
        };
        let name = series
            .split("table=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?");
        tables.push((name.to_string(), v.parse().unwrap_or(0.0)));
    }
    tables.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Sample {
        at_s,
        rss_mib: rss,
        cpu_pct,
        lost: agent.metric("mcptap_capture_lost_total", &[])?,
        gaps: agent.metric("mcptap_capture_gaps_total", &[])?,
        events: agent.metric("mcp_server_operations_total", &[])?,
        tables,
    })
}

/// Runs the soak and returns its report (markdown).
pub fn soak(agent_bin: &Path, dir: &Path, args: SoakArgs) -> Result<String> {
    let agent = Agent::start(agent_bin, dir)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (stdio_sent, stdio_answered) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let http_sent = Arc::new(AtomicU64::new(0));
    let http_failed = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..2 {
        let (stop, sent, answered) = (stop.clone(), stdio_sent.clone(), stdio_answered.clone());
        let rate = args.stdio_rate;
        load.push(std::thread::spawn(move || stdio_stream(rate, stop, sent, answered)));
    }
    let mut http_server = Command::new(std::env::current_exe()?)
        .args(["bench-peer", "http-server"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let port: u16 = {
        let mut line = String::new();
        BufReader::new(http_server.stdout.take().context("http server stdout")?).read_line(&mut line)?;
        line.trim().parse().context("the HTTP server's port")?
    };
    {
        let (stop, sent, failed) = (stop.clone(), http_sent.clone(), http_failed.clone());
        let rate = args.http_rate;
        load.push(std::thread::spawn(move || http_client(port, rate, stop, sent, failed)));
    }
    let churned = Arc::new(AtomicU64::new(0));
    {
        let (stop, churned) = (stop.clone(), churned.clone());
        let python = crate::setup::venv_python();
        let server = crate::setup::peers_dir().join("tiny_server.py");
        load.push(std::thread::spawn(move || -> Result<()> {
            while !stop.load(Ordering::Relaxed) {
                churn_once(&python, &server)?;
                churned.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs(2));
            }
            Ok(())
        }));
    }

    let start = Instant::now();
    let mut samples = Vec::new();
    let mut last_cpu = (agent.usage().0, Instant::now());
    while start.elapsed().as_secs() < args.seconds {
        std::thread::sleep(Duration::from_secs(30).min(Duration::from_secs(args.seconds)));
        let s = sample(&agent, start.elapsed().as_secs(), &mut last_cpu)?;
        eprintln!(
            "soak: {:>4} s  rss {:.0} MiB  cpu {:.0}%  events {:.0}  lost {}  gaps {}",
            s.at_s, s.rss_mib, s.cpu_pct, s.events, s.lost, s.gaps
        );
        samples.push(s);
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
    }
    let sent = stdio_sent.load(Ordering::Relaxed);
    let answered = stdio_answered.load(Ordering::Relaxed);
    let http = http_sent.load(Ordering::Relaxed);
    // Let the agent catch up, then count.
    let want = (sent + http) as f64;
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = |agent: &Agent| -> Result<(f64, f64)> {
        Ok((
            agent.metric("mcp_server_operations_total", &[("gen_ai_tool_name", "bench")])?,
            agent.metric("mcp_server_operations_total", &[("gen_ai_tool_name", "bench_http")])?,
        ))
    };
    while seen(&agent).map(|(s, h)| s + h)? < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(6)); // one more table publication
    let end = sample(&agent, start.elapsed().as_secs(), &mut last_cpu)?;
    let (seen_stdio, seen_http) = seen(&agent)?;
    agent.stop()?;
    let _ = http_server.kill();
    let _ = http_server.wait();

    let secs = args.seconds as f64;
    let mut r = format!(
        "\n## Soak ({} s of mixed traffic with churn)\n\n`cargo xtask bench --soak`: two stdio servers at {} requests/s each (pipelined), an HTTP server at {} requests/s (keep-alive, the connection reset every 500 calls, every other time in the middle of a request), and a stdio server started every 2 s that answers 5 calls and is killed during the 6th. About {:.0} MCP messages/s in all.\n\n",
        args.seconds,
        args.stdio_rate,
        args.http_rate,
        (2.0 * (sent + http) as f64 + churned.load(Ordering::Relaxed) as f64 * 14.0) / secs
    );
    r.push_str(&format!(
        "| requests sent (stdio + HTTP) | answered (stdio) | became events (stdio + HTTP) | capture lost | gaps | churned servers | HTTP connections that failed (replaced) |\n|---|---|---|---|---|---|---|\n| {} + {} | {answered} | {seen_stdio:.0} + {seen_http:.0} | {} | {} | {} | {} |\n\n",
        sent,
        http,
        end.lost,
        end.gaps,
        churned.load(Ordering::Relaxed),
        http_failed.load(Ordering::Relaxed)
    ));
    r.push_str("| time | agent RSS | agent CPU | events | lost |\n|---|---|---|---|---|\n");
    for s in samples.iter().chain(std::iter::once(&end)) {
        r.push_str(&format!(
            "| {} s | {:.1} MiB | {:.0}% | {:.0} | {} |\n",
            s.at_s, s.rss_mib, s.cpu_pct, s.events, s.lost
        ));
    }
    // Warm-up: the first minute.
    let warm = samples.iter().find(|s| s.at_s >= 60).or(samples.first());
    if let Some(w) = warm {
        r.push_str(&format!(
            "\nRSS after warm-up ({} s): {:.1} MiB; at the end: {:.1} MiB ({:+.1} MiB).\n\n",
            w.at_s,
            w.rss_mib,
            end.rss_mib,
            end.rss_mib - w.rss_mib
        ));
        r.push_str("| table | after warm-up | largest | at the end |\n|---|---|---|---|\n");
        for (name, last) in &end.tables {
            let at_warm = w.tables.iter().find(|(n, _)| n == name).map_or(0.0, |(_, v)| *v);
            let max = samples
                .iter()
                .filter_map(|s| s.tables.iter().find(|(n, _)| n == name).map(|(_, v)| *v))
                .fold(*last, f64::max);
            r.push_str(&format!("| {name} | {at_warm:.0} | {max:.0} | {last:.0} |\n"));
        }
    }
    Ok(r)
}
