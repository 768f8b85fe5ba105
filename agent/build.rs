//! Builds the kernel programs (ebpf/) for the BPF target with the nightly
//! toolchain and bpf-linker — two objects, `mcptap` (kernels with bpf_loop)
//! and `mcptap-compat` (5.10 to 5.16), see ebpf/src/programs.rs — so that
//! `mcptap` embeds them and ships as one binary; and embeds the dashboard's files (ui/dist, built by `cargo
//! xtask` with npm). `cargo xtask setup` installs what this needs.
use std::{fmt::Write as _, path::Path};

fn main() -> anyhow::Result<()> {
    embed_ui()?;
    let ebpf = aya_build::Package {
        name: "mcptap-ebpf",
        root_dir: "../ebpf",
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::default())
}

/// `ui_assets.rs`: `FILES: &[(path, bytes)]` of every file in ui/dist. A
/// build without it (plain `cargo build`) gets a page saying how to build
/// the dashboard.
fn embed_ui() -> anyhow::Result<()> {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut files = Vec::new();
    collect(&dist, &dist, &mut files)?;
    files.sort();
    let out = Path::new(&std::env::var("OUT_DIR")?).join("ui_assets.rs");
    let mut code = String::from("pub static FILES: &[(&str, &[u8])] = &[\n");
    if files.is_empty() {
        code.push_str(
            "    (\"index.html\", b\"<!doctype html><title>mcptap</title><p>The dashboard was not built into this binary: build it with <code>cargo xtask build</code> (needs npm).\"),\n",
        );
    }
    for (rel, abs) in &files {
        println!("cargo:rerun-if-changed={}", abs.display());
        writeln!(code, "    ({rel:?}, include_bytes!({:?})),", abs.display().to_string())?;
    }
    code.push_str("];\n");
    std::fs::write(out, code)?;
    Ok(())
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, std::path::PathBuf)>) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            collect(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root)?.to_string_lossy().replace('\\', "/");
            out.push((rel, path.canonicalize()?));
        }
    }
    Ok(())
}
