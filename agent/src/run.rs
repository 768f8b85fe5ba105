//! `mcptap run`: start the sinks, load the kernel programs, feed the
//! pipeline until SIGINT/SIGTERM, then drain and flush.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    capture::{Capture, CaptureOptions},
    cli::{MetricsAddr, RunArgs},
    enrich::Clock,
    pipeline::{Pipeline, PipelineConfig},
    session::SessionConfig,
    sinks::{
        self,
        config::{FileOptions, SinkConfig, SinkKind},
        metrics::{self, Metrics},
    },
};

/// Table sizes are published every this many ticks (seconds).
const TABLES_EVERY: u64 = 5;

/// Records handled before the loop looks at signals and timers again.
const BATCH: usize = 4096;

/// How often the ring buffer is drained. The kernel wakes the agent only
/// when the buffer fills up: a wakeup per message would cost the traced
/// processes a context switch each (docs/benchmarks.md).
const DRAIN_EVERY: Duration = Duration::from_millis(10);

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    // Everything the agent writes (events files, the store, spools, state)
    // can hold what other users' calls did: its own only, whatever the
    // umask it was started with.
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask(0o077) };
    let metrics = Arc::new(Metrics::new());

    // Fail on a taken port or an unwritable file before touching the kernel.
    let listener = match args.metrics_addr {
        MetricsAddr::On(addr) => Some(metrics::bind(addr).await?),
        MetricsAddr::Off => None,
    };
    let state_dir = prepare_state_dir(&args.state_dir);
    let (live, _) = tokio::sync::broadcast::channel(4096);
    let store_path = state_dir
        .as_ref()
        .filter(|_| !args.no_store)
        .map(|d| d.join("events.db"));
    let store = store_path.clone().map(|path| sinks::StoreSink {
        opts: crate::store::StoreOptions {
            path,
            max_events: args.store_max_events,
            max_age: args.store_max_age,
        },
        live: live.clone(),
    });
    let ui_listener = match args.ui {
        Some(addr) => Some(crate::api::bind_ui(addr).await?),
        None => None,
    };
    let ui_token = match (&ui_listener, args.ui) {
        (Some(_), Some(addr)) => Some(ui_token(&args, state_dir.as_deref(), addr)?),
        _ => None,
    };
    let (sinks, sink_workers) = sinks::start(
        sink_configs(&args)?,
        store,
        state_dir.as_deref().map(|d| d.join("spool")).as_deref(),
        metrics.clone(),
    )?;
    let jwt_keys = jwt_keys(&args)?;
    let policy = match &args.policy {
        Some(path) => {
            let p = crate::policy::Policy::load(path)?;
            tracing::info!(path = %path.display(), rules = p.servers.len(), "policy loaded");
            p
        }
        None => crate::policy::Policy::default(),
    };

    let capture_opts = CaptureOptions {
        capture_cap: args.max_message_bytes as u64,
        discovery: !args.no_discovery,
        capture_sockets: !args.no_network,
        capture_tls: !args.no_network && !args.no_tls,
        tls_discovery: args.tls_discovery && !args.no_discovery,
        select_pids: args.pids.clone(),
        select_exes: args.exes.clone(),
        select_ports: args.ports.clone(),
        exclude_pids: args.exclude_pids.clone(),
        exclude_exes: args.exclude_exes.clone(),
        hooks: args.hooks.hooks,
        effects: !args.no_effects,
        exec_gate: !args.no_exec_gate,
        tls_verdicts_file: state_dir
            .as_deref()
            .map(|d| d.join(crate::capture::tls::verdicts::FILE_NAME)),
        ..CaptureOptions::new(args.ring_buffer_mib << 20)
    };
    let mut capture = Capture::start(&capture_opts)?;
    for reason in crate::capture::tls::target::UNSUPPORTED_REASONS {
        metrics.tls_unsupported.with_label_values(&[reason]).set(0);
    }
    metrics
        .capture_hooks
        .with_label_values(&[
            capture.hooks.family.name(),
            capture.kernel.object.name(),
            capture.hooks.reason,
        ])
        .set(1);

    let (audit_trail, mut audits) = crate::api::audit::AuditTrail::new(metrics.clone());
    let api_state = crate::api::ApiState {
        db: store_path.unwrap_or_else(|| args.state_dir.join("events.db")),
        live,
        token: None,
        audit: Some(audit_trail),
        hosts: None,
    };
    if args.api_socket != "off" {
        let (path, state) = (std::path::PathBuf::from(&args.api_socket), api_state.clone());
        tokio::spawn(async move {
            if let Err(err) = crate::api::serve_unix(path, state).await {
                tracing::error!("local API stopped: {err:#}");
            }
        });
    }
    if let Some(listener) = ui_listener {
        let addr = listener.local_addr()?;
        let state = crate::api::ApiState {
            token: ui_token.map(Into::into),
            hosts: crate::api::allowed_hosts(addr),
            ..api_state.clone()
        };
        tokio::spawn(async move {
            if let Err(err) = crate::api::serve_ui(listener, state).await {
                tracing::error!("dashboard stopped: {err}");
            }
        });
        tracing::info!(url = %format!("http://{addr}/"), "serving the dashboard");
    }

    if let Some(listener) = listener {
        let addr = listener.local_addr()?;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(err) = metrics::serve(listener, metrics).await {
                tracing::error!("metrics endpoint stopped: {err}");
            }
        });
        tracing::info!(%addr, "serving /metrics");
    }

    let mut pipeline = Pipeline::new(
        PipelineConfig {
            max_message_bytes: args.max_message_bytes,
            payloads: args.capture_payloads.then_some(args.payload_max_bytes),
            payload_max_bytes: args.payload_max_bytes,
            policy: Arc::new(policy),
            state_dir,
            sessions: SessionConfig {
                request_timeout_ns: args.request_timeout.saturating_mul(1_000_000_000),
                idle_timeout_ns: args.session_idle_timeout.saturating_mul(1_000_000_000),
                ..SessionConfig::default()
            },
            max_label_values: args.max_label_values,
            proc_root: "/proc".into(),
            effects: crate::effects::EffectLimits {
                per_kind: args.effects_per_kind.max(1),
                per_operation: args.effects_per_operation.max(1),
                ..Default::default()
            },
            // The compat object's raw tracepoint records no effects at
            // syscall exits, so no arguments follow its execs.
            exec_args: !(capture.kernel.object == crate::capture::kernel::ObjectKind::Compat
                && capture.hooks.family == crate::capture::hooks::HookFamily::Tracepoint),
            jwt_keys: jwt_keys.clone(),
        },
        metrics.clone(),
        Box::new(sinks),
    );

    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let mut drain = tokio::time::interval(DRAIN_EVERY);
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut kernel_counters_seen = [0u64; mcptap_common::counter::COUNT as usize];
    let mut ticks = 0u64;
    let mut recorder = args.record.as_deref().map(Recorder::create).transpose()?;
    let tls_wake = capture.tls_wake();
    publish_capture_state(&capture, &metrics);
    metrics.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!("mcptap is running");

    loop {
        tokio::select! {
            ready = capture.readable() => {
                ready?;
                drain_all(&mut capture, &mut pipeline, &mut recorder).await;
                publish_if_changed(&mut capture, &metrics);
            }
            _ = drain.tick() => {
                drain_all(&mut capture, &mut pipeline, &mut recorder).await;
                publish_if_changed(&mut capture, &metrics);
            }
            // A TLS file's inspection finished: its probes go in now.
            _ = notified(tls_wake.as_deref()) => {
                capture.after_drain();
                publish_if_changed(&mut capture, &metrics);
            }
            _ = tick.tick() => {
                metrics.heartbeat_ms.store(chrono::Utc::now().timestamp_millis(), std::sync::atomic::Ordering::Relaxed);
                drain_all(&mut capture, &mut pipeline, &mut recorder).await;
                pipeline.tick(Clock::monotonic_now_ns(), &mut capture.selection);
                capture.tick();
                metrics.kernel_counters(&capture.kernel_counters(), &mut kernel_counters_seen);
                publish_capture_state(&capture, &metrics);
                ticks += 1;
                if ticks.is_multiple_of(TABLES_EVERY) {
                    for (table, n) in pipeline.tables().into_iter().chain(capture.selection.map_sizes()) {
                        metrics.tables.with_label_values(&[table]).set(n as i64);
                    }
                }
            }
            Some(audit) = audits.recv() => pipeline.audit(audit),
            _ = sighup.recv() => {
                // Events already captured are handled under the old policy.
                drain_all(&mut capture, &mut pipeline, &mut recorder).await;
                reload_policy(args.policy.as_deref(), &mut pipeline, &metrics);
                // After a log rotation: event files are opened again.
                crate::sinks::reopen_files();
            }
            _ = sigint.recv() => { tracing::info!("SIGINT: stopping"); break; }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping"); break; }
        }
    }

    metrics.ready.store(false, std::sync::atomic::Ordering::Relaxed);
    // What the kernel already captured still becomes events.
    capture.drain(usize::MAX, |control, raw| {
        if let Some(r) = &mut recorder {
            r.write(raw);
        }
        pipeline.on_raw(raw, control)
    });
    if let Some(mut r) = recorder {
        use std::io::Write;
        let _ = r.out.flush();
    }
    metrics.kernel_counters(&capture.kernel_counters(), &mut kernel_counters_seen);
    let active = pipeline.active_sessions();
    let in_flight = pipeline.finish();
    drop(pipeline); // closes the sinks' queues: writers flush and end
    drop(capture); // detaches the kernel programs
    sink_workers.finish(SHUTDOWN_GRACE).await;
    tracing::info!(
        active_sessions = active,
        requests_in_flight = in_flight,
        "mcptap stopped"
    );
    Ok(())
}

