"""Meetings that AssemblyAI's retries cannot finish are finished by the
scheduled recovery sweep (recover_meetings), still with one result."""

from __future__ import annotations

import requests
from conftest import upload_sample, wait_for_document, wait_until


def submit(stack, functions) -> dict:
    answer = functions.submit_json({"audio_url": upload_sample(stack)})
    assert answer.status_code == 202, answer.text
    return answer.json()


def sweep_until_completed(db, functions, path: str, timeout: float = 30) -> dict:
    def swept():
        answer = requests.post(functions.recover.url, timeout=60)
        assert answer.status_code == 200, answer.text
        return db.document(path).get().to_dict()["status"] == "completed"

    wait_until(swept, timeout, "the sweep to finish the meeting")
    return db.document(path).get().to_dict()


def test_rate_limited_past_assemblyais_retries_then_recovered(stack, functions, standin, db):
    standin.fault(target="gateway", kind="status", status=429, retry_after=1, times=-1)
    accepted = submit(stack, functions)
    tid = accepted["transcript_id"]
    wait_until(
        lambda: standin.transcript(tid)["webhook_finished"], 60, "AssemblyAI's retries to run out"
    )
    doc = db.document(accepted["document"]).get().to_dict()
    assert doc["status"] == "generating", "nothing may be lost or failed by a rate limit"
    assert "429" in doc["generation"]["last_error"]

    standin.clear_faults()
    doc = sweep_until_completed(db, functions, accepted["document"])
    assert doc["action_items"]
    assert standin.stats()["gateway_success"][tid] == 1


def test_instance_killed_mid_gateway_call(stack, make_functions, standin, db):
    functions = make_functions(CLAIM_SECONDS="3")
    standin.fault(target="gateway", kind="delay", seconds=4)
    accepted = submit(stack, functions)
    tid = accepted["transcript_id"]
    wait_for_document(db, accepted["document"], statuses=("generating",))
    wait_until(
        lambda: any(r["path"].endswith("/v2/transcript/" + tid) for r in standin.requests()),
        10,
        "the holder to be at work",
    )
    functions.webhook.kill()
    functions.stack.restart(functions.webhook)

    wait_until(lambda: standin.transcript(tid)["webhook_finished"], 60, "deliveries to end")
    doc = db.document(accepted["document"]).get().to_dict()
    if doc["status"] != "completed":  # AssemblyAI's retries ran out first
        doc = sweep_until_completed(db, functions, accepted["document"])
    assert doc["status"] == "completed" and doc["action_items"]
    # The killed holder's answer was lost with it; the one that took over
    # wrote the only result.
    assert doc["generation"]["finished_at"]
    assert standin.stats()["gateway_success"][tid] <= 2
