//! The DaemonSet, run for real: the image (`cargo xtask image`,
//! deploy/container/Containerfile) run under podman the way
//! deploy/kubernetes/mcptap.yaml runs the pod — its arguments, environment,
//! securityContext, host PID and network, host paths, config map, memory
//! volumes, probes and grace period, all read from the manifest itself (a
//! change there changes this test). No cluster: podman is the runtime.
//!
//! What must hold: an MCP server on the host is captured exactly (stdio,
//! and HTTPS through the host's libssl); an HTTPS MCP server in another
//! container, with its own root filesystem and its own libssl, is captured
//! on both sides with its container in the event; the probes answer;
//! SIGTERM stops the agent within the grace period with nothing lost; the
//! state directory survives a restart of the container.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use mcptap_tests::{Env, count, env, free_port, observed, operations_of, read_events, summary, wait_until};
use serde_json::{Value, json};
use serde_yaml::Value as Yaml;

const WAIT: Duration = Duration::from_secs(120);

/// The image under test and the peer image (Debian with python3), from
/// `cargo xtask test` (which builds both).
fn images() -> (String, String) {
    let var = |n: &str| {
        std::env::var(n).unwrap_or_else(|_| {
            panic!("{n} is not set: `cargo xtask test` builds the images (podman, debootstrap) and sets it")
        })
    };
    (var("MCPTAP_IMAGE"), var("MCPTAP_PEER_IMAGE"))
}

/// podman, with the runtime and limits this machine needs (see
/// xtask/src/image.rs: `MCPTAP_PODMAN_ARGS`, set by `cargo xtask test`).
fn podman(verb: &str) -> Command {
    let mut c = Command::new("podman");
    let args = std::env::var("MCPTAP_PODMAN_ARGS").unwrap_or_default();
    let (per_verb, global): (Vec<&str>, Vec<&str>) = args.split_whitespace().partition(|a| a.starts_with("--ulimit"));
    c.args(global).arg(verb);
    if matches!(verb, "run" | "create") {
        for u in per_verb {
            c.arg(u);
        }
    }
    c
}

/// The DaemonSet's pod as podman arguments.
struct Pod {
    args: Vec<String>,
    container_args: Vec<String>,
    grace: Duration,
    /// Probes: (path, port).
    liveness: (String, u16),
    readiness: (String, u16),
    /// Where the state volume is on this host (the test's own folder).
    state: PathBuf,
}

/// The manifest's objects.
fn objects() -> Vec<Yaml> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/mcptap.yaml"))
        .expect("deploy/kubernetes/mcptap.yaml");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::with::singleton_map_recursive::deserialize::<Yaml, _>(d).expect("YAML"))
        .collect()
}

fn manifest() -> Yaml {
    objects()
        .into_iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet in the manifest")
}

fn config_map(name: &str) -> BTreeMap<String, String> {
    objects()
        .into_iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == name)
        .and_then(|d| serde_yaml::from_value(d["data"].clone()).ok())
        .unwrap_or_default()
}

