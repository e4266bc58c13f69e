"""Reads the first COUNT messages of a JetStream stream with nats-py and parses each with
the CloudEvents SDK (binary content mode: the `ce-*` headers and `content-type`, the
payload as data), printing one JSON line per message. For tests/api/protocols.rs.

Usage: nats_cloudevents.py NATS_URL STREAM COUNT
"""

import asyncio
import json
import sys

import nats
from cloudevents.core.bindings.http import HTTPMessage, from_binary_event


async def main(url, stream, count):
    nc = await nats.connect(url)
    js = nc.jetstream()
    for seq in range(1, count + 1):
        msg = await js.get_msg(stream, seq)
        headers = dict(msg.headers or {})
        event = from_binary_event(HTTPMessage(headers=headers, body=msg.data))
        data = event.get_data()
        print(
            json.dumps(
                {
                    "nats_msg_id": headers.get("Nats-Msg-Id"),
                    "specversion": event.get_specversion(),
                    "id": event.get_id(),
                    "type": event.get_type(),
                    "source": event.get_source(),
                    "subject": event.get_subject(),
                    "time": event.get_time().isoformat(),
                    "datacontenttype": event.get_datacontenttype(),
                    "data_trigger_id": data["trigger_id"],
                }
            ),
            flush=True,
        )
    await nc.close()


asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