/// The keys JWTs are checked against (`[identity]` of `--config`); a JWKS
/// URL is fetched in the background, now and every hour.
fn jwt_keys(args: &RunArgs) -> anyhow::Result<Option<Arc<crate::enrich::identity::JwtKeys>>> {
    let Some(path) = &args.config else { return Ok(None) };
    let Some(config) = crate::sinks::config::load_identity(path)? else {
        return Ok(None);
    };
    let keys = Arc::new(crate::enrich::identity::JwtKeys::new(&config)?);
    if let Some(url) = config.jwks_url.clone() {
        tokio::spawn(crate::enrich::identity::refresh_jwks(url, keys.clone()));
    }
    tracing::info!("JWTs are verified against the configured keys");
    Ok(Some(keys))
}

/// The dashboard's bearer token: `--ui-token-file`, else `MCPTAP_UI_TOKEN`,
/// else one of the agent's own, kept in the state directory (`ui.token`,
/// mode 0600) across restarts. The page's address with it is written to
/// `ui.url` (0600) for `mcptap ui-url`.
fn ui_token(args: &RunArgs, state_dir: Option<&std::path::Path>, addr: std::net::SocketAddr) -> anyhow::Result<String> {
    let given = match &args.ui_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --ui-token-file {}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => std::env::var("MCPTAP_UI_TOKEN").ok().map(|t| t.trim().to_string()),
    };
    let token = match given {
        Some(t) if t.len() < 16 => anyhow::bail!("the dashboard's token is too short: use at least 16 characters"),
        Some(t) => t,
        None => own_ui_token(state_dir)?,
    };
    let url = format!("http://{addr}/#token={token}\n");
    match state_dir {
        Some(dir) => {
            crate::statefile::write_private(&dir.join(UI_URL_FILE), url.as_bytes())
                .with_context(|| format!("cannot write {}", dir.join(UI_URL_FILE).display()))?;
            tracing::info!(
                "the dashboard needs its token: `mcptap ui-url` (as root) prints its address with it ({})",
                dir.join(UI_URL_FILE).display()
            );
        }
        None => tracing::warn!(
            "no state directory: the dashboard's token is this run's only; give one with --ui-token-file"
        ),
    }
    Ok(token)
}

