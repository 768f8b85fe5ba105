use std::io::Write;

use super::*;

/// Feeds (direction, bytes) pieces and returns everything the parser said.
fn run(pieces: &[(Io, &[u8])]) -> Vec<HttpEvent> {
    let mut c = HttpConn::new(1 << 20);
    let mut out = Vec::new();
    for (i, (io, data)) in pieces.iter().enumerate() {
        c.push(*io, data, i as u64, false, &mut out);
    }
    out
}

fn requests(events: &[HttpEvent]) -> Vec<&Request> {
    events
        .iter()
        .filter_map(|e| match e {
            HttpEvent::Request(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn bodies(events: &[HttpEvent]) -> Vec<(Option<u64>, Vec<u8>)> {
    events
        .iter()
        .filter_map(|e| match e {
            HttpEvent::ResponseBody { exchange, body, .. } => Some((*exchange, body.bytes.clone())),
            _ => None,
        })
        .collect()
}

fn sse_data(events: &[HttpEvent]) -> Vec<(Option<u64>, Vec<u8>)> {
    events
        .iter()
        .filter_map(|e| match e {
            HttpEvent::Event { exchange, event, .. } => Some((*exchange, event.data.bytes.clone())),
            _ => None,
        })
        .collect()
}

const POST: &[u8] = b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nMcp-Session-Id: s1\r\nContent-Length: 13\r\n\r\n{\"jsonrpc\":1}";
const JSON_OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";

#[test]
fn server_view_request_and_json_response() {
    let out = run(&[(Io::Read, POST), (Io::Write, JSON_OK)]);
    let reqs = requests(&out);
    assert_eq!(reqs.len(), 1);
    assert_eq!((reqs[0].method.as_str(), reqs[0].target.as_str()), ("POST", "/mcp"));
    assert_eq!(reqs[0].headers.mcp_session_id.as_deref(), Some("s1"));
    assert!(reqs[0].headers.mentions_mcp());
    assert_eq!(reqs[0].body.bytes, b"{\"jsonrpc\":1}");
    assert_eq!(bodies(&out), vec![(Some(0), b"{}".to_vec())]);
    assert!(matches!(
        out.last(),
        Some(HttpEvent::ResponseEnd {
            exchange: Some(0),
            complete: true,
            ..
        })
    ));
}

#[test]
fn client_view_is_the_mirror_image() {
    let out = run(&[(Io::Write, POST), (Io::Read, JSON_OK)]);
    assert_eq!(requests(&out).len(), 1);
    assert_eq!(bodies(&out).len(), 1);
}

#[test]
fn every_split_point_gives_the_same_messages() {
    let mut wire = POST.to_vec();
    wire.extend_from_slice(POST);
    for split in 0..wire.len() {
        let out = run(&[(Io::Read, &wire[..split]), (Io::Read, &wire[split..])]);
        assert_eq!(requests(&out).len(), 2, "split at {split}");
    }
}

#[test]
fn pipelined_responses_pair_in_order() {
    let mut reqs = POST.to_vec();
    reqs.extend_from_slice(b"GET /mcp HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n");
    let mut resps = JSON_OK.to_vec();
    resps.extend_from_slice(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
    let out = run(&[(Io::Read, &reqs), (Io::Write, &resps)]);
    let heads: Vec<_> = out
        .iter()
        .filter_map(|e| match e {
            HttpEvent::ResponseHead(h) => Some((h.exchange, h.status)),
            _ => None,
        })
        .collect();
    assert_eq!(heads, vec![(Some(0), 200), (Some(1), 202)]);
}

#[test]
fn chunked_event_stream_split_at_every_byte() {
    let events = "event: message\r\ndata: {\"id\":1}\r\n\r\nevent: message\r\ndata: {\"id\":2}\r\n\r\n";
    let mut wire = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for part in [&events[..20], &events[20..]] {
        wire.extend_from_slice(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes());
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    let mut c = HttpConn::new(1 << 20);
    let mut out = Vec::new();
    c.push(Io::Read, POST, 0, false, &mut out);
    for b in &wire {
        c.push(Io::Write, std::slice::from_ref(b), 1, false, &mut out);
    }
    assert_eq!(
        sse_data(&out),
        vec![(Some(0), b"{\"id\":1}".to_vec()), (Some(0), b"{\"id\":2}".to_vec())]
    );
    assert!(matches!(
        out.last(),
        Some(HttpEvent::ResponseEnd { complete: true, .. })
    ));
}

#[test]
fn gzip_and_deflate_bodies_are_inflated() {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"{\"jsonrpc\":\"2.0\"}").unwrap();
    let gz = gz.finish().unwrap();
    let mut wire = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        gz.len()
    )
    .into_bytes();
    wire.extend_from_slice(&gz);
    let out = run(&[(Io::Read, POST), (Io::Write, &wire)]);
    assert_eq!(bodies(&out), vec![(Some(0), b"{\"jsonrpc\":\"2.0\"}".to_vec())]);

    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(b"[1]").unwrap();
    let z = z.finish().unwrap();
    let mut wire = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: {}\r\n\r\n",
        z.len()
    )
    .into_bytes();
    wire.extend_from_slice(&z);
    let out = run(&[(Io::Read, POST), (Io::Write, &wire)]);
    assert_eq!(bodies(&out), vec![(Some(0), b"[1]".to_vec())]);
}

#[test]
fn bogus_chunk_sizes_are_dropped_and_the_next_response_parses() {
    let mut reqs = POST.to_vec();
    reqs.extend_from_slice(POST);
    let mut resps = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n".to_vec();
    let out1 = run(&[(Io::Read, &reqs), (Io::Write, &resps)]);
    assert!(out1.iter().any(|e| matches!(
        e,
        HttpEvent::Dropped {
            kind: "bad_chunk_size",
            ..
        }
    )));
    resps.extend_from_slice(JSON_OK);
    // The good response after the junk is found again (its pairing with a
    // request is lost: the junk may have been several responses).
    let mut c = HttpConn::new(1 << 20);
    let mut out = Vec::new();
    c.push(Io::Read, &reqs, 0, false, &mut out);
    c.push(Io::Write, &resps[..resps.len() - JSON_OK.len()], 1, false, &mut out);
    c.push(Io::Write, JSON_OK, 2, false, &mut out);
    assert_eq!(bodies(&out), vec![(None, b"{}".to_vec())]);
}

#[test]
fn http2_and_upgrades_are_unsupported() {
    let out = run(&[(Io::Read, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")]);
    assert_eq!(out, vec![HttpEvent::Unsupported("http2")]);
    let out = run(&[(
        Io::Read,
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )]);
    assert_eq!(out, vec![HttpEvent::Unsupported("upgrade")]);
}

#[test]
fn garbage_is_dropped_not_parsed() {
    let out = run(&[(Io::Read, b"\x00\x01binary junk")]);
    assert!(matches!(out[0], HttpEvent::Dropped { kind: "not_http", .. }));
    let out = run(&[(Io::Read, b"POST /x HTTP/1.1\r\nBad Header Line\r\n\r\n")]);
    assert!(matches!(
        out[0],
        HttpEvent::Dropped {
            kind: "bad_request_head",
            ..
        }
    ));
}

#[test]
fn gaps_resync_at_the_next_message() {
    let mut c = HttpConn::new(1 << 20);
    let mut out = Vec::new();
    c.push(Io::Read, &POST[..40], 0, false, &mut out);
    // Bytes lost: the rest of that request and part of another.
    c.push(Io::Read, b"tail of something", 1, true, &mut out);
    c.push(Io::Read, POST, 2, false, &mut out);
    assert!(out.iter().any(|e| matches!(
        e,
        HttpEvent::Dropped {
            kind: "capture_gap",
            ..
        }
    )));
    assert_eq!(requests(&out).len(), 1);
}

#[test]
fn continue_and_until_close_bodies() {
    let out = {
        let mut c = HttpConn::new(1 << 20);
        let mut out = Vec::new();
        c.push(Io::Read, POST, 0, false, &mut out);
        c.push(
            Io::Write,
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\"",
            1,
            false,
            &mut out,
        );
        c.push(Io::Write, b":1}", 2, false, &mut out);
        c.close(3, &mut out);
        out
    };
    assert_eq!(bodies(&out), vec![(Some(0), b"{\"a\":1}".to_vec())]);
}

#[test]
fn bodies_over_the_cap_keep_prefix_and_length() {
    let mut c = HttpConn::new(8);
    let mut out = Vec::new();
    let body = vec![b'x'; 50_000];
    let head = format!("POST /mcp HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len());
    c.push(Io::Read, head.as_bytes(), 0, false, &mut out);
    for piece in body.chunks(4096) {
        c.push(Io::Read, piece, 1, false, &mut out);
    }
    let r = requests(&out)[0];
    assert_eq!((r.body.len, r.body.bytes.len(), r.body.truncated), (50_000, 8, true));
}

#[test]
fn connection_reset_mid_event_stream_ends_the_response() {
    let mut c = HttpConn::new(1 << 20);
    let mut out = Vec::new();
    c.push(Io::Read, POST, 0, false, &mut out);
    c.push(
        Io::Write,
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nevent: message\r\n\r\nd",
        1,
        false,
        &mut out,
    );
    c.close(2, &mut out);
    assert!(matches!(
        out.last(),
        Some(HttpEvent::ResponseEnd {
            exchange: Some(0),
            complete: false,
            ..
        })
    ));
}

#[test]
fn host_headers() {
    assert_eq!(parse_host("127.0.0.1:8443", true), Some(("127.0.0.1".into(), 8443)));
    assert_eq!(
        parse_host("mcp.example.com", true),
        Some(("mcp.example.com".into(), 443))
    );
    assert_eq!(
        parse_host("mcp.example.com", false),
        Some(("mcp.example.com".into(), 80))
    );
    assert_eq!(parse_host("[::1]:9000", false), Some(("::1".into(), 9000)));
    assert_eq!(parse_host("x:notaport", false), None);
}
