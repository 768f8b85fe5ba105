"""A stdio MCP server on the standard library alone, for the smoke suite
(tests/tests/smoke.rs), which runs inside every kernel of the matrix under
software emulation: there the official SDK's import alone takes 15-25 s of
emulated CPU (pydantic models), and what is tested is the kernel side.
The official SDKs' servers are exercised by the other suites on the host;
the smoke suite's client is still the official Python SDK's (drive.py).

It speaks MCP over newline-delimited JSON-RPC: initialize (answering the
client's protocol version when it is one it knows), notifications, ping,
tools/list and tools/call of the tools below, with the results the
official SDKs give (text content, `isError` for a tool's failure).

  whoami                         its process id
  add(a, b)                      a + b
  refuse(reason)                 a result with isError: true
  blob(mib)                      a text of `mib` MiB
  read_file(path)                reads a file; its size
  run(argv)                      runs a program; its output
  resolve_and_connect(resolver, name, port)
                                 asks the DNS server at `resolver` for `name`
                                 (one UDP query), connects to the answer
  http_get(port, host)           GET / from a loopback port, naming `host`

Its name is MCPTAP_TEST_SERVER_NAME (default "mcptap-lean-server").

With `--https PORT CERT KEY` it serves the same over Streamable HTTP with TLS
instead (http.server and ssl: the system's libssl), JSON responses, no
session: what the DaemonSet's test runs inside a container of its own.
"""

import json
import os
import socket
import subprocess
import sys

NAME = os.environ.get("MCPTAP_TEST_SERVER_NAME", "mcptap-lean-server")
VERSIONS = ["2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"]


def tool(tool_name, description, **props):
    return {
        "name": tool_name,
        "description": description,
        "inputSchema": {"type": "object", "properties": props, "required": list(props)},
    }


TOOLS = [
    tool("whoami", "The server's process id."),
    tool("add", "Adds two numbers.", a={"type": "integer"}, b={"type": "integer"}),
    tool("refuse", "Fails the way tools report failure.", reason={"type": "string"}),
    tool("blob", "A text of `mib` MiB.", mib={"type": "integer"}),
    tool("read_file", "Reads a file; returns its size.", path={"type": "string"}),
    tool("run", "Runs a program; returns its output.", argv={"type": "array", "items": {"type": "string"}}),
    tool("resolve_and_connect", "Resolves a name with a DNS server, connects to it.",
         resolver={"type": "string"}, name={"type": "string"}, port={"type": "integer"}),
    tool("http_get", "GET / from a loopback port, naming a host.", port={"type": "integer"}, host={"type": "string"}),
]


def resolve_and_connect(resolver, name, port):
    query = (
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
        + b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
        + b"\x00\x00\x01\x00\x01"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.connect((resolver, 53))
        s.send(query)
        answer = s.recv(512)
    # One A record, last in the answer: its 4 bytes end it.
    address = socket.inet_ntoa(answer[-4:])
    with socket.create_connection((address, port), timeout=5):
        return address


def http_get(port, host):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        return s.recv(4096).split(b"\r\n")[0].decode()


def call(name, args):
    """A tool's text, and whether the tool failed."""
    if name == "whoami":
        return str(os.getpid()), False
    if name == "add":
        return str(args["a"] + args["b"]), False
    if name == "refuse":
        return args.get("reason", "refused"), True
    if name == "blob":
        return "x" * (args["mib"] << 20), False
    if name == "read_file":
        with open(args["path"], "rb") as f:
            return str(len(f.read())), False
    if name == "run":
        return subprocess.run(args["argv"], capture_output=True, text=True, check=False).stdout, False
    if name == "resolve_and_connect":
        return resolve_and_connect(args["resolver"], args["name"], args["port"]), False
    if name == "http_get":
        return http_get(args["port"], args["host"]), False
    raise KeyError(name)


def answer(msg):
    method, params = msg.get("method"), msg.get("params") or {}
    if method == "initialize":
        asked = params.get("protocolVersion")
        return {
            "protocolVersion": asked if asked in VERSIONS else VERSIONS[2],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": NAME, "version": "1.0.0"},
        }, None
    if method == "ping":
        return {}, None
    if method == "tools/list":
        return {"tools": TOOLS}, None
    if method == "tools/call":
        try:
            text, failed = call(params.get("name"), params.get("arguments") or {})
        except KeyError:
            return None, {"code": -32602, "message": f"unknown tool {params.get('name')}"}
        except Exception as e:  # noqa: BLE001 - a tool's failure is its result
            text, failed = f"{type(e).__name__}: {e}", True
        result = {"content": [{"type": "text", "text": text}], "isError": failed}
        if params.get("name") == "whoami":
            result["structuredContent"] = {"result": os.getpid()}
        return result, None
    return None, {"code": -32601, "message": f"method not found: {method}"}


def serve_https(port, cert, key):
    import http.server
    import ssl

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                msg = json.loads(body)
            except ValueError:
                msg = None
            if not isinstance(msg, dict) or "id" not in msg:
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            result, error = answer(msg)
            reply = {"jsonrpc": "2.0", "id": msg["id"]}
            reply.update({"error": error} if error is not None else {"result": result})
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self.send_response(405)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_DELETE(self):
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"{NAME} serving HTTPS on {port} (pid {os.getpid()})", file=sys.stderr, flush=True)
    server.serve_forever()


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--https":
        serve_https(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return
    out = sys.stdout
    for line in sys.stdin:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if not isinstance(msg, dict) or "id" not in msg or "method" not in msg:
            continue
        result, error = answer(msg)
        reply = {"jsonrpc": "2.0", "id": msg["id"]}
        if error is not None:
            reply["error"] = error
        else:
            reply["result"] = result
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
