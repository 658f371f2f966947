"""Privacy and retention on the real local stack (issue 20): documents
expire, AssemblyAI forgets the transcript once, redacted PII stays out of
the prompt and the document.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
import requests
from conftest import upload_sample, wait_for_document, wait_until
from test_console_e2e import Console, assert_kept, paid

from meeting_actions import inputs, privacy

PHONE = "415-555-0142"


def _days_out(doc: dict, days: int) -> None:
    expire = doc.get("expire_at")
    assert isinstance(expire, dt.datetime), f"no expire_at on {doc.get('status')!r}: {doc}"
    created = doc.get("created_at") or dt.datetime.now(dt.UTC)
    assert abs((expire - created) - dt.timedelta(days=days)) < dt.timedelta(minutes=5)


def _doc(db, path: str) -> dict:
    return db.document(path).get().to_dict()


def test_every_meeting_carries_expire_at_from_its_creation(stack, make_functions, standin, db):
    fns = make_functions(RETENTION_DAYS="30", FIRESTORE_COLLECTION="retention")
    # Completed.
    done = fns.submit_json({"audio_url": upload_sample(stack)}).json()
    _days_out(wait_for_document(db, done["document"]), 30)
    # Failed: AssemblyAI could not transcribe it.
    standin.fault(target="transcript_create", kind="fail_transcript",
                  match={"audio_url_contains": "/cdn/upload/"})  # fmt: skip
    failed = fns.submit_json({"audio_url": upload_sample(stack)}).json()
    doc = wait_for_document(db, failed["document"])
    assert doc["status"] == "error"
    _days_out(doc, 30)
    # Queued: still transcribing.
    standin.configure(transcription_seconds=30)
    try:
        queued = fns.submit_json({"audio_url": upload_sample(stack)}).json()
        doc = _doc(db, queued["document"])
        assert doc["status"] == "queued"
        _days_out(doc, 30)
    finally:
        standin.configure(transcription_seconds=1.0)
    # Built by the webhook from AssemblyAI's record: submit never wrote it.
    made = requests.post(
        f"{stack.standin.url}/v2/transcript",
        json={
            "audio_url": upload_sample(stack),
            "webhook_url": fns.env["WEBHOOK_URL"],
            "webhook_auth_header_name": "X-Webhook-Secret",
            "webhook_auth_header_value": fns.env["WEBHOOK_SECRET"],
        },
        headers={"Authorization": stack.api_key},
        timeout=30,
    ).json()
    _days_out(wait_for_document(db, f"retention/{made['id']}"), 30)


def _deletes(standin, tid: str) -> list[dict]:
    return [
        r
        for r in standin.requests()
        if r["method"] == "DELETE" and r["path"] == f"/v2/transcript/{tid}"
    ]


@pytest.fixture(scope="module")
def forgetting(stack, make_functions):
    made = Console(stack, make_functions, "forgetting", DELETE_TRANSCRIPT_AFTER_ITEMS="true",
                   RECHECK_SECONDS="1")  # fmt: skip
    yield made
    made.close()


def test_the_transcript_is_deleted_once_and_a_regeneration_costs_nothing(forgetting, standin, db):
    tid, first = forgetting.meeting(db)
    doc = wait_until(lambda: (d := forgetting.doc(db, tid)).get("transcript_deleted_at") and d,
                     20, "the transcript to be deleted")  # fmt: skip
    assert standin.transcript(tid)["text"] == "Deleted by user."
    # Three duplicate deliveries and a sweep: nothing is deleted again.
    standin.deliver(tid, copies=3)
    forgetting.sweep()
    assert len(_deletes(standin, tid)) == 1
    # A regeneration is refused before anything is paid; the items stay.
    forgetting.edit(db, tid, regenerate=True)
    doc = forgetting.doc(db, tid)
    assert_kept(doc, first, "the transcript was deleted at AssemblyAI")
    assert paid(standin, tid) == 1
    assert doc["action_items"] == first["action_items"]


def test_a_failed_deletion_is_retried_by_the_sweep(forgetting, standin, db):
    standin.fault(target="transcript_delete", kind="status", status=503, times=1)
    # Only the deletion matters here: the notification's first attempt may
    # be left to the sweep, which would retry the deletion too early.
    tid, _ = forgetting.meeting(db, notified=False)
    doc = wait_until(
        lambda: (
            (d := forgetting.doc(db, tid)).get("transcript_deletion", {}).get("last_error") and d
        ),
        60,
        "the failed deletion to be recorded",
    )
    assert not doc.get("transcript_deleted_at") and doc["sweep_at"], doc.get("transcript_deletion")
    wait_until(lambda: forgetting.sweep() and forgetting.doc(db, tid).get("transcript_deleted_at"),
               60, "the sweep to delete the transcript")  # fmt: skip
    assert [r["status"] for r in _deletes(standin, tid)] == [503, 200], _deletes(standin, tid)
    forgetting.sweep()
    assert len(_deletes(standin, tid)) == 2


@pytest.mark.parametrize("sub", ["hash", "entity_name"])
def test_a_redacted_phone_number_reaches_no_prompt_and_no_document(
    stack, make_functions, standin, db, sub
):
    fns = make_functions(FIRESTORE_COLLECTION="redacted")
    answer = fns.submit_json(
        {
            "audio_url": upload_sample(stack, "vendor-call"),
            "redact_pii": True,
            "redact_pii_policies": ["phone_number"],
            "redact_pii_sub": sub,
        }
    )
    assert answer.status_code == 202, answer.text
    tid = answer.json()["transcript_id"]
    doc = wait_for_document(db, f"redacted/{tid}")
    assert doc["status"] == "completed", doc.get("error")
    # The stand-in redacts text only, as AssemblyAI does.
    held = standin.transcript(tid)
    assert PHONE not in held["text"]
    assert any(PHONE in u["text"] for u in held["transcript"]["utterances"])
    gateway = [
        r
        for r in standin.requests()
        if r["path"].endswith("/chat/completions") and r.get("transcript_id") == tid
    ]
    assert gateway
    for r in gateway:
        assert "0142" not in r["prompt_text"] and "0142" not in r["answer_text"]
    stored = json.dumps(doc, default=str)
    assert "0142" not in stored
    # The webhook's read keeps only the start of text (assemblyai.TEXT_KEPT):
    # the utterances cannot be checked against it, so the gateway fills in
    # the redacted text.
    assert doc["llm"]["prompt"] == "placeholder"
    assert all(r["substituted"] for r in gateway)
    assert "not used" in doc["privacy"]["utterances"]
    assert doc["privacy"]["redact_pii_policies"] == ["phone_number"]
    assert doc["options"]["redact_pii"] is True
    assert doc["action_items"]


def test_redaction_is_validated_against_the_spec(make_functions):
    fns = make_functions(FIRESTORE_COLLECTION="redacted")
    for body, field in [
        ({"redact_pii": True, "redact_pii_policies": ["phone"]}, "redact_pii_policies"),
        ({"redact_pii": True}, "redact_pii_policies"),
        (
            {"redact_pii": True, "redact_pii_policies": ["phone_number"], "redact_pii_sub": "x"},
            "redact_pii_sub",
        ),  # fmt: skip
        ({"redact_pii": "yes"}, "redact_pii"),
        ({"redact_pii_policies": ["phone_number"]}, "redact_pii_policies"),
    ]:
        answer = fns.submit_json({"audio_url": "https://example.com/a.wav", **body})
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["field"] == field, answer.json()


def test_the_enums_are_the_specs():
    from local.assemblyai_standin import spec

    schemas = spec._load("openapi.yml")["components"]["schemas"]
    assert set(schemas["PiiPolicy"]["enum"]) == privacy.PII_POLICIES
    assert set(schemas["SubstitutionPolicy"]["enum"]) == set(privacy.SUBSTITUTIONS)


def test_utterances_that_differ_from_text_beyond_redactions_fall_back_to_the_placeholder():
    utterances = [
        {"speaker": "A", "start": 0, "end": 1000, "text": "Call 415-555-0142 today.",
         "words": [{"text": "Call"}, {"text": "415-555-0142"}, {"text": "today."}]},
        {"speaker": "B", "start": 1000, "end": 2000, "text": "Fine by me."},
    ]  # fmt: skip
    base = {"redact_pii": True, "redact_pii_policies": ["phone_number"], "utterances": utterances}
    view, shown = privacy.for_prompt({**base, "text": "Call [PHONE_NUMBER] today. Fine by me."})
    assert [u["text"] for u in view["utterances"]] == ["Call [PHONE_NUMBER] today.", "Fine by me."]
    assert view["utterances"][0]["words"] is None and "0142" not in json.dumps(view)
    view, shown = privacy.for_prompt({**base, "text": "Call ############ today. Fine by you."})
    assert view["utterances"] is None and "not used" in shown["utterances"]
    unchanged = {"utterances": utterances, "text": "x"}
    assert privacy.for_prompt(unchanged) == (unchanged, None)


def test_person_name_redaction_drops_the_names():
    transcript = {
        "redact_pii": True,
        "redact_pii_policies": ["person_name"],
        "text": "Thanks [PERSON_NAME].",
        "utterances": [{"speaker": "Priya", "start": 0, "end": 1, "text": "Thanks Marco."}],
        "speech_understanding": {
            "response": {"speaker_identification": {"mapping": {"A": "Priya"}}}
        },
    }
    view, shown = privacy.for_prompt(transcript)
    assert view["utterances"][0]["speaker"] == "A"
    assert view["utterances"][0]["text"] == "Thanks [PERSON_NAME]."
    assert "speech_understanding" not in view and shown["names_redacted"] is True


def test_submission_carries_the_redaction():
    sub = inputs.submission({"audio_url": "https://e.com/a.wav", "redact_pii": True,
                             "redact_pii_policies": ["phone_number"]})  # fmt: skip
    assert sub.redact_pii is True and sub.redact_pii_policies == ("phone_number",)
