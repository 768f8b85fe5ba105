"""Feeds a real stdio MCP server (the tests' FastMCP server) bad input over
its real stdin pipe, between valid calls, and reports what it sent.

Usage: raw_client.py PYTHON SERVER_SCRIPT

What goes down the pipe, in order, with a valid `add` call after each item:
  - a line that is not JSON;
  - a line that is not UTF-8;
  - a line of binary junk (4 KiB, no newline inside);
  - a 20 MiB line (a valid tools/call of `echo` with a 20 MiB argument);
  - a valid call written in 60 pieces;
and at the end half a line, after which the server is killed.

Output (stdout): {"server_pid", "valid_calls": n, "answered": n,
"echo_id": id of the 20 MiB call, "echo_answered": bool}.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time


def main():
    python, script = sys.argv[1], sys.argv[2]
    server = subprocess.Popen([python, script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    next_id = 0

    def send(obj_or_bytes, pieces=1):
        data = obj_or_bytes if isinstance(obj_or_bytes, bytes) else (json.dumps(obj_or_bytes) + "\n").encode()
        step = max(1, len(data) // pieces)
        for i in range(0, len(data), step):
            server.stdin.write(data[i : i + step])
            server.stdin.flush()
            if pieces > 1:
                time.sleep(0.002)

    def request(method, params, pieces=1):
        nonlocal next_id
        next_id += 1
        send({"jsonrpc": "2.0", "id": next_id, "method": method, "params": params}, pieces)
        return next_id

    def read_response(want_id):
        # Skip anything that is not the answer (errors about junk lines).
        while True:
            line = server.stdout.readline()
            if not line:
                return None
            msg = json.loads(line)
            if msg.get("id") == want_id:
                return msg

    init = request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw-bad-input", "version": "1"}})
    read_response(init)
    send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    pid_call = request("tools/call", {"name": "whoami", "arguments": {}})
    pid = int(read_response(pid_call)["result"]["content"][0]["text"])

    valid = answered = 0

    def valid_call(pieces=1):
        nonlocal valid, answered
        valid += 1
        rid = request("tools/call", {"name": "add", "arguments": {"a": valid, "b": 1}}, pieces)
        resp = read_response(rid)
        if resp and "result" in resp and not resp["result"].get("isError"):
            answered += 1

    rng = random.Random(7)
    junk = bytes(b for b in (rng.randrange(256) for _ in range(6000)) if b != 0x0A)[:4096]
    valid_call()
    send(b"this is not json at all\n")
    valid_call()
    send(b"\xff\xfe\x80 not utf-8 \xc3\x28\n")
    valid_call()
    send(junk + b"\n")
    valid_call()
    echo_id = request("tools/call", {"name": "echo", "arguments": {"text": "x" * (20 << 20)}})
    echo = read_response(echo_id)
    valid_call()
    valid_call(pieces=60)
    valid_call()
    # Half a line, then the server dies with it unread to the end.
    send(b'{"jsonrpc":"2.0","id":999,"method":"tools/ca')
    time.sleep(0.3)
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    print(json.dumps({
        "server_pid": pid,
        "valid_calls": valid,
        "answered": answered,
        "echo_id": echo_id,
        "echo_answered": bool(echo and "result" in echo),
    }))


if __name__ == "__main__":
    main()
