"""The lifecycle in process: every state moves on, every failure is
classified, no meeting is lost and no answer paid twice.

The entry points run through functions-framework's own app
(`create_app(...).test_client()`); the only fakes are the store under the
lease and AssemblyAI's client (tests/fakes.py). Fast: no servers.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from pathlib import Path

import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from fakes import GOOD_CONTENT, FakeAssemblyAI, MemoryStore, answer
from functions_framework import create_app
from google.api_core import exceptions

from meeting_actions import (
    assemblyai,
    config,
    hints,
    inputs,
    record,
    storage_object,
    submit,
    sweep,
    uploads,
)

ROOT = Path(__file__).resolve().parent.parent
SECRET = "in-process-webhook-secret"
BASE_ENV = {
    "ASSEMBLYAI_API_KEY": "in-process-key",
    "WEBHOOK_URL": "https://hooks.example/",
    "WEBHOOK_SECRET": SECRET,
}
OURS = ("ASSEMBLYAI_", "WEBHOOK_", "LLM_", "RECOVERY_", "STALE_", "MAX_", "FUNCTION_", "CLAIM_",
        "FIRESTORE_COLLECTION", "AUDIO_")  # fmt: skip


class Product:
    """The four entry points, in process, over one store and one AssemblyAI."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: MemoryStore, aai: FakeAssemblyAI):
        self.monkeypatch = monkeypatch
        self.store = store
        self.aai = aai
        self.configure()

    def configure(self, **env: str) -> None:
        for key in list(os.environ):
            if key.startswith(OURS):
                self.monkeypatch.delenv(key)
        for key, value in {**BASE_ENV, **env}.items():
            self.monkeypatch.setenv(key, value)
        config.get.cache_clear()

    def client(self, target: str, signature: str = "http"):
        return create_app(target, str(ROOT / "main.py"), signature).test_client()

    def submit(self, **body):
        body.setdefault("audio_url", "https://media.example/meeting.mp3")
        return self.client("submit_transcription").post("/", json=body)

    def deliver(self, tid: str, status: str = "completed", secret: str = SECRET):
        return self.client("assemblyai_webhook").post(
            "/", json={"transcript_id": tid, "status": status},
            headers={"X-Webhook-Secret": secret},
        )  # fmt: skip

    def sweep(self) -> dict:
        answer_ = self.client("recover_meetings").post("/")
        assert answer_.status_code == 200, answer_.get_json()
        return answer_.get_json()

    def doc(self, tid: str) -> dict:
        return self.store.doc("meetings", tid)

    def make_stale(self, tid: str) -> None:
        """Let the meeting's deadline pass (the clock moving on)."""
        self.store.set_field("meetings", tid, sweep_at=record.now() - dt.timedelta(seconds=1))

    def queued_meeting(self, finished: bool = True, error: str | None = None) -> str:
        """A submitted meeting that AssemblyAI finished but whose deliveries were all lost."""
        accepted = self.submit()
        assert accepted.status_code == 202, accepted.get_json()
        tid = accepted.get_json()["transcript_id"]
        if finished:
            self.aai.finish(tid, error)
        return tid


@pytest.fixture
def product(monkeypatch):
    store = MemoryStore()
    record.use(store)
    aai = FakeAssemblyAI().install(monkeypatch)
    yield Product(monkeypatch, store, aai)
    record.use(None)
    config.get.cache_clear()


def logs_of(capsys) -> list[dict]:
    return [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]


# --- 1. every delivery lost ------------------------------------------------------


def test_every_delivery_lost_the_sweep_completes_the_meeting(product):
    tid = product.queued_meeting()
    doc = product.doc(tid)
    assert doc["status"] == "queued"
    assert doc["sweep_at"] > record.now() + dt.timedelta(seconds=800)  # STALE_QUEUED_SECONDS

    assert product.sweep()["tried"] == 0, "a fresh queued meeting is not the sweep's"
    assert product.aai.reads[tid] == 0

    product.make_stale(tid)
    swept = product.sweep()
    assert swept["results"] == {tid: "completed"}
    doc = product.doc(tid)
    assert doc["status"] == "completed" and doc["action_items"]
    assert doc["sweep_at"] is None
    assert product.aai.reads[tid] == 1, "one read of the transcript, no more"
    assert product.aai.gateway_calls[tid] == 1


