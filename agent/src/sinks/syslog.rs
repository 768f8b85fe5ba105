//! Syslog sink: RFC 5424 messages over UDP (RFC 5426), TCP or TLS (RFC 6587
//! octet counting, RFC 5425).
//!
//! `<PRI>1 TIMESTAMP HOSTNAME mcptap PROCID MSGID - MSG`: MSGID is the
//! event type (`mcp.operation`, `mcp.alert`, ...), MSG the event's JSON.
//! Severity: warning for alerts, notice for failed operations, info
//! otherwise. The facility is configurable (local0 by default).

use std::{os::fd::AsRawFd, sync::Arc};

use serde_json::Value;
use tokio::{
    io::AsyncWriteExt,
    net::{TcpStream, UdpSocket},
};
use tokio_rustls::{TlsConnector, client::TlsStream, rustls};

use super::{
    config::{SyslogOptions, SyslogProtocol},
    delivery::{DeliveryError, Transport},
    filter::lookup,
    metrics::Metrics,
    spool::Batch,
};

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

pub struct SyslogTransport {
    sink: Arc<str>,
    opts: SyslogOptions,
    tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
    conn: Option<Conn>,
    procid: String,
    metrics: Arc<Metrics>,
}

const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl SyslogTransport {
    pub fn new(sink: Arc<str>, opts: &SyslogOptions, metrics: Arc<Metrics>) -> anyhow::Result<SyslogTransport> {
        let tls = match opts.protocol {
            SyslogProtocol::Tls => Some(tls_connector(opts)?),
            _ => None,
        };
        Ok(SyslogTransport {
            sink,
            opts: opts.clone(),
            tls,
            conn: None,
            procid: std::process::id().to_string(),
            metrics,
        })
    }

    async fn connect(&mut self) -> Result<(), DeliveryError> {
        let retry =
            |what: &str, e: &dyn std::fmt::Display| DeliveryError::Retry(format!("{what} {}: {e}", self.opts.address));
        let conn = match self.opts.protocol {
            SyslogProtocol::Udp => {
                let socket = UdpSocket::bind(if self.opts.address.starts_with('[') {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                })
                .await
                .map_err(|e| retry("udp socket for", &e))?;
                socket
                    .connect(&self.opts.address)
                    .await
                    .map_err(|e| retry("cannot reach", &e))?;
                Conn::Udp(socket)
            }
            SyslogProtocol::Tcp | SyslogProtocol::Tls => {
                let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.opts.address))
                    .await
                    .map_err(|_| retry("timed out connecting to", &"10 s"))?
                    .map_err(|e| retry("cannot connect to", &e))?;
                let _ = tcp.set_nodelay(true);
                match &self.tls {
                    None => Conn::Tcp(tcp),
                    Some((connector, name)) => {
                        let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp))
                            .await
                            .map_err(|_| retry("TLS handshake timed out with", &"10 s"))?
                            .map_err(|e| retry("TLS handshake failed with", &e))?;
                        Conn::Tls(Box::new(tls))
                    }
                }
            }
        };
        self.conn = Some(conn);
        Ok(())
    }
}

impl Transport for SyslogTransport {
    async fn send(&mut self, batch: &Batch) -> Result<(), DeliveryError> {
        // A stream the receiver closed still takes writes (into the kernel's
        // buffer, then lost): notice the close first and reconnect.
        if let Some(Conn::Tcp(s)) = &self.conn
            && peer_closed(s)
        {
            self.conn = None;
        }
        if let Some(Conn::Tls(s)) = &self.conn
            && peer_closed(s.get_ref().0)
        {
            self.conn = None;
        }
        if self.conn.is_none() {
            self.connect().await?;
        }
        let result = match self.conn.as_mut() {
            Some(Conn::Udp(socket)) => {
                for line in &batch.lines {
                    let Some(msg) = fit_datagram(line, self.opts.max_datagram, |l| format(&self.opts, &self.procid, l))
                    else {
                        self.metrics
                            .events_dropped
                            .with_label_values(&[&*self.sink, "too_large"])
                            .inc();
                        continue;
                    };
                    if let Err(e) = socket.send(msg.as_bytes()).await {
                        self.conn = None;
                        return Err(DeliveryError::Retry(format!("udp send to {}: {e}", self.opts.address)));
                    }
                }
                Ok(())
            }
            Some(Conn::Tcp(stream)) => write_framed(stream, &self.opts, &self.procid, batch).await,
            Some(Conn::Tls(stream)) => write_framed(stream.as_mut(), &self.opts, &self.procid, batch).await,
            None => Ok(()),
        };
        if let Err(e) = result {
            self.conn = None;
            return Err(DeliveryError::Retry(format!("sending to {}: {e}", self.opts.address)));
        }
        Ok(())
    }
}

