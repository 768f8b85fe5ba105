"""An unrelated TLS process for the benchmark: an HTTPS server thread and a
client loop in one process, no MCP anywhere. Every SSL_read/SSL_write it
makes goes through mcptap's OpenSSL probes, which must cost it little.

Usage: bench_tls_unrelated.py N CERT KEY
Output: CPU nanoseconds (user + system, all threads) per request, median of
5 slices: what the probes add to the process itself, steadier than wall
time on a shared host.
"""

import http.client
import http.server
import ssl
import sys
import threading
import time


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body are separate writes: without this, Nagle's algorithm
    # and delayed ACKs make every request wait 40 ms.
    disable_nagle_algorithm = True
    body = b"x" * 1024

    def do_GET(self):  # noqa: N802 - the http.server API
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def main():
    n, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    conn = http.client.HTTPSConnection(
        "127.0.0.1", server.server_address[1], context=ssl.create_default_context(cafile=cert)
    )

    def get():
        conn.request("GET", "/")
        conn.getresponse().read()

    for _ in range(200):  # warm up (and past discovery's budget)
        get()
    slices = []
    per = max(1, n // 5)
    for _ in range(5):
        start = time.process_time_ns()
        for _ in range(per):
            get()
        slices.append((time.process_time_ns() - start) / per)
    slices.sort()
    print(slices[2])


if __name__ == "__main__":
    main()
