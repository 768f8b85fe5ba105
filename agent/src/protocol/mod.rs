//! Protocol stage: framing of the transports and JSON-RPC parsing.
//!
//! - `ndjson`: the stdio transport's newline framing;
//! - `jsonrpc`: messages and the MCP facts skimmed from them;
//! - `truncated`: what can still be read from a message longer than the cap.

pub mod jsonrpc;
pub mod ndjson;
mod truncated;