fn text(v: &Yaml) -> String {
    match v {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// Translates the pod spec; host paths the test must not touch (the
/// state directory: `DirectoryOrCreate`) go to `work`.
fn pod(work: &Path, node_name: &str) -> Pod {
    let ds = manifest();
    let spec = &ds["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    let mut args = vec!["--name".to_string(), "mcptap-daemonset".to_string()];
    if spec["hostPID"] == Yaml::Bool(true) {
        args.push("--pid=host".into());
    }
    if spec["hostNetwork"] == Yaml::Bool(true) {
        args.push("--network=host".into());
    }
    let sc = &c["securityContext"];
    assert_ne!(sc["privileged"], Yaml::Bool(true), "the agent runs unprivileged");
    if let Some(uid) = sc["runAsUser"].as_u64() {
        args.push(format!("--user={uid}"));
    }
    if sc["allowPrivilegeEscalation"] == Yaml::Bool(false) {
        args.push("--security-opt=no-new-privileges".into());
    }
    if sc["readOnlyRootFilesystem"] == Yaml::Bool(true) {
        args.push("--read-only".into());
    }
    for cap in sc["capabilities"]["drop"].as_sequence().into_iter().flatten() {
        args.push(format!("--cap-drop={}", text(cap)));
    }
    for cap in sc["capabilities"]["add"].as_sequence().into_iter().flatten() {
        args.push(format!("--cap-add={}", text(cap)));
    }
    // seccompProfile RuntimeDefault: podman's default profile, as is.
    for e in c["env"].as_sequence().into_iter().flatten() {
        let value = if e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName" {
            node_name.to_string()
        } else {
            text(&e["value"])
        };
        args.push(format!("--env={}={value}", text(&e["name"])));
    }
    let volumes: BTreeMap<String, &Yaml> = spec["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|v| (text(&v["name"]), v))
        .collect();
    let mut state = PathBuf::new();
    for m in c["volumeMounts"].as_sequence().into_iter().flatten() {
        let (name, path) = (text(&m["name"]), text(&m["mountPath"]));
        let ro = if m["readOnly"] == Yaml::Bool(true) { ":ro" } else { "" };
        let v = volumes.get(&name).unwrap_or_else(|| panic!("no volume {name}"));
        if let Yaml::Mapping(_) = v["hostPath"] {
            let host = text(&v["hostPath"]["path"]);
            let host = if v["hostPath"]["type"] == "DirectoryOrCreate" {
                let dir = work.join(name.as_str());
                std::fs::create_dir_all(&dir).unwrap();
                state = dir.clone();
                dir.display().to_string()
            } else {
                host
            };
            args.push(format!("--volume={host}:{path}{ro}"));
        } else if let Yaml::Mapping(_) = v["configMap"] {
            let dir = work.join(format!("configmap-{name}"));
            std::fs::create_dir_all(&dir).unwrap();
            for (file, content) in config_map(&text(&v["configMap"]["name"])) {
                std::fs::write(dir.join(file), content).unwrap();
            }
            args.push(format!("--volume={}:{path}{ro}", dir.display()));
        } else if let Yaml::Mapping(_) = v["emptyDir"] {
            args.push(format!("--tmpfs={path}"));
        } else {
            panic!("volume {name}: a kind this test does not translate");
        }
    }
    let ports: BTreeMap<String, u16> = c["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|p| (text(&p["name"]), p["containerPort"].as_u64().unwrap() as u16))
        .collect();
    let probe = |p: &Yaml| {
        let port = &p["httpGet"]["port"];
        let port = port.as_u64().map(|n| n as u16).unwrap_or_else(|| ports[&text(port)]);
        (text(&p["httpGet"]["path"]), port)
    };
    let container_args: Vec<String> = c["args"].as_sequence().into_iter().flatten().map(text).collect();
    Pod {
        args,
        container_args,
        grace: Duration::from_secs(spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30)),
        liveness: probe(&c["livenessProbe"]),
        readiness: probe(&c["readinessProbe"]),
        state,
    }
}

/// The agent's container, its stdout (events) and stderr (log) in files.
struct Running {
    child: Child,
    events: PathBuf,
    log: PathBuf,
}

fn start(pod: &Pod, image: &str, out: &Path, round: usize) -> Running {
    let events = out.join(format!("events-{round}.jsonl"));
    let log = out.join(format!("agent-{round}.log"));
    let _ = podman("rm").args(["-f", "mcptap-daemonset"]).output();
    let child = podman("run")
        .arg("--rm")
        .args(&pod.args)
        .arg(image)
        .args(&pod.container_args)
        .stdout(std::fs::File::create(&events).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("podman run");
    Running { child, events, log }
}

fn get(port: u16, path: &str) -> Option<u16> {
    ureq::get(&format!("http://127.0.0.1:{port}{path}"))
        .timeout(Duration::from_secs(2))
        .call()
        .map(|r| r.status())
        .or_else(|e| match e {
            ureq::Error::Status(code, _) => Ok(code),
            _ => Err(()),
        })
        .ok()
}

fn wait_ready(pod: &Pod, running: &Running) {
    let deadline = Instant::now() + WAIT;
    while get(pod.readiness.1, &pod.readiness.0) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the pod never became ready:\n{}",
            std::fs::read_to_string(&running.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(get(pod.liveness.1, &pod.liveness.0), Some(200), "liveness");
}

/// SIGTERM, as the kubelet sends it; the agent must be gone within the
/// pod's grace period.
fn stop(mut running: Running, pod: &Pod) -> Vec<Value> {
    let t = Instant::now();
    let out = podman("kill")
        .args(["--signal", "TERM", "mcptap-daemonset"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "podman kill: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            assert!(status.success(), "the agent exited {status}");
            break;
        }
        assert!(
            t.elapsed() < pod.grace,
            "not stopped within the grace period ({:?})",
            pod.grace
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(&running.log).unwrap_or_default();
    assert!(log.contains("mcptap stopped"), "{log}");
    read_events(&running.events)
}

/// The peer container: an HTTPS MCP server (tests/peers/lean_server.py)
/// on Debian's python3 and libssl, its root filesystem its own.
fn peer_container(env: &Env, image: &str, cert: &mcptap_tests::Cert, port: u16) -> String {
    let _ = podman("rm").args(["-f", "mcptap-peer"]).output();
    let out = podman("run")
        .args(["-d", "--name", "mcptap-peer", "--network=host"])
        .arg(format!("--volume={}:/peers:ro", env.peers.display()))
        .arg(format!("--volume={}:/certs:ro", cert.cert.parent().unwrap().display()))
        .arg("--env=MCPTAP_TEST_SERVER_NAME=e2e-in-container")
        .arg(image)
        .args(["python3", "/peers/lean_server.py", "--https", &port.to_string()])
        .arg(format!("/certs/{}", cert.cert.file_name().unwrap().to_string_lossy()))
        .arg(format!("/certs/{}", cert.key.file_name().unwrap().to_string_lossy()))
        .output()
        .expect("podman run the peer");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_daemonset_runs_as_its_manifest_says() {
    let env = env();
    let (image, peer_image) = images();
    let work = env.artifacts.join("daemonset");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let pod = pod(&work, "node-e2e");
    let _agent = Removed("mcptap-daemonset");
    assert!(pod.args.contains(&"--pid=host".to_string()), "hostPID");
    let running = start(&pod, &image, &work, 1);
    wait_ready(&pod, &running);

    // On the host: stdio (the tests' FastMCP server) and HTTPS through the
    // host's libssl (FastMCP on uvicorn), both driven by the Python SDK.
    let cert = env.cert("daemonset");
    let https = env.http_server(
        "e2e-host-https",
        &[
            "--tls-cert",
            cert.cert.to_str().unwrap(),
            "--tls-key",
            cert.key.to_str().unwrap(),
            "--json-response",
        ],
    );
    let in_container_port = free_port();
    let container_id = peer_container(&env, &peer_image, &cert, in_container_port);
    // Removed however the test ends (a failed assertion included).
    let _peer = Removed("mcptap-peer");
    wait_until("the containerized server to listen", WAIT, || {
        std::net::TcpStream::connect(("127.0.0.1", in_container_port)).is_ok()
    });
    let steps = json!([{"call": "add", "args": {"a": 1, "b": 2}, "repeat": 3}, {"ping": true}]);
    // The same run twice: the first makes each program known to HTTPS
    // discovery (a program's first exchange may pass before its probes
    // land: docs/tls.md); the second is counted, exactly, on both sides.
    let plan = json!({"sessions": [
        {"server": env.test_server(), "client_name": "host-stdio", "steps": steps},
        {"url": format!("https://127.0.0.1:{}/mcp", https.port), "ca": cert.cert, "client_name": "host-https", "steps": steps},
        {"url": format!("https://127.0.0.1:{in_container_port}/mcp"), "ca": cert.cert, "client_name": "container", "steps": steps},
    ]});
    env.drive(&plan);
    let second_run = mcptap_tests::now_seconds();
    let report = env.drive(&plan);
    let sessions = report["sessions"].as_array().unwrap();
    for s in sessions {
        assert!(s.get("error").is_none(), "{s}");
    }
    let stdio_pid = sessions[0]["server_pid"].as_u64().unwrap();
    let client_pid = sessions[1]["client_pid"].as_u64().unwrap();
    let container_pid: u64 = String::from_utf8_lossy(
        &podman("inspect")
            .args(["--format", "{{.State.Pid}}", "mcptap-peer"])
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .parse()
    .expect("the peer container's pid");
    // The second run's calls, by side: the server's (named by its pid)
    // and the client's (the server by its port).
    let at_server = |ev: &[Value], server: u64| -> Vec<Value> {
        observed(ev, "server", server)
            .into_iter()
            .filter(|e| e["time"].as_str().and_then(mcptap_tests::unix_seconds).unwrap_or(0.0) >= second_run)
            .collect()
    };
    let at_client = |ev: &[Value], port: u16| -> Vec<Value> {
        observed(ev, "client", client_pid)
            .into_iter()
            .filter(|e| e["server.port"].as_u64() == Some(u64::from(port)))
            .collect()
    };
    let pings = |ops: Vec<Value>| count(&ops, "ping", None, "ok");
    let ready = |ev: &[Value]| {
        count(&operations_of(ev, stdio_pid), "ping", None, "ok") == 1
            && pings(at_server(ev, https.pid())) == 1
            && pings(at_client(ev, https.port)) == 1
            && pings(at_server(ev, container_pid)) == 1
            && pings(at_client(ev, in_container_port)) == 1
    };
    wait_until("every session's events", WAIT, || ready(&read_events(&running.events)));
    let events = stop(running, &pod);
    // Exactly: each stdio call once; each HTTPS call once per side.
    let stdio = operations_of(&events, stdio_pid);
    assert_eq!(count(&stdio, "tools/call", Some("add"), "ok"), 3, "{}", summary(&stdio));
    for (what, ops) in [
        ("host HTTPS, server side", at_server(&events, https.pid())),
        ("host HTTPS, client side", at_client(&events, https.port)),
        ("containerized HTTPS, server side", at_server(&events, container_pid)),
        (
            "containerized HTTPS, client side",
            at_client(&events, in_container_port),
        ),
    ] {
        assert_eq!(
            count(&ops, "tools/call", Some("add"), "ok"),
            3,
            "{what}:\n{}",
            summary(&ops)
        );
        assert!(ops.iter().all(|e| e["tls"] == true), "{what}");
    }
    for e in at_server(&events, container_pid) {
        let placed = &e["server"]["process"]["container"];
        assert!(
            container_id.starts_with(placed["id"].as_str().unwrap_or("?")),
            "the container {container_id}: {e}"
        );
        assert_eq!(placed["runtime"], "podman", "{e}");
    }
    assert_eq!(
        events.iter().filter(|e| e["host"]["name"] == "node-e2e").count(),
        events.len()
    );

    // Restarted on the same state directory: what it kept is still there.
    let identity = std::fs::read(pod.state.join("identity.key")).expect("the state directory's identity key");
    let running = start(&pod, &image, &work, 2);
    wait_ready(&pod, &running);
    assert_eq!(std::fs::read(pod.state.join("identity.key")).unwrap(), identity);
    assert!(pod.state.join("events.db").exists());
    let log = std::fs::read_to_string(&running.log).unwrap_or_default();
    assert!(log.contains("HTTPS discovery verdicts restored"), "{log}");
    stop(running, &pod);
}

/// A container removed when this goes out of scope.
struct Removed(&'static str);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = podman("rm").args(["-f", self.0]).output();
    }
}