def test_a_long_transcription_is_read_with_backoff(product):
    tid = product.queued_meeting(finished=False)
    product.make_stale(tid)
    assert product.sweep()["results"] == {tid: "busy_transient"}
    doc = product.doc(tid)
    assert doc["status"] == "queued" and doc["queued_checks"] == 1
    assert doc["sweep_at"] >= record.now() + dt.timedelta(seconds=59)
    product.sweep()
    assert product.aai.reads[tid] == 1, "not read again before its next check"
    product.make_stale(tid)
    product.sweep()
    assert product.doc(tid)["queued_checks"] == 2
    product.aai.finish(tid)
    product.make_stale(tid)
    product.sweep()
    assert product.doc(tid)["status"] == "completed"


def test_a_failed_transcription_found_by_the_sweep_keeps_no_signed_url(product, capsys):
    signed = "https://storage.googleapis.com/b/a.wav?X-Goog-Signature=deadbeef&X-Goog-Credential=sa"
    tid = product.queued_meeting(error=f"Download error, unable to download {signed}. Bad file.")
    product.make_stale(tid)
    product.sweep()
    doc = product.doc(tid)
    assert doc["status"] == "error" and doc["error_stage"] == "transcription"
    assert "Download error" in doc["error"] and "X-Goog" not in doc["error"]
    assert "deadbeef" not in capsys.readouterr().out
    assert product.aai.gateway_calls[tid] == 0


# --- 2. secret rotation ----------------------------------------------------------


def test_the_previous_secret_is_accepted_during_a_rotation(product):
    tid = product.queued_meeting()
    product.configure(WEBHOOK_SECRET="the-new-one", WEBHOOK_SECRET_PREVIOUS=SECRET)
    assert product.deliver(tid, secret="a-wrong-one").status_code == 401
    assert product.deliver(tid, secret=SECRET).status_code == 200
    assert product.deliver(tid, secret="the-new-one").status_code == 200
    assert product.doc(tid)["status"] == "completed"
    product.configure(WEBHOOK_SECRET="the-new-one")  # the rotation's window has passed
    assert product.deliver(tid, secret=SECRET).status_code == 401


# --- 3. a rejected key -------------------------------------------------------------


@pytest.mark.parametrize("where", ["transcript", "gateway"])
def test_a_rejected_key_keeps_the_meeting_waiting_until_it_is_fixed(product, capsys, where):
    tid = product.queued_meeting()
    revoked = assemblyai.ApiError("401 Authentication error, API token missing/invalid", 401)
    if where == "transcript":
        product.aai.get_error = revoked
    else:
        product.aai.gateway = lambda _: (_ for _ in ()).throw(revoked)
    statuses = []
    for _ in range(3):
        answer_ = product.deliver(tid)
        assert answer_.status_code == 503, "AssemblyAI must retry: the operator can fix the key"
        assert answer_.get_json()["kind"] == "operator"
        statuses.append(product.doc(tid)["status"])
    errors = [e for e in logs_of(capsys) if e["severity"] == "ERROR"]
    assert errors and all("ASSEMBLYAI_API_KEY" in e["message"] for e in errors)
    assert all(e.get("transcript_id") == tid for e in errors)

    product.aai.get_error = None
    product.aai.gateway = lambda _: answer(GOOD_CONTENT)
    product.make_stale(tid)  # AssemblyAI's retries may be over: the sweep takes it
    product.sweep()
    statuses.append(product.doc(tid)["status"])
    assert "error" not in statuses and statuses[-1] == "completed"
    assert product.doc(tid)["generation"]["attempts"] == 0, "a rejected key is not a failure"


def test_a_rejected_key_without_a_document_is_not_a_404(product):
    product.aai.transcripts["t-1"] = {
        "id": "t-1",
        "status": "completed",
        "audio_url": "https://a/b",
    }
    product.aai.get_error = assemblyai.ApiError("401 Authentication error", 401)
    assert product.deliver("t-1").status_code == 503
    product.aai.get_error = None
    assert product.deliver("t-1").status_code == 200
    assert product.doc("t-1")["status"] == "completed"


def test_an_unknown_transcript_is_refused_with_404(product):
    assert product.deliver("not-ours").status_code == 404
    assert ("meetings", "not-ours") not in product.store.docs


# --- 4. poison answers ------------------------------------------------------------------