/// Where the dashboard's address and token are written for `mcptap ui-url`.
pub const UI_URL_FILE: &str = "ui.url";

/// The agent's own dashboard token: read from the state directory, or made
/// (32 random bytes, hex) and kept there.
fn own_ui_token(state_dir: Option<&std::path::Path>) -> anyhow::Result<String> {
    use ring::rand::SecureRandom;
    let path = state_dir.map(|d| d.join("ui.token"));
    if let Some(t) = path
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|t| t.trim().to_string())
        .filter(|t| t.len() >= 32)
    {
        return Ok(t);
    }
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no randomness for the dashboard's token"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(p) = &path {
        crate::statefile::write_private(p, token.as_bytes())
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(token)
}

/// `mcptap ui-url`: the running dashboard's address with its token.
pub fn ui_url(state_dir: &std::path::Path) -> anyhow::Result<()> {
    let path = state_dir.join(UI_URL_FILE);
    let url = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (is the agent running with --ui, and are you root?)",
            path.display()
        )
    })?;
    print!("{url}");
    Ok(())
}

/// How long network sinks get at shutdown to deliver what is spooled.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// `--events` (unless `off`) and the configuration file's sinks.
fn sink_configs(args: &RunArgs) -> anyhow::Result<Vec<SinkConfig>> {
    let mut configs = Vec::new();
    let kind = match args.events.as_str() {
        "off" => None,
        "-" => Some(SinkKind::Stdout),
        path => Some(SinkKind::File(FileOptions {
            path: path.into(),
            ..FileOptions::default()
        })),
    };
    if let Some(kind) = kind {
        configs.push(SinkConfig {
            name: "events".into(),
            kind,
            filter: Default::default(),
            rate_limit: None,
            queue: args.event_queue.max(1),
        });
    }
    if let Some(path) = &args.config {
        let more = sinks::config::load(path)?;
        tracing::info!(path = %path.display(), sinks = more.len(), "configuration loaded");
        configs.extend(more);
    }
    if configs.is_empty() {
        tracing::warn!("--events off and no sinks configured: events go nowhere (metrics only)");
    }
    Ok(configs)
}

