//! What a file carries, for TLS capture and as a program: any bytes, as a
//! shared library and as an executable. A file is the choice of the
//! process that maps or runs it (and of its user): crafted section tables,
//! symbol tables claiming gigabytes, truncated code. Never a panic, never
//! a probe outside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcptap::capture::tls::target::{FileKind, Finding, profile_bytes};

fuzz_target!(|data: &[u8]| {
    for kind in FileKind::ALL {
        if let Finding::Tls(t) = profile_bytes(data, kind).finding {
            for p in &t.probes {
                assert!(p.offset < data.len() as u64, "a probe outside the file: {p:?}");
            }
        }
    }
});
