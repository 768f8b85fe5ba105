//! Newline framing of stdio streams: any bytes, cut anywhere, with gaps.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcptap::{
    capture::{Channel, Io},
    protocol::ndjson::{FramerOutput, LineFramer},
    reassembly::{StreamBytes, StreamId},
};

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let stream = StreamId {
        tgid: 1,
        channel: Channel::Stdio(0),
        io: Io::Read,
    };
    // Small limits reach the oversized-line paths.
    let mut framer = LineFramer::new(64 + usize::from(control));
    let mut out: Vec<FramerOutput> = Vec::new();
    let step = usize::from(control % 17) + 1;
    for (i, piece) in bytes.chunks(step).enumerate() {
        framer.push(
            &StreamBytes {
                stream,
                ts_ns: i as u64,
                data: piece,
                gap_before: control & 0x80 != 0 && i % 5 == 4,
                discovery: false,
            },
            &mut out,
        );
    }
    let _ = framer.pending();
});