NESTED = '{"action_items": ' + "[" * 100_000 + "]" * 100_000 + "}"
SURROGATE = '{"action_items": [{"text": "Call \\ud800 the vendor", "owner": null, "due": null}], "formatted": "x"}'
HUGE = json.dumps(
    {
        "action_items": [{"text": "t" * 4000, "owner": "o" * 500, "due": None}] * 300,
        "formatted": "z" * 300_000,
    }  # fmt: skip
)


@pytest.mark.parametrize(
    ("content", "usage", "status", "why"),
    [
        (NESTED, None, "error", "nested too deeply"),
        (SURROGATE, None, "completed", None),
        (GOOD_CONTENT, ["not", "an", "object"], "completed", None),
        (HUGE, None, "completed", None),
    ],
    ids=["nested", "lone-surrogate", "usage-not-an-object", "over-1-MiB"],
)
def test_a_poison_answer_ends_the_meeting_after_one_paid_call(product, content, usage, status, why):
    tid = product.queued_meeting()
    product.aai.gateway = lambda _: answer(content, usage)
    first = product.deliver(tid)
    assert first.status_code == 200, first.get_json()
    for _ in range(3):  # AssemblyAI's retries, and later sweeps
        product.deliver(tid)
        product.make_stale(tid)
        product.sweep()
    doc = product.doc(tid)
    assert doc["status"] == status
    if why:
        assert why in doc["error"] and doc["error_stage"] == "action_items"
    assert product.aai.gateway_calls[tid] == 1
    assert len(json.dumps(doc, default=str).encode()) < 1024 * 1024
    if content is SURROGATE:
        assert doc["action_items"][0]["text"] == "Call \ufffd the vendor"
    if content is HUGE:
        assert len(doc["action_items"]) == 200 and "too large" in doc["note"]


def test_a_poison_meeting_does_not_stop_the_rest_of_the_sweep(product):
    tids = [product.queued_meeting() for _ in range(4)]
    poisoned = tids[1]
    product.aai.gateway = lambda body: answer(
        NESTED if body["transcript_id"] == poisoned else GOOD_CONTENT
    )
    for tid in tids:
        product.make_stale(tid)
    swept = product.sweep()
    assert swept["tried"] == 4
    assert {t: product.doc(t)["status"] for t in tids} == {
        t: "error" if t == poisoned else "completed" for t in tids
    }
    assert sum(product.aai.gateway_calls.values()) == 4


def test_a_crash_after_the_claim_gives_it_back_and_counts(product):
    product.configure(MAX_GENERATION_ATTEMPTS="2")
    tid = product.queued_meeting()

    def crash(_body):
        raise RuntimeError("a bug")

    product.aai.gateway = crash
    assert product.deliver(tid).status_code == 503
    gen = product.doc(tid)["generation"]
    assert gen["attempts"] == 1 and gen["lease_expires_at"] <= record.now()
    assert product.deliver(tid).status_code == 200
    doc = product.doc(tid)
    assert doc["status"] == "error" and "RuntimeError" in doc["error"]


def test_a_crash_on_one_meeting_does_not_stop_the_sweep(product):
    tids = [product.queued_meeting() for _ in range(3)]
    for tid in tids:
        product.make_stale(tid)
    broken = tids[0]
    product.store.faults.append(
        lambda op, _c, doc_id, _f: (
            RuntimeError("boom") if op == "get" and doc_id == broken else None
        )
    )
    swept = product.sweep()
    assert swept["results"][broken] == "crashed"
    assert all(product.doc(t)["status"] == "completed" for t in tids[1:])


# --- 5. once per upload --------------------------------------------------------------


def storage_event(name: str = "meetings/standup.mp3", generation: str = "17") -> CloudEvent:
    return CloudEvent(
        {"type": storage_object.EVENT_TYPE, "source": "//storage.googleapis.com/projects/_/buckets/team-recordings"},
        {"bucket": "team-recordings", "name": name, "generation": generation, "size": "1000",
         "contentType": "audio/mpeg", "timeCreated": record.now().isoformat()},
    )  # fmt: skip


