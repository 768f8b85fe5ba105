//! Whether a process that was discovered by its first bytes speaks MCP.
//!
//! The first message a discovered server reads decides. It is MCP when it
//! is an `initialize` stating an MCP protocol version, when its `_meta`
//! carries the `io.modelcontextprotocol/` keys of the 2026-07-28 stateless
//! protocol, or, for a server that was already running when the agent
//! started, when it is a request only an MCP client sends.
//!
//! Responses and the notifications both sides send (progress, cancelled)
//! do not qualify: a client reading its server's output must not be taken
//! for a server.

use crate::protocol::jsonrpc::{Body, Message};

/// What only an MCP client sends to a server, all protocol generations.
const MCP_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "subscriptions/listen",
    "tasks/get",
    "tasks/list",
    "tasks/result",
    "tasks/cancel",
    "notifications/initialized",
];

pub fn looks_like_mcp(msg: &Message) -> bool {
    let method = match &msg.body {
        Body::Request { method, .. } | Body::Notification { method } => method.as_str(),
        // A server reads responses only to its own requests: not a start.
        Body::Response { .. } => return false,
    };
    if msg.facts.mcp_meta {
        return true;
    }
    if method == "initialize" {
        // LSP's initialize has a clientInfo too, but no protocolVersion.
        return msg.facts.protocol_version.is_some();
    }
    MCP_METHODS.contains(&method)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::jsonrpc::parse;

    fn first(s: &str) -> Message {
        parse(s.as_bytes(), false).messages.remove(0)
    }

    #[test]
    fn mcp_starts() {
        assert!(looks_like_mcp(&first(
            r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","clientInfo":{"name":"x","version":"1"},"capabilities":{}}}"#
        )));
        assert!(looks_like_mcp(&first(
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"t"}}"#
        )));
        assert!(looks_like_mcp(&first(
            r#"{"jsonrpc":"2.0","id":1,"method":"custom/x","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#
        )));
    }

    #[test]
    fn other_json_rpc_is_not_mcp() {
        // An LSP-style or any other JSON-RPC peer.
        assert!(!looks_like_mcp(&first(
            r#"{"jsonrpc":"2.0","id":1,"method":"textDocument/hover","params":{}}"#
        )));
        assert!(!looks_like_mcp(&first(
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"rootUri":null}}"#
        )));
        assert!(!looks_like_mcp(&first(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#)));
        // A client reading its server's progress is not a server.
        assert!(!looks_like_mcp(&first(
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}"#
        )));
    }
}
