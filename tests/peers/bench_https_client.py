"""HTTPS latency benchmark client: N sequential tools/call round trips to a
real MCP server over Streamable HTTP (JSON responses) and TLS, on one
keep-alive connection, with the standard library's http.client so that the
client adds as little as possible of its own.

Usage: bench_https_client.py N PORT CA_CERT
Output: {"rtt_us": [...], "t0": unix time of the first request, "operations": requests sent}
"""

import http.client
import json
import ssl
import sys
import time


def main():
    n, port, ca = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ssl.create_default_context(cafile=ca))
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}

    def post(obj):
        conn.request("POST", "/mcp", json.dumps(obj), headers)
        r = conn.getresponse()
        r.read()
        return r

    t0 = time.time()  # the first request (the discovery latency figure)
    r = post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench-https", "version": "1"}}})
    headers["Mcp-Session-Id"] = r.getheader("mcp-session-id")
    headers["Mcp-Protocol-Version"] = "2025-06-18"
    post({"jsonrpc": "2.0", "method": "notifications/initialized"})
    call = lambda i: post({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "add", "arguments": {"a": i, "b": 1}}})
    for i in range(1, 50):  # warm up
        call(i)
    rtts = []
    for i in range(50, 50 + n):
        start = time.perf_counter_ns()
        call(i)
        rtts.append((time.perf_counter_ns() - start) / 1000)
    conn.close()
    print(json.dumps({"rtt_us": rtts, "t0": t0, "operations": 50 + n}))


if __name__ == "__main__":
    main()
