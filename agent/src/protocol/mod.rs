//! Protocol stage: framing of the transports and JSON-RPC parsing.
//!
//! - `ndjson`: the stdio transport's newline framing;
//! - `http`: HTTP/1.1 framing of a connection (requests, responses,
//!   chunked and compressed bodies), with `body` and `sse` (server-sent
//!   events) under it;
//! - `jsonrpc`: messages and the MCP facts skimmed from them;
//! - `bound`: the length bounds every kept name and id is cut to;
//! - `truncated`: what can still be read from a message longer than the cap.

pub mod body;
pub mod bound;
pub mod http;
pub mod jsonrpc;
pub mod ndjson;
pub mod sse;
mod truncated;
