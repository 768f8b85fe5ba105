//! Tells the compiler which architecture the programs run on (`args.rs`
//! reads saved registers, whose layout is per architecture), and rebuilds
//! the object when bpf-linker changes.
fn main() -> anyhow::Result<()> {
    aya_build::emit_bpf_target_arch_cfg()?;
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run `cargo xtask setup`"),
    }
    Ok(())
}
