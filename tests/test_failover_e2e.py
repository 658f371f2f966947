"""Models fail over, on the real local stack: the stand-in refuses or rate
limits one model, or retires it from GET /v1/models."""

from __future__ import annotations

import time

import pytest
import requests
from conftest import upload_sample, wait_for_document, wait_until

PREFERRED, FALLBACK = "claude-sonnet-4-6", "gpt-5.5"


@pytest.fixture
def models(standin):
    yield standin
    standin.models()  # every model listed again, none retired


def gateway_calls(standin, tid: str) -> list[dict]:
    return [
        r
        for r in standin.requests()
        if r["path"] == "/v1/chat/completions" and r.get("transcript_id") == tid
    ]


def submit(stack, functions, **body) -> dict:
    answer = functions.submit_json({"audio_url": upload_sample(stack), **body})
    assert answer.status_code == 202, answer.text
    return answer.json()


def test_a_model_answering_404_fails_over_in_one_paid_call(stack, make_functions, models, db):
    functions = make_functions(LLM_MODEL=PREFERRED, LLM_FALLBACK_MODELS=FALLBACK)
    models.fault(target="gateway", kind="status", status=404, times=-1,
                 message=f"Model {PREFERRED} has been retired", match={"model": PREFERRED})  # fmt: skip
    accepted = submit(stack, functions)
    doc = wait_for_document(db, accepted["document"])
    assert doc["status"] == "completed", doc.get("error")
    assert doc["llm"]["model"] == FALLBACK
    assert doc["llm"]["tried"] == [
        {"model": PREFERRED, "outcome": "refused"},
        {"model": FALLBACK, "outcome": "answered"},
    ]
    calls = gateway_calls(models, accepted["transcript_id"])
    assert [(c["model"], c["status"]) for c in calls] == [(PREFERRED, 404), (FALLBACK, 200)]
    assert models.stats()["gateway_success"][accepted["transcript_id"]] == 1


def test_a_rate_limited_model_fails_over_without_waiting(stack, make_functions, models, db):
    functions = make_functions(LLM_MODEL=PREFERRED, LLM_FALLBACK_MODELS=FALLBACK)
    models.fault(target="gateway", kind="status", status=429, retry_after=600, times=-1,
                 match={"model": PREFERRED})  # fmt: skip
    started = time.monotonic()
    accepted = submit(stack, functions)
    doc = wait_for_document(db, accepted["document"], timeout=30)
    assert doc["status"] == "completed" and doc["llm"]["model"] == FALLBACK
    assert time.monotonic() - started < 30, "no Retry-After was waited out"
    calls = gateway_calls(models, accepted["transcript_id"])
    assert [(c["model"], c["status"]) for c in calls] == [(PREFERRED, 429), (FALLBACK, 200)]


def test_the_only_model_retired_waits_until_the_setting_is_fixed(stack, make_functions, models, db):
    retired = "claude-sonnet-4-5-20250929"
    models.models(retired=[retired])
    functions = make_functions(LLM_MODEL=retired, FIRESTORE_COLLECTION="failover-retired",
                               RECHECK_SECONDS="1")  # fmt: skip
    accepted = submit(stack, functions)
    tid, path = accepted["transcript_id"], accepted["document"]

    def refused_with_5xx() -> bool:
        attempts = models.transcript(tid)["attempts"]
        return bool(attempts) and all(500 <= a["result"] < 600 for a in attempts)

    wait_until(refused_with_5xx, what="AssemblyAI's delivery answered 5xx")
    assert db.document(path).get().to_dict()["status"] == "generating"
    assert not gateway_calls(models, tid), "a retired model is never asked"

    # The operator sets LLM_MODEL: the functions restart with the new setting.
    for proc in (functions.webhook, functions.recover):
        proc.stop()
        proc.env = {**proc.env, "LLM_MODEL": PREFERRED}
        proc.start()

    def swept() -> bool:
        requests.post(functions.recover.url, timeout=60)  # Cloud Scheduler's call
        return db.document(path).get().to_dict()["status"] in ("completed", "error")

    wait_until(swept, what="the sweep completed the waiting meeting")
    doc = db.document(path).get().to_dict()
    assert doc["status"] == "completed" and doc["llm"]["model"] == PREFERRED
    assert models.stats()["gateway_success"][tid] == 1


def test_with_speaker_labels_no_gateway_request_carries_the_transcript_id(
    stack, functions, standin, db
):
    accepted = submit(stack, functions, speaker_labels=True)
    doc = wait_for_document(db, accepted["document"])
    assert doc["status"] == "completed" and doc["llm"]["prompt"] == "utterances"
    calls = gateway_calls(standin, accepted["transcript_id"])
    assert calls and not any(c["carried_transcript_id"] for c in calls)
    # Without speaker labels the placeholder needs it.
    accepted = submit(stack, functions, speaker_labels=False)
    doc = wait_for_document(db, accepted["document"])
    assert doc["llm"]["prompt"] == "placeholder"
    calls = gateway_calls(standin, accepted["transcript_id"])
    assert calls and all(c["carried_transcript_id"] and c["substituted"] for c in calls)
