"""The signed "done" notification and regeneration from the console, in
process: the entry points through functions-framework's test client, the
store and AssemblyAI's client faked at their boundary, and a real receiver
on a loopback port that verifies every signature with `standardwebhooks`.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import os
import threading
from collections.abc import Iterator

import pytest
import standardwebhooks
from fakes import GOOD_CONTENT, answer
from test_lifecycle import Product, product  # noqa: F401 - the fixture

from local import eventarc
from meeting_actions import assemblyai, lifecycle, notify, notify_address, record, storage_object

SIGNING_SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


class Receiver:
    """A caller's endpoint: verifies each notification, answers as told."""

    def __init__(self, answers: list[int] | None = None, port: int = 0):
        self.answers = list(answers or [])
        self.received: list[dict] = []
        self.verified = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                standardwebhooks.Webhook(SIGNING_SECRET).verify(body, headers)
                receiver.verified += 1
                receiver.received.append({"id": headers["webhook-id"], **json.loads(body)})
                status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def loop(product: Product) -> Iterator[Product]:  # noqa: F811 - the fixture above
    product.configure(NOTIFY_SIGNING_SECRET=SIGNING_SECRET, NOTIFY_ALLOW_LOCAL="true")
    yield product


def notified_meeting(loop: Product, url: str) -> str:
    accepted = loop.submit(notify_url=url)
    assert accepted.status_code == 202, accepted.get_json()
    tid = accepted.get_json()["transcript_id"]
    loop.aai.finish(tid)
    return tid


def make_due(loop: Product, tid: str) -> None:
    """The notification's next attempt time has come (the clock moved on)."""
    doc = loop.doc(tid)
    past = record.now() - dt.timedelta(seconds=1)
    loop.store.set_field(
        "meetings", tid, notification={**doc["notification"], "next_at": past}, sweep_at=past
    )


# --- notification -----------------------------------------------------------------


def test_the_result_arrives_signed_and_the_verifier_accepts_it(loop):
    receiver = Receiver()
    try:
        tid = notified_meeting(loop, receiver.url)
        assert loop.deliver(tid).status_code == 200
    finally:
        receiver.close()
    (got,) = receiver.received
    assert receiver.verified == 1
    assert got["type"] == "meeting.completed" and got["transcript_id"] == tid
    assert got["status"] == "completed" and got["action_items"] and got["version"] == 1
    assert got["document"] == f"meetings/{tid}" and got["error"] is None
    note = loop.doc(tid)["notification"]
    assert note["status"] == "delivered" and note["attempts"] == 1 and note["last_status"] == 200
    assert loop.doc(tid)["sweep_at"] is None


def test_a_receiver_answering_500_then_200_gets_each_version_once_with_a_stable_id(loop):
    receiver = Receiver(answers=[500])
    try:
        tid = notified_meeting(loop, receiver.url)
        assert loop.deliver(tid).status_code == 200, "the result does not wait for the receiver"
        note = loop.doc(tid)["notification"]
        assert note["status"] == "pending" and note["attempts"] == 1 and note["last_status"] == 500
        assert note["next_at"] > record.now() + dt.timedelta(seconds=20), "backoff"
        assert loop.sweep()["tried"] == 0, "not before its next attempt"
        make_due(loop, tid)
        loop.sweep()
        loop.sweep()
    finally:
        receiver.close()
    assert [r["id"] for r in receiver.received] == [receiver.received[0]["id"]] * 2
    assert loop.doc(tid)["notification"]["status"] == "delivered"


def test_a_receiver_down_longer_than_the_request_gets_the_result_from_the_sweep(loop):
    receiver = Receiver()
    url = receiver.url
    receiver.close()  # down while the webhook writes the result
    tid = notified_meeting(loop, url)
    assert loop.deliver(tid).status_code == 200
    assert loop.doc(tid)["notification"]["status"] == "pending"
    back = Receiver(port=int(url.split(":")[2].split("/")[0]))  # the same address, up again
    try:
        make_due(loop, tid)
        loop.sweep()
    finally:
        back.close()
    assert len(back.received) == 1 and back.received[0]["transcript_id"] == tid
    assert loop.doc(tid)["notification"]["status"] == "delivered"


