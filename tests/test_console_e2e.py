"""The console is input (issue 21), on the real local stack: functions-
framework processes, the Firestore server, the AssemblyAI stand-in (its
gateway refuses unknown models, its transcripts can be lost or deleted,
and it counts every paid call) and real notification receivers.

A person's edit is made as in the console (a write to the document), and
`regenerate_action_items` gets the Firestore event Eventarc would send
for it (local/eventarc.py builds it from the two versions).
"""

from __future__ import annotations

import base64
import os

import pytest
import requests
from conftest import Functions, upload_sample, wait_for_document, wait_until

from local import eventarc, notify_receiver

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
COLLECTION = "console"


class Console:
    """One configuration of the functions, a regenerate trigger, a receiver."""

    def __init__(self, stack, make_functions, collection: str, **env: str):
        self.fns: Functions = make_functions(
            FIRESTORE_COLLECTION=collection,
            NOTIFY_SIGNING_SECRET=SECRET,
            NOTIFY_ALLOW_LOCAL="true",
            **env,
        )
        self.regen = stack.start_function(
            "regenerate_action_items",
            self.fns.env,
            signature_type="cloudevent",
            name=f"regenerate-{collection}",
        )
        self.server, self.url, self.received = notify_receiver.start(SECRET, quiet=True)
        self.stack = stack
        self.collection = collection

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def meeting(
        self, db, notify_url: str | None = None, notified: bool = True, **body
    ) -> tuple[str, dict]:
        """A meeting through to `completed`, its first notification delivered
        (unless `notified` is false: a test that does not look at it)."""
        answer = self.fns.submit_json(
            {"audio_url": upload_sample(self.stack), "notify_url": notify_url or self.url, **body}
        )
        assert answer.status_code == 202, answer.text
        tid = answer.json()["transcript_id"]
        doc = wait_for_document(db, f"{self.collection}/{tid}", ("completed", "error"), 60)
        assert doc["status"] == "completed", doc.get("error")
        if not notified:
            return tid, doc
        doc = wait_until(
            # The first attempt is made by the webhook itself, right after the result
            # (nothing here runs the sweep); 30 s is for a loaded machine.
            lambda: (d := self.doc(db, tid))["notification"]["status"] == "delivered" and d,
            30,
            "the first notification to be delivered",
        )
        return tid, doc

    def doc(self, db, tid: str) -> dict:
        return db.document(f"{self.collection}/{tid}").get().to_dict()

    def edit(self, db, tid: str, **changes) -> requests.Response:
        """What a person does in the console, and the event it sends."""
        ref = db.document(f"{self.collection}/{tid}")
        old = ref.get()
        ref.update(changes)
        new = ref.get()
        name = eventarc.document_name(self.stack.project, "(default)", self.collection, tid)
        headers, body = eventarc.updated_event(
            self.stack.project,
            self.collection,
            tid,
            eventarc.document(name, old.to_dict(), old.create_time, old.update_time),
            eventarc.document(name, new.to_dict(), new.create_time, new.update_time),
        )
        return requests.post(self.regen.url, headers=headers, data=body, timeout=120)

    def sweep(self) -> dict:
        answer = requests.post(self.fns.recover.url, timeout=120)
        assert answer.status_code == 200, answer.text
        return answer.json()


@pytest.fixture(scope="module")
def console(stack, make_functions):
    made = Console(stack, make_functions, COLLECTION)
    yield made
    made.close()


def paid(standin, tid: str) -> int:
    return standin.stats()["gateway_success"].get(tid, 0)


def assert_kept(doc: dict, first: dict, note_has: str) -> None:
    assert doc["status"] == "completed", doc.get("error")
    assert doc["action_items"] == first["action_items"] and doc["action_items"]
    assert doc["result_version"] == first["result_version"]
    assert "regenerate" not in doc
    assert note_has in (doc.get("regenerate_note") or ""), doc.get("regenerate_note")


# --- 4. a console-set model the gateway does not know ----------------------------------


def test_a_model_the_gateway_refuses_keeps_the_result(console, standin, db):
    tid, first = console.meeting(db)
    assert paid(standin, tid) == 1
    answer = console.edit(db, tid, regenerate=True, llm_model="claude-nonexistent-9")
    assert answer.status_code == 200, answer.text
    doc = console.doc(db, tid)
    assert_kept(doc, first, "llm_model 'claude-nonexistent-9' is not on the LLM Gateway's")
    refused = [
        r
        for r in standin.requests()
        if r["path"] == "/v1/chat/completions" and r.get("transcript_id") == tid
    ]
    assert [r["status"] for r in refused] == [200], "a model not listed is never asked"
    assert paid(standin, tid) == 1
    assert [
        r["payload"]["version"] for r in console.received if r["payload"]["transcript_id"] == tid
    ] == [1]


# --- 1. a corrupted product field never loops paid calls ------------------------------


@pytest.fixture(scope="module")
def short_lease(stack, make_functions):
    """Claims that expire after 2 s, so ten sweeps can each find one expired."""
    made = Console(stack, make_functions, "console-lease", CLAIM_SECONDS="2")
    yield made
    made.close()


