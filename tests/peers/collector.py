"""An HTTP NDJSON event collector for the delivery tests.

Usage: collector.py PORT OUT

Appends every event received in a POST body to OUT as one JSON line
{"batch": X-Mcptap-Batch, "content_type": ..., "event": {...}} and answers
200. The test kills and restarts it to make an outage.
"""

import json

from recorder import QuietHandler, serve


class Handler(QuietHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        batch = self.headers.get("X-Mcptap-Batch")
        content_type = self.headers.get("Content-Type")
        self.record([{"batch": batch, "content_type": content_type, "event": json.loads(line)}
                     for line in body.decode().splitlines() if line.strip()])
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


if __name__ == "__main__":
    serve(Handler)
