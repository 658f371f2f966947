"""Nothing lost, nothing doubled: the product under bursts, outages, slow
answers and hostile input. Each scenario that changes the stack's timing
runs on a stack of its own."""

from __future__ import annotations

import concurrent.futures
import os
import time

import pytest
import requests
from conftest import STANDIN_OPTIONS, Functions, upload_sample, wait_for_document, wait_until

from local import stack as local_stack


@pytest.fixture
def restore_env():
    """The dedicated stacks point FIRESTORE_EMULATOR_HOST elsewhere for a while."""
    saved = os.environ.get("FIRESTORE_EMULATOR_HOST")
    yield
    if saved is not None:
        os.environ["FIRESTORE_EMULATOR_HOST"] = saved


def _own_stack(tmp_path, *standin_options: str) -> local_stack.Stack:
    stack = local_stack.Stack(tmp_path / "logs")
    stack.start_firestore()
    stack.start_standin(None, *STANDIN_OPTIONS, *standin_options)
    return stack


def _client(stack: local_stack.Stack):
    from google.cloud import firestore

    os.environ["FIRESTORE_EMULATOR_HOST"] = f"127.0.0.1:{stack.firestore.port}"
    return firestore.Client(project=stack.project)


@pytest.mark.slow
def test_burst_of_100_beyond_the_gateway_rate_limit(tmp_path, restore_env):
    """100 meetings finish transcription at once; the gateway allows 30
    requests per window (here a 6 s window, the 30-per-minute shape ten
    times faster); AssemblyAI's retries run out long before the burst is
    served; the scheduled sweep (called here every window, as Cloud
    Scheduler would every minute) finishes the rest. All 100 complete,
    each with exactly one successful gateway call."""
    stack = _own_stack(tmp_path, "--gateway-rpm", "30", "--gateway-window", "6")
    try:
        db = _client(stack)
        fns = Functions(stack, {})
        audio = upload_sample(stack)
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: fns.submit_json({"audio_url": audio}), range(100)))
        assert [a.status_code for a in answers] == [202] * 100
        tids = [a.json()["transcript_id"] for a in answers]
        control = local_stack.StandInControl(stack.standin.url)
        wait_until(
            lambda: all(control.transcript(t)["webhook_finished"] for t in tids),
            120,
            "AssemblyAI's deliveries to end",
        )

        def all_completed() -> bool:
            docs = [db.document(f"meetings/{t}").get().to_dict() for t in tids]
            if all(d["status"] == "completed" for d in docs):
                return True
            assert not [d for d in docs if d["status"] == "error"], (
                "a rate limit must never fail a meeting"
            )
            requests.post(fns.recover.url, timeout=120).raise_for_status()
            time.sleep(1)  # the scheduler's period, scaled: the sweep is paced, not polled
            return False

        wait_until(all_completed, 240, "the sweep to finish the burst")
        success = control.stats()["gateway_success"]
        assert {t: success.get(t) for t in tids} == {t: 1 for t in tids}
        rate_limited = [
            r
            for r in control.requests()
            if r["path"] == "/v1/chat/completions" and r["status"] == 429
        ]
        assert rate_limited, "the burst really went past the limit"
    finally:
        stack.close()


@pytest.mark.slow
def test_firestore_goes_away_and_comes_back(tmp_path, restore_env):
    """The Firestore server is stopped while meetings are being transcribed
    and started again (empty: the emulator keeps nothing on disk). Deliveries
    in that window answer 5xx, a submit 202 (AssemblyAI accepted it); AssemblyAI's retries then rebuild every
    meeting's document in full from AssemblyAI's record and complete it.
    The stand-in holds the transcriptions until Firestore is down, so no
    delivery can come before the outage, however slow the submits are."""
    stack = _own_stack(tmp_path, "--hold", "1")
    try:
        db = _client(stack)
        fns = Functions(stack, {})
        control = local_stack.StandInControl(stack.standin.url)
        audio = upload_sample(stack)
        bodies = [
            {"audio_url": audio, "metadata": {"n": str(i)}, "answer_format": "numbered list"}
            for i in range(5)
        ]
        tids = [fns.submit_json(b).json()["transcript_id"] for b in bodies]
        port = stack.firestore.port
        stack.firestore.stop()
        during = fns.submit_json({"audio_url": audio, "metadata": {"n": "during"}})
        # AssemblyAI accepted it: a success, never a retry signal (a second transcript).
        assert during.status_code == 202 and during.json()["recorded"] is False, during.text
        tids.append(during.json()["transcript_id"])
        requests.post(f"{control.url}/release", timeout=10).raise_for_status()
        wait_until(
            lambda: all(
                any(a["result"] == 503 for a in control.transcript(t)["attempts"]) for t in tids[:5]
            ),
            30,
            "deliveries to meet the outage",
        )
        stack.firestore.start()
        assert stack.firestore.port == port
        for i, tid in enumerate(tids):
            doc = wait_for_document(db, f"meetings/{tid}", timeout=60)
            assert doc["status"] == "completed", doc
            assert doc["source"]["audio_url"] == audio and doc["options"]["answer_format"] in (
                "numbered list",
                "bullet points",
            )
            assert doc["metadata"] == {"n": str(i) if i < 5 else "during"}
            assert doc["action_items"] and doc["audio_duration"]
            assert control.stats()["gateway_success"][tid] == 1
    finally:
        stack.close()


def test_slow_gateway_beyond_the_webhook_deadline(stack, functions, standin, db):
    """A gateway answer slower than AssemblyAI's 10 s deadline: the first
    delivery times out, the retries find the work in progress, and the
    one call's result is kept."""
    standin.fault(target="gateway", kind="delay", seconds=11)
    answer = functions.submit_json({"audio_url": upload_sample(stack)})
    tid = answer.json()["transcript_id"]
    doc = wait_for_document(db, answer.json()["document"], timeout=60)
    assert doc["status"] == "completed"
    wait_until(lambda: standin.transcript(tid)["webhook_finished"], 30, "deliveries to end")
    attempts = [a["result"] for a in standin.transcript(tid)["attempts"]]
    assert attempts[0] == "timeout" and 503 in attempts and attempts[-1] == 200, attempts
    gateway = [
        r
        for r in standin.requests()
        if r["path"] == "/v1/chat/completions" and r.get("transcript_id") == tid
    ]
    assert len(gateway) == 1


def test_concurrent_claims_over_many_rounds(stack, functions, standin, db):
    """The race made real: 20 meetings, each hit by 8 simultaneous
    deliveries (a barrier in the stand-in) while the gateway is slow."""
    standin.configure(gateway_latency=0.5)
    try:
        tids = []
        for _ in range(20):
            standin.fault(target="webhook", kind="duplicate", copies=8)
            tids.append(
                functions.submit_json({"audio_url": upload_sample(stack)}).json()["transcript_id"]
            )
        for tid in tids:
            assert wait_for_document(db, f"meetings/{tid}")["status"] == "completed"
    finally:
        standin.configure(gateway_latency=0)
    success = standin.stats()["gateway_success"]
    assert [success[t] for t in tids] == [1] * 20


def test_no_secret_in_any_document(stack, functions, db):
    secrets = (stack.api_key, stack.webhook_secret)
    for snap in db.collection("meetings").stream():
        text = str(snap.to_dict())
        assert not any(s in text for s in secrets), snap.id
