//! `cargo xtask fuzz`: the fuzz targets of fuzz/ (cargo fuzz, libFuzzer,
//! nightly with the address sanitizer), each for a bounded time.
//!
//! Targets: `records` (ring buffer records through every stage of a
//! pipeline that talks to no kernel), `ndjson` (newline framing), `http`
//! (HTTP/1.1 both ways), `sse` (event streams), `jsonrpc` (classification
//! and the truncated-frame scanner), `mask` (secret masking), `naming`
//! (the bytes that name a host), `elf` (what TLS library a file carries).
//!
//! Seeds are committed in fuzz/corpus/<target>/, cut from end-to-end
//! recordings (`--seed DIR` cuts new ones from the `capture.bin` files that
//! `MCPTAP_E2E_RECORD=1 cargo xtask test` leaves under DIR). What a run
//! finds goes to target/fuzz/corpus/<target>/ (new inputs) and
//! target/fuzz/artifacts/<target>/ (crashes): a crash fails the task, and is
//! fixed with a regression test.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use mcptap_common::{CHUNK_HEADER_LEN, channel, record};

use crate::{cmd, repo_root, setup};

pub const TARGETS: &[&str] = &["records", "ndjson", "http", "sse", "jsonrpc", "mask", "naming", "elf"];

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 300)]
    pub seconds: u64,
    /// Cut new seeds from the recordings (capture.bin) under this folder
    /// instead of fuzzing.
    #[arg(long, value_name = "DIR")]
    pub seed: Option<PathBuf>,
    /// Only these targets (default: all).
    pub targets: Vec<String>,
}

pub fn fuzz(args: FuzzArgs) -> Result<()> {
    if let Some(dir) = &args.seed {
        return seed(dir);
    }
    setup::setup(setup::Needs {
        toolchain: true,
        peers: false,
        vms: false,
    })?;
    setup::ensure_cargo_fuzz()?;
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };
    run(&targets, args.seconds, Sanitizer::Address)
}

/// How the targets are built.
#[derive(Clone, Copy)]
pub enum Sanitizer {
    /// AddressSanitizer: long runs (`cargo xtask fuzz`).
    Address,
    /// None: the bounded runs of `cargo xtask test` (the parsers are safe
    /// Rust; the instrumented build of every dependency would cost CI
    /// minutes).
    None,
}

/// Builds the targets, then runs each for `seconds`.
pub fn run(targets: &[&str], seconds: u64, sanitizer: Sanitizer) -> Result<()> {
    let fuzz_dir = repo_root().join("fuzz");
    for target in targets {
        if !TARGETS.contains(target) {
            bail!("no fuzz target {target} (known: {})", TARGETS.join(", "));
        }
        let work = repo_root().join("target/fuzz/corpus").join(target);
        let artifacts = repo_root().join("target/fuzz/artifacts").join(target);
        // libFuzzer stops on a corpus folder that does not exist (a target
        // with no committed seeds: git keeps no empty folders).
        let seeds = fuzz_dir.join("corpus").join(target);
        for dir in [&work, &artifacts, &seeds] {
            fs::create_dir_all(dir)?;
        }
        eprintln!("== fuzz {target} ({seconds} s)");
        let sanitizer = match sanitizer {
            Sanitizer::Address => "address",
            Sanitizer::None => "none",
        };
        cmd::run(
            Command::new("cargo")
                .args(["+nightly", "fuzz", "run", "--sanitizer", sanitizer, "--fuzz-dir"])
                .arg(&fuzz_dir)
                .arg(target)
                // New inputs go to the first folder; the committed seeds
                // are read only.
                .arg(&work)
                .arg(&seeds)
                .arg("--")
                .arg(format!("-max_total_time={seconds}"))
                .arg(format!("-artifact_prefix={}/", artifacts.display()))
                .arg("-rss_limit_mb=4096")
                .arg("-print_final_stats=1")
                .current_dir(repo_root()),
        )
        .with_context(|| {
            format!(
                "fuzz target {target} found a crash: the input is in {}; fix it with a regression test",
                artifacts.display()
            )
        })?;
    }
    Ok(())
}

