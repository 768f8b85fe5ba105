//! Stock distribution kernels as test hosts: mcptap must run on the
//! kernels its users run, not only on the one of the machine at hand.
//!
//! - `kernels`: Debian's stock kernels, fetched by package name from
//!   Debian's archive (the current ABI resolved at run time) and cached;
//! - `initramfs`: a busybox initramfs that mounts this host's root
//!   read-only over virtio-fs and runs one command in it;
//! - `qemu`: boots a kernel with that initramfs under QEMU (software
//!   emulation: the hypervisor here cannot boot stock kernels), with a
//!   timeout, and collects the command's output and exit code.
//!
//! `cargo xtask test` runs the end-to-end smoke suite inside each kernel of
//! [`MATRIX`]; `cargo xtask test --kernel 6.1` runs the whole end-to-end
//! suite under one of them; `cargo xtask vm --kernel 6.1 -- CMD` runs any
//! command in one.

pub mod initramfs;
pub mod kernels;
pub mod qemu;
pub mod systemd;

/// A kernel of the test matrix: Debian's `cloud` flavour (small, virtio
/// drivers, no 9p: the host's root is shared with virtio-fs).
#[derive(Debug, Clone, Copy)]
pub struct KernelSpec {
    /// What `--kernel` accepts and reports say: the upstream series.
    pub name: &'static str,
    /// Debian release it ships with.
    pub debian: &'static str,
    /// Debian suites searched for it (the security suite first when it
    /// carries the series: it has the newest ABI).
    pub suites: &'static [(&'static str, &'static str)],
    /// The version of `linux-image-cloud-amd64` to pick starts with this.
    pub version_prefix: &'static str,
}

const DEBIAN: &str = "http://deb.debian.org/debian";
const DEBIAN_SECURITY: &str = "http://deb.debian.org/debian-security";

/// Debian 11, 12 and 13's kernels: 5.10 (like Amazon Linux 2's), 6.1 (like
/// Amazon Linux 2023's and COS's), 6.12.
pub const MATRIX: &[KernelSpec] = &[
    KernelSpec {
        name: "5.10",
        debian: "bullseye",
        // bullseye-security no longer answers for 5.10; main has 5.10.223.
        suites: &[(DEBIAN, "bullseye")],
        version_prefix: "5.10.",
    },
    KernelSpec {
        name: "6.1",
        debian: "bookworm",
        suites: &[(DEBIAN_SECURITY, "bookworm-security"), (DEBIAN, "bookworm")],
        version_prefix: "6.1.",
    },
    KernelSpec {
        name: "6.12",
        debian: "trixie",
        suites: &[(DEBIAN_SECURITY, "trixie-security"), (DEBIAN, "trixie")],
        version_prefix: "6.12.",
    },
];

pub fn spec(name: &str) -> anyhow::Result<KernelSpec> {
    MATRIX.iter().copied().find(|k| k.name == name).ok_or_else(|| {
        anyhow::anyhow!(
            "no kernel {name} in the matrix (known: {})",
            MATRIX.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
        )
    })
}
