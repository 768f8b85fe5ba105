//! Ring buffer records, as the kernel writes them, in a recording's layout
//! (`run --record`: a u32 length, then the record): decoding and every
//! stage after it, through a pipeline that talks to no kernel and sees no
//! processes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcptap::{event::Event, pipeline::EventSink};

struct Discard;

impl EventSink for Discard {
    fn send(&mut self, event: &Event) {
        // Every event serialises.
        serde_json::to_string(event).expect("events serialise");
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = mcptap::run::replay_records(data, true, "/nonexistent".into(), Box::new(Discard));
});
