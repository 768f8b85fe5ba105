//! mcptap: an eBPF host agent that shows what AI agents do through MCP
//! servers, without touching server or client code.
//!
//! The agent is a pipeline; read the stages in this order:
//! `capture` (kernel programs, ring buffer records) → `reassembly` (bytes
//! per stream, gaps) → `protocol` (framing, JSON-RPC) → `session`
//! (discovery, correlation into operations) → `effects` (what each
//! operation did on the host: files, programs, connections, CPU) →
//! `enrich` (processes, host, identity) →
//! `event` + `sinks` (JSON Lines, Prometheus). `pipeline` wires them;
//! `run` drives it. The binary (`main.rs`) only parses the command line.
//!
//! A library too, so that the fuzz targets (fuzz/) drive the parsers.

pub mod api;
pub mod capture;
pub mod cli;
pub mod effects;
pub mod enrich;
pub mod event;
pub mod install;
pub mod inventory;
pub mod mask;
pub mod pipeline;
pub mod policy;
pub mod procmem;
pub mod procnet;
pub mod protocol;
pub mod reassembly;
pub mod run;
pub mod scan;
pub mod session;
pub mod sinks;
pub mod statefile;
pub mod store;
pub mod tail;
pub mod tomlfile;
pub mod top;
