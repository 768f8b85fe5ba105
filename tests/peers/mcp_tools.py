"""The end-to-end tests' own MCP server (FastMCP), served over stdio by
stdio_server.py and over HTTP by http_server.py.

Its tools cover every way a call can end: success, a result flagged
isError, an exception, a slow call (for latency bounds and cancellation),
and a result of several MiB. `whoami` tells the test which process serves
it, so that assertions only look at this server's events.
"""

import asyncio
import os
import sys

from fastmcp import FastMCP
from fastmcp.exceptions import ToolError


def build(name: str) -> FastMCP:
    mcp = FastMCP(name, version="1.0.0")

    @mcp.tool
    def whoami() -> int:
        """The server's process id."""
        return os.getpid()

    @mcp.tool
    def add(a: int, b: int) -> int:
        """Adds two numbers."""
        return a + b

    @mcp.tool
    def refuse(reason: str) -> str:
        """Fails the way tools report failure: a result with isError set."""
        raise ToolError(reason)

    @mcp.tool
    def explode() -> str:
        """Raises an unexpected exception."""
        raise RuntimeError("boom")

    @mcp.tool
    async def sleep(seconds: float) -> str:
        """Answers after `seconds`."""
        await asyncio.sleep(seconds)
        return f"slept {seconds}"

    @mcp.tool
    def blob(mib: int) -> str:
        """Returns a text of `mib` MiB."""
        return "x" * (mib << 20)

    @mcp.tool
    def echo(text: str) -> int:
        """Returns the length of `text` (its argument may be huge)."""
        return len(text)

    if os.environ.get("MCPTAP_TEST_REWRITABLE"):
        # A server that changes a tool's definition under its clients (the
        # "rug pull" mcptap reports): `add`, re-registered with another
        # description.
        from fastmcp.tools import Tool

        @mcp.tool
        def rewrite_add(description: str) -> str:
            """Give the add tool another description."""

            def add(a: int, b: int) -> int:
                return a + b

            mcp.add_tool(Tool.from_function(add, description=description))
            return "rewritten"

    if os.environ.get("MCPTAP_TEST_EFFECTS"):
        # Tools with side effects on the host (what mcptap attributes to
        # each call): files, a program, a connection, a listener, CPU.
        import socket
        import subprocess
        import time

        @mcp.tool
        def read_file(path: str) -> int:
            """Reads a file; returns its size."""
            with open(path, "rb") as f:
                return len(f.read())

        @mcp.tool
        def write_file(path: str, text: str) -> int:
            """Writes a file."""
            with open(path, "w") as f:
                return f.write(text)

        @mcp.tool
        def remove_file(path: str) -> str:
            """Deletes a file."""
            os.unlink(path)
            return "removed"

        @mcp.tool
        def run(argv: list[str]) -> str:
            """Runs a program; returns its output."""
            return subprocess.run(argv, capture_output=True, text=True, check=False).stdout

        @mcp.tool
        def connect(port: int) -> str:
            """Connects to a loopback port and hangs up."""
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                return "connected"

        @mcp.tool
        async def listen() -> int:
            """Opens a listening socket on loopback for half a second."""
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                s.listen()
                await asyncio.sleep(0.5)
                return s.getsockname()[1]

        @mcp.tool
        async def read_slowly(path: str, seconds: float) -> int:
            """Reads a file, then waits (calls that overlap)."""
            with open(path, "rb") as f:
                n = len(f.read())
            await asyncio.sleep(seconds)
            return n

        @mcp.tool
        def resolve_and_connect(resolver: str, name: str, port: int) -> str:
            """Asks the DNS server at `resolver` (port 53, over UDP) for the
            address of `name`, then connects to it on `port`."""
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

        @mcp.tool
        def http_get(port: int, host: str) -> str:
            """GET / from a loopback port, naming `host`; the status line."""
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
                return s.recv(4096).split(b"\r\n")[0].decode()

        @mcp.tool
        def tls_hello(port: int, host: str) -> str:
            """Starts a TLS handshake with a loopback port for `host` (the
            peer hangs up: only the ClientHello matters)."""
            import ssl

            context = ssl.create_default_context()
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                try:
                    with context.wrap_socket(raw, server_hostname=host):
                        return "handshake completed"
                except (ssl.SSLError, OSError) as e:
                    return f"handshake failed: {type(e).__name__}"

        @mcp.tool
        def burn_in_child(ms: int) -> int:
            """Runs a program that spends `ms` milliseconds of CPU; waits."""
            code = f"import time\nend = time.process_time() + {ms} / 1000\nwhile time.process_time() < end: pass"
            return subprocess.run([sys.executable, "-c", code], check=True).returncode

        @mcp.tool
        def burn(ms: int) -> int:
            """Spends `ms` milliseconds of CPU."""
            end = time.thread_time() + ms / 1000
            n = 0
            while time.thread_time() < end:
                n += 1
            return n

    @mcp.prompt
    def greet(name: str) -> str:
        """A prompt."""
        return f"Hello {name}"

    @mcp.resource("test://config")
    def config() -> str:
        """A resource."""
        return "{}"

    return mcp
