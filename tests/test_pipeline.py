"""The pipeline end to end: real functions-framework servers, the Firestore
server and the AssemblyAI stand-in over HTTP.
"""

from __future__ import annotations

import json
import time

import requests
from conftest import process_logs, upload_sample, wait_for_document, wait_until

from local import stack as local_stack


def submit_sample(stack, functions, **body) -> dict:
    answer = functions.submit_json({"audio_url": upload_sample(stack), **body})
    assert answer.status_code == 202, answer.text
    return answer.json()


def gateway_successes(standin, tid: str) -> int:
    return standin.stats()["gateway_success"].get(tid, 0)


def test_happy_path_end_to_end(stack, functions, standin, db):
    accepted = submit_sample(
        stack,
        functions,
        metadata={"team": "platform", "meeting": "weekly sync"},
        speaker_labels=True,
    )
    tid = accepted["transcript_id"]
    assert accepted == {"transcript_id": tid, "status": "queued", "document": f"meetings/{tid}"}

    doc = wait_for_document(db, accepted["document"])
    assert doc["status"] == "completed", doc.get("error")
    items = doc["action_items"]
    assert len(items) >= 2
    moment = {"text", "owner", "owner_source", "said_by", "said_at", "quote", "link", "due"}
    assert all(set(item) == moment and item["text"] for item in items)
    assert any(item.get("owner") for item in items) and any(item.get("due") for item in items)
    # Every item traces back to what was said.
    text = (
        standin.transcript(tid).get("text")
        or requests.get(
            f"{stack.standin.url}/v2/transcript/{tid}",
            headers={"Authorization": stack.api_key},
            timeout=10,
        ).json()["text"]
    )
    for item in items:
        assert item["quote"] in text
        if item["owner_source"] == "spoken":
            assert item["owner"] in item["quote"]
    assert doc["action_items_text"].strip()
    assert doc["source"]["audio_url"].startswith(stack.standin.url)
    assert doc["options"]["speaker_labels"] is True
    assert doc["options"]["answer_format"] == "bullet points"
    assert doc["metadata"] == {"team": "platform", "meeting": "weekly sync"}
    assert doc["llm"]["requested_model"] == "claude-sonnet-4-6"
    assert doc["llm"]["input_tokens"] > 0 and doc["llm"]["output_tokens"] > 0
    assert doc["audio_duration"] > 0 and doc["language_code"]
    assert doc["created_at"] <= doc["updated_at"] and doc["completed_at"]
    assert "error" not in doc

    assert gateway_successes(standin, tid) == 1
    gateway = [
        r
        for r in standin.requests()
        if r["path"].endswith("/chat/completions") and r.get("transcript_id") == tid
    ]
    assert gateway and not any(r["substituted"] for r in gateway), (
        "with speaker labels the utterances go into the prompt, not through the placeholder"
    )

    # The webhook's log says where its time went, under the meeting's id.
    def written() -> dict | None:
        for line in process_logs(stack).splitlines():
            if line.startswith("{") and tid in line and "action items written" in line:
                return json.loads(line)
        return None

    entry = wait_until(written, what="the 'action items written' log line")
    assert entry["severity"] == "INFO" and entry["transcript_id"] == tid
    assert set(entry["ms"]) == {"claim", "transcript", "gateway", "write"}
    assert all(isinstance(v, int) and v >= 0 for v in entry["ms"].values())


def test_every_request_sent_to_assemblyai_follows_the_official_spec(stack, functions, standin, db):
    # The stand-in is shared by the session; other tests send invalid requests on purpose.
    since = time.time()
    accepted = submit_sample(
        stack, functions, speech_models=["universal-3-pro", "universal-2"], language_code="en_us"
    )
    wait_for_document(db, accepted["document"])
    checked = [
        r
        for r in standin.requests()
        if "valid" in r and r["valid"] is not None and r["at"] >= since
    ]
    assert checked, "the stand-in validated nothing"
    invalid = [r for r in checked if not r["valid"]]
    assert not invalid, invalid


def test_webhook_with_wrong_or_missing_secret_changes_nothing(stack, functions, standin, db):
    accepted = submit_sample(stack, functions)
    done = wait_for_document(db, accepted["document"])
    before = db.document(accepted["document"]).get().update_time
    seen = len(standin.requests())
    body = {"transcript_id": accepted["transcript_id"], "status": "completed"}
    for secret in (None, "", "wrong", stack.webhook_secret + "x", stack.webhook_secret[:-1]):
        answer = functions.call_webhook(body, secret)
        assert answer.status_code == 401, (secret, answer.text)
        assert "X-Webhook-Secret" in answer.json()["error"]
    # An unknown meeting with a wrong secret: no document appears.
    answer = functions.call_webhook({"transcript_id": "never-seen", "status": "completed"}, "wrong")
    assert answer.status_code == 401
    assert not db.document("meetings/never-seen").get().exists
    assert db.document(accepted["document"]).get().update_time == before
    assert len(standin.requests()) == seen, "nothing may be read from AssemblyAI"
    assert gateway_successes(standin, accepted["transcript_id"]) == 1
    assert done["status"] == "completed"


