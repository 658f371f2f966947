"""A meeting's writes as Firestore's own protobuf messages, built directly.

`DocumentReference.create` and `.update` build each value as a proto-plus
wrapper, which costs about ten times the protobuf message below it: for a
meeting's three writes, 1.3 ms of CPU against 0.12 ms (BENCHMARKS.md,
"Where the CPU goes"). These functions build the same `Write` messages with
the raw protobuf classes the library itself wraps; tests/test_firestore_writes.py
checks them against the library's own for every shape the product writes.

The store's contract is narrower than `update()`'s: a top-level key is one
field name (never a dotted path), and the two sentinels appear only at the
top level. Any value type without a fast path here is encoded by the
library, so a field a person set in the console (a reference, a geo point)
is written back exactly as the library would.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.api_core.datetime_helpers import DatetimeWithNanoseconds
from google.cloud import firestore
from google.cloud.firestore_v1 import _helpers
from google.cloud.firestore_v1.field_path import FieldPath
from google.cloud.firestore_v1.types import CommitRequest, Precondition, Write, document

_Write = Write.pb()
_REQUEST_TIME = 1  # DocumentTransform.FieldTransform.ServerValue.REQUEST_TIME


def _encode(value: Any, out: Any) -> None:
    """Set the protobuf Value `out` to `value`, as _helpers.encode_value would."""
    kind = type(value)
    if value is None:
        out.null_value = 0
    elif kind is bool:
        out.boolean_value = value
    elif kind is int:
        out.integer_value = value
    elif kind is float:
        out.double_value = value
    elif kind is str:
        out.string_value = value
    elif kind is dict:
        out.map_value.SetInParent()  # an empty map is still a map
        fields = out.map_value.fields
        for key, item in value.items():
            if not isinstance(key, str) or not key:  # the library's refusal, word for word
                raise ValueError("One or more components is not a string or is empty.")
            _encode(item, fields[key])
    elif kind is list or kind is tuple:
        out.array_value.SetInParent()
        values = out.array_value.values
        for item in value:
            _encode(item, values.add())
    elif kind is DatetimeWithNanoseconds:
        out.timestamp_value.CopyFrom(value.timestamp_pb())
    elif kind is dt.datetime:
        out.timestamp_value.FromDatetime(value)  # naive counts as UTC, as the library's
    else:
        out.CopyFrom(document.Value.pb(_helpers.encode_value(value)))


def _write(name: str, fields: dict[str, Any]) -> tuple[Any, list[str]]:
    """The Write's document with every plain field, and the stamped fields' names."""
    write = _Write()
    write.update.name = name
    out = write.update.fields
    stamped = []
    for key, value in fields.items():
        if value is firestore.SERVER_TIMESTAMP:
            stamped.append(key)
        elif value is not firestore.DELETE_FIELD:
            _encode(value, out[key])
    return write, stamped


def _stamp(write: Any, stamped: list[str]) -> None:
    for key in sorted(stamped):
        transform = write.update_transforms.add()
        transform.field_path = FieldPath(key).to_api_repr()
        transform.set_to_server_value = _REQUEST_TIME


def create(name: str, fields: dict[str, Any]) -> Any:
    """The Write that creates document `name`, failing if it exists."""
    if any(value is firestore.DELETE_FIELD for value in fields.values()):
        raise ValueError("Cannot apply DELETE_FIELD in a create request.")
    write, stamped = _write(name, fields)
    write.current_document.exists = False
    _stamp(write, stamped)
    return write


def update(name: str, fields: dict[str, Any], if_version: dt.datetime | None = None) -> Any:
    """The Write that sets (or, for DELETE_FIELD, removes) each top-level field
    of an existing document; with `if_version`, only if its update time is that."""
    if not fields:
        raise ValueError("Cannot update with an empty document.")
    write, stamped = _write(name, fields)
    set_or_removed = sorted(key for key in fields if key not in stamped)
    write.update_mask.field_paths.extend(FieldPath(key).to_api_repr() for key in set_or_removed)
    if if_version is None:
        write.current_document.exists = True
    else:
        # Converted as the library's LastUpdateOption converts it (one
        # message: the cost is in the values, not here).
        write.current_document.CopyFrom(Precondition.pb(Precondition(update_time=if_version)))
    _stamp(write, stamped)
    return write


def commit_request(database: str, write: Any) -> CommitRequest:
    """The CommitRequest carrying one write, wrapped (not copied) for the GAPIC client."""
    request = CommitRequest.pb()(database=database)
    request.writes.append(write)
    return CommitRequest.wrap(request)
