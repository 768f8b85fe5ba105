//! Sinks stage: where events and figures go.
//!
//! Every event is serialized once and offered to each sink: the sink's
//! filter and rate limit decide in the pipeline, then a bounded queue hands
//! the line to the sink's own worker, so a slow receiver never stalls the
//! capture (a full queue drops and counts).
//!
//! - `stdout` and `file` (JSON Lines, `rotate`: size/time rotation and
//!   retention): a writer thread each;
//! - `syslog`, `http`, `otlp`: a thread appends to the sink's on-disk
//!   `spool`, and a `delivery` task sends batches from it with retries, so
//!   receiver outages lose nothing;
//! - `metrics`: Prometheus metrics and their HTTP endpoint.
//!
//! `config` reads the sinks of the configuration file; `filter` holds the
//! per-sink filters and rate limits.

pub mod config;
pub mod delivery;
pub mod filter;
pub mod http;
pub mod metrics;
pub mod otlp;
pub mod rotate;
pub mod spool;
pub mod syslog;

use std::{
    path::Path,
    sync::{
        Arc,
        mpsc::{self, RecvTimeoutError, SyncSender, TrySendError},
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;

use self::{
    config::{SinkConfig, SinkKind},
    filter::{Filter, RateLimit},
    metrics::Metrics,
    spool::Spool,
};
use crate::{
    event::Event,
    pipeline::EventSink,
    store::{Row, Stored},
};

/// Bumped by [`reopen_files`] (SIGHUP): file sinks open their file again.
static REOPEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Asks every file sink to open its file again (SIGHUP, after a log
/// rotation that moved it away).
pub fn reopen_files() {
    REOPEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// The pipeline's end: offers each event to every sink.
pub struct Sinks {
    outs: Vec<Out>,
    metrics: Arc<Metrics>,
}

/// A sink's queue: event lines, or, for the event store, lines with the
/// fields it indexes (read from the typed event, not from the line).
enum Queue {
    Lines(SyncSender<Arc<str>>),
    Store(SyncSender<Arc<Stored>>),
}

struct Out {
    name: Arc<str>,
    filter: Filter,
    limit: Option<RateLimit>,
    tx: Queue,
    /// Drops since the last warning, and when it was.
    dropped: u64,
    warned: Option<Instant>,
}

/// The sinks' workers, to be finished at shutdown.
pub struct Workers {
    threads: Vec<(Arc<str>, std::thread::JoinHandle<()>)>,
    deliveries: Vec<(Arc<str>, Arc<Spool>, tokio::task::JoinHandle<()>)>,
}

/// The agent's event store, fed like a sink (see `store`).
pub struct StoreSink {
    pub opts: crate::store::StoreOptions,
    /// Each stored event, for live views (the API's tail).
    pub live: tokio::sync::broadcast::Sender<Arc<Stored>>,
}

/// Starts a worker per sink. `spool_root` holds the network sinks' spools
/// (one directory per sink name); without it they cannot start.
pub fn start(
    configs: Vec<SinkConfig>,
    store: Option<StoreSink>,
    spool_root: Option<&Path>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<(Sinks, Workers)> {
    let mut outs = Vec::new();
    let mut workers = Workers {
        threads: Vec::new(),
        deliveries: Vec::new(),
    };
    if let Some(store) = store {
        let name: Arc<str> = "store".into();
        let (tx, rx) = mpsc::sync_channel::<Arc<Stored>>(config::DEFAULT_QUEUE);
        let path = store.opts.path.clone();
        let thread = crate::store::spawn_writer(store.opts, rx, store.live, metrics.clone())
            .with_context(|| format!("the event store {}", path.display()))?;
        workers.threads.push((name.clone(), thread));
        outs.push(Out {
            name,
            filter: Filter::default(),
            limit: None,
            tx: Queue::Store(tx),
            dropped: 0,
            warned: None,
        });
    }
    for cfg in configs {
        let name: Arc<str> = cfg.name.as_str().into();
        // Zero from the start, so that rate() and alerts see the first drop.
        metrics.events_dropped.with_label_values(&[&*name, "queue_full"]);
        let (tx, rx) = mpsc::sync_channel::<Arc<str>>(cfg.queue);
        let ctx = || format!("sink `{name}` ({})", cfg.kind.label());
        match &cfg.kind {
            SinkKind::Stdout => {
                let out = LineOut::Stdout(std::io::BufWriter::new(std::io::stdout()));
                workers
                    .threads
                    .push((name.clone(), spawn_writer(name.clone(), rx, out, metrics.clone())?));
            }
            SinkKind::File(opts) => {
                let file = rotate::RotatingFile::open(opts.clone(), SystemTime::now())
                    .with_context(|| format!("{}: cannot open {}", ctx(), opts.path.display()))?;
                workers.threads.push((
                    name.clone(),
                    spawn_writer(name.clone(), rx, LineOut::File(file), metrics.clone())?,
                ));
            }
            SinkKind::Syslog(_) | SinkKind::Http(_) | SinkKind::Otlp(_) => {
                let Some(root) = spool_root else {
                    anyhow::bail!("{}: needs a usable --state-dir for its spool", ctx());
                };
                let dir = root.join(&*name);
                let delivery_opts = match &cfg.kind {
                    SinkKind::Syslog(o) => o.delivery.clone(),
                    SinkKind::Http(o) => o.delivery.clone(),
                    SinkKind::Otlp(o) => o.delivery.clone(),
                    _ => unreachable!(),
                };
                let (spool, writer) = Spool::open(&dir, delivery_opts.spool_max_size)
                    .with_context(|| format!("{}: cannot open its spool {}", ctx(), dir.display()))?;
                let spool = Arc::new(spool);
                if spool.pending_bytes() > 0 {
                    tracing::info!(sink = %name, bytes = spool.pending_bytes(), "events left in the spool by the last run will be delivered");
                }
                let task = match &cfg.kind {
                    SinkKind::Syslog(o) => {
                        let t = syslog::SyslogTransport::new(name.clone(), o, metrics.clone()).with_context(ctx)?;
                        tokio::spawn(delivery::run(
                            name.clone(),
                            spool.clone(),
                            t,
                            delivery_opts,
                            metrics.clone(),
                        ))
                    }
                    SinkKind::Http(o) => {
                        let t = http::HttpTransport::new(o).with_context(ctx)?;
                        tokio::spawn(delivery::run(
                            name.clone(),
                            spool.clone(),
                            t,
                            delivery_opts,
                            metrics.clone(),
                        ))
                    }
                    SinkKind::Otlp(o) => {
                        let t = otlp::OtlpTransport::new(o).with_context(ctx)?;
                        tokio::spawn(delivery::run(
                            name.clone(),
                            spool.clone(),
                            t,
                            delivery_opts,
                            metrics.clone(),
                        ))
                    }
                    _ => unreachable!(),
                };
                let thread = spawn_spooler(name.clone(), rx, spool.clone(), writer, metrics.clone())?;
                workers.threads.push((name.clone(), thread));
                workers.deliveries.push((name.clone(), spool, task));
            }
        }
        tracing::info!(sink = %name, kind = cfg.kind.label(), "sink started");
        outs.push(Out {
            name,
            filter: cfg.filter,
            limit: cfg.rate_limit,
            tx: Queue::Lines(tx),
            dropped: 0,
            warned: None,
        });
    }
    Ok((Sinks { outs, metrics }, workers))
}

impl EventSink for Sinks {
    fn send(&mut self, event: &Event) {
        let line: Arc<str> = match serde_json::to_string(event) {
            Ok(line) => line.into(),
            Err(err) => return tracing::error!("event did not serialize: {err}"),
        };
        let mut stored: Option<Arc<Stored>> = None;
        let now = Instant::now();
        for out in &mut self.outs {
            if !out.filter.admits(event) {
                self.metrics.sink_filtered.with_label_values(&[&*out.name]).inc();
                continue;
            }
            if let Some(limit) = &mut out.limit
                && !limit.admit(now)
            {
                out.drop_one(&self.metrics, "rate_limit", now);
                continue;
            }
            let sent = match &out.tx {
                Queue::Lines(tx) => tx
                    .try_send(line.clone())
                    .map_err(|e| matches!(e, TrySendError::Full(_))),
                Queue::Store(tx) => {
                    let item = stored.get_or_insert_with(|| {
                        Arc::new(Stored {
                            row: Row::of_event(event),
                            line: line.clone(),
                        })
                    });
                    tx.try_send(item.clone())
                        .map_err(|e| matches!(e, TrySendError::Full(_)))
                }
            };
            match sent {
                Ok(()) => self.metrics.events.with_label_values(&[&*out.name]).inc(),
                Err(true) => out.drop_one(&self.metrics, "queue_full", now),
                Err(false) => out.drop_one(&self.metrics, "sink_stopped", now),
            }
        }
    }
}

impl Out {
    fn drop_one(&mut self, metrics: &Metrics, reason: &str, now: Instant) {
        metrics.events_dropped.with_label_values(&[&*self.name, reason]).inc();
        self.dropped += 1;
        if self
            .warned
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            tracing::warn!(sink = %self.name, reason, dropped = self.dropped, "events dropped");
            self.warned = Some(now);
            self.dropped = 0;
        }
    }
}

impl Workers {
    /// After the pipeline is gone (its queues closed): lets writers flush
    /// and deliveries empty their spools for up to `grace`; what is still
    /// spooled then is delivered at the next start.
    pub async fn finish(self, grace: Duration) {
        for (name, thread) in self.threads {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!(sink = %name, "sink writer failed");
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        for (name, spool, mut task) in self.deliveries {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                tracing::warn!(sink = %name, bytes = spool.pending_bytes(), "receiver did not take every event before shutdown: the rest stays spooled for the next start");
            }
        }
    }
}

/// Where a writer thread puts lines.
enum LineOut {
    Stdout(std::io::BufWriter<std::io::Stdout>),
    File(rotate::RotatingFile),
}

impl LineOut {
    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        use std::io::Write;
        match self {
            LineOut::Stdout(out) => {
                out.write_all(line.as_bytes())?;
                out.write_all(b"\n")
            }
            LineOut::File(f) => f.write_line(line, SystemTime::now()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        use std::io::Write;
        match self {
            LineOut::Stdout(out) => out.flush(),
            LineOut::File(f) => f.flush(),
        }
    }

    fn idle(&mut self) -> std::io::Result<()> {
        match self {
            LineOut::File(f) if f.is_due(SystemTime::now()) => f.rotate(SystemTime::now()),
            _ => Ok(()),
        }
    }

    /// A file deleted or moved away is opened again (checked at most once
    /// a second; at once when `force`d).
    fn reopen_if_moved(&mut self, force: bool) -> std::io::Result<()> {
        match self {
            LineOut::File(f) => f.reopen_if_moved(force).map(|_| ()),
            LineOut::Stdout(_) => Ok(()),
        }
    }
}

/// JSON Lines writer: flushes whenever it has caught up (batches under
/// load, prompt when quiet); a write error drops that event, counted.
fn spawn_writer(
    name: Arc<str>,
    rx: mpsc::Receiver<Arc<str>>,
    mut out: LineOut,
    metrics: Arc<Metrics>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("sink-{name}"))
        .spawn(move || {
            let mut warned: Option<Instant> = None;
            let mut failed = |err: std::io::Error, n: u64| {
                metrics
                    .events_dropped
                    .with_label_values(&[&*name, "write_error"])
                    .inc_by(n);
                if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    tracing::error!(sink = %name, "writing events failed: {err}");
                    warned = Some(Instant::now());
                }
            };
            let mut reopened = REOPEN.load(std::sync::atomic::Ordering::Relaxed);
            loop {
                let asked = REOPEN.load(std::sync::atomic::Ordering::Relaxed);
                if let Err(err) = out.reopen_if_moved(asked != reopened) {
                    failed(err, 0);
                }
                reopened = asked;
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(line) => {
                        if let Err(err) = out.write_line(&line) {
                            failed(err, 1);
                        }
                        while let Ok(line) = rx.try_recv() {
                            if let Err(err) = out.write_line(&line) {
                                failed(err, 1);
                            }
                        }
                        if let Err(err) = out.flush() {
                            failed(err, 0);
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        if let Err(err) = out.idle() {
                            failed(err, 0);
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        if let Err(err) = out.flush() {
                            failed(err, 0);
                        }
                        return;
                    }
                }
            }
        })
        .context("cannot start a sink thread")
}

/// Appends a network sink's events to its spool.
fn spawn_spooler(
    name: Arc<str>,
    rx: mpsc::Receiver<Arc<str>>,
    spool: Arc<Spool>,
    mut writer: spool::SpoolWriter,
    metrics: Arc<Metrics>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("spool-{name}"))
        .spawn(move || {
            let mut warned: Option<Instant> = None;
            let mut append = |writer: &mut spool::SpoolWriter, line: &str| {
                let reason = match spool.append(writer, line) {
                    Ok(true) => return,
                    Ok(false) => "spool_full",
                    Err(err) => {
                        tracing::error!(sink = %name, "writing the spool failed: {err}");
                        "write_error"
                    }
                };
                metrics.events_dropped.with_label_values(&[&*name, reason]).inc();
                if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    tracing::warn!(sink = %name, reason, "events dropped: the receiver has been away too long for the spool");
                    warned = Some(Instant::now());
                }
            };
            while let Ok(line) = rx.recv() {
                append(&mut writer, &line);
                while let Ok(line) = rx.try_recv() {
                    append(&mut writer, &line);
                }
                if let Err(err) = spool.flush(&mut writer) {
                    tracing::error!(sink = %name, "flushing the spool failed: {err}");
                }
            }
            if let Err(err) = spool.close(&mut writer) {
                tracing::error!(sink = %name, "flushing the spool failed: {err}");
            }
        })
        .context("cannot start a sink thread")
}
