"""Feeds real MCP servers over HTTP (the tests' FastMCP server on uvicorn)
bad input on real sockets, between valid calls, and reports what it sent.

Usage: http_raw_client.py JSON_PORT SSE_PORT
  JSON_PORT: a server answering with JSON bodies (--json-response)
  SSE_PORT:  a server answering with event streams

Each item goes on a connection of its own, with a valid `add` call after it:
  - truncated HTTP: a head announcing 500 bytes of body, 20 sent, then close;
  - bogus chunk sizes: a chunked body whose size line is not hexadecimal;
  - a 50 MiB body (the SDK refuses bodies over 4 MiB: 413, or a reset
    while it is still being sent);
  - a 3.5 MiB body (a valid tools/call of `echo`, longer than the agent's
    cap in the test: correlated from its prefix);
  - binary junk on a fresh connection (not HTTP at all);
  - an HTTP request line followed by junk headers;
and on the event-stream server, a call of `sleep` whose connection is reset
(RST) while the response streams.

Output (stdout): {"json_server_pid", "sse_server_pid", "valid_calls",
"answered", "sse_valid_calls", "sse_answered", "echo_id", "echo_answered"}.
"""

import json
import random
import socket
import struct
import sys
import time


def connect(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(30)
    return s


def read_response(s):
    """Status, headers and body of one response (Content-Length, chunked or
    close-delimited); the body of an event stream is returned raw."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = s.recv(65536)
        if not more:
            return None, {}, data
        data += more
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(body) < n:
            more = s.recv(65536)
            if not more:
                break
            body += more
        return status, headers, body[:n]
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        while True:
            while b"\r\n" not in body:
                body += s.recv(65536)
            size_line, body = body.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                return status, headers, out
            while len(body) < size + 2:
                more = s.recv(65536)
                if not more:
                    return status, headers, out + body
                body += more
            out += body[:size]
            body = body[size + 2 :]
    while True:
        more = s.recv(65536)
        if not more:
            return status, headers, body
        body += more


def messages_of(headers, body):
    """JSON-RPC messages of a JSON or event-stream body."""
    if headers.get("content-type", "").startswith("text/event-stream"):
        out = []
        for event in body.decode().replace("\r\n", "\n").split("\n\n"):
            data = "\n".join(l[5:].lstrip() for l in event.split("\n") if l.startswith("data:"))
            if data:
                out.append(json.loads(data))
        return out
    return [json.loads(body)] if body else []


class Session:
    def __init__(self, port):
        self.port = port
        self.sid = None
        self.next_id = 0

    def head(self, body_len, extra=""):
        h = (
            f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Type: application/json\r\n"
            f"Accept: application/json, text/event-stream\r\nContent-Length: {body_len}\r\nConnection: close\r\n"
        )
        if self.sid:
            h += f"Mcp-Session-Id: {self.sid}\r\nMcp-Protocol-Version: 2025-06-18\r\n"
        return (h + extra + "\r\n").encode()

    def post(self, obj):
        body = json.dumps(obj).encode()
        s = connect(self.port)
        s.sendall(self.head(len(body)) + body)
        status, headers, resp = read_response(s)
        s.close()
        return status, headers, messages_of(headers, resp) if status == 200 else []

    def request(self, method, params):
        self.next_id += 1
        rid = self.next_id
        _, headers, msgs = self.post({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        if method == "initialize":
            self.sid = headers.get("mcp-session-id")
        return rid, next((m for m in msgs if m.get("id") == rid), None)

    def start(self):
        self.request(
            "initialize",
            {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw-http", "version": "1"}},
        )
        self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        _, resp = self.request("tools/call", {"name": "whoami", "arguments": {}})
        return int(resp["result"]["content"][0]["text"])

    def add(self, a):
        _, resp = self.request("tools/call", {"name": "add", "arguments": {"a": a, "b": 1}})
        return bool(resp and "result" in resp and not resp["result"].get("isError"))


def main():
    json_port, sse_port = int(sys.argv[1]), int(sys.argv[2])
    j = Session(json_port)
    json_pid = j.start()
    valid = answered = 0

    def valid_call():
        nonlocal valid, answered
        valid += 1
        answered += j.add(valid)

    valid_call()
    # Truncated HTTP: the head promises 500 bytes; 20 come, then close.
    s = connect(json_port)
    s.sendall(j.head(500) + b'{"jsonrpc":"2.0","id"')
    time.sleep(0.2)
    s.close()
    valid_call()
    # Bogus chunk sizes.
    s = connect(json_port)
    head = j.head(0).replace(b"Content-Length: 0\r\n", b"Transfer-Encoding: chunked\r\n")
    s.sendall(head + b"zz\r\n{}\r\n0\r\n\r\n")
    read_response(s)
    s.close()
    valid_call()
    # 50 MiB body: refused by the server while it arrives.
    j.next_id += 1
    body = json.dumps(
        {"jsonrpc": "2.0", "id": j.next_id, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x" * (50 << 20)}}}
    ).encode()
    s = connect(json_port)
    huge_status = None
    try:
        s.sendall(j.head(len(body)))
        for i in range(0, len(body), 1 << 20):
            s.sendall(body[i : i + (1 << 20)])
        huge_status, _, _ = read_response(s)
    except (ConnectionResetError, BrokenPipeError):
        huge_status = "reset"
    s.close()
    valid_call()
    # 3.5 MiB body: accepted, answered.
    j.next_id += 1
    echo_id = j.next_id
    body = json.dumps(
        {"jsonrpc": "2.0", "id": echo_id, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x" * (7 << 19)}}}
    ).encode()
    s = connect(json_port)
    s.sendall(j.head(len(body)) + body)
    status, headers, resp = read_response(s)
    s.close()
    echo = next((m for m in messages_of(headers, resp) if m.get("id") == echo_id), None) if status == 200 else None
    valid_call()
    # Binary junk on a fresh connection: not HTTP at all.
    rng = random.Random(7)
    s = connect(json_port)
    s.sendall(bytes(rng.randrange(1, 256) for _ in range(4096)))
    time.sleep(0.2)
    s.close()
    valid_call()
    # A request line, then junk where the headers should be.
    s = connect(json_port)
    s.sendall(b"POST /mcp HTTP/1.1\r\n\x01\x02\x03 garbage \xff\xfe\r\n\r\n")
    read_response(s)
    s.close()
    valid_call()

    # Event-stream server: a connection reset while the response streams.
    e = Session(sse_port)
    sse_pid = e.start()
    sse_valid = sse_answered = 0
    sse_valid += 1
    sse_answered += e.add(1)
    e.next_id += 1
    body = json.dumps(
        {"jsonrpc": "2.0", "id": e.next_id, "method": "tools/call", "params": {"name": "sleep", "arguments": {"seconds": 2}}}
    ).encode()
    s = connect(sse_port)
    s.sendall(e.head(len(body)) + body)
    s.settimeout(0.5)
    try:
        s.recv(65536)  # the response head (the stream is open)
    except socket.timeout:
        pass
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # RST
    time.sleep(2.5)  # the server notices when it writes
    sse_valid += 1
    sse_answered += e.add(2)
    valid_call()

    print(
        json.dumps(
            {
                "json_server_pid": json_pid,
                "sse_server_pid": sse_pid,
                "valid_calls": valid,
                "answered": answered,
                "sse_valid_calls": sse_valid,
                "sse_answered": sse_answered,
                "sse_reset_id": e.next_id - 1,
                "echo_id": echo_id,
                "huge_status": huge_status,
                "echo_answered": bool(echo and "result" in echo),
            }
        )
    )


if __name__ == "__main__":
    main()