def test_firestore_failing_after_assemblyai_accepted_an_upload_submits_once(product, monkeypatch):
    monkeypatch.setattr(
        storage_object, "signed_url", lambda obj, seconds: "https://signed.example/a?sig=1"
    )
    fn = product.client("transcribe_uploaded_audio", "cloudevent")
    down = {"on": False}
    product.store.faults.append(
        lambda *_: exceptions.ServiceUnavailable("Firestore is away") if down["on"] else None
    )
    real_submit = product.aai.submit_transcript

    def submit_then_firestore_fails(*args, **kw):
        accepted = real_submit(*args, **kw)
        down["on"] = True
        return accepted

    monkeypatch.setattr(assemblyai, "submit_transcript", submit_then_firestore_fails)
    headers, body = to_binary(storage_event())
    assert fn.post("/", headers=headers, data=body).status_code == 200, "acknowledged"
    # Eventarc redelivers anyway (at least once), during and after the outage,
    # also after the upload's lease ran out.
    assert fn.post("/", headers=headers, data=body).status_code == 500
    down["on"] = False
    key = uploads.claim_key(storage_object.parse(storage_event().get_data()))
    product.store.set_field(
        "meetings-uploads", key, lease={"lease_expires_at": record.now() - dt.timedelta(seconds=1)}
    )
    for _ in range(3):
        fn.post("/", headers=headers, data=body)
    assert len(product.aai.submitted) == 1, "exactly one transcript"

    # The transcript's delivery records the id on the upload and builds the meeting.
    (tid,) = product.aai.transcripts
    product.aai.finish(tid)
    hook = hints.webhook_url(
        config.get(), hints.Hints(source=storage_object.parse(storage_event().get_data()).source())
    )
    query = hook.split("?", 1)[1]
    answer_ = product.client("assemblyai_webhook").post(
        "/?" + query, json={"transcript_id": tid, "status": "completed"},
        headers={"X-Webhook-Secret": SECRET},
    )  # fmt: skip
    assert answer_.status_code == 200
    assert product.doc(tid)["source"]["uri"] == "gs://team-recordings/meetings/standup.mp3"
    upload = product.store.doc("meetings-uploads", key)
    assert upload["status"] == "submitted" and upload["transcript_id"] == tid
    assert fn.post("/", headers=headers, data=body).status_code == 200
    assert len(product.aai.submitted) == 1


def test_an_upload_refused_before_acceptance_is_retried_and_submitted_once(product, monkeypatch):
    monkeypatch.setattr(
        storage_object, "signed_url", lambda obj, seconds: "https://signed.example/a?sig=1"
    )
    fn = product.client("transcribe_uploaded_audio", "cloudevent")
    product.aai.submit_error = assemblyai.ApiError("503 Service unavailable", 503)
    headers, body = to_binary(storage_event(generation="18"))
    assert fn.post("/", headers=headers, data=body).status_code == 500, "raised: Eventarc retries"
    product.aai.submit_error = None
    assert fn.post("/", headers=headers, data=body).status_code == 200
    assert fn.post("/", headers=headers, data=body).status_code == 200
    assert len(product.aai.submitted) == 1


def test_an_upload_that_can_never_be_submitted_is_acknowledged_not_retried(product, monkeypatch):
    """A permanent failure before AssemblyAI is called (here a signed URL
    longer than submit accepts) ends the upload in error: no retry loop."""
    long_url = "https://signed.example/a?sig=" + "x" * inputs.MAX_URL_BYTES
    monkeypatch.setattr(storage_object, "signed_url", lambda obj, seconds: long_url)
    fn = product.client("transcribe_uploaded_audio", "cloudevent")
    headers, body = to_binary(storage_event(generation="19"))
    for _ in range(2):
        assert fn.post("/", headers=headers, data=body).status_code == 200
    key = uploads.claim_key(storage_object.parse(storage_event(generation="19").get_data()))
    upload = product.store.doc("meetings-uploads", key)
    assert upload["status"] == "error" and "audio_url" in upload["error"], upload
    assert product.aai.submitted == []


# --- 6. deadlines ------------------------------------------------------------------------


def test_a_sweep_with_a_slow_gateway_stops_before_its_deadline(product):
    product.configure(FUNCTION_TIMEOUT_SECONDS="4", LLM_TIMEOUT_SECONDS="1")
    tids = [product.queued_meeting() for _ in range(10)]
    for tid in tids:
        product.make_stale(tid)

    def slow(_body):
        time.sleep(0.4)  # the gateway's latency, not a wait on a condition
        return answer(GOOD_CONTENT)

    product.aai.gateway = slow
    started = time.monotonic()
    swept = product.sweep()
    took = time.monotonic() - started
    assert took < 4 - 1, f"the sweep ran {took:.1f} s of its 4 s"
    assert swept["stopped"] == "deadline" and 0 < swept["tried"] < 10
    left = [t for t in tids if product.doc(t)["status"] == "queued"]
    assert len(left) == 10 - swept["tried"], "the rest wait for the next run, unclaimed"
    assert all("generation" not in product.doc(t) for t in left)


