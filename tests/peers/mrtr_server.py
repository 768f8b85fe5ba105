"""An MCP server of the official Python SDK 2.x (MCPServer) speaking
2026-07-28, whose `deploy` tool asks the user for input: in 2026-07-28 the
SDK answers the first call with an `InputRequiredResult` (`resultType:
"input_required"`, the question under `inputRequests`, the sealed
`requestState`), and the client retries with the answer. Also `whoami`
(its pid) and `add`.

Usage: mrtr_server.py [--port N]   (Streamable HTTP, stateless, JSON
                                    responses; stdio without --port)
"""

import argparse
import os
import sys
from typing import Annotated

from pydantic import BaseModel

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.resolve import Elicit, Resolve


class Target(BaseModel):
    environment: str


def ask_environment() -> Elicit[Target]:
    return Elicit("Which environment should this deploy to?", Target)


def build() -> MCPServer:
    mcp = MCPServer(os.environ.get("MCPTAP_TEST_SERVER_NAME", "mcptap-mrtr-server"))

    @mcp.tool()
    def whoami() -> int:
        """The server's process id."""
        return os.getpid()

    @mcp.tool()
    def add(a: int, b: int) -> int:
        """Adds two numbers."""
        return a + b

    @mcp.tool()
    def deploy(service: str, target: Annotated[Target, Resolve(ask_environment)]) -> str:
        """Deploys a service, after asking the user where to."""
        return f"deployed {service} to {target.environment}"

    return mcp


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int)
    args = p.parse_args()
    mcp = build()
    print(f"mrtr server starting (pid {os.getpid()})", file=sys.stderr, flush=True)
    if args.port is None:
        mcp.run()
    else:
        mcp.run(transport="streamable-http", host="127.0.0.1", port=args.port, json_response=True, stateless_http=True)


if __name__ == "__main__":
    main()
