"""The end-to-end tests' own MCP server (mcp_tools.py) over stdio."""

import os
import sys

from mcp_tools import build

NAME = os.environ.get("MCPTAP_TEST_SERVER_NAME", "mcptap-test-server")

if __name__ == "__main__":
    print(f"{NAME} starting (pid {os.getpid()})", file=sys.stderr)
    build(NAME).run(show_banner=False)
