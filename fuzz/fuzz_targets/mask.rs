//! Secret masking of free text, JSON (and JSON inside strings) and command
//! lines: never a panic, and masking twice changes nothing more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcptap::mask;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let once = mask::mask_text(&text).into_owned();
    assert_eq!(mask::mask_text(&once), once, "masking is idempotent");
    if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(data) {
        mask::mask_json(&mut v);
        let masked = v.clone();
        mask::mask_json(&mut v);
        assert_eq!(v, masked, "masking JSON is idempotent");
    }
    let args: Vec<String> = text.split(' ').map(str::to_string).collect();
    let _ = mask::mask_cmdline(&args);
});