/// RFC 6587 octet counting: `LEN SP MSG`, whatever the message holds.
async fn write_framed<W: tokio::io::AsyncWrite + Unpin>(
    out: &mut W,
    opts: &SyslogOptions,
    procid: &str,
    batch: &Batch,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    for line in &batch.lines {
        let msg = format(opts, procid, line);
        buf.extend_from_slice(msg.len().to_string().as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(msg.as_bytes());
    }
    out.write_all(&buf).await?;
    out.flush().await
}

/// A UDP message within `max`: the event, else the event without its
/// payload, else nothing.
fn fit_datagram(line: &str, max: usize, format: impl Fn(&str) -> String) -> Option<String> {
    let msg = format(line);
    if msg.len() <= max {
        return Some(msg);
    }
    let mut event: Value = serde_json::from_str(line).ok()?;
    event.as_object_mut()?.remove("payload")?;
    let msg = format(&event.to_string());
    (msg.len() <= max).then_some(msg)
}

/// One RFC 5424 message for one event (a JSON line).
pub fn format(opts: &SyslogOptions, procid: &str, line: &str) -> String {
    let event: Option<Value> = serde_json::from_str(line).ok();
    let text = |f: &str| event.as_ref().and_then(|e| lookup(e, f)).and_then(Value::as_str);
    let kind = text("event.type").unwrap_or("mcp.event");
    let severity = if kind == "mcp.alert" {
        4 // warning
    } else if text("status").is_some_and(|s| s != "ok") {
        5 // notice
    } else {
        6 // informational
    };
    let pri = u32::from(opts.facility) * 8 + severity;
    // RFC 5424 allows at most six fractional digits.
    let timestamp = text("time")
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(chrono::Utc::now, |t| t.with_timezone(&chrono::Utc))
        .format("%Y-%m-%dT%H:%M:%S%.6fZ");
    let host = header_field(text("host.name").unwrap_or("-"), 255);
    format!(
        "<{pri}>1 {timestamp} {host} mcptap {procid} {} - {line}",
        header_field(kind, 32)
    )
}

/// Header fields are printable US-ASCII without spaces, bounded.
fn header_field(s: &str, max: usize) -> String {
    let s: String = s.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if s.is_empty() { "-".into() } else { s }
}

/// Whether the receiver closed a connection we only ever write to.
fn peer_closed(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    // SAFETY: a valid socket and a one-byte buffer; MSG_PEEK leaves any data.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            byte.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 0 || (n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock)
}

fn tls_connector(opts: &SyslogOptions) -> anyhow::Result<(TlsConnector, rustls::pki_types::ServerName<'static>)> {
    let mut roots = rustls::RootCertStore::empty();
    match &opts.ca_file {
        Some(ca) => {
            let pem = std::fs::read(ca).map_err(|e| anyhow::anyhow!("cannot read ca_file {}: {e}", ca.display()))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| anyhow::anyhow!("ca_file {}: {e}", ca.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| anyhow::anyhow!("ca_file {}: {e}", ca.display()))?;
            }
            if roots.is_empty() {
                anyhow::bail!("ca_file {} holds no certificate", ca.display());
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = match &opts.server_name {
        Some(n) => n.clone(),
        None => opts
            .address
            .rsplit_once(':')
            .map_or(opts.address.as_str(), |(h, _)| h)
            .trim_matches(['[', ']'])
            .to_string(),
    };
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|_| anyhow::anyhow!("`{host}` is not a valid TLS server name (set server_name)"))?;
    Ok((TlsConnector::from(Arc::new(config)), name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::config::DeliveryOptions;

    fn opts() -> SyslogOptions {
        SyslogOptions {
            address: "127.0.0.1:514".into(),
            protocol: SyslogProtocol::Udp,
            ca_file: None,
            server_name: None,
            facility: 16,
            max_datagram: 65_000,
            delivery: DeliveryOptions::default(),
        }
    }

    #[test]
    fn formats_rfc5424() {
        let line = r#"{"event.type":"mcp.operation","time":"2026-11-22T08:00:00.123456789Z","host":{"name":"node 1"},"status":"tool_error"}"#;
        let msg = format(&opts(), "77", line);
        assert_eq!(
            msg,
            format!("<133>1 2026-11-22T08:00:00.123456Z node1 mcptap 77 mcp.operation - {line}")
        );
        let alert = r#"{"event.type":"mcp.alert","time":"2026-11-22T08:00:00Z"}"#;
        assert!(format(&opts(), "1", alert).starts_with("<132>1 2026-11-22T08:00:00.000000Z - mcptap 1 mcp.alert - "));
        let ok = r#"{"event.type":"mcp.operation","status":"ok","time":"2026-11-22T08:00:00Z"}"#;
        assert!(format(&opts(), "1", ok).starts_with("<134>1 "));
    }

    #[test]
    fn oversized_datagrams_lose_the_payload_first() {
        let f = |l: &str| format(&opts(), "1", l);
        let big = format!(
            r#"{{"event.type":"mcp.operation","payload":{{"x":"{}"}}}}"#,
            "a".repeat(2000)
        );
        let msg = fit_datagram(&big, 500, f).unwrap();
        assert!(msg.len() <= 500 && !msg.contains("payload"), "{msg}");
        let huge = format!(
            r#"{{"event.type":"mcp.operation","server":{{"x":"{}"}}}}"#,
            "a".repeat(2000)
        );
        assert!(fit_datagram(&huge, 500, f).is_none());
        let small = r#"{"event.type":"mcp.operation"}"#;
        assert!(fit_datagram(small, 500, f).unwrap().ends_with(small));
    }
}
