//! The bytes that name a connection's host, as the kernel copies them from
//! a server process's sockets (up to 512, cut anywhere): a first write (TLS
//! ClientHello, HTTP request head) and DNS answers. Never a panic; a name
//! found is a host name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcptap::effects::naming;

fuzz_target!(|data: &[u8]| {
    let bytes = &data[..data.len().min(512)];
    if let Some((host, _)) = naming::hello_host(bytes) {
        assert!(!host.is_empty() && host.len() <= 253, "{host:?}");
        assert!(host.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b)), "{host:?}");
    }
    if let Ok(answers) = naming::dns_answers(bytes) {
        assert!(answers.iter().all(|(_, name)| !name.is_empty() && name.len() <= 253));
    }
});
