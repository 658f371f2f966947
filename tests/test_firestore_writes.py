"""The store's Write messages are the library's own, field for field.

meeting_actions/firestore_writes.py builds them with the raw protobuf
classes (for CPU); each case here is built both ways and compared as
messages, so a difference in any value, mask, precondition or transform
fails. The end-to-end tests then run every write against Google's emulator.
"""

from __future__ import annotations

import datetime as dt

import pytest
from google.api_core.datetime_helpers import DatetimeWithNanoseconds
from google.cloud import firestore
from google.cloud.firestore_v1 import _helpers
from google.cloud.firestore_v1.types import CommitRequest, Write
from proto import datetime_helpers as proto_datetime

from meeting_actions import firestore_writes

NAME = "projects/p/databases/(default)/documents/meetings/abc"
WHEN = dt.datetime(2026, 12, 2, 12, 30, 1, 123456, tzinfo=dt.UTC)
NANOS = DatetimeWithNanoseconds(2026, 12, 2, 12, 30, 1, nanosecond=123456789, tzinfo=dt.UTC)
# What a commit's update_time is: proto-plus's own class, which keeps its nanoseconds.
UPDATE_TIME = proto_datetime.DatetimeWithNanoseconds(
    2026, 12, 2, 12, 30, 1, nanosecond=123456789, tzinfo=dt.UTC
)

# Every shape the product writes: a queued document, a claim, a final result.
CASES = {
    "queued": {
        "status": "queued",
        "transcript_id": "abc",
        "source": {"kind": "url", "audio_url": "https://example.com/a.mp3"},
        "options": {"answer_format": "a numbered list", "language": None},
        "metadata": {"team": "Ops", "odd key. with `dots`": "x"},
        "notify_url": None,
        "sweep_at": WHEN,
        "queued_checks": 0,
        "created_at": firestore.SERVER_TIMESTAMP,
        "updated_at": firestore.SERVER_TIMESTAMP,
    },
    "claim": {
        "status": "generating",
        "generation": {
            "holder": "h",
            "lease_expires_at": NANOS,
            "claimed_at": WHEN,
            "read_back": UPDATE_TIME,
            "attempts": 1,
            "unsettled": True,
        },  # fmt: skip
        "sweep_at": dt.datetime(2026, 12, 2, 13, 0),  # naive: UTC, as the library has it
        "updated_at": firestore.SERVER_TIMESTAMP,
    },
    "result": {
        "sweep_at": None,
        "status": "completed",
        "action_items": [
            {
                "text": "Send the budget",
                "owner": "Priya",
                "due": "Friday",
                "moment": {"start_ms": 1200, "url": "https://x/#t=1.2"},
            },  # fmt: skip
            {"text": "日本語の項目 \U0001f600", "owner": None, "due": None, "moment": None},
        ],
        "action_items_text": "- Send the budget (Priya, due Friday)",
        "llm": {
            "model": "claude",
            "tried": [{"model": "claude", "outcome": "answered"}],
            "usage": {"input_tokens": 10**12, "output_tokens": -3},
        },  # fmt: skip
        "speakers": {},
        "empty_list": [],
        "nested": [[1, 2], (3, 4.5)],
        "floats": [0.0, -1.5, float("inf"), 1e300],
        "bytes": b"\x00\xff",
        "times": [
            dt.datetime(2026, 1, 1, 9, 0, 0, 5, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
            dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
            dt.datetime(1, 1, 1, tzinfo=dt.UTC),
        ],
        "flags": [True, False],
        "note": None,
        "completed_at": firestore.SERVER_TIMESTAMP,
        "regenerate": firestore.DELETE_FIELD,
        "a field with spaces": 1,
        "updated_at": firestore.SERVER_TIMESTAMP,
    },
    "one delete": {"regenerate": firestore.DELETE_FIELD},
    "only a stamp": {"updated_at": firestore.SERVER_TIMESTAMP},
    "a geo point and a tuple": {"where": firestore.GeoPoint(1.5, -2.0), "t": ("a", 1)},
}


def _ours(write) -> bytes:
    return write.SerializeToString(deterministic=True)


def _library(write: Write) -> bytes:
    return Write.pb(write).SerializeToString(deterministic=True)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize(
    "version", [None, WHEN, NANOS, UPDATE_TIME], ids=["exists", "datetime", "nanos", "update time"]
)
def test_an_update_is_the_librarys_update(case: str, version) -> None:
    fields = CASES[case]
    option = None if version is None else _helpers.LastUpdateOption(version)
    (expected,) = _helpers.pbs_for_update(NAME, fields, option)
    assert _ours(firestore_writes.update(NAME, fields, version)) == _library(expected)


@pytest.mark.parametrize("case", sorted(c for c in CASES if "delete" not in c))
def test_a_create_is_the_librarys_create(case: str) -> None:
    fields = {k: v for k, v in CASES[case].items() if v is not firestore.DELETE_FIELD}
    (expected,) = _helpers.pbs_for_create(NAME, fields)
    assert _ours(firestore_writes.create(NAME, fields)) == _library(expected)


def test_refusals_are_the_librarys() -> None:
    with pytest.raises(ValueError, match="DELETE_FIELD"):
        firestore_writes.create(NAME, {"a": firestore.DELETE_FIELD})
    with pytest.raises(ValueError, match="empty"):
        firestore_writes.update(NAME, {})
    for bad_key in ("", 3):
        fields = {"metadata": {"a": 1, bad_key: "x"}}
        for build in (firestore_writes.update, firestore_writes.create):
            with pytest.raises(ValueError, match="empty"):
                build(NAME, fields)
    with pytest.raises(ValueError, match="empty"):
        _helpers.pbs_for_update(NAME, {"metadata": {"a": 1, "": "x"}}, None)
    with pytest.raises(TypeError):
        firestore_writes.update(NAME, {"a": object()})


def test_the_commit_request_carries_the_write_unchanged() -> None:
    write = firestore_writes.update(NAME, CASES["claim"], NANOS)
    request = firestore_writes.commit_request("projects/p/databases/(default)", write)
    assert isinstance(request, CommitRequest)
    assert request.database == "projects/p/databases/(default)"
    assert CommitRequest.pb(request).writes[0] == write


@pytest.mark.parametrize(
    "value",
    [2**63, -(2**63) - 1, "lone \ud800", {"k": "\udfff"}, bytearray(b"x")],
    ids=["int64 over", "int64 under", "surrogate", "nested surrogate", "bytearray"],
)
def test_a_value_firestore_cannot_hold_fails_as_the_library_fails(value) -> None:
    """Callers catch these (generate.py: ValueError, TypeError, UnicodeError)."""
    with pytest.raises(Exception) as library:
        _helpers.pbs_for_update(NAME, {"a": value}, None)
    with pytest.raises(type(library.value)) as ours:
        firestore_writes.update(NAME, {"a": value})
    assert str(ours.value) == str(library.value)
