//! Server-sent event streams, cut anywhere.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcptap::protocol::sse::SseParser;

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let mut parser = SseParser::new(256 + usize::from(control) * 4);
    let mut out = Vec::new();
    for piece in bytes.chunks(usize::from(control % 23) + 1) {
        parser.feed(piece, &mut out);
    }
    let _ = parser.pending();
});
