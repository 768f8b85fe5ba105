"""An OTLP/HTTP receiver for the delivery tests, on the official protobuf
definitions (PyPI opentelemetry-proto).

Usage: otlp_receiver.py PORT OUT

Decodes each POST to /v1/traces and /v1/logs (application/x-protobuf) and
appends {"signal": "traces"|"logs", "request": <the request as JSON>} to
OUT. A body that does not decode is answered 400 and recorded as
{"signal": ..., "error": ...}, so the test sees it.
"""

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from recorder import QuietHandler, serve

SIGNALS = {
    "/v1/traces": ("traces", ExportTraceServiceRequest, ExportTraceServiceResponse),
    "/v1/logs": ("logs", ExportLogsServiceRequest, ExportLogsServiceResponse),
}


class Handler(QuietHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path not in SIGNALS:
            self.send_response(404)
            self.end_headers()
            return
        signal, request_type, response_type = SIGNALS[self.path]
        record = {"signal": signal, "content_type": self.headers.get("Content-Type")}
        status = 200
        try:
            request = request_type.FromString(body)
            record["request"] = MessageToDict(request)
        except Exception as e:  # noqa: BLE001 - recorded for the test
            record["error"] = repr(e)
            status = 400
        self.record([record])
        answer = response_type().SerializeToString()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


if __name__ == "__main__":
    serve(Handler)
