"""What an unprivileged local user can throw at mcptap (tests/tests/hostile.rs):
a stdio MCP server and a raw client that speak MCP correctly enough to be
watched, and then abuse it. Standard library only. Run as the attacker.

  hostile.py client PLAN_JSON
      Starts `hostile.py server ARGS...` (plan["server"]) on a pipe, sends
      the plan's steps, and prints a JSON report:
        {"server_pid", "answered": n, "sent": n, ...server report lines}
      Steps: {"initialize": {"client_name": "..."}}  (or "client_name_bytes": n)
             {"call": "add", "repeat": n}          answered by the server
             {"unanswered": "junk", "repeat": n, "name_bytes": k}
             {"tool_name_bytes": k, "repeat": n}   answered, a k-byte tool name
             {"sleep": s}
  hostile.py server [--server-name-bytes N] [--map FILE] [--truncate-loop FILE]
                    [--fifo-over] [--report FILE]
      A tiny stdio MCP server: answers initialize, tools/list, tools/call of
      any tool but those whose name starts with "junk" or "secret" (never
      answered), and ping. Before serving it may:
        --map FILE          map FILE (it then shows in its /proc/PID/maps);
        --truncate-loop F   keep truncating F to 0 and back to its size;
        --fifo-over         (with --map) in a user and mount namespace of its
                            own, bind-mount a FIFO over the mapped file's path,
                            and watch whether anyone ever opens that FIFO;
        --report FILE       write what it observed there at exit (JSON).
  hostile.py sparse-elf PATH SIZE
      A sparse ELF file of SIZE bytes whose `.dynsym` claims 8 GiB.
"""

import ctypes
import json
import mmap
import os
import struct
import subprocess
import sys
import threading
import time


def sparse_elf(path, size):
    """An ELF64 shared object: a header, and section headers (at the end of
    the file) for a NULL section, `.shstrtab` and a `.dynsym` of 8 GiB."""
    shstrtab = b"\0.shstrtab\0.dynsym\0.dynstr\0"
    with open(path, "wb") as f:
        f.truncate(size)
        shoff = size - 4 * 64 - 4096
        strtab_off = shoff - 4096
        ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
        ehdr += struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 0, shoff, 0, 64, 56, 0, 64, 4, 1)
        f.seek(0)
        f.write(ehdr)
        f.seek(strtab_off)
        f.write(shstrtab)
        sections = [
            bytes(64),
            struct.pack("<IIQQQQIIQQ", 1, 3, 0, 0, strtab_off, len(shstrtab), 0, 0, 1, 0),
            # .dynsym: 8 GiB of symbols, starting in the hole.
            struct.pack("<IIQQQQIIQQ", 11, 11, 2, 0, 4096, 8 << 30, 3, 1, 8, 24),
            struct.pack("<IIQQQQIIQQ", 19, 3, 2, 0, 4096, 1 << 20, 0, 0, 1, 0),
        ]
        f.seek(shoff)
        f.write(b"".join(sections))


libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
MS_BIND = 4096


def own_namespaces():
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")


def bind(source, target):
    if libc.mount(source.encode(), target.encode(), None, MS_BIND, None) != 0:
        raise OSError(ctypes.get_errno(), f"mount --bind {source} {target}")


def server(args):
    name = "hostile"
    maps, observed, report = [], {"fifo_opened_by_someone": False}, None
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--server-name-bytes":
            name = "S" * int(args[i + 1])
            i += 1
        elif a == "--map":
            f = open(args[i + 1], "rb")
            maps.append((args[i + 1], f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)))
            i += 1
        elif a == "--truncate-loop":
            path = args[i + 1]
            size = os.path.getsize(path)

            def loop(path=path, size=size):
                while True:
                    with open(path, "r+b") as f:
                        f.truncate(0)
                        f.truncate(size)

            threading.Thread(target=loop, daemon=True).start()
            i += 1
        elif a == "--fifo-over":
            own_namespaces()
            for path, _, _ in maps:
                fifo = path + ".fifo"
                os.mkfifo(fifo)
                bind(fifo, path)

                def watch(fifo=path):
                    # A writer's non-blocking open succeeds only while a
                    # reader has the FIFO open.
                    while True:
                        try:
                            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                            observed["fifo_opened_by_someone"] = True
                            os.close(fd)
                        except OSError:
                            pass
                        time.sleep(0.001)

                threading.Thread(target=watch, daemon=True).start()
        elif a == "--report":
            report = args[i + 1]
            i += 1
        i += 1
    out = sys.stdout
    for line in sys.stdin:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if "id" not in msg:
            continue
        method = msg.get("method")
        tool = (msg.get("params") or {}).get("name", "")
        if method == "initialize":
            result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                      "serverInfo": {"name": name, "version": "1"}}
        elif method == "tools/list":
            result = {"tools": [{"name": "add", "inputSchema": {"type": "object"}}]}
        elif method == "tools/call" and (tool.startswith("junk") or tool.startswith("secret")):
            continue  # never answered
        elif method == "tools/call":
            result = {"content": [{"type": "text", "text": "ok"}], "isError": False}
        else:
            result = {}
        out.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
        out.flush()
        if report:
            with open(report, "w") as f:
                json.dump(observed, f)
    if report:
        with open(report, "w") as f:
            json.dump(observed, f)


def client(plan):
    proc = subprocess.Popen([sys.executable, __file__, "server", *plan.get("server", [])],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    next_id, sent, answered = 0, 0, 0

    def send(method, params):
        nonlocal next_id, sent
        next_id += 1
        proc.stdin.write((json.dumps({"jsonrpc": "2.0", "id": next_id, "method": method, "params": params}) + "\n").encode())
        proc.stdin.flush()
        sent += 1
        return next_id

    def wait(want):
        nonlocal answered
        while True:
            line = proc.stdout.readline()
            if not line:
                raise SystemExit("the server ended")
            if json.loads(line).get("id") == want:
                answered += 1
                return

    for step in plan["steps"]:
        if "initialize" in step:
            i = step["initialize"]
            name = "C" * i["client_name_bytes"] if "client_name_bytes" in i else i.get("client_name", "hostile-client")
            wait(send("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                      "clientInfo": {"name": name, "version": "1"}}))
            proc.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
            proc.stdin.flush()
        elif "call" in step:
            for _ in range(step.get("repeat", 1)):
                wait(send("tools/call", {"name": step["call"], "arguments": {}}))
        elif "unanswered" in step:
            pad = "x" * max(0, step.get("name_bytes", 0) - len(step["unanswered"]))
            for n in range(step.get("repeat", 1)):
                send("tools/call", {"name": f"{step['unanswered']}{pad}{n}", "arguments": {}})
        elif "tool_name_bytes" in step:
            for n in range(step.get("repeat", 1)):
                wait(send("tools/call", {"name": f"t{n}" + "T" * step["tool_name_bytes"], "arguments": {}}))
        elif "sleep" in step:
            time.sleep(step["sleep"])
    # A last answered call: everything before it was read by the server.
    wait(send("tools/call", {"name": "add", "arguments": {}}))
    report = {"server_pid": proc.pid, "sent": sent, "answered": answered, "client_pid": os.getpid()}
    proc.stdin.close()
    proc.wait(timeout=30)
    print(json.dumps(report))


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "server":
        server(sys.argv[2:])
    elif what == "client":
        client(json.loads(sys.argv[2]))
    elif what == "sparse-elf":
        sparse_elf(sys.argv[2], int(sys.argv[3]))
    else:
        raise SystemExit(f"unknown command {what}")
