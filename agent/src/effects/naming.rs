//! The host name behind a connection's address: what the process asked a
//! DNS server for (the answers it read on a socket connected to port 53),
//! or what it named in its first bytes on the connection (a TLS
//! ClientHello's server name, an HTTP request's `Host`, a proxy
//! `CONNECT`'s target).
//!
//! The kernel copies at most 512 bytes of each: a ClientHello can be cut
//! before its server name (then there is none), and the parsers here stop
//! at the cut instead of failing.

use std::net::IpAddr;

use serde::Serialize;

/// Where a connection's host name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostFrom {
    /// The process resolved it (a DNS answer it read).
    Dns,
    /// The server name of its TLS ClientHello.
    Sni,
    /// Its HTTP request's `Host` (or a proxy `CONNECT`'s target).
    Http,
}

impl HostFrom {
    pub fn as_str(self) -> &'static str {
        match self {
            HostFrom::Dns => "dns",
            HostFrom::Sni => "sni",
            HostFrom::Http => "http",
        }
    }
}

/// Longest DNS name (RFC 1035).
const MAX_NAME: usize = 253;

/// A host name as a process wrote it, lower-cased; `None` when it is not
/// one (empty, too long, characters no host name has, an address).
fn host_name(raw: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(raw).ok()?.trim_end_matches('.');
    let ok = !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    (ok && s.parse::<IpAddr>().is_err()).then(|| s.to_ascii_lowercase())
}

/// The host name in a connection's first bytes, and where it was found.
pub fn hello_host(bytes: &[u8]) -> Option<(String, HostFrom)> {
    match bytes.first()? {
        // A TLS handshake record.
        0x16 => client_hello_sni(bytes).map(|h| (h, HostFrom::Sni)),
        b'A'..=b'Z' => http_host(bytes).map(|h| (h, HostFrom::Http)),
        _ => None,
    }
}

/// Reads what a cut buffer holds, front to back.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }
}

/// The `server_name` extension of a TLS ClientHello (RFC 8446 4.1.2,
/// RFC 6066 3), walked field by field; `None` when the bytes are not a
/// ClientHello or end before the name.
fn client_hello_sni(bytes: &[u8]) -> Option<String> {
    let mut c = Cursor(bytes);
    // Record: type, legacy version, length.
    c.take(5)?;
    // Handshake: type 1 (client_hello), 24-bit length.
    if c.u8()? != 1 {
        return None;
    }
    c.take(3)?;
    // Legacy version, random, session id, cipher suites, compression.
    c.take(2 + 32)?;
    let n = c.u8()?;
    c.take(n)?;
    let n = c.u16()?;
    c.take(n)?;
    let n = c.u8()?;
    c.take(n)?;
    // Extensions (their total length; the cut may end them early).
    c.u16()?;
    loop {
        let kind = c.u16()?;
        let len = c.u16()?;
        if kind != 0 {
            c.take(len)?;
            continue;
        }
        // server_name: a list of (type, name); type 0 is a host name.
        let mut list = Cursor(c.take(len)?);
        list.u16()?;
        while let Some(name_type) = list.u8() {
            let n = list.u16()?;
            let name = list.take(n)?;
            if name_type == 0 {
                return host_name(name);
            }
        }
        return None;
    }
}

