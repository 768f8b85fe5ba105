//! An MCP client on the official Rust SDK, over HTTPS (rustls, HTTP/1.1):
//! initialize, `whoami`, CALLS × `add`, `refuse`. Prints a JSON report.
//!
//! Usage: rmcp-client URL CA NAME CALLS
use std::sync::Arc;

use rmcp::{
    ServiceExt,
    model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation},
    transport::{StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig},
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, ca, name, calls] = args.as_slice() else {
        anyhow::bail!("usage: rmcp-client URL CA NAME CALLS");
    };
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("crypto provider"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(ca)?)) {
        roots.add(cert?)?;
    }
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(Arc::new(roots))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let http = reqwest::Client::builder().use_preconfigured_tls(tls).build()?;
    let transport =
        StreamableHttpClientTransport::with_client(http, StreamableHttpClientTransportConfig::with_uri(url.as_str()));
    let client = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new(name.clone(), "1.0.0"),
    )
    .serve(transport)
    .await?;
    let mut outcomes = serde_json::Map::new();
    let mut note = |key: &str, error: bool| {
        let k = format!("{key}:{}", if error { "tool_error" } else { "ok" });
        let n = outcomes.get(&k).and_then(|v| v.as_u64()).unwrap_or(0) + 1;
        outcomes.insert(k, n.into());
    };
    let who = client.call_tool(CallToolRequestParams::new("whoami")).await?;
    note("whoami", who.is_error == Some(true));
    let server_pid: u64 = who
        .content
        .first()
        .and_then(|c| c.as_text())
        .and_then(|t| t.text.parse().ok())
        .unwrap_or(0);
    for i in 0..calls.parse::<u32>()? {
        let args = serde_json::json!({"a": i, "b": 2})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let r = client
            .call_tool(CallToolRequestParams::new("add").with_arguments(args))
            .await?;
        note("add", r.is_error == Some(true));
    }
    let args = serde_json::json!({"reason": "no"})
        .as_object()
        .cloned()
        .unwrap_or_default();
    let r = client
        .call_tool(CallToolRequestParams::new("refuse").with_arguments(args))
        .await?;
    note("refuse", r.is_error == Some(true));
    client.cancel().await?;
    println!(
        "{}",
        serde_json::json!({"client_pid": std::process::id(), "server_pid": server_pid, "outcomes": outcomes})
    );
    Ok(())
}
