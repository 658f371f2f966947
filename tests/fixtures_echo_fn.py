"""A Firestore-triggered CloudEvent function for tests/test_eventarc_bridge.py
(never deployed). It decodes the event exactly as Google's sample does and
appends what it saw to $ECHO_FILE, one JSON line per delivery.

A document with `echo_fail: N` makes the first N deliveries of each event
fail (an exception: Cloud Functions answers 500 and Eventarc retries).
"""

from __future__ import annotations

import collections
import json
import os
import threading

import functions_framework
from google.events.cloud import firestore
from google.protobuf import json_format

_lock = threading.Lock()
_seen: collections.Counter[str] = collections.Counter()


@functions_framework.cloud_event
def echo(cloud_event) -> None:  # type: ignore[no-untyped-def]
    data = firestore.DocumentEventData()
    data._pb.ParseFromString(cloud_event.data)

    fail = data.value.fields["echo_fail"].integer_value if "echo_fail" in data.value.fields else 0
    with _lock:
        _seen[cloud_event["id"]] += 1
        delivery = _seen[cloud_event["id"]]
    failed = delivery <= fail
    line = {
        "attributes": dict(cloud_event.get_attributes()),
        "delivery": delivery,
        "failed": failed,
        "value": json_format.MessageToDict(data._pb.value),
        "old_value": json_format.MessageToDict(data._pb.old_value),
        "update_mask": list(data.update_mask.field_paths),
        # Read through the proto-plus wrapper too, as a function would.
        "status": data.value.fields["status"].string_value
        if "status" in data.value.fields
        else None,
    }
    with _lock, open(os.environ["ECHO_FILE"], "a") as f:
        f.write(json.dumps(line) + "\n")
    if failed:
        raise RuntimeError(f"failing delivery {delivery} of {fail}, as asked")