def test_a_sweep_works_on_several_meetings_at_once_within_its_batch(product):
    """One at a time, a run's calls would take as long as its meetings' work
    laid end to end, and each model's next minute would open that much late;
    the gateway's limit, not the sweep, should bound them. RECOVERY_BATCH
    still bounds a run, counting the meetings in flight."""
    product.configure(RECOVERY_BATCH="6")
    tids = [product.queued_meeting() for _ in range(10)]
    for tid in tids:
        product.make_stale(tid)
    lock, calls = threading.Lock(), {"now": 0, "most": 0}

    def slow(_body):
        with lock:
            calls["now"] += 1
            calls["most"] = max(calls["most"], calls["now"])
        time.sleep(0.3)  # the gateway's latency, not a wait on a condition
        with lock:
            calls["now"] -= 1
        return answer(GOOD_CONTENT)

    product.aai.gateway = slow
    swept = product.sweep()
    assert calls["most"] == sweep.WORKERS > 1
    assert swept["stopped"] == "batch" and swept["tried"] == 6
    assert sum(product.aai.gateway_calls.values()) == 6
    assert sorted(product.doc(t)["status"] for t in tids) == ["completed"] * 6 + ["queued"] * 4


def test_the_webhook_keeps_time_for_its_final_write(product, monkeypatch):
    seen = {}

    def gateway(cfg, body, deadline, **_):
        seen["left"] = deadline - time.monotonic()
        return answer(GOOD_CONTENT)

    tid = product.queued_meeting()
    monkeypatch.setattr(assemblyai, "chat_completion", gateway)
    assert product.deliver(tid).status_code == 200
    # 540 s function: the gateway may use all but the final write's budget.
    assert 540 - 5 - record.PATIENT_SECONDS - 2 < seen["left"] <= 540 - record.PATIENT_SECONDS


# --- 7. the final write --------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault", [exceptions.FailedPrecondition("claim lost"), exceptions.ServiceUnavailable("away")]
)
def test_a_lost_final_write_never_answers_200(product, fault):
    tid = product.queued_meeting()
    product.store.faults.append(
        lambda op, _c, _id, fields: (
            fault if op == "update" and (fields or {}).get("status") == "completed" else None
        )
    )
    answer_ = product.deliver(tid)
    assert answer_.status_code == 503, answer_.get_json()
    assert product.doc(tid)["status"] != "completed"


def test_submit_after_the_webhook_built_the_document_writes_nothing(product):
    tid = product.queued_meeting()
    doc_before = product.doc(tid)
    product.store.docs.pop(("meetings", tid))  # submit's create "lost": the webhook built it
    product.aai.finish(tid)
    held = {"n": 0}

    def gateway(body):
        # While the holder waits for the gateway, submit's late record arrives.
        held["n"] += 1
        writes = product.store.writes
        submit.record_queued(config.get(), tid, inputs.submission(
            {"audio_url": doc_before["source"]["audio_url"]}), doc_before["source"])  # fmt: skip
        assert product.store.writes == writes, "no write may void the holder's claim"
        return answer(GOOD_CONTENT)

    product.aai.gateway = gateway
    assert product.deliver(tid).status_code == 200
    assert product.doc(tid)["status"] == "completed" and held["n"] == 1


# --- 8. Firestore refusing for good --------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "fix"),
    [
        (
            exceptions.PermissionDenied("Missing or insufficient permissions."),
            "roles/datastore.user",
        ),
        (
            exceptions.NotFound("The database (default) does not exist"),
            "create the Firestore database",
        ),
    ],
)
def test_a_permanent_firestore_error_says_what_to_fix(product, capsys, fault, fix):
    tid = product.queued_meeting()
    capsys.readouterr()
    product.store.faults.append(lambda op, *_: fault if op == "get" else None)
    answer_ = product.deliver(tid)
    assert answer_.status_code == 503 and answer_.get_json()["kind"] == "operator"
    (entry,) = [e for e in logs_of(capsys) if e["severity"] == "ERROR"]
    assert fix in entry["message"] and "unavailable" not in entry["message"]
    assert entry["transcript_id"] == tid
