//! Harness of the end-to-end tests: start the real agent (which loads the
//! real eBPF programs), drive real MCP peers, read back the agent's events
//! and metrics.
//!
//! Run through `cargo xtask test`, which installs the peers, builds the
//! agent, checks the host can run it, and passes their paths in `MCPTAP_*`
//! variables. Run alone, every test stops at once and says so.

use std::{
    fs,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// Paths the tests need, from `cargo xtask test`.
pub struct Env {
    pub agent: PathBuf,
    pub peers: PathBuf,
    pub python: PathBuf,
    pub artifacts: PathBuf,
    /// The Go peers built by `cargo xtask setup` (target/peers/go).
    pub go_peers: PathBuf,
    /// The Rust peers (rmcp) built by `cargo xtask setup`
    /// (target/peers/rust).
    pub rust_peers: PathBuf,
}

pub fn env() -> Env {
    let var = |name: &str| {
        std::env::var_os(name).map(PathBuf::from).unwrap_or_else(|| {
            panic!("{name} is not set: run the end-to-end tests with `cargo xtask test`, which sets up the peers and the agent")
        })
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("the end-to-end tests load eBPF programs and need root; run `sudo cargo xtask test`");
    }
    Env {
        agent: var("MCPTAP_BIN"),
        peers: var("MCPTAP_PEERS"),
        python: var("MCPTAP_PYTHON"),
        artifacts: var("MCPTAP_ARTIFACTS"),
        go_peers: var("MCPTAP_GO_PEERS"),
        rust_peers: var("MCPTAP_RUST_PEERS"),
    }
}

impl Env {
    /// The tests' own FastMCP stdio server, reporting itself as `name`.
    pub fn test_server(&self) -> Vec<String> {
        vec![
            self.python.display().to_string(),
            self.peers.join("stdio_server.py").display().to_string(),
        ]
    }

    /// The standard-library stdio MCP server (tests/peers/lean_server.py):
    /// the smoke suite's, which runs under software emulation too, where
    /// the SDKs' imports alone take 15-25 s.
    pub fn lean_server(&self) -> Vec<String> {
        vec![
            self.python.display().to_string(),
            self.peers.join("lean_server.py").display().to_string(),
        ]
    }

    /// `@modelcontextprotocol/server-everything` over stdio.
    pub fn server_everything(&self) -> Vec<String> {
        vec![
            "node".into(),
            self.peers
                .join("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
                .display()
                .to_string(),
            "stdio".into(),
        ]
    }

    /// Runs the scenario driver (tests/peers/drive.py) and returns its report.
    pub fn drive(&self, plan: &Value) -> Value {
        let out = self.drive_command(plan).output().expect("start drive.py");
        parse_report("drive.py", &out)
    }

    pub fn drive_command(&self, plan: &Value) -> Command {
        let mut c = Command::new(&self.python);
        c.arg(self.peers.join("drive.py"))
            .arg(plan.to_string())
            .current_dir(&self.peers);
        c
    }

    /// Runs a peer script (tests/peers/NAME) with arguments; returns its report.
    pub fn run_peer(&self, script: &str, args: &[&str]) -> Value {
        let out = Command::new(&self.python)
            .arg(self.peers.join(script))
            .args(args)
            .current_dir(&self.peers)
            .output()
            .expect("start peer script");
        parse_report(script, &out)
    }
}

pub fn parse_report(what: &str, out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{what} printed no JSON report ({e}): {stdout}"))
}

/// A peer server process (HTTP), killed on drop.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    pub fn pid(&self) -> u64 {
        u64::from(self.child.id())
    }

    /// Waits until the server accepts connections on its port.
    pub fn wait_listening(self, what: &str) -> Server {
        // Generous: under the kernel matrix's software emulation a Python
        // server takes ten times longer to start.
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut me = self;
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", me.port)).is_ok() {
                return me;
            }
            if let Some(status) = me.child.try_wait().ok().flatten() {
                panic!("{what} exited ({status}) before listening");
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not listen on {} within 120 s",
                me.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `ok` holds, checking every 100 ms.
pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A self-signed certificate for 127.0.0.1.
pub struct Cert {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// What clients trust: the certificate itself (self-signed), or the CA
    /// that signed it.
    pub ca: PathBuf,
}

impl Cert {
    /// The test servers' arguments that serve HTTPS with this certificate.
    pub fn server_args(&self) -> [&str; 4] {
        [
            "--tls-cert",
            self.cert.to_str().expect("UTF-8 path"),
            "--tls-key",
            self.key.to_str().expect("UTF-8 path"),
        ]
    }
}

impl Env {
    /// The tests' FastMCP server over HTTP (see tests/peers/http_server.py
    /// for `args`), on a free port, listening when this returns.
    pub fn http_server(&self, name: &str, args: &[&str]) -> Server {
        let port = free_port();
        let log = fs::File::create(self.artifacts.join(format!("{name}.log"))).expect("server log");
        let child = Command::new(&self.python)
            .arg(self.peers.join("http_server.py"))
            .args(["--port", &port.to_string(), "--name", name])
            .args(args)
            .current_dir(&self.peers)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start http_server.py");
        Server { child, port }.wait_listening(name)
    }

    /// A server started by `command` (a shell line run with `sh -c`), on
    /// `port`, listening when this returns.
    pub fn server_command(&self, name: &str, command: &str, port: u16) -> Server {
        let log = fs::File::create(self.artifacts.join(format!("{name}.log"))).expect("server log");
        let child = Command::new("sh")
            .args(["-c", command])
            .current_dir(&self.peers)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start server");
        Server { child, port }.wait_listening(name)
    }

    /// The Go MCP server (tests/peers/go/server) of build `build`
    /// (`server`, `server-stripped`, `server-pie`) over HTTPS.
    pub fn go_server(&self, build: &str, name: &str, cert: &Cert) -> Server {
        self.go_server_from(&self.go_peers.join(build), name, cert)
    }

    /// The Go MCP server over plain HTTP.
    pub fn go_server_plain(&self, name: &str) -> Server {
        let port = free_port();
        let binary = self.go_peers.join("server");
        self.server_command(
            name,
            &format!("exec {} -port {port} -name {name}", binary.display()),
            port,
        )
    }

    /// The Go MCP server from the executable `binary` (a copy, altered or
    /// not, of one of the builds) over HTTPS.
    pub fn go_server_from(&self, binary: &Path, name: &str, cert: &Cert) -> Server {
        let port = free_port();
        assert!(
            binary.exists(),
            "{} is not built: run `cargo xtask setup`",
            binary.display()
        );
        self.server_command(
            name,
            &format!(
                "exec {} -port {port} -cert {} -key {} -name {name}",
                binary.display(),
                cert.cert.display(),
                cert.key.display()
            ),
            port,
        )
    }

    /// Runs the Go MCP client (tests/peers/go/client) of build `build`
    /// against `url` and returns its report (client_pid, server_pid,
    /// outcomes, session).
    pub fn go_client(&self, build: &str, url: &str, cert: &Cert, name: &str, calls: u32) -> Value {
        let out = Command::new(self.go_peers.join(build))
            .args(["-url", url, "-name", name, "-calls", &calls.to_string(), "-ca"])
            .arg(&cert.ca)
            .output()
            .expect("start the Go client");
        parse_report("the Go client", &out)
    }

    /// The Rust SDK's MCP server (tests/peers/rust, `rmcp-server` or
    /// `rmcp-server-stripped`) over HTTPS with rustls.
    pub fn rust_server(&self, build: &str, name: &str, cert: &Cert) -> Server {
        let port = free_port();
        let binary = self.rust_peers.join(build);
        assert!(
            binary.exists(),
            "{} is not built: run `cargo xtask setup`",
            binary.display()
        );
        self.server_command(
            name,
            &format!(
                "exec {} {port} {} {} {name}",
                binary.display(),
                cert.cert.display(),
                cert.key.display()
            ),
            port,
        )
    }

    /// Runs the Rust SDK's MCP client (`rmcp-client`) against `url`:
    /// initialize, `whoami`, `calls` times `add`, one `refuse`; returns its
    /// report (client_pid, server_pid, outcomes).
    pub fn rust_client(&self, build: &str, url: &str, cert: &Cert, name: &str, calls: u32) -> Value {
        let out = Command::new(self.rust_peers.join(build))
            .arg(url)
            .arg(&cert.ca)
            .args([name, &calls.to_string()])
            .output()
            .expect("start the Rust client");
        parse_report("the Rust client", &out)
    }

    /// A certificate and key for 127.0.0.1 (tests/peers/make_cert.py).
    pub fn cert(&self, name: &str) -> Cert {
        self.make_cert(name, false)
    }

    /// A certificate for 127.0.0.1 signed by a CA of its own (`ca`): what
    /// verifiers that refuse a self-signed server certificate want (Bun's,
    /// and so Claude Code's).
    pub fn cert_with_ca(&self, name: &str) -> Cert {
        self.make_cert(name, true)
    }

    fn make_cert(&self, name: &str, with_ca: bool) -> Cert {
        let cert = self.artifacts.join(format!("{name}-cert.pem"));
        let key = self.artifacts.join(format!("{name}-key.pem"));
        let ca = if with_ca {
            self.artifacts.join(format!("{name}-ca.pem"))
        } else {
            cert.clone()
        };
        let mut command = Command::new(&self.python);
        command.arg(self.peers.join("make_cert.py")).arg(&cert).arg(&key);
        if with_ca {
            command.arg(&ca);
        }
        let out = command.output().expect("make_cert.py");
        assert!(
            out.status.success(),
            "make_cert.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Cert { cert, key, ca }
    }
}

/// The syscall hook family the tests run the agent with (`--hooks`), when
/// the kernel matrix sets one.
pub fn hooks_under_test() -> Option<String> {
    std::env::var("MCPTAP_E2E_HOOKS").ok().filter(|h| !h.is_empty())
}

/// The hook family the agent must report on this kernel, when the kernel
/// matrix knows it (`fexit` or `tracepoint`).
pub fn expected_hook_family() -> Option<String> {
    std::env::var("MCPTAP_E2E_EXPECT_HOOKS").ok().filter(|h| !h.is_empty())
}

/// Operation events one process observed from one side.
pub fn observed(events: &[Value], observer: &str, pid: u64) -> Vec<Value> {
    let side = if observer == "server" { "server" } else { "client" };
    events
        .iter()
        .filter(|e| {
            e["event.type"] == "mcp.operation"
                && e["observer"] == observer
                && e[side]["process"]["pid"].as_u64() == Some(pid)
        })
        .cloned()
        .collect()
}

/// How long HTTPS discovery probes a process before it concludes
/// (`PROBE_WINDOW` in agent/src/capture/tls/mod.rs).
pub const PROBE_WINDOW: Duration = Duration::from_secs(30);

/// A running agent, stopped (SIGINT) on `stop` or drop.
pub struct Agent {
    child: Option<Child>,
    pub dir: PathBuf,
    pub events_path: PathBuf,
    pub metrics_addr: SocketAddr,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Agent {
    /// Starts `mcptap run` with its events, log and metrics of its own, and
    /// waits until it says it is running.
    pub fn start(env: &Env, test: &str, extra: &[&str]) -> Agent {
        Agent::start_wrapped(env, test, &[], extra)
    }

    /// As `start`, with the agent run through `wrapper` (e.g. `setpriv` with
    /// a reduced capability set).
    pub fn start_wrapped(env: &Env, test: &str, wrapper: &[&str], extra: &[&str]) -> Agent {
        let dir = env.artifacts.join(test);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("artifacts dir");
        // The test's own events file when it names one.
        let events_path = extra
            .iter()
            .position(|a| *a == "--events")
            .and_then(|i| extra.get(i + 1))
            .map_or_else(|| dir.join("events.jsonl"), PathBuf::from);
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let log = fs::File::create(dir.join("agent.log")).expect("agent log");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&env.agent);
                c
            }
            None => Command::new(&env.agent),
        };
        command.arg("run");
        if std::env::var_os("MCPTAP_E2E_RECORD").is_some() {
            // Raw records of the test, for `mcptap replay` when it fails.
            command.arg("--record").arg(dir.join("capture.bin"));
        }
        // Each test's own store and API socket unless it names them: the
        // host's /var/lib/mcptap and /run/mcptap stay out of the tests.
        if !extra.contains(&"--state-dir") {
            command.arg("--state-dir").arg(dir.join("state"));
        }
        if !extra.contains(&"--api-socket") {
            command.arg("--api-socket").arg(dir.join("api.sock"));
        }
        // The kernel matrix runs every test under each hook family
        // (cargo xtask test, xtask/src/test.rs).
        if let Some(hooks) = hooks_under_test()
            && !extra.contains(&"--hooks")
        {
            command.arg("--hooks").arg(hooks);
        }
        if !extra.contains(&"--events") {
            command.arg("--events").arg(&events_path);
        }
        let child = command
            .arg("--metrics-addr")
            .arg(metrics_addr.to_string())
            .args(extra)
            .env("RUST_LOG", "mcptap=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the agent");
        let mut agent = Agent {
            child: Some(child),
            dir,
            events_path,
            metrics_addr,
        };
        agent.wait_running();
        agent
    }

    /// Whether the agent is still running (not exited, not killed).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// The agent's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The agent's own log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// Sends a signal to the running agent.
    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    /// Waits until a metric's value (summed over the series whose labels
    /// include `labels`) is `want`.
    pub fn wait_metric(&self, name: &str, labels: &[(&str, &str)], want: f64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let have = self.metrics().value(name, labels);
            if have == want {
                return;
            }
            assert!(Instant::now() < deadline, "{name}{labels:?} is {have}, not {want}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the agent's log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log_text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the agent never logged {needle:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_running(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if self.log_text().contains("mcptap is running") {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("the agent exited ({status}) before running:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the agent did not start within 120 s:\n{}", self.log_text());
    }

    /// The `/metrics` page, fetched over HTTP.
    pub fn metrics(&self) -> Metrics {
        let url = format!("http://{}/metrics", self.metrics_addr);
        let body = ureq::get(&url)
            .call()
            .expect("GET /metrics")
            .into_string()
            .expect("metrics text");
        Metrics(body)
    }

    /// Events written so far.
    pub fn events(&self) -> Vec<Value> {
        read_events(&self.events_path)
    }

    /// Waits until `pred` holds for the events written so far.
    pub fn wait_events(&self, what: &str, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events();
            if pred(&events) {
                return events;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; events so far:\n{}", summary(&events));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGINT, wait for the agent to flush and exit; returns all events.
    /// The local API's unix socket (unless the test named its own).
    pub fn api_socket(&self) -> PathBuf {
        self.dir.join("api.sock")
    }

    pub fn stop(mut self) -> Vec<Value> {
        self.shutdown(libc::SIGINT);
        read_events(&self.events_path)
    }

    /// Sends `signal` once; true when the agent then exited cleanly within
    /// `within` (a dirty exit panics; one that does not come is killed and
    /// reported as false).
    pub fn stop_within(&mut self, signal: i32, within: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait agent") {
                assert!(status.success(), "the agent exited with {status}:\n{}", self.log_text());
                return true;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal`, waits for a clean exit (panics on a dirty one).
    pub fn shutdown(&mut self, signal: i32) {
        let Some(mut child) = self.child.take() else { return };
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait agent") {
                assert!(status.success(), "the agent exited with {status}:\n{}", self.log_text());
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the agent did not stop within 30 s of signal {signal}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let _ = child.wait();
        }
    }
}

/// A DNS server on `127.0.0.77:53` that answers every A question with
/// `address` (what a resolver would), until `stop` is set.
pub fn dns_server(
    address: [u8; 4],
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    let socket = std::net::UdpSocket::bind("127.0.0.77:53").expect("a DNS server on 127.0.0.77:53");
    socket
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    std::thread::spawn(move || {
        let mut answered = 0;
        let mut buf = [0u8; 512];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            // The query's header and question, flagged as a response with
            // one answer: a pointer to the question's name, A, IN, TTL 60.
            let mut answer = buf[..n].to_vec();
            answer[2..4].copy_from_slice(&[0x81, 0x80]);
            answer[6..8].copy_from_slice(&[0, 1]);
            answer.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            answer.extend_from_slice(&address);
            socket.send_to(&answer, from).unwrap();
            answered += 1;
        }
        answered
    })
}

/// Accepts connections on `listener` and, for each, reads what the peer
/// sends first, then answers `reply` (may be empty: hang up).
pub fn serve(listener: std::net::TcpListener, reply: &'static [u8]) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            use std::io::{Read, Write};
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(reply);
        }
    });
}

/// The same JSON document, numbers compared by value: a document that went
/// through JavaScript (the dashboard) writes `0.0` as `0`, which
/// `serde_json` keeps apart from the agent's `0.0`.
pub fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// The events written so far: whole lines only (the agent may be writing
/// the last one while it is read: without its newline it is not an event
/// yet, and is read at the next look).
pub fn read_events(path: &Path) -> Vec<Value> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("event is not JSON ({e}): {l}")))
        .collect()
}

/// One line per event, for failure messages.
pub fn summary(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {} {} tool={} status={} server_pid={} client={}",
                e["event.type"].as_str().unwrap_or("?"),
                e["observer"].as_str().unwrap_or("?"),
                e["mcp.method.name"].as_str().unwrap_or("-"),
                e["gen_ai.tool.name"].as_str().unwrap_or("-"),
                e["status"].as_str().unwrap_or("-"),
                e["server"]["process"]["pid"],
                e["client"]["name"].as_str().unwrap_or("-"),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Operation events of one server process.
pub fn operations_of(events: &[Value], server_pid: u64) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["event.type"] == "mcp.operation" && e["server"]["process"]["pid"].as_u64() == Some(server_pid))
        .cloned()
        .collect()
}

/// Operation events whose method (and tool, when given) and status match.
pub fn count(ops: &[Value], method: &str, tool: Option<&str>, status: &str) -> usize {
    ops.iter()
        .filter(|e| {
            e["mcp.method.name"] == method && tool.is_none_or(|t| e["gen_ai.tool.name"] == t) && e["status"] == status
        })
        .count()
}

/// Seconds since the epoch of an event's `time` (RFC 3339, UTC:
/// `2026-12-01T17:04:16.910553Z`).
pub fn unix_seconds(time: &str) -> Option<f64> {
    let (date, clock) = time.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut c = clock.split(':');
    let (h, min) = (c.next()?.parse::<i64>().ok()?, c.next()?.parse::<i64>().ok()?);
    let sec: f64 = c.next()?.parse().ok()?;
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some((days * 86400 + h * 3600 + min * 60) as f64 + sec)
}

/// Now, in the same seconds as [`unix_seconds`].
pub fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Asserts that `ops` are exactly `expected` (method, tool, status, how
/// many): nothing missing, nothing more.
pub fn assert_exactly(ops: &[Value], expected: &[(&str, Option<&str>, &str, usize)], what: &str) {
    for &(method, tool, status, n) in expected {
        assert_eq!(
            count(ops, method, tool, status),
            n,
            "{what}: {method} {tool:?} {status}\n{}",
            summary(ops)
        );
    }
    let total: usize = expected.iter().map(|e| e.3).sum();
    assert_eq!(ops.len(), total, "{what}: nothing more\n{}", summary(ops));
}

/// A scraped `/metrics` page.
pub struct Metrics(pub String);

impl Metrics {
    /// Sum of the samples of `name` whose labels include all of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (metric, label_text) = match series.split_once('{') {
                    Some((m, rest)) => (m, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                if metric != name {
                    return None;
                }
                let all = labels.iter().all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
                all.then(|| value.parse::<f64>().ok()).flatten()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::same_json;

    #[test]
    fn same_json_compares_numbers_by_value_and_nothing_else_loosely() {
        assert!(same_json(&json!({"a": [0.0, 1]}), &json!({"a": [0, 1.0]})));
        assert!(!same_json(&json!({"a": 0.5}), &json!({"a": 0})));
        assert!(!same_json(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!same_json(&json!(["x"]), &json!(["y"])));
        assert!(!same_json(&json!("0"), &json!(0)));
    }
}