def test_a_receiver_that_never_answers_ends_failed_and_the_result_is_untouched(loop):
    receiver = Receiver()
    url = receiver.url
    receiver.close()
    tid = notified_meeting(loop, url)
    loop.deliver(tid)
    result = {k: loop.doc(tid)[k] for k in ("status", "action_items", "action_items_text")}
    for _ in range(notify.MAX_ATTEMPTS + 2):
        if loop.doc(tid)["notification"]["status"] != "pending":
            break
        make_due(loop, tid)
        loop.sweep()
    doc = loop.doc(tid)
    note = doc["notification"]
    assert note["status"] == "failed" and note["attempts"] == notify.MAX_ATTEMPTS
    assert "gave up after 8 attempt(s)" in note["error"]
    assert {k: doc[k] for k in result} == result
    assert doc["sweep_at"] is None


def test_a_notify_url_to_a_private_address_is_refused_in_production(product, monkeypatch):  # noqa: F811
    product.configure(NOTIFY_SIGNING_SECRET=SIGNING_SECRET)  # production: no local URLs
    for url in ("http://127.0.0.1:9/hook", "https://10.0.0.7/hook", "https://169.254.169.254/"):
        refused = product.submit(notify_url=url)
        assert refused.status_code == 400 and refused.get_json()["field"] == "notify_url"
    # A name that resolves to a private address is refused at send time, with no traffic.
    monkeypatch.setattr(notify_address.socket, "getaddrinfo",
                        lambda *a, **k: [(2, 1, 6, "", ("10.1.2.3", 443))])  # fmt: skip
    tid = notified_meeting(product, "https://hooks.customer.example/done")
    assert product.deliver(tid).status_code == 200
    note = product.doc(tid)["notification"]
    assert note["status"] == "failed" and "10.1.2.3" in note["error"]


# --- regeneration -------------------------------------------------------------------


def regenerate_event(tid: str, old: dict, new: dict):
    at = record.now()
    name = eventarc.document_name("demo", "(default)", "meetings", tid)
    return eventarc.updated_event(
        "demo", "meetings", tid,
        eventarc.document(name, old, at, at), eventarc.document(name, new, at, at),
    )  # fmt: skip


def ask_to_regenerate(loop: Product, tid: str, **changes) -> tuple[dict, bytes]:
    """What a person does in the console: set regenerate: true (and maybe more)."""
    old = loop.doc(tid)
    loop.store.set_field("meetings", tid, regenerate=True, **changes)
    return regenerate_event(tid, old, loop.doc(tid))


def completed_meeting(loop: Product, url: str | None = None) -> str:
    tid = notified_meeting(loop, url) if url else loop.queued_meeting()
    assert loop.deliver(tid).status_code == 200
    return tid


def test_regeneration_makes_one_gateway_call_even_when_the_event_comes_twice(loop):
    receiver = Receiver()
    fn = loop.client("regenerate_action_items", "cloudevent")
    try:
        tid = completed_meeting(loop, receiver.url)
        first = loop.doc(tid)
        headers, body = ask_to_regenerate(
            loop, tid, options={**first["options"], "answer_format": "a numbered list"},
            llm_model="claude-opus-4-6",
        )  # fmt: skip
        assert fn.post("/", headers=headers, data=body).status_code == 200
        assert fn.post("/", headers=headers, data=body).status_code == 200  # delivered twice
    finally:
        receiver.close()
    doc = loop.doc(tid)
    assert loop.aai.gateway_calls[tid] == 2, "one for the meeting, one for the regeneration"
    assert doc["status"] == "completed" and "regenerate" not in doc
    assert doc["result_version"] == 2 and len(doc["history"]) == 1
    assert doc["llm"]["requested_model"] == "claude-opus-4-6", "the console's model override"
    assert doc["history"][0]["action_items"] == first["action_items"]
    assert [r["version"] for r in receiver.received] == [1, 2]
    assert receiver.received[0]["id"] != receiver.received[1]["id"]


