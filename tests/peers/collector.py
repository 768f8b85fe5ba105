"""An HTTP NDJSON event collector for the delivery tests.

Usage: collector.py PORT OUT

Appends every event received in a POST body to OUT as one JSON line
{"batch": X-Mcptap-Batch, "content_type": ..., "event": {...}} and answers
200. The test kills and restarts it to make an outage.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import threading

LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        batch = self.headers.get("X-Mcptap-Batch")
        content_type = self.headers.get("Content-Type")
        lines = [json.dumps({"batch": batch, "content_type": content_type, "event": json.loads(line)})
                 for line in body.decode().splitlines() if line.strip()]
        with LOCK, open(self.server.out, "a") as f:
            for line in lines:
                f.write(line + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    port, out = int(sys.argv[1]), sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.out = out
    server.serve_forever()


if __name__ == "__main__":
    main()
