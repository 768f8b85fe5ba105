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

    @mcp.prompt
    def greet(name: str) -> str:
        """A prompt."""
        return f"Hello {name}"

    @mcp.resource("test://config")
    def config() -> str:
        """A resource."""
        return "{}"

    return mcp