def test_the_functions_own_writes_trigger_nothing(loop):
    fn = loop.client("regenerate_action_items", "cloudevent")
    tid = loop.queued_meeting()
    before = loop.doc(tid)
    assert loop.deliver(tid).status_code == 200  # claim, then final write
    after = loop.doc(tid)
    headers, body = regenerate_event(tid, before, after)
    assert fn.post("/", headers=headers, data=body).status_code == 200
    headers, body = ask_to_regenerate(loop, tid)
    fn.post("/", headers=headers, data=body)
    # The regeneration's own writes (the claim clears the flag, the result) as events:
    cleared = loop.doc(tid)
    headers, body = regenerate_event(tid, {**cleared, "regenerate": True}, cleared)
    fn.post("/", headers=headers, data=body)
    assert loop.aai.gateway_calls[tid] == 2


def test_a_regeneration_while_the_meeting_is_generating_is_refused(loop):
    fn = loop.client("regenerate_action_items", "cloudevent")
    tid = loop.queued_meeting()
    loop.store.set_field(
        "meetings", tid, status="generating",
        generation={"holder": "a-delivery", "lease_expires_at": record.now() + dt.timedelta(minutes=5)},
    )  # fmt: skip
    headers, body = ask_to_regenerate(loop, tid)
    assert fn.post("/", headers=headers, data=body).status_code == 200
    doc = loop.doc(tid)
    assert "regenerate" not in doc and "generating" in doc["regenerate_note"]
    assert doc["status"] == "generating" and loop.aai.gateway_calls[tid] == 0


def test_a_meeting_that_failed_at_the_gateway_can_be_regenerated(loop):
    fn = loop.client("regenerate_action_items", "cloudevent")
    tid = loop.queued_meeting()
    refused = assemblyai.ApiError("400 bad request", 400)
    loop.aai.gateway = lambda _: (_ for _ in ()).throw(refused)
    assert loop.deliver(tid).status_code == 200
    assert loop.doc(tid)["status"] == lifecycle.ERROR
    loop.aai.gateway = lambda _: answer(GOOD_CONTENT)
    headers, body = ask_to_regenerate(loop, tid)
    assert fn.post("/", headers=headers, data=body).status_code == 200
    doc = loop.doc(tid)
    assert doc["status"] == "completed" and doc["error"] is None
    assert doc["history"][0]["status"] == "error"


def test_a_console_edit_during_generation_does_not_void_the_result(loop):
    """A person's write while a delivery holds the meeting (the flag, say)
    changes the version the holder's final write is conditioned on; the
    holder sees its claim is intact and writes anyway."""
    tid = loop.queued_meeting()

    def gateway(body):
        loop.store.set_field("meetings", tid, metadata={"edited": "in the console"})
        return answer(GOOD_CONTENT)

    loop.aai.gateway = gateway
    assert loop.deliver(tid).status_code == 200
    doc = loop.doc(tid)
    assert doc["status"] == "completed" and doc["metadata"] == {"edited": "in the console"}
    assert loop.aai.gateway_calls[tid] == 1


def test_an_upload_is_notified_from_its_metadata_or_the_default(loop, monkeypatch):
    from cloudevents.conversion import to_binary
    from test_lifecycle import storage_event

    monkeypatch.setattr(
        storage_object, "signed_url", lambda obj, seconds: "https://signed.example/a?s=1"
    )
    loop.configure(NOTIFY_SIGNING_SECRET=SIGNING_SECRET, NOTIFY_ALLOW_LOCAL="true",
                   NOTIFY_URL="http://127.0.0.1:9/default")  # fmt: skip
    fn = loop.client("transcribe_uploaded_audio", "cloudevent")
    own = storage_event(generation="31")
    own.data["metadata"] = {"notify_url": "http://127.0.0.1:9/mine", "team": "web"}
    for event in (own, storage_event(generation="32")):
        headers, body = to_binary(event)
        assert fn.post("/", headers=headers, data=body).status_code == 200
    urls = sorted(d["notify_url"] for (c, _), (d, _) in loop.store.docs.items() if c == "meetings")
    assert urls == ["http://127.0.0.1:9/default", "http://127.0.0.1:9/mine"]
