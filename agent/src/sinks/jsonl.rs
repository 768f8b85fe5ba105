//! The JSON Lines event stream: one event per line, to stdout or a file.
//!
//! The pipeline never waits on the writer: events go through a bounded
//! queue, and when the queue is full the event is dropped and counted
//! (`mcptap_events_dropped_total{sink="jsonl"}`) rather than stalling the
//! capture.

use std::{path::PathBuf, sync::Arc};

use tokio::{
    io::{AsyncWrite, AsyncWriteExt, BufWriter},
    sync::mpsc,
    task::JoinHandle,
};

use super::metrics::Metrics;

const SINK: &str = "jsonl";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

impl Destination {
    pub fn parse(s: &str) -> Destination {
        if s == "-" {
            Destination::Stdout
        } else {
            Destination::File(PathBuf::from(s))
        }
    }
}

pub struct JsonlSink {
    tx: mpsc::Sender<String>,
    metrics: Arc<Metrics>,
    dropped_since_warn: u64,
}

impl JsonlSink {
    /// Opens the destination (appending to a file) and starts the writer.
    pub async fn spawn(
        dest: &Destination,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<(JsonlSink, JoinHandle<std::io::Result<()>>)> {
        let out: Box<dyn AsyncWrite + Unpin + Send> = match dest {
            Destination::Stdout => Box::new(tokio::io::stdout()),
            Destination::File(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", parent.display()))?;
                }
                let file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot open events file {}: {e}", path.display()))?;
                Box::new(file)
            }
        };
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let writer = tokio::spawn(write_lines(rx, out));
        Ok((
            JsonlSink {
                tx,
                metrics,
                dropped_since_warn: 0,
            },
            writer,
        ))
    }

    pub fn send(&mut self, line: String) {
        match self.tx.try_send(line) {
            Ok(()) => {
                self.metrics.events.with_label_values(&[SINK]).inc();
                if self.dropped_since_warn > 0 {
                    tracing::warn!(
                        dropped = self.dropped_since_warn,
                        "event stream was full: events dropped"
                    );
                    self.dropped_since_warn = 0;
                }
            }
            Err(_) => {
                self.metrics.events_dropped.with_label_values(&[SINK]).inc();
                self.dropped_since_warn += 1;
            }
        }
    }
}

async fn write_lines(mut rx: mpsc::Receiver<String>, out: Box<dyn AsyncWrite + Unpin + Send>) -> std::io::Result<()> {
    let mut out = BufWriter::new(out);
    while let Some(line) = rx.recv().await {
        out.write_all(line.as_bytes()).await?;
        out.write_all(b"\n").await?;
        // Flush when caught up: batches under load, prompt when quiet.
        if rx.is_empty() {
            out.flush().await?;
        }
    }
    out.flush().await
}
