//! Builds the kernel programs (ebpf/) for the BPF target with the nightly
//! toolchain and bpf-linker, so that `mcptap` embeds them and ships as one
//! binary. `cargo xtask setup` installs what this needs.
fn main() -> anyhow::Result<()> {
    let ebpf = aya_build::Package {
        name: "mcptap-ebpf",
        root_dir: "../ebpf",
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::default())
}