def test_five_concurrent_duplicate_deliveries_make_one_llm_call(stack, functions, standin, db):
    standin.configure(gateway_latency=1.0)
    try:
        standin.fault(target="webhook", kind="duplicate", copies=5)
        accepted = submit_sample(stack, functions)
        tid = accepted["transcript_id"]
        doc = wait_for_document(db, accepted["document"])
        assert doc["status"] == "completed"
        wait_until(lambda: standin.transcript(tid)["webhook_finished"], what="deliveries to end")
        # And five more at once after it is done: all acknowledged, nothing redone.
        codes = standin.deliver(tid, copies=5)["status_codes"]
        assert codes == [200] * 5
    finally:
        standin.configure(gateway_latency=0)
    assert gateway_successes(standin, tid) == 1
    assert db.document(accepted["document"]).get().to_dict()["action_items"] == doc["action_items"]


def test_failed_transcription_records_assemblyais_message(stack, functions, standin, db):
    message = "Transcoding failed. File does not appear to contain audio."
    standin.fault(target="transcript_create", kind="fail_transcript", message=message)
    accepted = submit_sample(stack, functions)
    doc = wait_for_document(db, accepted["document"])
    assert doc["status"] == "error"
    assert doc["error"] == message
    assert doc["error_stage"] == "transcription"
    assert gateway_successes(standin, accepted["transcript_id"]) == 0


def test_gateway_rate_limit_then_success(stack, functions, standin, db):
    standin.fault(target="gateway", kind="status", status=429, retry_after=1, times=1)
    accepted = submit_sample(stack, functions)
    tid = accepted["transcript_id"]
    doc = wait_for_document(db, accepted["document"])
    assert doc["status"] == "completed"
    calls = [
        r
        for r in standin.requests()
        if r["path"].endswith("/chat/completions") and r.get("transcript_id") == tid
    ]
    assert [r["status"] for r in calls] == [429, 200]
    assert gateway_successes(standin, tid) == 1


def test_gateway_failing_until_retries_run_out_ends_in_a_readable_error(
    stack, functions, standin, db
):
    standin.fault(target="gateway", kind="status", status=503, times=-1)
    accepted = submit_sample(stack, functions)
    doc = wait_for_document(db, accepted["document"], timeout=120)
    assert doc["status"] == "error"
    assert doc["error_stage"] == "action_items"
    assert "LLM Gateway" in doc["error"] and "503" in doc["error"]
    assert doc["generation"]["attempts"] >= 5


def test_llm_answer_that_is_not_json(stack, functions, standin, db):
    standin.fault(target="gateway", kind="invalid_json")
    doc = wait_for_document(db, submit_sample(stack, functions)["document"])
    assert doc["status"] == "completed"
    assert doc["llm"]["parsed_as"] == "salvaged" and doc["note"]

    standin.fault(target="gateway", kind="plain_text")
    doc = wait_for_document(db, submit_sample(stack, functions)["document"])
    assert doc["status"] == "completed"
    assert doc["llm"]["parsed_as"] == "plain_text"
    assert doc["action_items"] and doc["action_items_text"]


def test_answer_cut_at_max_tokens(stack, make_functions, standin, db):
    short = make_functions(LLM_MAX_TOKENS="60")
    doc = wait_for_document(db, submit_sample(stack, short)["document"])
    assert doc["status"] == "completed"
    assert doc["llm"]["finish_reason"] == "length"
    assert "max_tokens" in (doc["note"] or "")


def test_webhook_before_the_document_exists(stack, functions, standin, db):
    """A transcript submitted around submit_transcription, so the webhook
    is the first to hear of it: it builds the document from AssemblyAI."""
    hook = functions.env["WEBHOOK_URL"] + "?answer_format=numbered+list&meta.origin=direct"
    answer = requests.post(
        f"{stack.standin.url}/v2/transcript",
        json={
            "audio_url": upload_sample(stack),
            "webhook_url": hook,
            "webhook_auth_header_name": "X-Webhook-Secret",
            "webhook_auth_header_value": stack.webhook_secret,
        },
        headers={"Authorization": stack.api_key},
        timeout=10,
    )
    tid = answer.json()["id"]
    doc = wait_for_document(db, f"meetings/{tid}")
    assert doc["status"] == "completed"
    assert doc["source"]["audio_url"].startswith(stack.standin.url)
    assert doc["metadata"] == {"origin": "direct"}
    assert doc["options"]["answer_format"] == "numbered list"
    assert gateway_successes(standin, tid) == 1


def test_redacted_audio_ready_is_acknowledged_and_ignored(stack, functions, standin, db):
    seen = len(standin.requests())
    body = {
        "status": "redacted_audio_ready",
        "redacted_audio_url": "https://example.com/redacted.mp3",
    }
    answer = functions.call_webhook(body, stack.webhook_secret)
    assert answer.status_code == 200 and answer.json()["status"] == "ignored"
    assert len(standin.requests()) == seen


