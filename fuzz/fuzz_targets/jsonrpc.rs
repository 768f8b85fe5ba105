//! JSON-RPC classification of one frame, and the scanner that reads what
//! it can from the prefix and tail of a frame too large to keep whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcptap::protocol::jsonrpc;

fuzz_target!(|data: &[u8]| {
    let _ = jsonrpc::parse(data, true);
    let _ = jsonrpc::parse(data, false);
    if let Some((&cut, bytes)) = data.split_first() {
        let at = usize::from(cut).min(bytes.len());
        let (prefix, tail) = bytes.split_at(at);
        let _ = jsonrpc::parse_truncated(prefix, tail, bytes.len() + usize::from(cut) * 1000);
    }
});