/// Most seeds kept per target, and most bytes per seed.
const MAX_SEEDS: usize = 40;
const MAX_SEED_BYTES: usize = 16 * 1024;

/// Cuts seeds from every `capture.bin` under `dir` into fuzz/corpus.
fn seed(dir: &Path) -> Result<()> {
    let mut recordings = Vec::new();
    find(dir, "capture.bin", &mut recordings);
    if recordings.is_empty() {
        bail!(
            "no capture.bin under {}: run `MCPTAP_E2E_RECORD=1 cargo xtask test` first",
            dir.display()
        );
    }
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();
    for path in &recordings {
        let data = fs::read(path)?;
        let records = split_records(&data);
        // Records: runs of consecutive records, as recorded.
        for window in records.chunks(24) {
            let mut s = Vec::new();
            for r in window {
                s.extend_from_slice(&(r.len() as u32).to_ne_bytes());
                s.extend_from_slice(r);
            }
            if s.len() <= 4 * MAX_SEED_BYTES {
                seeds.push(("records", s));
            }
        }
        // Stream bytes by channel: stdio for framing and JSON-RPC, sockets
        // and TLS plaintext for HTTP and event streams.
        for r in &records {
            let Some((chan, payload)) = chunk_payload(r) else {
                continue;
            };
            let payload = &payload[..payload.len().min(MAX_SEED_BYTES)];
            match chan {
                channel::STDIO => {
                    seeds.push(("ndjson", [&[7u8][..], payload].concat()));
                    for line in payload.split(|&b| b == b'\n').filter(|l| l.len() > 2) {
                        seeds.push(("jsonrpc", [&[0u8][..], line].concat()));
                        seeds.push(("mask", line.to_vec()));
                    }
                }
                _ => {
                    seeds.push(("http", [&[0b1010_1010u8][..], payload].concat()));
                    if let Some(at) = find_subslice(payload, b"data: ") {
                        seeds.push(("sse", [&[9u8][..], &payload[at..]].concat()));
                    }
                }
            }
        }
    }
    let mut written = 0;
    for target in TARGETS {
        let dir = repo_root().join("fuzz/corpus").join(target);
        fs::create_dir_all(&dir)?;
        // Distinct seeds, smallest first, at most MAX_SEEDS.
        let unique: BTreeSet<(usize, Vec<u8>)> = seeds
            .iter()
            .filter(|(t, _)| t == target)
            .map(|(_, s)| (s.len(), s.clone()))
            .collect();
        let step = (unique.len() / MAX_SEEDS).max(1);
        for (i, (_, s)) in unique.iter().step_by(step).take(MAX_SEEDS).enumerate() {
            fs::write(dir.join(format!("e2e-{i:02}")), s)?;
            written += 1;
        }
    }
    eprintln!(
        "fuzz: {written} seeds from {} recordings into fuzz/corpus",
        recordings.len()
    );
    Ok(())
}

fn find(dir: &Path, name: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            find(&p, name, out);
        } else if p.file_name().is_some_and(|n| n == name) {
            out.push(p);
        }
    }
}

fn split_records(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let Some(r) = data.get(4..4 + len) else { break };
        out.push(r);
        data = &data[4 + len..];
    }
    out
}

/// A chunk record's channel and payload (`mcptap_common::ChunkHeader`).
fn chunk_payload(r: &[u8]) -> Option<(u8, &[u8])> {
    if r.len() < CHUNK_HEADER_LEN || u32::from_ne_bytes(r[..4].try_into().ok()?) != record::CHUNK {
        return None;
    }
    let len = u32::from_ne_bytes(r[4..8].try_into().ok()?) as usize;
    let chan = r[54];
    Some((chan, r.get(CHUNK_HEADER_LEN..CHUNK_HEADER_LEN + len)?))
}

fn find_subslice(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
