"""A webhook receiver for tests/api/protocols.rs that checks every request of `runwatch deliver`
with the ecosystem's own libraries, never with runwatch's code:

- Standard Webhooks: `standardwebhooks.Webhook(secret).verify(body, headers)` under each
  configured secret (rotation: every one must pass), under an unrelated secret and with a
  tampered body (both must be refused), and again with the library's clock moved 4 minutes
  (still inside its 5-minute tolerance) and 6 minutes ahead (a replay outside the window,
  which the library must refuse);
- CloudEvents: `from_http_event` of the CloudEvents SDK (binary or structured mode,
  detected by the SDK from the headers).

Usage: receiver.py CONFIG_JSON OUT_JSONL PORT_FILE. CONFIG_JSON maps a path to
{"secrets": [...], "fail_first": bool}; the first request of each webhook-id (or
Runwatch-Trigger-Id) on a `fail_first` path is answered 500, the others 200. Each request
becomes one JSON line of OUT_JSONL; the chosen port is written to PORT_FILE.
"""

import base64
import json
import os
import sys
import threading
import unittest.mock
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import standardwebhooks.webhooks as swm
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from standardwebhooks import Webhook

CONFIG = json.load(open(sys.argv[1]))
OUT = sys.argv[2]
PORT_FILE = sys.argv[3]
LOCK = threading.Lock()
SEEN = set()
UNRELATED = "whsec_" + base64.b64encode(os.urandom(32)).decode()


def shifted(delta):
    """The standardwebhooks module's `datetime`, with `now()` moved by `delta`."""

    class Shifted(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz) + delta

    return unittest.mock.patch.object(swm, "datetime", Shifted)


def verify(secret, body, headers, delta=None):
    """"ok" or the library's refusal."""
    try:
        if delta is None:
            Webhook(secret).verify(body, headers)
        else:
            with shifted(delta):
                Webhook(secret).verify(body, headers)
        return "ok"
    except Exception as e:  # the library's WebhookVerificationError, or a malformed header
        return f"refused: {type(e).__name__}: {e}"


def cloudevent(headers, body):
    try:
        event = from_http_event(HTTPMessage(headers=headers, body=body))
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}
    data = event.get_data()
    return {
        "specversion": event.get_specversion(),
        "id": event.get_id(),
        "type": event.get_type(),
        "source": event.get_source(),
        "subject": event.get_subject(),
        "time": event.get_time().isoformat() if event.get_time() else None,
        "datacontenttype": event.get_datacontenttype(),
        "data_trigger_id": data.get("trigger_id") if isinstance(data, dict) else None,
    }


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        conf = CONFIG.get(self.path, {})
        rec = {"path": self.path, "headers": headers, "body": body.decode("utf-8", "replace")}
        secrets = conf.get("secrets", [])
        if secrets:
            rec["verified"] = [verify(s, body, headers) for s in secrets]
            rec["unrelated"] = verify(UNRELATED, body, headers)
            rec["tampered"] = verify(secrets[0], body + b" ", headers)
            rec["after_4m"] = verify(secrets[0], body, headers, timedelta(minutes=4))
            rec["after_6m"] = verify(secrets[0], body, headers, timedelta(minutes=6))
        if "ce-specversion" in headers or headers.get("content-type", "").startswith(
            "application/cloudevents"
        ):
            rec["cloudevent"] = cloudevent(headers, body)
        key = (self.path, headers.get("webhook-id") or headers.get("runwatch-trigger-id"))
        with LOCK:
            first = key not in SEEN
            SEEN.add(key)
        status = 500 if conf.get("fail_first") and first else 200
        rec["status"] = status
        with LOCK, open(OUT, "a") as f:
            f.write(json.dumps(rec) + "\n")
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.replace(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
