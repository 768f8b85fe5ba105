//! The local API from the other side: `mcptap top` and `mcptap tail` talk
//! HTTP/1.1 to the running agent over its unix socket.

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Empty};
use hyper::{Request, body::Bytes};
use hyper_util::rt::TokioIo;
use serde_json::Value;

pub struct ApiClient {
    socket: PathBuf,
}

impl ApiClient {
    pub fn new(socket: &Path) -> ApiClient {
        ApiClient {
            socket: socket.to_path_buf(),
        }
    }

    async fn connect(&self) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    " (is the agent running? `mcptap run` serves it; --api-socket names another)"
                }
                std::io::ErrorKind::PermissionDenied => " (the socket is the agent's user's only: run as root)",
                _ => "",
            };
            anyhow::anyhow!("cannot reach the agent at {}: {e}{hint}", self.socket.display())
        })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn request(path_and_query: &str) -> anyhow::Result<Request<Empty<Bytes>>> {
        Ok(Request::get(path_and_query)
            .header(hyper::header::HOST, "mcptap")
            .body(Empty::new())?)
    }

    /// `GET` a JSON document.
    pub async fn get(&self, path_and_query: &str) -> anyhow::Result<Value> {
        let mut sender = self.connect().await?;
        let response = sender.send_request(Self::request(path_and_query)?).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            anyhow::bail!("{path_and_query}: HTTP {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// Follows a server-sent event stream: `opened` once the agent has
    /// accepted it (events from then on reach us), then `each` with every
    /// event's data, until the agent closes it.
    pub async fn stream(
        &self,
        path_and_query: &str,
        opened: impl FnOnce(),
        mut each: impl FnMut(&str, &str),
    ) -> anyhow::Result<()> {
        let mut sender = self.connect().await?;
        let response = sender.send_request(Self::request(path_and_query)?).await?;
        if !response.status().is_success() {
            anyhow::bail!("{path_and_query}: HTTP {}", response.status());
        }
        opened();
        let mut body = response.into_body();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            let Some(data) = frame.data_ref() else { continue };
            buf.extend_from_slice(data);
            // Events end with a blank line.
            while let Some(end) = find(&buf, b"\n\n") {
                let block: Vec<u8> = buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block);
                let mut name = "message";
                let mut data = String::new();
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = if v.trim() == "lagged" { "lagged" } else { "message" };
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if !data.is_empty() {
                    each(name, &data);
                }
            }
        }
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `?a=1&b=x` from pairs (values percent-encoded).
pub fn query_string(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
