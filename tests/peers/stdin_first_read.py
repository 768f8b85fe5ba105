"""Discovery looks at a process's stdin once: its first read. Two children
get "hello" (not JSON) on their stdin first, then MCP:

  - `stays`: keeps reading the same stdin (a JSON-RPC `initialize` line
    follows); the agent must not track it (its stdin was ruled out), so no
    event names it, although it exits with that request unanswered;
  - `execs`: execs the given stdio server on the same stdin, which
    then speaks MCP: a new program is looked at again, so its calls become
    events.

Usage: stdin_first_read.py PYTHON SERVER_SCRIPT
Output (stdout, one JSON object): {"stays_pid", "execs_pid", "answered": n}
"""

import json
import os
import subprocess
import sys
import time

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "e2e-first-read", "version": "1"}},
}


def line(obj):
    return (json.dumps(obj) + "\n").encode()


def main():
    python, script = sys.argv[1], sys.argv[2]

    # Reads exactly what is written, one os.read per message.
    stays = subprocess.Popen(
        [python, "-c", "import os, sys\nfor _ in range(2):\n    os.read(0, 65536)\n    sys.stdout.write('read\\n'); sys.stdout.flush()\n"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    stays.stdin.write(b"hello\n")
    stays.stdin.flush()
    assert stays.stdout.readline() == b"read\n"
    stays.stdin.write(line(INIT))
    stays.stdin.flush()
    assert stays.stdout.readline() == b"read\n"
    stays.stdin.close()
    stays.wait()

    execs = subprocess.Popen(
        [python, "-c", f"import os, sys\nos.read(0, 6)\nos.execv({python!r}, [{python!r}, {script!r}])\n"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MCPTAP_TEST_SERVER_NAME": "e2e-after-exec"},
    )
    execs.stdin.write(b"hello\n")
    execs.stdin.flush()
    time.sleep(1.0)  # the first program reads it and execs the server
    answered = 0

    def call(obj):
        nonlocal answered
        execs.stdin.write(line(obj))
        execs.stdin.flush()
        while True:
            msg = json.loads(execs.stdout.readline())
            if msg.get("id") == obj["id"]:
                answered += 1
                return msg

    call(INIT)
    execs.stdin.write(line({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    execs.stdin.flush()
    call({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 1, "b": 2}}})
    call({"jsonrpc": "2.0", "id": 3, "method": "ping"})
    execs.stdin.close()
    execs.wait()
    print(json.dumps({"stays_pid": stays.pid, "execs_pid": execs.pid, "answered": answered}))


if __name__ == "__main__":
    main()
