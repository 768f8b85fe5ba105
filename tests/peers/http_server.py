"""The end-to-end tests' own MCP server (mcp_tools.py) over HTTP: Streamable
HTTP (JSON or event-stream responses, stateful or stateless) or the legacy
HTTP+SSE transport, plain or TLS (uvicorn; Python's ssl module goes
through the system's libssl).

Usage: http_server.py --port N [--transport http|sse] [--json-response]
                      [--stateless] [--tls-cert F --tls-key F] [--name NAME]
"""

import argparse
import os
import sys

from mcp_tools import build


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--transport", choices=["http", "sse"], default="http")
    p.add_argument("--json-response", action="store_true")
    p.add_argument("--stateless", action="store_true")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--name", default=os.environ.get("MCPTAP_TEST_SERVER_NAME", "mcptap-http-server"))
    args = p.parse_args()
    uvicorn_config = {"log_level": "warning", "timeout_graceful_shutdown": 1}
    if args.tls_cert:
        uvicorn_config.update({"ssl_certfile": args.tls_cert, "ssl_keyfile": args.tls_key})
    kwargs = {"json_response": args.json_response} if args.transport == "http" else {}
    if args.stateless:
        kwargs["stateless_http"] = True
    print(f"{args.name} starting (pid {os.getpid()}) on {args.host}:{args.port}", file=sys.stderr, flush=True)
    build(args.name).run(
        transport=args.transport,
        host=args.host,
        port=args.port,
        show_banner=False,
        uvicorn_config=uvicorn_config,
        **kwargs,
    )


if __name__ == "__main__":
    main()
