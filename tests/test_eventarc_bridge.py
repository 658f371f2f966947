"""The local Eventarc bridge: updates in Google's Firestore emulator reach a
real functions-framework CloudEvent function as Eventarc's Firestore events
(binary mode, protobuf DocumentEventData), decoded as Google's sample does.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from google.cloud import firestore
from google.events.cloud import firestore as events

from local import eventarc
from local import stack as local_stack

FAST = (0.05, 0.1, 0.2)
SCHEMA = (
    "https://github.com/googleapis/google-cloudevents/blob/main/"
    "proto/google/events/cloud/firestore/v1/data.proto"
)


@pytest.fixture(scope="module")
def echo(stack: local_stack.Stack, tmp_path_factory: pytest.TempPathFactory):
    """The echo function and the file it appends each delivery to."""
    path = tmp_path_factory.mktemp("echo") / "seen.jsonl"
    path.touch()
    fn = stack.start_function(
        "echo",
        stack.function_env(ECHO_FILE=str(path)),
        signature_type="cloudevent",
        name="eventarc-echo",
        source=Path(__file__).with_name("fixtures_echo_fn.py"),
    )
    yield fn, path
    fn.stop()


def seen(path: Path, ce_id: str) -> list[dict]:
    """What the function recorded for one event, delivery by delivery."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [line for line in lines if line["attributes"]["id"] == ce_id]


@pytest.fixture
def bridge(stack, echo) -> Iterator[Callable[..., eventarc.FirestoreEventBridge]]:
    """Bridges on fresh collections, stopped after the test."""
    made: list[eventarc.FirestoreEventBridge] = []

    def make(collection: str | None = None, **kw) -> eventarc.FirestoreEventBridge:
        b = eventarc.FirestoreEventBridge(
            stack.project,
            collection or f"bridge-{uuid.uuid4().hex[:8]}",
            echo[0].url,
            retry_delays=kw.pop("retry_delays", FAST),
            **kw,
        )
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


def test_an_update_arrives_as_eventarcs_firestore_event(db, bridge, echo) -> None:
    b = bridge()
    ref = db.collection(b.collection).document("m1")
    at = dt.datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=dt.UTC)
    ref.set(
        {
            "status": "completed",
            "count": 3,
            "ratio": 0.5,
            "flag": True,
            "nothing": None,
            "at": at,
            "options": {"answer_format": "bullets", "list": [1, "two", 3.5, None]},
            "same": "unchanged",
        }
    )
    with b:  # the document exists before: its ADDED is no event
        ref.update(
            {
                "status": "generating",
                "options.answer_format": "json",
                "regenerate": True,
                "nothing": firestore.DELETE_FIELD,
            }
        )
        (delivery,) = b.wait_delivered(1)
    assert delivery.delivered and delivery.attempts == 1 and delivery.status == 200

    (got,) = seen(echo[1], delivery.ce_id)
    name = f"projects/{b.project}/databases/(default)/documents/{b.collection}/m1"
    value, old = got["value"], got["old_value"]
    attributes = got["attributes"]
    assert attributes == {
        "specversion": "1.0",
        "id": delivery.ce_id,
        "type": "google.cloud.firestore.document.v1.updated",
        "source": f"//firestore.googleapis.com/projects/{b.project}/databases/(default)",
        "subject": f"documents/{b.collection}/m1",
        "time": value["updateTime"],
        "datacontenttype": "application/protobuf",
        "dataschema": SCHEMA,
        "project": b.project,
        "location": "us-central1",
        "database": "(default)",
        "namespace": "(default)",
        "document": f"{b.collection}/m1",
    }
    assert got["update_mask"] == ["nothing", "options", "regenerate", "status"]  # one removed
    assert value["name"] == old["name"] == name
    assert value["createTime"] == old["createTime"]
    assert old["updateTime"] < value["updateTime"]
    assert old["fields"] == {
        "status": {"stringValue": "completed"},
        "count": {"integerValue": "3"},
        "ratio": {"doubleValue": 0.5},
        "flag": {"booleanValue": True},
        "nothing": {"nullValue": None},
        "at": {"timestampValue": "2026-03-01T09:30:15.123456Z"},
        "options": {
            "mapValue": {
                "fields": {
                    "answer_format": {"stringValue": "bullets"},
                    "list": {
                        "arrayValue": {
                            "values": [
                                {"integerValue": "1"},
                                {"stringValue": "two"},
                                {"doubleValue": 3.5},
                                {"nullValue": None},
                            ]
                        }
                    },
                }
            }
        },
        "same": {"stringValue": "unchanged"},
    }
    expected = json.loads(json.dumps(old["fields"]))
    expected["status"] = {"stringValue": "generating"}
    expected["regenerate"] = {"booleanValue": True}
    del expected["nothing"]
    expected["options"]["mapValue"]["fields"]["answer_format"] = {"stringValue": "json"}
    assert value["fields"] == expected
    assert got["status"] == "generating"  # read through the proto-plus wrapper
    assert dict(b.counts) == {"events": 1, "attempts": 1, "delivered": 1}


def test_a_document_created_while_listening_gives_an_event_on_update(db, bridge, echo) -> None:
    b = bridge().start()
    ref = db.collection(b.collection).document("m2")
    ref.set({"status": "queued"})
    ref.update({"status": "completed"})
    ref.update({"status": "completed", "note": "again"})
    first, second = b.wait_delivered(2)
    assert [d.doc_id for d in b.deliveries] == ["m2", "m2"]  # the create gave none
    one, two = seen(echo[1], first.ce_id)[0], seen(echo[1], second.ce_id)[0]
    assert one["old_value"]["fields"] == {"status": {"stringValue": "queued"}}
    assert one["update_mask"] == ["status"]
    assert two["old_value"] == one["value"]
    assert two["update_mask"] == ["note"]
    assert first.ce_id != second.ce_id