def test_a_garbled_result_version_costs_one_paid_call_over_ten_sweeps(short_lease, standin, db):
    """`{"result_version": "v2", "regenerate": true}`: the regeneration
    pays once and completes as version 2; ten sweeps after it pay nothing.
    (Before: int("v2") crashed the final write after every paid call, the
    crash handler could not give the claim back, and every sweep after the
    lease expired paid again: 11 calls in 10 sweeps, still `generating`.)"""
    console = short_lease
    tid, first = console.meeting(db)
    console.edit(db, tid, regenerate=True, result_version="v2")
    for _ in range(10):
        # The sweep's turn comes when nothing holds the meeting, or its claim ran out.
        wait_until(lambda: released(console.doc(db, tid)), 10, "the meeting to be free")
        console.sweep()
    doc = console.doc(db, tid)
    calls = paid(standin, tid) - 1
    assert calls == 1, f"{calls} paid gateway calls for one regeneration over 10 sweeps"
    assert doc["status"] == "completed" and doc["result_version"] == 2
    assert doc["history"][-1]["result_version"] == "v2", "what the person wrote, kept as history"
    versions = [
        r["payload"]["version"] for r in console.received if r["payload"]["transcript_id"] == tid
    ]
    assert versions == [1, 2]


def released(doc: dict) -> bool:
    import datetime as dt

    lease = doc.get("generation") or {}
    expires = lease.get("lease_expires_at")
    return doc["status"] in ("completed", "error") or (
        expires is not None and expires < dt.datetime.now(dt.UTC)
    )


# --- 2, 3. a transcript AssemblyAI lost or deleted -------------------------------------


def notified(console: Console, tid: str) -> list[dict]:
    return [r["payload"] for r in console.received if r["payload"]["transcript_id"] == tid]


@pytest.mark.parametrize("status", [400, 404])
def test_a_lost_transcript_refuses_the_regeneration_and_keeps_the_result(
    console, standin, db, status
):
    """AssemblyAI no longer has the transcript (its lookup answers 400 or
    404): nothing is paid, the meeting stays completed with its items, and
    no meeting.error goes out. (Before: completed -> error, error_stage
    transcription, and a meeting.error notification.)"""
    tid, first = console.meeting(db)
    standin.fault(
        target="transcript_get", kind="status", status=status, times=-1,
        message="Transcript lookup error, transcript id not found",
        match={"transcript_id": tid},
    )  # fmt: skip
    assert console.edit(db, tid, regenerate=True).status_code == 200
    doc = console.doc(db, tid)
    assert_kept(doc, first, "AssemblyAI no longer returns this meeting's transcript")
    assert doc.get("error") is None and doc.get("history", []) == first.get("history", [])
    assert paid(standin, tid) == 1
    assert [n["type"] for n in notified(console, tid)] == ["meeting.completed"]


def test_a_deleted_transcript_refuses_the_regeneration_and_keeps_the_items(console, standin, db):
    """The transcript was deleted at AssemblyAI (DELETE /v2/transcript/{id}:
    "Deleted by user.", no words): a regeneration would pay for a result
    with no items. (Before: one paid call, 5 items became 0, a
    meeting.completed notification carried the empty list, and history
    kept the good result only as history.)"""
    tid, first = console.meeting(db)
    assert len(first["action_items"]) >= 3
    deleted = requests.delete(
        f"{console.stack.standin.url}/v2/transcript/{tid}",
        headers={"Authorization": console.stack.api_key},
        timeout=10,
    )
    assert deleted.status_code == 200 and deleted.json()["text"] == "Deleted by user."
    assert console.edit(db, tid, regenerate=True).status_code == 200
    doc = console.doc(db, tid)
    assert_kept(doc, first, "deleted")
    assert paid(standin, tid) == 1, "nothing paid for a transcript with no words"
    assert [len(n["action_items"]) for n in notified(console, tid)] == [len(first["action_items"])]


# --- 6. a slow receiver never holds AssemblyAI's delivery past its deadline ------------------


def test_a_trickling_receiver_never_makes_assemblyai_deliver_twice(console, standin, db):
    """A 6 s gateway, then a receiver answering one byte every 1.5 s: the
    first attempt is bounded by what is left of AssemblyAI's 10 s, so the
    webhook answers in time and AssemblyAI delivers once. (Before: the
    attempt ran on, read by read, AssemblyAI's delivery timed out at 10 s
    and was made again.)"""
    server, url, received = notify_receiver.start(SECRET, quiet=True, trickle=1.5)
    try:
        standin.fault(target="gateway", kind="delay", seconds=6)
        answer = console.fns.submit_json(
            {"audio_url": upload_sample(console.stack), "notify_url": url}
        )
        assert answer.status_code == 202, answer.text
        tid = answer.json()["transcript_id"]
        delivered = wait_until(
            lambda: (t := standin.transcripts()[tid])["webhook_finished"] and t, 60,
            "AssemblyAI's deliveries to end",
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    attempts = delivered["attempt_seconds"]
    assert len(attempts) == 1 and attempts[0] < 9.5, f"AssemblyAI's attempts took {attempts} s"
    doc = console.doc(db, tid)
    assert doc["status"] == "completed" and paid(standin, tid) == 1
    note = doc["notification"]
    assert note["status"] == "pending" and note["attempts"] <= 1, note
    assert len(received) <= 1
