//! Sinks stage: where events and figures go.
//!
//! - `jsonl`: the event stream (JSON Lines) to stdout or a file;
//! - `metrics`: Prometheus metrics and their HTTP endpoint.

pub mod jsonl;
pub mod metrics;