def test_a_failing_function_gets_the_event_again_until_it_succeeds(db, bridge, echo) -> None:
    b = bridge().start()
    ref = db.collection(b.collection).document("m3")
    ref.set({"status": "completed", "echo_fail": 2})
    ref.update({"regenerate": True})
    (delivery,) = b.wait_delivered(1)
    assert (delivery.delivered, delivery.attempts, delivery.status) == (True, 3, 200)
    got = seen(echo[1], delivery.ce_id)
    assert [(g["delivery"], g["failed"]) for g in got] == [(1, True), (2, True), (3, False)]
    assert len({json.dumps(g["value"], sort_keys=True) for g in got}) == 1
    assert dict(b.counts) == {"events": 1, "attempts": 3, "delivered": 1}


def test_delivery_is_given_up_after_the_retries(db, bridge, echo) -> None:
    b = bridge(retry_delays=(0.05, 0.05)).start()
    ref = db.collection(b.collection).document("m4")
    ref.set({"echo_fail": 100})
    ref.update({"status": "error"})
    (delivery,) = b.wait_delivered(1)
    assert (delivery.delivered, delivery.attempts, delivery.status) == (False, 3, 500)
    assert delivery.error == "the function answered 500"
    assert len(seen(echo[1], delivery.ce_id)) == 3
    assert dict(b.counts) == {"events": 1, "attempts": 3, "failed": 1}


def test_redeliver_last_sends_the_same_event_again(db, bridge, echo) -> None:
    b = bridge().start()
    ref = db.collection(b.collection).document("m5")
    ref.set({"status": "completed"})
    ref.update({"regenerate": True})
    (original,) = b.wait_delivered(1)
    copies = b.redeliver_last("m5", copies=2)
    assert all(c.delivered and c.redelivery for c in copies)
    got = seen(echo[1], original.ce_id)
    assert [g["delivery"] for g in got] == [1, 2, 3]
    assert got[1]["value"] == got[2]["value"] == got[0]["value"]
    assert {c.body for c in copies} == {original.body}
    assert b.counts["redelivered"] == 2
    assert b.wait_delivered(1) == [original]  # redeliveries are not new events
    with pytest.raises(LookupError):
        b.redeliver_last("never-updated")


def test_the_bridge_needs_the_local_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    with pytest.raises(RuntimeError, match="FIRESTORE_EMULATOR_HOST"):
        eventarc.FirestoreEventBridge("p", "c", "http://127.0.0.1:9/").start()


# --- conversions, no server --------------------------------------------------


def _decode(headers_body: tuple[dict[str, str], bytes]) -> events.DocumentEventData:
    data = events.DocumentEventData()
    data._pb.ParseFromString(headers_body[1])
    return data


def _doc(data: dict, updated: int = 2) -> object:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return eventarc.document(
        "projects/p/databases/(default)/documents/c/d",
        data,
        t0,
        t0 + dt.timedelta(seconds=updated),
    )


def test_values_keep_their_firestore_types() -> None:
    from google.api_core.datetime_helpers import DatetimeWithNanoseconds
    from google.cloud.firestore_v1._helpers import GeoPoint

    nanos = DatetimeWithNanoseconds(2026, 1, 2, 3, 4, 5, nanosecond=123456789, tzinfo=dt.UTC)
    pb = eventarc.to_value(
        {
            "b": b"\x00\x01",
            "geo": GeoPoint(52.5, 13.4),
            "nanos": nanos,
            "naive": dt.datetime(2026, 1, 2),
            "empty_map": {},
            "empty_list": [],
            "big": 2**62,
        }
    )
    fields = pb.map_value.fields
    assert fields["b"].bytes_value == b"\x00\x01"
    assert (fields["geo"].geo_point_value.latitude, fields["geo"].geo_point_value.longitude) == (
        52.5,
        13.4,
    )
    assert fields["nanos"].timestamp_value.nanos == 123456789
    assert fields["naive"].timestamp_value.ToJsonString() == "2026-01-02T00:00:00Z"
    assert fields["empty_map"].WhichOneof("value_type") == "map_value"
    assert fields["empty_list"].WhichOneof("value_type") == "array_value"
    assert fields["big"].integer_value == 2**62
    with pytest.raises(TypeError, match="set"):
        eventarc.to_value({1, 2})


def test_the_update_mask_compares_firestore_values() -> None:
    old = _doc({"n": 1, "f": 1.0, "flag": 1, "same": [1, {"a": None}], "a.b": "x", "gone": 0})
    new = _doc({"n": 1.0, "f": 1.0, "flag": True, "same": [1, {"a": None}], "a.b": "y", "new": ""})
    data = _decode(eventarc.updated_event("p", "c", "d", old, new))
    assert list(data.update_mask.field_paths) == ["`a.b`", "flag", "gone", "n", "new"]
    assert data.value.fields["n"].double_value == 1.0
    assert data.old_value.fields["gone"].integer_value == 0


def test_event_headers_for_a_named_database() -> None:
    headers, _ = eventarc.updated_event(
        "proj", "meetings", "abc", _doc({}), _doc({"x": 1}, 3), database="db2", location="nam5"
    )
    assert headers["ce-source"] == "//firestore.googleapis.com/projects/proj/databases/db2"
    assert (headers["ce-database"], headers["ce-location"]) == ("db2", "nam5")
    assert headers["ce-time"] == "2026-01-01T00:00:03Z"
    assert headers["Content-Type"] == "application/protobuf"
