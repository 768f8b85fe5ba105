"""The end-to-end tests' own MCP server (FastMCP), served over stdio by
stdio_server.py and over HTTP by http_server.py.

Its tools cover every way a call can end: success, a result flagged
isError, an exception, a slow call (for latency bounds and cancellation),
and a result of several MiB. `whoami` tells the test which process serves
it, so that assertions only look at this server's events.
"""

import asyncio
import os

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
