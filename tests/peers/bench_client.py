"""Latency benchmark client: N sequential tools/call round trips to a real
stdio MCP server, over raw JSON-RPC lines so that the client adds as little
as possible of its own to the round trip.

Usage: bench_client.py N TOOL ARGS_JSON SERVER_CMD...
Output: {"rtt_us": [...]}  (one round trip per call, microseconds)
"""

import json
import subprocess
import sys
import time


def main():
    n, tool, args = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    server = subprocess.Popen(sys.argv[4:], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def call(i, method, params):
        server.stdin.write((json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}) + "\n").encode())
        server.stdin.flush()
        while True:
            msg = json.loads(server.stdout.readline())
            if msg.get("id") == i:
                return msg

    call(0, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}})
    server.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
    server.stdin.flush()
    for i in range(1, 50):  # warm up
        call(i, "tools/call", {"name": tool, "arguments": args})
    rtts = []
    for i in range(50, 50 + n):
        start = time.perf_counter_ns()
        call(i, "tools/call", {"name": tool, "arguments": args})
        rtts.append((time.perf_counter_ns() - start) / 1000)
    server.stdin.close()
    server.wait()
    print(json.dumps({"rtt_us": rtts}))


if __name__ == "__main__":
    main()
