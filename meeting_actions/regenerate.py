"""Regeneration asked for in the Firestore console: a person sets
`regenerate: true` on a meeting's document, and Eventarc delivers a
`google.cloud.firestore.document.v1.updated` event to
`regenerate_action_items`.

Only an update that sets the flag (it is in the event's update mask and
true in the new value) is a request. The product's own writes never set
it, and the claim that takes a request clears it, so they trigger
nothing: a function that writes the document it is triggered on must make
its writes no-ops for the trigger.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from google.events.cloud import firestore as firestore_events

FLAG = "regenerate"
# Results kept in `history`, newest last, and how large that list may grow:
# the whole document stays under Firestore's 1 MiB.
MAX_HISTORY = 3
MAX_HISTORY_BYTES = 300_000
HISTORY_FIELDS = ("status", "action_items", "action_items_text", "llm", "note", "error",
                  "error_stage", "completed_at", "result_version")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Request:
    collection: str
    doc_id: str


def requested(data: bytes | Any) -> Request | None:
    """The document whose update asks for a regeneration, or None.

    `data` is the event's protobuf DocumentEventData, decoded as Google's
    samples do.
    """
    if not isinstance(data, bytes | bytearray):
        return None
    event = firestore_events.DocumentEventData()
    try:
        event._pb.ParseFromString(bytes(data))
    except Exception:  # noqa: BLE001 - a malformed event asks for nothing
        return None
    paths = {p.split(".", 1)[0].strip("`") for p in event.update_mask.field_paths}
    if FLAG not in paths:
        return None
    value = event.value._pb.fields.get(FLAG)
    if (
        value is None
        or value.WhichOneof("value_type") != "boolean_value"
        or not value.boolean_value
    ):
        return None
    # projects/P/databases/D/documents/<collection>/<id>
    parts = event.value.name.split("/documents/", 1)[-1].split("/")
    if len(parts) != 2 or not all(parts):
        return None
    return Request(parts[0], parts[1])


def history_with(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The document's history with its current result appended, bounded."""
    history = [h for h in (data.get("history") or []) if isinstance(h, dict)]
    if data.get("status") in ("completed", "error"):
        history.append({k: data.get(k) for k in HISTORY_FIELDS if data.get(k) is not None})
    history = history[-MAX_HISTORY:]
    while len(history) > 1 and _size(history) > MAX_HISTORY_BYTES:
        history.pop(0)
    if history and _size(history) > MAX_HISTORY_BYTES:  # one result alone too large
        history[-1] = {k: v for k, v in history[-1].items() if k != "action_items"}
    return history


def _size(value: Any) -> int:
    return len(json.dumps(value, default=str).encode())
