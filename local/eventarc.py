"""Eventarc for Google's Firestore emulator: document updates become the
Firestore CloudEvents Eventarc delivers, so a Firestore-triggered function
runs the same code locally as in the cloud.

The emulator delivers no events to functions. This bridge listens to
one collection with an `on_snapshot` listener (on the emulator's Listen
stream, as in the cloud), keeps the last version of each document,
and for each MODIFIED one POSTs a `google.cloud.firestore.document.v1.updated`
CloudEvent in binary content mode: the attributes Eventarc sends, and a
protobuf `DocumentEventData` body (`value`, `old_value`, `update_mask`) from
the `google-events` package, decoded by the function as Google's samples do.

Delivery is at least once, as with Eventarc's `--retry`: a non-2xx answer,
or none, is retried with backoff (seconds here, up to 10 minutes there),
then given up. `redeliver_last` sends an event again, as Eventarc may.

Where it differs from Eventarc (local only, never deployed):
- Created and deleted documents produce no events (only `updated`).
- The listener reports the state it sees, not each write: writes that land
  together (concurrent writers) may arrive as one event whose `old_value` is
  the last state seen, where Eventarc sends one event per write. One
  writer's successive writes arrive one by one.
- `update_mask.field_paths` lists the top-level fields whose value changed
  (added, removed or different), compared as Firestore values, so 1, 1.0
  and true differ. Whether Eventarc lists a nested change as `options` or
  as `options.answer_format` is not confirmed here: a function should
  compare a path's first segment.
- Events for one collection are delivered one at a time, in order.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import queue
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from google.events.cloud import firestore as events
from google.protobuf import struct_pb2, timestamp_pb2

from meeting_actions import logs

UPDATED = "google.cloud.firestore.document.v1.updated"
DATASCHEMA = (
    "https://github.com/googleapis/google-cloudevents/blob/main/"
    "proto/google/events/cloud/firestore/v1/data.proto"
)
DEFAULT_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0)
_SIMPLE_FIELD = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*$")

# The raw protobuf classes: what Google's sample parses into (`data._pb`).
ValuePb = events.Value.pb()
DocumentPb = events.Document.pb()
DocumentEventDataPb = events.DocumentEventData.pb()


@dataclass
class Delivery:
    """One event, as delivered (or given up); `attempts` counts the POSTs."""

    ce_id: str
    doc_id: str
    headers: dict[str, str]
    body: bytes
    redelivery: bool = False
    attempts: int = 0
    status: int | None = None
    delivered: bool = False
    error: str | None = None
    finished: bool = False


def to_value(value: Any) -> Any:
    """A Python value as read by google-cloud-firestore, as a Firestore
    `Value` protobuf (google.events' copy of google.firestore.v1.Value)."""
    from google.cloud.firestore_v1._helpers import GeoPoint
    from google.cloud.firestore_v1.document import DocumentReference

    pb = ValuePb()
    if value is None:
        pb.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        pb.boolean_value = value
    elif isinstance(value, int):
        pb.integer_value = value
    elif isinstance(value, float):
        pb.double_value = value
    elif isinstance(value, str):
        pb.string_value = value
    elif isinstance(value, bytes):
        pb.bytes_value = value
    elif isinstance(value, dt.datetime):
        pb.timestamp_value.CopyFrom(to_timestamp(value))
    elif isinstance(value, Mapping):
        pb.map_value.SetInParent()  # an empty map is still a map
        for key, item in value.items():
            pb.map_value.fields[str(key)].CopyFrom(to_value(item))
    elif isinstance(value, list | tuple):
        pb.array_value.SetInParent()
        pb.array_value.values.extend(to_value(item) for item in value)
    elif isinstance(value, GeoPoint):
        pb.geo_point_value.latitude = value.latitude
        pb.geo_point_value.longitude = value.longitude
    elif isinstance(value, DocumentReference):
        pb.reference_value = value._document_path
    else:
        raise TypeError(f"no Firestore value for {type(value).__name__}")
    return pb


def to_timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp, keeping the nanoseconds Firestore gave."""
    to_pb = getattr(value, "timestamp_pb", None)
    if to_pb is not None:
        return to_pb()
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value if value.tzinfo else value.replace(tzinfo=dt.UTC))
    return ts


def document(
    name: str, data: Mapping[str, Any], create_time: dt.datetime, update_time: dt.datetime
) -> Any:
    """A `Document` protobuf; `name` is the full projects/.../documents/... path."""
    pb = DocumentPb(name=name)
    for key, value in data.items():
        pb.fields[key].CopyFrom(to_value(value))
    pb.create_time.CopyFrom(to_timestamp(create_time))
    pb.update_time.CopyFrom(to_timestamp(update_time))
    return pb


def changed_fields(old: Any, new: Any) -> list[str]:
    """Top-level field paths whose value differs between two Documents."""
    keys = set(old.fields) | set(new.fields)
    changed = [
        k
        for k in keys
        if (k in old.fields) != (k in new.fields) or old.fields.get(k) != new.fields.get(k)
    ]
    return sorted(_field_path(k) for k in changed)


def updated_event(
    project: str,
    collection: str,
    doc_id: str,
    old: Any,
    new: Any,
    *,
    database: str = "(default)",
    location: str = "us-central1",
    event_id: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """Headers and body of Eventarc's `updated` event for two versions of a
    document (Document protobufs), in binary content mode."""
    data = DocumentEventDataPb()
    data.value.CopyFrom(new)
    data.old_value.CopyFrom(old)
    data.update_mask.field_paths.extend(changed_fields(old, new))
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event_id or str(uuid.uuid4()),
        "ce-type": UPDATED,
        "ce-source": f"//firestore.googleapis.com/projects/{project}/databases/{database}",
        "ce-subject": f"documents/{collection}/{doc_id}",
        "ce-time": new.update_time.ToJsonString(),
        "ce-dataschema": DATASCHEMA,
        "ce-project": project,
        "ce-location": location,
        "ce-database": database,
        "ce-namespace": "(default)",
        "ce-document": f"{collection}/{doc_id}",
        "Content-Type": "application/protobuf",
    }
    return headers, data.SerializeToString()


def document_name(project: str, database: str, collection: str, doc_id: str) -> str:
    return f"projects/{project}/databases/{database}/documents/{collection}/{doc_id}"


class FirestoreEventBridge:
    """Eventarc's Firestore `updated` trigger for one collection, pointed at
    one function URL. Use as a context manager, or start() and stop().

    `deliveries` lists every event sent (retries are attempts of one
    delivery); `counts` has events, attempts, delivered, failed and
    redelivered.
    """

    def __init__(
        self,
        project: str,
        collection: str,
        target_url: str,
        database: str = "(default)",
        *,
        location: str = "us-central1",
        client: Any = None,
        retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS,
        timeout: float = 60.0,
    ):
        self.project = project
        self.collection = collection
        self.target_url = target_url
        self.database = database
        self.location = location
        self.retry_delays = tuple(retry_delays)
        self.timeout = timeout
        self.deliveries: list[Delivery] = []
        self.counts: collections.Counter[str] = collections.Counter()
        self._client = client
        self._previous: dict[str, Any] = {}
        self._queue: queue.Queue[Delivery | None] = queue.Queue()
        self._changed = threading.Condition()
        self._pending = 0
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._watch: Any = None
        self._worker: threading.Thread | None = None
        self._http = requests.Session()
        self._http.trust_env = False  # loopback targets: no proxy from the environment

    # --- lifecycle -------------------------------------------------------

    def start(self, timeout: float = 30.0) -> FirestoreEventBridge:
        """Listen, and return once the listener has the collection's current
        documents (changes from then on become events)."""
        if self._client is None:
            if not os.environ.get("FIRESTORE_EMULATOR_HOST"):
                raise RuntimeError("the bridge is local only: set FIRESTORE_EMULATOR_HOST")
            from google.cloud import firestore

            self._client = firestore.Client(project=self.project, database=self.database)
        self._stopping.clear()
        self._worker = threading.Thread(
            target=self._deliver_loop, name=f"eventarc-{self.collection}", daemon=True
        )
        self._worker.start()
        self._watch = self._client.collection(self.collection).on_snapshot(self._on_snapshot)
        if not self._ready.wait(timeout):
            self.stop()
            raise TimeoutError(f"the listener on {self.collection} got no snapshot in {timeout} s")
        return self

    def stop(self) -> None:
        """Stop listening and delivering; a retry waiting its turn gives up."""
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.unsubscribe()
        self._stopping.set()
        worker, self._worker = self._worker, None
        if worker is not None:
            self._queue.put(None)
            worker.join(timeout=self.timeout + 5)
        self._http.close()

    def __enter__(self) -> FirestoreEventBridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- for tests -------------------------------------------------------

    def events_for(self, doc_id: str) -> list[Delivery]:
        """The deliveries of one document's events, in order, redeliveries included."""
        with self._changed:
            return [d for d in self.deliveries if d.doc_id == doc_id]

    def wait_delivered(
        self, count: int, doc_id: str | None = None, timeout: float = 30.0
    ) -> list[Delivery]:
        """Wait until `count` events (of `doc_id`, if given; redeliveries
        not counted) are finished, acknowledged or given up; those events."""

        def finished() -> list[Delivery]:
            return [
                d
                for d in self.deliveries
                if d.finished and not d.redelivery and doc_id in (None, d.doc_id)
            ]

        with self._changed:
            if not self._changed.wait_for(lambda: len(finished()) >= count, timeout):
                raise TimeoutError(
                    f"{len(finished())} of {count} events finished within {timeout} s"
                )
            return finished()

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until every event seen so far is delivered or given up."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._pending == 0, timeout):
                raise TimeoutError(f"{self._pending} events still pending after {timeout} s")

    def redeliver_last(self, doc_id: str, copies: int = 1) -> list[Delivery]:
        """Deliver the document's last event again (same ce-id and body), as
        Eventarc's at-least-once delivery may; `copies` go out at the same
        time. Returns once they are finished."""
        with self._changed:
            originals = [d for d in self.deliveries if d.doc_id == doc_id and not d.redelivery]
        if not originals:
            raise LookupError(f"no event of {self.collection}/{doc_id} to deliver again")
        last = originals[-1]
        again = [
            Delivery(last.ce_id, doc_id, dict(last.headers), last.body, redelivery=True)
            for _ in range(copies)
        ]
        with self._changed:
            self.deliveries.extend(again)
            self.counts["redelivered"] += copies
            self._pending += copies
        barrier = threading.Barrier(copies)
        threads = [
            threading.Thread(target=self._deliver, args=(d, barrier.wait), daemon=True)
            for d in again
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return again

    # --- listening -------------------------------------------------------

    def _on_snapshot(self, _snapshots: Any, changes: Any, _read_time: Any) -> None:
        """Runs on the listener's thread: turn changes into queued events."""
        first = not self._ready.is_set()
        for change in changes:
            snap = change.document
            try:
                if change.type.name == "REMOVED":
                    self._previous.pop(snap.id, None)
                    continue
                name = document_name(self.project, self.database, self.collection, snap.id)
                new = document(name, snap.to_dict() or {}, snap.create_time, snap.update_time)
                old = self._previous.get(snap.id)
                self._previous[snap.id] = new
                if first or change.type.name != "MODIFIED" or old is None:
                    continue
                headers, body = updated_event(
                    self.project,
                    self.collection,
                    snap.id,
                    old,
                    new,
                    database=self.database,
                    location=self.location,
                )
                self._enqueue(Delivery(headers["ce-id"], snap.id, headers, body))
            except Exception as exc:  # noqa: BLE001 - a bad document must not stop the listener
                logs.error(
                    "eventarc bridge could not make an event",
                    document=f"{self.collection}/{snap.id}",
                    error=f"{type(exc).__name__}: {exc}",
                )
        self._ready.set()

    def _enqueue(self, delivery: Delivery) -> None:
        with self._changed:
            self.deliveries.append(delivery)
            self.counts["events"] += 1
            self._pending += 1
        self._queue.put(delivery)

    # --- delivering ------------------------------------------------------

    def _deliver_loop(self) -> None:
        while True:
            delivery = self._queue.get()
            if delivery is None:
                return
            self._deliver(delivery)

    def _deliver(self, delivery: Delivery, before: Callable[[], Any] | None = None) -> None:
        """POST until a 2xx answer or the retries run out."""
        if before is not None:
            before()
        statuses: list[int | str] = []
        for attempt in range(len(self.retry_delays) + 1):
            if attempt and self._stopping.wait(self.retry_delays[attempt - 1]):
                delivery.error = "the bridge stopped before the event was delivered"
                break
            with self._changed:
                self.counts["attempts"] += 1
            delivery.attempts += 1
            try:
                response = self._http.post(
                    self.target_url,
                    data=delivery.body,
                    headers=delivery.headers,
                    timeout=(5, self.timeout),
                )
            except requests.RequestException as exc:
                statuses.append(type(exc).__name__)
                delivery.error = f"no answer: {type(exc).__name__}"
                continue
            delivery.status = response.status_code
            statuses.append(response.status_code)
            response.close()
            if 200 <= response.status_code < 300:
                delivery.delivered, delivery.error = True, None
                break
            delivery.error = f"the function answered {response.status_code}"
        fields = {
            "ce_id": delivery.ce_id,
            "document": f"{self.collection}/{delivery.doc_id}",
            "attempts": delivery.attempts,
            "statuses": statuses,
            "redelivery": delivery.redelivery,
        }
        if delivery.delivered:
            logs.info("eventarc event delivered", **fields)
        else:
            logs.warning("eventarc event given up", error=delivery.error, **fields)
        with self._changed:
            delivery.finished = True
            self.counts["delivered" if delivery.delivered else "failed"] += 1
            self._pending -= 1
            self._changed.notify_all()


def _field_path(key: str) -> str:
    """A top-level key as a Firestore field path (backquoted unless simple)."""
    if _SIMPLE_FIELD.match(key):
        return key
    return "`" + key.replace("\\", "\\\\").replace("`", "\\`") + "`"
