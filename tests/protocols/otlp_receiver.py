"""An OTLP/HTTP trace receiver and a webhook endpoint in one HTTP server, for
tests/api/trace_context.rs.

POST /v1/traces: the body is decoded as an `ExportTraceServiceRequest` with the official
`opentelemetry-proto` package (protobuf only, as OTLP/HTTP binary sends it); every span is
written to SPANS as one JSON line (ids in hex, attributes as plain values, the request's
`x-otlp-key` header) and the answer
is an empty `ExportTraceServiceResponse`. With OTLP_FAIL_FIRST=N in the environment the
first N trace requests are answered 503 with `Retry-After: 1` (body read, nothing written):
a collector that is restarting. Any other POST is a webhook delivery: its path,
headers and JSON body are written to REQUESTS and it is answered 200.

usage: otlp_receiver.py SPANS REQUESTS PORT_FILE
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

SPANS, REQUESTS, PORT_FILE = sys.argv[1:4]
LOCK = threading.Lock()
FAIL_FIRST = [int(os.environ.get("OTLP_FAIL_FIRST", "0"))]


def value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind is None:
        return None
    return getattr(v, kind)


def append(path, record):
    with LOCK, open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path == "/v1/traces":
            if self.headers.get("content-type") != "application/x-protobuf":
                self.send_response(415)
                self.end_headers()
                return
            with LOCK:
                fail = FAIL_FIRST[0] > 0
                FAIL_FIRST[0] -= 1 if fail else 0
            if fail:
                self.send_response(503)
                self.send_header("retry-after", "1")
                self.send_header("content-length", "0")
                self.end_headers()
                return
            request = trace_service_pb2.ExportTraceServiceRequest()
            request.ParseFromString(body)
            for rs in request.resource_spans:
                resource = {a.key: value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        append(SPANS, {
                            "service": resource.get("service.name"),
                            "x_otlp_key": self.headers.get("x-otlp-key"),
                            "scope": ss.scope.name,
                            "name": s.name,
                            "kind": s.kind,
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent_span_id": s.parent_span_id.hex(),
                            "start": s.start_time_unix_nano,
                            "end": s.end_time_unix_nano,
                            "status": s.status.code,
                            "attributes": {a.key: value(a.value) for a in s.attributes},
                        })
            answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
            return
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        append(REQUESTS, {
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": parsed,
        })
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(PORT_FILE + ".tmp", "w", encoding="utf-8") as f:
    f.write(str(server.server_address[1]))
os.replace(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
