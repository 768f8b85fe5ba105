//! HTTP(S) collector sink: each batch is one POST of NDJSON (one event per
//! line, `Content-Type: application/x-ndjson`). `X-Mcptap-Batch` names the
//! batch by its place in the spool: the same value on a retry, so a
//! collector can tell a repeat from new events.

use std::path::Path;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use super::{
    config::HttpOptions,
    delivery::{DeliveryError, Transport, http_status},
    spool::Batch,
};

pub struct HttpTransport {
    client: reqwest::Client,
    url: String,
}

impl HttpTransport {
    pub fn new(opts: &HttpOptions) -> anyhow::Result<HttpTransport> {
        Ok(HttpTransport {
            client: client(&opts.headers, opts.ca_file.as_deref(), opts.timeout)?,
            url: opts.url.clone(),
        })
    }
}

impl Transport for HttpTransport {
    async fn send(&mut self, batch: &Batch) -> Result<(), DeliveryError> {
        let mut body = String::with_capacity(batch.lines.iter().map(|l| l.len() + 1).sum());
        for line in &batch.lines {
            body.push_str(line);
            body.push('\n');
        }
        let request = self
            .client
            .post(&self.url)
            .header(CONTENT_TYPE, "application/x-ndjson")
            .header("X-Mcptap-Batch", batch.start.to_string())
            .body(body);
        post(request).await
    }
}

/// Sends and classifies; errors never carry the URL (its query could hold
/// a token).
pub async fn post(request: reqwest::RequestBuilder) -> Result<(), DeliveryError> {
    let response = request
        .send()
        .await
        .map_err(|e| DeliveryError::Retry(error_chain(&e.without_url())))?;
    let status = response.status().as_u16();
    let body = if response.status().is_success() {
        String::new()
    } else {
        response.text().await.unwrap_or_default()
    };
    http_status(status, &body)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// A client with the sink's headers and, for HTTPS, the system's roots
/// plus `ca_file`.
pub fn client(
    headers: &[(String, String)],
    ca_file: Option<&Path>,
    timeout: std::time::Duration,
) -> anyhow::Result<reqwest::Client> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let name = HeaderName::try_from(name.as_str()).map_err(|_| anyhow::anyhow!("`{name}` is not a header name"))?;
        let mut value = HeaderValue::try_from(value.as_str())
            .map_err(|_| anyhow::anyhow!("the value of header `{name}` is not a valid header value"))?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    let mut builder = reqwest::Client::builder()
        .default_headers(map)
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("mcptap/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).map_err(|e| anyhow::anyhow!("cannot read ca_file {}: {e}", ca.display()))?;
        for cert in
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| anyhow::anyhow!("ca_file {}: {e}", ca.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| anyhow::anyhow!("HTTP client: {e}"))
}
