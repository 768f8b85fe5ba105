//! An MCP server on the official Rust SDK, over HTTPS (rustls, HTTP/1.1):
//! tools `add`, `refuse`, `whoami`.
//!
//! Usage: rmcp-server PORT CERT KEY NAME
use std::{net::SocketAddr, sync::Arc};

use rmcp::{
    ServerHandler,
    handler::server::wrapper::Parameters,
    model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig},
    schemars, tool, tool_handler, tool_router,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct Add {
    a: f64,
    b: f64,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct Refuse {
    reason: String,
}

#[derive(Clone)]
struct Tools {
    name: String,
}

#[tool_router]
impl Tools {
    #[tool(description = "Add two numbers")]
    fn add(&self, Parameters(Add { a, b }): Parameters<Add>) -> String {
        (a + b).to_string()
    }

    #[tool(description = "Always refuses")]
    fn refuse(&self, Parameters(Refuse { reason }): Parameters<Refuse>) -> CallToolResult {
        CallToolResult::error(vec![ContentBlock::text(format!("refused: {reason}"))])
    }

    #[tool(description = "The server's process id")]
    fn whoami(&self) -> String {
        std::process::id().to_string()
    }
}

#[tool_handler]
impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(self.name.clone(), "1.0.0"))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, port, cert, key, name] = args.as_slice() else {
        anyhow::bail!("usage: rmcp-server PORT CERT KEY NAME");
    };
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("crypto provider"))?;
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(cert)?))
        .collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(std::fs::File::open(key)?))?
        .ok_or_else(|| anyhow::anyhow!("no key"))?;
    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // HTTP/1.1, what mcptap parses (HTTP/2 is counted and left alone).
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];

    let name = name.clone();
    let service: StreamableHttpService<Tools, LocalSessionManager> = StreamableHttpService::new(
        move || Ok(Tools { name: name.clone() }),
        Default::default(),
        StreamableHttpServerConfig::default(),
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    eprintln!("rmcp-server (pid {}) on https://{addr}/mcp", std::process::id());
    axum_server::bind_rustls(addr, axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls)))
        .serve(router.into_make_service())
        .await?;
    Ok(())
}
