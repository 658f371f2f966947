"""Every meeting ends, against the real local stack: lost deliveries, a
secret rotation, a rejected key, poison answers and a slow gateway.

The fast in-process layer (test_lifecycle.py) covers every transition;
these check the same cases through real servers: functions-framework
processes, the Firestore server and the AssemblyAI stand-in delivering
with AssemblyAI's policy (10 attempts, a 4xx stops them).
"""

from __future__ import annotations

import json
import threading
import time

import requests
from conftest import Functions, upload_sample, wait_for_document, wait_until

from meeting_actions import sweep

NESTED = '{"action_items": ' + "[" * 50_000 + "]" * 50_000 + "}"
# The sweep's waits, scaled down: a stale queued meeting after 0.5 s, and
# 0.5 s before looking again at one AssemblyAI could not answer for.
FAST_SWEEP = {"STALE_QUEUED_SECONDS": "0.5", "RECHECK_SECONDS": "0.5"}
SURROGATE = (
    '{"action_items": [{"text": "Call \\ud800 the vendor", "owner": null, "due": null}],'
    ' "formatted": "- Call the vendor"}'
)


def submit(stack, fns: Functions) -> str:
    answer = fns.submit_json({"audio_url": upload_sample(stack)})
    assert answer.status_code == 202, answer.text
    return answer.json()["transcript_id"]


def lose_every_delivery(stack, standin, fns: Functions, count: int) -> list[str]:
    """Submit meetings while the webhook is down, until AssemblyAI gives up
    (after 3 attempts here, not 10: what matters is that every one fails)."""
    fns.webhook.stop()
    standin.configure(webhook_attempts=3)
    try:
        tids = [submit(stack, fns) for _ in range(count)]
        deliveries_over(standin, tids)
    finally:
        standin.configure(webhook_attempts=10)
        fns.stack.restart(fns.webhook)
    return tids


def deliveries_over(standin, tids: list[str]) -> None:
    wait_until(
        lambda: all(standin.transcript(t)["webhook_finished"] for t in tids),
        60,
        "AssemblyAI's deliveries to end",
    )


def sweep_until(db, fns: Functions, tids: list[str], timeout: float = 30) -> dict[str, dict]:
    """Call the sweep, as Cloud Scheduler does, until every meeting is final."""

    def done():
        answer = requests.post(fns.recover.url, timeout=60)
        assert answer.status_code == 200, answer.text
        docs = {t: db.document(f"{fns.collection}/{t}").get().to_dict() for t in tids}
        return docs if all(d["status"] in ("completed", "error") for d in docs.values()) else None

    return wait_until(done, timeout, "the sweep to end every meeting")


class StatusWatch:
    """Every status a meeting's document shows, seen by a Firestore listener."""

    def __init__(self, db, path: str):
        self.seen: list[str] = []
        self.lock = threading.Lock()

        def on_snapshot(snapshots, _changes, _read_time):
            for snap in snapshots:
                if snap.exists:
                    with self.lock:
                        self.seen.append(snap.to_dict().get("status"))

        self.watch = db.document(path).on_snapshot(on_snapshot)

    def stop(self) -> list[str]:
        self.watch.unsubscribe()
        return list(self.seen)


def test_every_delivery_lost_and_a_poison_answer_the_sweep_ends_them_all(
    stack, make_functions, standin, db
):
    """The webhook is down for all 10 attempts of three meetings; one of
    them gets a poison answer. The sweep asks AssemblyAI once per meeting,
    completes two, ends the poisoned one in error after one paid call."""
    fns = make_functions(**FAST_SWEEP)
    tids = lose_every_delivery(stack, standin, fns, 3)
    assert all(db.document(f"meetings/{t}").get().to_dict()["status"] == "queued" for t in tids), (
        "nothing moved them: every delivery was lost"
    )
    standin.fault(target="gateway", kind="answer", content=NESTED, match={"transcript_id": tids[1]})

    docs = sweep_until(db, fns, tids)
    assert {t: d["status"] for t, d in docs.items()} == {
        tids[0]: "completed", tids[1]: "error", tids[2]: "completed"
    }  # fmt: skip
    assert "nested too deeply" in docs[tids[1]]["error"]
    success = standin.stats()["gateway_success"]
    assert {t: success.get(t) for t in tids} == {t: 1 for t in tids}, "one paid call each"
    reads = [r for r in standin.requests() if r["path"] in {f"/v2/transcript/{t}" for t in tids}]
    assert len(reads) == 3, "one read of each transcript, by the sweep"