BAD_SUBMITS = [
    (b"not json", 400, None),
    (b"", 400, None),
    (b"[1, 2]", 400, None),
    (b"{}", 400, "audio_url"),
    (b'{"audio_url": 5}', 400, "audio_url"),
    (b'{"audio_url": "ftp://host/a.mp3"}', 400, "audio_url"),
    (b'{"audio_url": "file:///etc/passwd"}', 400, "audio_url"),
    (b'{"audio_url": "https://"}', 400, "audio_url"),
    (b'{"audio_url": "https://h/a.mp3", "speech_models": "x"}', 400, "speech_models"),
    (b'{"audio_url": "https://h/a.mp3", "speaker_labels": "yes"}', 400, "speaker_labels"),
    (b'{"audio_url": "https://h/a.mp3", "language_code": 12}', 400, "language_code"),
    (b'{"audio_url": "https://h/a.mp3", "metadata": {"a": 1}}', 400, "metadata"),
    (b'{"audio_url": "https://h/a.mp3", "metadata": [1]}', 400, "metadata"),
    (b'{"audio_url": "https://h/a.mp3", "answer_format": ""}', 400, "answer_format"),
    (b'{"audio_url": "https://h/a.mp3", "surprise": 1}', 400, "surprise"),
    (b'{"audio_url": "https://h/a.mp3"' + b" " * 70000 + b"}", 413, None),
]

BAD_HOOKS = [
    (b"not json", 400),
    (b"", 400),
    (b"[]", 400),
    (b'{"status": "completed"}', 400),
    (b'{"transcript_id": "../x", "status": "completed"}', 400),
    (b'{"transcript_id": 7, "status": "completed"}', 400),
    (b'{"transcript_id": "abc"}', 400),
    (b"{" * 5000, 400),
    (b'{"transcript_id": "a", "status": "completed", "pad": "' + b"x" * 70000 + b'"}', 413),
]


def test_bad_bodies_get_a_json_4xx_naming_the_problem(stack, functions, standin, db):
    seen = len(standin.requests())
    for raw, status, field in BAD_SUBMITS:
        answer = requests.post(
            functions.submit.url, data=raw, headers={"Content-Type": "application/json"}, timeout=10
        )
        assert answer.status_code == status, (raw[:60], answer.text)
        assert answer.json()["error"]
        if field:
            assert field in answer.json()["error"], answer.json()
    for raw, status in BAD_HOOKS:
        answer = functions.call_webhook(
            raw, stack.webhook_secret, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == status, (raw[:60], answer.text)
        assert answer.json()["error"]
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        for url in (functions.submit.url, functions.webhook.url):
            answer = requests.request(method, url, timeout=10)
            assert answer.status_code == 405 and answer.json()["error"]
    assert len(standin.requests()) == seen, "no bad request may reach AssemblyAI"


def test_assemblyai_refusing_the_job_is_a_502_with_its_message(stack, functions, standin):
    standin.fault(
        target="transcript_create", kind="status", status=400, message="Invalid speech model"
    )
    answer = functions.submit_json({"audio_url": "https://example.com/a.mp3"})
    assert answer.status_code == 502
    assert "AssemblyAI" in answer.json()["error"]
    assert stack.api_key not in answer.text

    standin.fault(target="transcript_create", kind="status", status=503, times=-1)
    answer = functions.submit_json({"audio_url": "https://example.com/a.mp3"})
    assert answer.status_code == 503 and answer.headers["Retry-After"]


def test_firestore_failing_after_assemblyai_accepted_is_a_202_not_a_retry(
    stack, functions, standin, db
):
    """A submit whose Firestore is unreachable (a dead port) while the
    webhook's is up: AssemblyAI accepted the job, so the caller gets 202 and
    no Retry-After (a resubmit would be a second, paid transcript), and the
    webhook writes the meeting's document from AssemblyAI's record and the
    webhook URL's hints."""
    dead = f"127.0.0.1:{local_stack.free_port()}"
    env = dict(functions.env, FIRESTORE_EMULATOR_HOST=dead)
    submit = stack.start_function("submit_transcription", env, name="submit-firestore-dead")
    try:
        since = time.time()
        body = {"audio_url": upload_sample(stack), "metadata": {"team": "platform"},
                "answer_format": "a numbered list"}  # fmt: skip
        answer = requests.post(submit.url, json=body, timeout=60)
    finally:
        submit.stop()
    assert answer.status_code == 202, answer.text
    assert "Retry-After" not in answer.headers
    accepted = answer.json()
    tid = accepted["transcript_id"]
    assert accepted["recorded"] is False and "when the transcript is ready" in accepted["note"]
    assert accepted["document"] == f"meetings/{tid}"
    created = [r for r in standin.requests() if r["path"] == "/v2/transcript" and r["at"] >= since]
    assert len(created) == 1, "one transcript"
    doc = wait_for_document(db, accepted["document"])
    assert doc["status"] == "completed", doc.get("error")
    assert doc["metadata"] == {"team": "platform"}
    assert doc["options"]["answer_format"] == "a numbered list"
    assert doc["source"]["audio_url"] == body["audio_url"]
    assert gateway_successes(standin, tid) == 1
