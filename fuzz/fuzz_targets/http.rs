//! HTTP/1.1 in both directions of a connection (heads, chunked and gzip
//! bodies, event streams), cut anywhere, with gaps and a close.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcptap::{
    capture::Io,
    protocol::http::{HttpConn, HttpEvent},
};

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let mut conn = HttpConn::new(4096);
    let mut out: Vec<HttpEvent> = Vec::new();
    // Requests and responses interleaved by the control byte's bits.
    let step = usize::from(control % 31) + 1;
    for (i, piece) in bytes.chunks(step).enumerate() {
        let io = if (control >> (i % 8)) & 1 == 0 {
            Io::Read
        } else {
            Io::Write
        };
        conn.push(io, piece, i as u64, i % 13 == 12, &mut out);
        out.clear();
    }
    conn.close(u64::MAX, &mut out);
});