def test_a_rotation_with_meetings_in_flight_loses_none(stack, standin, db):
    """Meetings submitted with the old secret are delivered after the webhook
    moved to the new one (deploy.sh mounts the old one as WEBHOOK_SECRET_PREVIOUS)."""
    fns = Functions(stack, {"FIRESTORE_COLLECTION": "rotation"})
    standin.configure(transcription_seconds=3)
    try:
        tids = [submit(stack, fns) for _ in range(3)]
        old = fns.env["WEBHOOK_SECRET"]
        fns.webhook.env.update(WEBHOOK_SECRET="rotated-" + old[-8:], WEBHOOK_SECRET_PREVIOUS=old)
        fns.stack.restart(fns.webhook)
        docs = [wait_for_document(db, f"rotation/{t}", timeout=60) for t in tids]
    finally:
        standin.configure(transcription_seconds=0.2)
    assert [d["status"] for d in docs] == ["completed"] * 3
    assert all(standin.transcript(t)["attempts"][-1]["result"] == 200 for t in tids)
    assert fns.call_webhook({"transcript_id": tids[0], "status": "completed"},
                            "not-a-secret").status_code == 401  # fmt: skip


def test_a_rejected_key_then_the_right_one_completes_and_never_shows_error(
    stack, make_functions, standin, db
):
    """AssemblyAI answers 401 (a revoked key) to every read of the transcript
    until the operator fixes the key; the meeting waits, retryable."""
    functions = make_functions(**FAST_SWEEP)
    standin.fault(target="transcript_get", kind="status", status=401,
                  message="Authentication error, API token missing/invalid", times=-1)  # fmt: skip
    tid = submit(stack, functions)
    watch = StatusWatch(db, f"meetings/{tid}")
    try:
        deliveries_over(standin, [tid])
        codes = [a["result"] for a in standin.transcript(tid)["attempts"]]
        assert codes == [503] * len(codes) and len(codes) == 10, "AssemblyAI kept retrying"
        standin.clear_faults()  # the operator stores the right key
        (doc,) = sweep_until(db, functions, [tid]).values()
    finally:
        seen = watch.stop()
    assert doc["status"] == "completed" and doc["action_items"]
    assert "error" not in seen, seen


def test_a_sweep_with_a_slow_gateway_stops_before_its_deadline(stack, make_functions, standin, db):
    """Four rounds of the sweep's workers wait for it (16 meetings); the
    gateway takes 1.5 s a call, the sweep's function has 8 s: it starts no
    call it could not finish (none after 3.6 s: 2 s for the call, 2 for the write)."""
    count = 4 * sweep.WORKERS
    fns = make_functions(
        STALE_QUEUED_SECONDS="0.5", FUNCTION_TIMEOUT_SECONDS="8", LLM_TIMEOUT_SECONDS="2"
    )
    tids = lose_every_delivery(stack, standin, fns, count)
    standin.fault(target="gateway", kind="delay", seconds=1.5, times=-1)
    started = time.monotonic()
    answer = requests.post(fns.recover.url, timeout=60)
    took = time.monotonic() - started
    body = answer.json()
    print(f"the sweep stopped after {took:.1f} s, {body['tried']} of {count} meetings tried")
    assert answer.status_code == 200 and body["stopped"] == "deadline", body
    assert took < 8, f"the sweep ran {took:.1f} s in an 8 s function"
    assert 0 < body["tried"] < count
    standin.clear_faults()
    docs = sweep_until(db, fns, tids)
    assert all(d["status"] == "completed" for d in docs.values())
    success = standin.stats()["gateway_success"]
    assert all(success.get(t) == 1 for t in tids)


def test_a_lone_surrogate_in_the_answer_is_stored(stack, functions, standin, db):
    standin.fault(target="gateway", kind="answer", content=SURROGATE, usage=["not", "an", "object"])
    tid = submit(stack, functions)
    doc = wait_for_document(db, f"meetings/{tid}")
    assert doc["status"] == "completed"
    assert doc["action_items"][0]["text"] == "Call \ufffd the vendor"
    assert doc["llm"]["input_tokens"] is None
    assert json.dumps(doc, default=str)