/// The host an HTTP/1.x request names: a proxy `CONNECT`'s target, else
/// its `Host` header (port left out: the address has it).
fn http_host(bytes: &[u8]) -> Option<String> {
    // A head cut by the copy: the lines that arrived whole, ended as a
    // complete head so the parser takes them.
    let whole = bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let mut head;
    let bytes = match whole {
        Some(end) => &bytes[..end],
        None => {
            let last = bytes.windows(2).rposition(|w| w == b"\r\n")?;
            head = bytes[..last + 2].to_vec();
            head.extend_from_slice(b"\r\n");
            &head
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(bytes).ok()?;
    let authority = if req.method == Some("CONNECT") {
        req.path?
    } else {
        std::str::from_utf8(req.headers.iter().find(|h| h.name.eq_ignore_ascii_case("host"))?.value).ok()?
    };
    let (host, _port) = crate::protocol::http::parse_host(authority, false)?;
    host_name(host.as_bytes())
}

/// A DNS answer that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("not a DNS answer: {0}")]
pub struct NotDns(String);

/// The addresses a DNS answer gives, each with the name the process asked
/// for (the question, not the end of a CNAME chain: what it wanted).
pub fn dns_answers(bytes: &[u8]) -> Result<Vec<(IpAddr, String)>, NotDns> {
    // Over TCP the message follows its 2-byte length.
    let message = match bytes {
        [hi, lo, rest @ ..] if usize::from(u16::from_be_bytes([*hi, *lo])) == rest.len() => rest,
        _ => bytes,
    };
    let packet = simple_dns::Packet::parse(message).map_err(|e| NotDns(e.to_string()))?;
    let asked = packet.questions.first().map(|q| q.qname.to_string());
    let mut out = Vec::new();
    for rr in &packet.answers {
        let ip = match &rr.rdata {
            simple_dns::rdata::RData::A(a) => IpAddr::from(std::net::Ipv4Addr::from(a.address)),
            simple_dns::rdata::RData::AAAA(a) => IpAddr::from(std::net::Ipv6Addr::from(a.address)),
            _ => continue,
        };
        let name = asked.clone().unwrap_or_else(|| rr.name.to_string());
        if let Some(name) = host_name(name.as_bytes()) {
            out.push((ip, name));
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ClientHello as rustls writes it, for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        use std::sync::Arc;
        use tokio_rustls::rustls;
        let roots = rustls::RootCertStore::empty();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn finds_the_server_name_of_a_real_client_hello() {
        let hello = client_hello("API.Example.com");
        assert_eq!(hello_host(&hello), Some(("api.example.com".to_string(), HostFrom::Sni)));
        // What the kernel copies: the first 512 bytes.
        let cut = &hello[..hello.len().min(512)];
        assert_eq!(hello_host(cut).map(|h| h.0).as_deref(), Some("api.example.com"));
        // Cut anywhere before the name: no name, no panic.
        for end in 0..hello.len() {
            let got = hello_host(&hello[..end]);
            assert!(
                got.is_none() || got.as_ref().is_some_and(|(h, _)| h == "api.example.com"),
                "{end}: {got:?}"
            );
        }
        // An address is not a name (rustls sends no SNI for it).
        assert_eq!(hello_host(&client_hello("10.0.0.1")), None);
        // OpenSSL's (Python's ssl), 517 bytes cut to the kernel's 512: the
        // name is well inside.
        let openssl = include_bytes!("../../../fuzz/corpus/naming/openssl-client-hello");
        assert_eq!(openssl.len(), 512);
        assert_eq!(hello_host(openssl).map(|h| h.0).as_deref(), Some("api.example.com"));
    }

    #[test]
    fn finds_the_http_host_and_a_proxy_target() {
        let get = b"GET /v1/items HTTP/1.1\r\nUser-Agent: x\r\nHost: Db.Internal:8080\r\nAccept: */*\r\n\r\n";
        assert_eq!(hello_host(get), Some(("db.internal".into(), HostFrom::Http)));
        let connect = b"CONNECT secret.example.org:443 HTTP/1.1\r\nHost: secret.example.org:443\r\n\r\n";
        assert_eq!(hello_host(connect), Some(("secret.example.org".into(), HostFrom::Http)));
        // Cut after the Host line: still found; before it: nothing.
        let cut = &get[..65];
        assert_eq!(hello_host(cut).map(|h| h.0).as_deref(), Some("db.internal"));
        assert_eq!(hello_host(&get[..30]), None);
        // Not HTTP, not TLS, no host, an address.
        assert_eq!(hello_host(b"\x00\x00\x00\x08\x04\xd2\x16\x2f"), None);
        assert_eq!(hello_host(b"GET / HTTP/1.0\r\n\r\n"), None);
        assert_eq!(hello_host(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n"), None);
        assert_eq!(hello_host(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), None);
    }

    /// A DNS answer to the A question for `asked`: `records` in order, each
    /// (owner name, data).
    pub(crate) fn dns_answer(asked: &str, records: &[(&str, simple_dns::rdata::RData<'static>)]) -> Vec<u8> {
        use simple_dns::{CLASS, Name, Packet, Question, ResourceRecord, TYPE};
        let mut p = Packet::new_reply(7);
        p.questions.push(Question::new(
            Name::new_unchecked(asked),
            TYPE::A.into(),
            CLASS::IN.into(),
            false,
        ));
        for (name, data) in records {
            p.answers.push(ResourceRecord::new(
                Name::new_unchecked(name),
                CLASS::IN,
                60,
                data.clone(),
            ));
        }
        p.build_bytes_vec().unwrap()
    }

    #[test]
    fn reads_dns_answers_for_the_name_asked() {
        use simple_dns::{
            Name,
            rdata::{A, AAAA, CNAME, RData},
        };
        let wire = dns_answer(
            "db.mcptap.test",
            &[
                (
                    "db.mcptap.test",
                    RData::CNAME(CNAME(Name::new_unchecked("real.mcptap.test"))),
                ),
                ("real.mcptap.test", RData::A(A { address: 0x7f00_0058 })),
                ("real.mcptap.test", RData::AAAA(AAAA { address: 1 })),
            ],
        );
        let want = vec![
            ("127.0.0.88".parse().unwrap(), "db.mcptap.test".to_string()),
            ("::1".parse().unwrap(), "db.mcptap.test".to_string()),
        ];
        assert_eq!(dns_answers(&wire).unwrap(), want);
        // Over TCP: the length first.
        let mut tcp = (wire.len() as u16).to_be_bytes().to_vec();
        tcp.extend_from_slice(&wire);
        assert_eq!(dns_answers(&tcp).unwrap(), want);
        // Not DNS, or cut: an error, never a panic.
        assert!(dns_answers(b"hello").is_err());
        for end in 0..wire.len() {
            let _ = dns_answers(&wire[..end]);
        }
    }
}