/// SIGHUP: the policy file again; a bad file leaves the running policy.
fn reload_policy(path: Option<&std::path::Path>, pipeline: &mut Pipeline, metrics: &Metrics) {
    let Some(path) = path else {
        tracing::info!("SIGHUP: no policy to reload");
        return;
    };
    match crate::policy::Policy::load(path) {
        Ok(p) => {
            tracing::info!(path = %path.display(), rules = p.servers.len(), "SIGHUP: policy reloaded");
            pipeline.set_policy(Arc::new(p));
            metrics.policy_reloads.with_label_values(&["ok"]).inc();
        }
        Err(err) => {
            tracing::error!("SIGHUP: policy not reloaded, the previous one stays: {err}");
            metrics.policy_reloads.with_label_values(&["error"]).inc();
        }
    }
}

/// The state directory, created when missing; `None` (with a warning) when
/// it cannot be used: what must survive restarts then does not.
fn prepare_state_dir(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => Some(dir.to_path_buf()),
        Err(err) => {
            tracing::warn!(dir = %dir.display(), "state directory unusable ({err}): first uses are not remembered across restarts");
            None
        }
    }
}

/// Resolves when `notify` is notified (never without one).
async fn notified(notify: Option<&tokio::sync::Notify>) {
    match notify {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

/// Drains in batches, giving timers and signals a turn between.
async fn drain_all(capture: &mut Capture, pipeline: &mut Pipeline, recorder: &mut Option<Recorder>) {
    while capture.drain(BATCH, |control, raw| {
        if let Some(r) = recorder {
            r.write(raw);
        }
        pipeline.on_raw(raw, control)
    }) == BATCH
    {
        capture.after_drain();
        tokio::task::yield_now().await;
    }
    capture.after_drain();
}

/// `--record`: every raw record, length-prefixed (u32, native endian).
struct Recorder {
    out: std::io::BufWriter<std::fs::File>,
    failed: bool,
}

impl Recorder {
    fn create(path: &std::path::Path) -> anyhow::Result<Recorder> {
        let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        tracing::warn!(path = %path.display(), "recording raw captures (payloads included): for debugging only");
        Ok(Recorder {
            out: std::io::BufWriter::new(file),
            failed: false,
        })
    }

    fn write(&mut self, raw: &[u8]) {
        use std::io::Write;
        if self.failed {
            return;
        }
        let len = (raw.len() as u32).to_ne_bytes();
        if let Err(err) = self.out.write_all(&len).and_then(|_| self.out.write_all(raw)) {
            tracing::error!("recording stopped: {err}");
            self.failed = true;
        }
    }
}

/// `mcptap replay`: a recording through the pipeline, events to stdout.
pub fn replay(args: crate::cli::ReplayArgs) -> anyhow::Result<()> {
    struct Stdout;
    impl crate::pipeline::EventSink for Stdout {
        fn send(&mut self, event: &crate::event::Event) {
            if let Ok(line) = serde_json::to_string(event) {
                println!("{line}");
            }
        }
    }
    let data = std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    match replay_records(&data, args.capture_payloads, "/proc".into(), Box::new(Stdout)) {
        Ok(records) => {
            eprintln!("replayed {records} records");
            Ok(())
        }
        Err(record) => anyhow::bail!("{}: record {record} is cut short", args.file.display()),
    }
}

/// Replays a recording (`run --record`: each record after its u32 length)
/// through a pipeline that talks to no kernel, reading processes under
/// `proc_root`; events go to `sink`. Returns how many records were
/// replayed, or the number of the one cut short. The fuzz targets drive
/// every stage through here.
pub fn replay_records(
    data: &[u8],
    capture_payloads: bool,
    proc_root: std::path::PathBuf,
    sink: Box<dyn crate::pipeline::EventSink + Send>,
) -> Result<u64, u64> {
    struct Offline;
    impl crate::pipeline::Control for Offline {
        fn confirm(&mut self, _: u32) {}
        fn reject(&mut self, _: u32) {}
        fn release(&mut self, _: u32, _: crate::capture::Channel) {}
        fn ignore(&mut self, _: u32, _: crate::capture::Channel) {}
        fn is_selected(&self, _: u32) -> bool {
            false
        }
        fn forget_process(&mut self, _: u32) {}
        fn serves(&mut self, _: u32) {}
    }
    let metrics = Arc::new(Metrics::new());
    let mut pipeline = Pipeline::new(
        PipelineConfig {
            max_message_bytes: 16 << 20,
            payloads: capture_payloads.then_some(64 * 1024),
            payload_max_bytes: 64 * 1024,
            policy: Arc::new(crate::policy::Policy::default()),
            state_dir: None,
            sessions: SessionConfig::default(),
            max_label_values: 100,
            proc_root,
            effects: crate::effects::EffectLimits::default(),
            exec_args: true,
            jwt_keys: None,
        },
        metrics,
        sink,
    );
    let mut rest = data;
    let mut records = 0u64;
    while rest.len() >= 4 {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let Some(raw) = rest.get(4..4 + len) else {
            return Err(records);
        };
        pipeline.on_raw(raw, &mut Offline);
        rest = &rest[4 + len..];
        records += 1;
    }
    pipeline.finish();
    Ok(records)
}

/// What is hooked changed while draining (a new server's TLS library was
/// probed): published now, not at the next tick.
fn publish_if_changed(capture: &mut Capture, metrics: &Metrics) {
    if capture.take_tls_changed() {
        publish_capture_state(capture, metrics);
    }
}

fn publish_capture_state(capture: &Capture, metrics: &Metrics) {
    metrics.tracked_processes.set(capture.selection.tracked().len() as i64);
    let (files, processes) = capture.tls_hooked();
    for (library, kind, n) in files {
        metrics
            .tls_hooked_files
            .with_label_values(&[library.as_str(), kind.as_str()])
            .set(n as i64);
    }
    metrics.tls_hooked_processes.set(processes as i64);
    if let Some(tls) = &capture.tls {
        metrics.tls_hook_errors.set(tls.errors() as i64);
        for (reason, n) in tls.unsupported() {
            metrics.tls_unsupported.with_label_values(&[reason]).set(*n as i64);
        }
        metrics.tls_discovery(&tls.discovery);
        if let Some(stats) = tls.gate_stats() {
            metrics.exec_gate(stats);
        }
    }
    metrics
        .discovery_budget_exhausted
        .set(capture.selection.budget_exhausted as i64);
}

/// `mcptap floor` (hidden): the empty programs on the syscall hooks, until
/// SIGINT or SIGTERM.
pub async fn floor(hooks: crate::capture::HookChoice) -> anyhow::Result<()> {
    let (_kernel, hooks, _floor) = crate::capture::attach_floor(hooks)?;
    tracing::info!(
        family = hooks.family.name(),
        "mcptap is running (empty syscall hooks only)"
    );
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
    }
    Ok(())
}

/// `mcptap check`: everything `run` does to the kernel, then stop.
pub async fn check(hooks: crate::capture::HookChoice) -> anyhow::Result<()> {
    let mut capture = Capture::start(&CaptureOptions {
        tls_discovery: true,
        exec_gate: false,
        hooks,
        ..CaptureOptions::new(1 << 20)
    })?;
    capture.settle_tls(std::time::Duration::from_secs(30));
    let hooked: usize = capture.tls_hooked().0.iter().map(|(_, _, n)| n).sum();
    let (kernel, hooks) = (capture.kernel.clone(), capture.hooks.clone());
    drop(capture);
    let object = match kernel.object {
        crate::capture::kernel::ObjectKind::BpfLoop => "bpf_loop object".to_string(),
        crate::capture::kernel::ObjectKind::Compat => format!(
            "compat object (no bpf_loop: at most {} MiB per call)",
            mcptap_common::COMPAT_MAX_CALL_BYTES >> 20
        ),
    };
    println!(
        "ok: this host can run mcptap (Linux {}: {object}, eBPF programs loaded and attached, OpenSSL probed in {hooked} files, then detached)",
        kernel.release
    );
    println!("hooks: {} ({})", hooks.family.name(), hooks.why);
    Ok(())
}
