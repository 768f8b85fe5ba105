"""What the delivery tests' receivers (collector.py, otlp_receiver.py)
share: a quiet threaded HTTP server on 127.0.0.1 that appends JSON lines to
an output file the test reads.

Usage from a receiver: `serve(Handler)` in its main, with PORT and OUT
from its command line; `Handler` calls `record(self, [dicts])`.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_LOCK = threading.Lock()


class QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def record(self, records):
        """Appends each record to OUT as one JSON line, whole, under a lock."""
        with _LOCK, open(self.server.out, "a") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")


def serve(handler):
    port, out = int(sys.argv[1]), sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.out = out
    server.serve_forever()
