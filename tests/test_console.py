"""The console is input (issue 21), in process: whatever a person sets on a
meeting's document, a regeneration is refused with a note or served, the
previous result is never destroyed, no paid call repeats without counting,
and every notification id stays unique per result.

The entry points run through functions-framework's test client; the store
and AssemblyAI's client are faked at their boundary (tests/fakes.py). The
cases that need real servers are in test_console_e2e.py.
"""

from __future__ import annotations

import datetime as dt

import pytest
from fakes import GOOD_CONTENT, answer
from test_close_the_loop import (  # noqa: F401 - the fixtures
    SIGNING_SECRET,
    Receiver,
    ask_to_regenerate,
    completed_meeting,
    loop,
    make_due,
    regenerate_event,
)
from test_lifecycle import Product, product  # noqa: F401 - the fixture

from meeting_actions import assemblyai, record, storage_object


def regenerate(loop: Product, tid: str, **changes):  # noqa: F811 - the fixture's name
    """A person's edit and `regenerate: true`, delivered to the trigger."""
    headers, body = ask_to_regenerate(loop, tid, **changes)
    return loop.client("regenerate_action_items", "cloudevent").post(
        "/", headers=headers, data=body
    )


def console_edit(loop: Product, tid: str, **changes):  # noqa: F811
    """A person's edit without `regenerate: true`, delivered to the trigger."""
    old = loop.doc(tid)
    loop.store.set_field("meetings", tid, **changes)
    headers, body = regenerate_event(tid, old, loop.doc(tid))
    return loop.client("regenerate_action_items", "cloudevent").post(
        "/", headers=headers, data=body
    )


def assert_kept(doc: dict, first: dict, note_has: str) -> None:
    """The first result is still the meeting's, and a note says why."""
    assert doc["status"] == "completed", doc.get("error")
    assert doc["action_items"] == first["action_items"] and doc["action_items"]
    assert doc["result_version"] == first["result_version"]
    assert "regenerate" not in doc
    assert note_has in (doc.get("regenerate_note") or ""), doc.get("regenerate_note")


# --- 4. what a person may set ---------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "note_has"),
    [
        ({"answer_format": 5}, "options.answer_format must be a string"),
        ("bullets", 'options must be a map (with answer_format in it), not the string "bullets"'),
        ({"answer_format": "x" * 600_000}, "options.answer_format is longer than 800 bytes"),
        ({"answer_format": "x" * 201}, "options.answer_format is 201 characters long: at most 200"),
        ({"answer_format": "  \n "}, "options.answer_format is empty"),
        ({"answer_format": "a list\x00"}, "options.answer_format holds control characters"),
    ],
)
def test_malformed_options_refuse_the_regeneration_before_anything_is_paid(
    loop,  # noqa: F811
    options,
    note_has,
):
    tid = completed_meeting(loop)
    first = loop.doc(tid)
    assert regenerate(loop, tid, options=options).status_code == 200
    doc = loop.doc(tid)
    assert_kept(doc, first, note_has)
    assert loop.aai.gateway_calls[tid] == 1, "only the first result was paid for"
    assert "history" not in doc or doc["history"] == first.get("history")


@pytest.mark.parametrize(
    ("model", "note_has"),
    [
        ("bad model!", "llm_model must be a model name from the LLM Gateway's list"),
        (7, "llm_model must be a string"),
        ("m" * 65, "llm_model is longer than 64 bytes"),
    ],
)
def test_a_malformed_llm_model_refuses_the_regeneration(loop, model, note_has):  # noqa: F811
    tid = completed_meeting(loop)
    first = loop.doc(tid)
    assert regenerate(loop, tid, llm_model=model).status_code == 200
    assert_kept(loop.doc(tid), first, note_has)
    assert loop.aai.gateway_calls[tid] == 1


@pytest.mark.parametrize("flag", ["true", 1, "yes", {"x": 1}])
def test_a_flag_that_is_not_the_boolean_true_gets_a_note(loop, flag):  # noqa: F811
    tid = completed_meeting(loop)
    first = loop.doc(tid)
    assert console_edit(loop, tid, regenerate=flag).status_code == 200
    doc = loop.doc(tid)
    assert_kept(doc, first, "regenerate must be the boolean true, not ")
    assert loop.aai.gateway_calls[tid] == 1


def test_the_flag_set_to_false_or_removed_says_nothing(loop):  # noqa: F811
    tid = completed_meeting(loop)
    assert console_edit(loop, tid, regenerate=False).status_code == 200
    assert console_edit(loop, tid, note_from_a_person="hello").status_code == 200
    doc = loop.doc(tid)
    assert doc.get("regenerate_note") is None and loop.aai.gateway_calls[tid] == 1


def test_a_first_generation_ignores_a_malformed_edit_and_says_so(loop):  # noqa: F811
    """A person edited the document while it was queued: the meeting is
    generated with the defaults, and the note names what was ignored."""
    prompts: list[str] = []

    def gateway(body):
        prompts.append(body["messages"][1]["content"])
        return answer(GOOD_CONTENT)

    loop.aai.gateway = gateway
    tid = loop.queued_meeting()
    loop.store.set_field("meetings", tid, options={"answer_format": "y" * 600_000})
    assert loop.deliver(tid).status_code == 200
    doc = loop.doc(tid)
    assert doc["status"] == "completed" and doc["action_items"]
    assert "options.answer_format is longer than 800 bytes" in doc["regenerate_note"]
    (prompt,) = prompts
    assert len(prompt) < 2_000 and "bullet points" in prompt, "the default format, not 600 KB"


def test_a_first_generation_with_a_model_the_gateway_refuses_uses_the_configured_one(
    loop,  # noqa: F811
):
    models: list[str] = []

    def gateway(body):
        models.append(body["model"])
        if body["model"] != "claude-sonnet-4-6":
            raise assemblyai.ApiError(f"400 Model {body['model']} is not supported", 400)
        return answer(GOOD_CONTENT)

    loop.aai.gateway = gateway
    loop.aai.models.append("claude-nonexistent-9")  # listed, and refusing
    tid = loop.queued_meeting()
    loop.store.set_field("meetings", tid, llm_model="claude-nonexistent-9")
    assert loop.deliver(tid).status_code == 200
    doc = loop.doc(tid)
    assert doc["status"] == "completed" and doc["llm"]["requested_model"] == "claude-sonnet-4-6"
    assert models == ["claude-nonexistent-9", "claude-sonnet-4-6"]
    assert "llm_model" in doc["regenerate_note"] and "not supported" in doc["regenerate_note"]


def test_a_regeneration_with_a_model_the_gateway_refuses_keeps_the_result(loop):  # noqa: F811
    receiver = Receiver()
    loop.aai.models.append("claude-nonexistent-9")  # listed, and refusing
    try:
        tid = completed_meeting(loop, receiver.url)
        first = loop.doc(tid)

        def gateway(body):
            if body["model"] != "claude-sonnet-4-6":
                raise assemblyai.ApiError(f"400 Model {body['model']} is not supported", 400)
            return answer(GOOD_CONTENT)

        loop.aai.gateway = gateway
        assert regenerate(loop, tid, llm_model="claude-nonexistent-9").status_code == 200
    finally:
        receiver.close()
    doc = loop.doc(tid)
    assert_kept(doc, first, "the LLM Gateway refused llm_model 'claude-nonexistent-9'")
    assert "the previous result is kept" in doc["regenerate_note"]
    assert doc["history"] == first.get("history", []), "the kept result is not also history"
    assert [r["version"] for r in receiver.received] == [1], "no new result, no notification"
    assert doc["sweep_at"] is None and doc["generation"]["lease_expires_at"] is None


def test_a_regeneration_with_a_model_the_gateway_does_not_list_keeps_the_result(
    loop,  # noqa: F811
):
    tid = completed_meeting(loop)
    first = loop.doc(tid)
    calls = dict(loop.aai.gateway_calls)
    assert regenerate(loop, tid, llm_model="claude-sonnet-3").status_code == 200
    doc = loop.doc(tid)
    assert_kept(doc, first, "llm_model 'claude-sonnet-3' is not on the LLM Gateway's model list")
    assert dict(loop.aai.gateway_calls) == calls, "a model not listed is never asked"


def test_unknown_status_refuses_the_regeneration(loop):  # noqa: F811
    tid = completed_meeting(loop)
    first = loop.doc(tid)
    assert regenerate(loop, tid, status="done").status_code == 200
    doc = loop.doc(tid)
    assert "regenerate" not in doc and "status" in doc["regenerate_note"]
    assert doc["action_items"] == first["action_items"] and loop.aai.gateway_calls[tid] == 1


# --- 1. a crash never loops paid calls; product fields are repaired, not trusted ---------


def expire_claim(loop: Product, tid: str) -> None:  # noqa: F811
    """The claim's lease ran out (the clock moved on past it)."""
    doc = loop.doc(tid)
    past = record.now() - dt.timedelta(seconds=1)
    if doc.get("status") == "generating":
        lease = doc.get("generation") if isinstance(doc.get("generation"), dict) else {}
        loop.store.set_field(
            "meetings", tid, generation={**lease, "lease_expires_at": past}, sweep_at=past
        )


def test_a_crash_whose_claim_cannot_be_given_back_still_ends_within_the_attempts(loop):  # noqa: F811
    """A bug makes the result's write fail after the paid call, and the crash
    handler's give-back fail too: the attempt is counted all the same (by
    the next claim), and the meeting ends within MAX_GENERATION_ATTEMPTS
    paid calls, keeping its previous result."""
    tid = completed_meeting(loop)
    first = loop.doc(tid)

    def broken(op, _collection, _doc_id, fields):
        given_back = "internal error" in str(
            ((fields or {}).get("generation") or {}).get("last_error")
        )
        if op == "update" and ("action_items" in (fields or {}) or given_back):
            return RuntimeError("a bug in the write path")
        return None

    loop.store.faults.append(broken)
    regenerate(loop, tid)
    for _ in range(10):
        expire_claim(loop, tid)
        loop.sweep()
    doc = loop.doc(tid)
    calls = loop.aai.gateway_calls[tid] - 1
    assert calls <= 5, f"{calls} paid calls for one regeneration over 10 sweeps"
    assert doc["status"] == "completed" and doc["action_items"] == first["action_items"]
    assert "after 5 attempts" in doc["regenerate_note"] and doc["sweep_at"] is None


def test_a_first_generation_that_crashes_where_nothing_can_be_written_ends_error(loop):  # noqa: F811
    tid = loop.queued_meeting()

    def broken(op, _collection, _doc_id, fields):
        given_back = "internal error" in str(
            ((fields or {}).get("generation") or {}).get("last_error")
        )
        if op == "update" and ("action_items" in (fields or {}) or given_back):
            return RuntimeError("a bug in the write path")
        return None

    loop.store.faults.append(broken)
    loop.deliver(tid)
    for _ in range(10):
        expire_claim(loop, tid)
        loop.sweep()
    doc = loop.doc(tid)
    assert loop.aai.gateway_calls[tid] <= 5
    assert doc["status"] == "error" and "5 attempts" in doc["error"]


CORRUPTED = {
    "result_version": ["v2", -3, 2.5, True, {"v": 2}],
    "generation": ["held", 5, {"attempts": "many"}, {"attempts": -1, "lease_expires_at": "soon"}],
    "history": [5, "x", [1, "a", {"status": "completed", "result_version": "one"}]],
    "notification": ["x", [], {"status": "pending", "next_at": "soon", "attempts": "two"}],
    "source": ["gs://bucket/a.mp3", 5],
    "notify_url": [5, {"url": "x"}],
}


@pytest.mark.parametrize(
    ("field", "value"), [(f, v) for f, values in CORRUPTED.items() for v in values]
)
def test_a_corrupted_product_field_is_repaired_not_trusted(loop, capsys, field, value):  # noqa: F811
    tid = completed_meeting(loop)
    assert regenerate(loop, tid, **{field: value}).status_code == 200
    doc = loop.doc(tid)
    assert doc["status"] == "completed", doc.get("error")
    # Never lower than the version before it (a history entry counts as an earlier result).
    assert doc["result_version"] >= 2 and loop.aai.gateway_calls[tid] == 2
    loop.store.set_field("meetings", tid, sweep_at=record.now() - dt.timedelta(seconds=1))
    assert "crashed" not in loop.sweep()["results"].values()
    out = capsys.readouterr().out
    assert "unexpected error" not in out and "could not handle a meeting" not in out


def test_a_garbled_queued_checks_does_not_stop_the_sweep(loop, capsys):  # noqa: F811
    tid = loop.queued_meeting(finished=False)
    loop.store.set_field("meetings", tid, queued_checks="several")
    loop.make_stale(tid)
    assert loop.sweep()["results"] == {tid: "busy_transient"}
    assert loop.doc(tid)["queued_checks"] == 1
    assert "could not handle a meeting" not in capsys.readouterr().out


# --- 2, 3. a transcript AssemblyAI lost or deleted (the e2e cases are in test_console_e2e.py)


def delete_at_assemblyai(loop: Product, tid: str) -> None:  # noqa: F811
    loop.aai.transcripts[tid].update(
        text="Deleted by user.", words=None, utterances=None, audio_url="http://deleted_by_user"
    )


def test_a_first_generation_of_a_deleted_transcript_pays_nothing(loop):  # noqa: F811
    tid = loop.queued_meeting()
    delete_at_assemblyai(loop, tid)
    assert loop.deliver(tid).status_code == 200
    doc = loop.doc(tid)
    assert doc["status"] == "error" and doc["error_stage"] == "transcription"
    assert "deleted" in doc["error"] and loop.aai.gateway_calls[tid] == 0


def test_a_regeneration_taken_over_after_the_transcript_was_deleted_keeps_the_result(loop):  # noqa: F811
    """The request's holder gave the claim back (a 503 from the gateway);
    before the sweep takes it over, the transcript is deleted."""
    tid = completed_meeting(loop)
    first = loop.doc(tid)
    loop.aai.gateway = lambda _: (_ for _ in ()).throw(assemblyai.ApiError("503 busy", 503))
    regenerate(loop, tid)
    assert loop.doc(tid)["status"] == "generating"
    delete_at_assemblyai(loop, tid)
    loop.aai.gateway = lambda _: answer('{"action_items": [], "formatted": "none"}')
    loop.sweep()
    doc = loop.doc(tid)
    assert_kept(doc, first, "deleted")
    assert doc.get("history", []) == first.get("history", [])
    assert loop.aai.gateway_calls[tid] == 2, "the first result and the 503; nothing after"


def test_a_notification_due_while_its_result_is_regenerated_waits_for_the_meeting(loop):  # noqa: F811
    """The first attempt of version 1 comes after a regeneration claimed the
    meeting (status generating): nothing is sent, nothing raises; it goes
    on if the regeneration keeps the previous result."""
    from meeting_actions import config, notify

    receiver = Receiver()
    try:
        tid = notified_meeting_without_attempt(loop, receiver.url)
        loop.store.set_field("meetings", tid, status="generating")
        assert notify.deliver(config.get(), tid) is None
        assert receiver.received == []
        loop.store.set_field("meetings", tid, status="completed")
        assert notify.deliver(config.get(), tid) == "delivered"
    finally:
        receiver.close()
    assert [r["version"] for r in receiver.received] == [1]


def notified_meeting_without_attempt(loop: Product, url: str) -> str:  # noqa: F811
    """A completed meeting whose notification is due and was never tried."""
    from meeting_actions import notify

    real = notify.deliver
    notify.deliver = lambda *_a, **_k: None
    try:
        tid = completed_meeting(loop, url)
    finally:
        notify.deliver = real
    make_due(loop, tid)
    return tid


# --- 5. a notification id is never reused; 7a. one body per result ------------------------


def delete_fields(loop: Product, tid: str, *names: str) -> None:  # noqa: F811
    """What a person does with the console's delete button."""
    with loop.store.lock:
        data, version = loop.store.docs["meetings", tid]
        for name in names:
            data.pop(name, None)


@pytest.mark.parametrize(
    "deleted",
    [
        ("result_version",),
        ("result_version", "notification"),
        ("result_version", "notification", "history"),
    ],  # fmt: skip
)
def test_a_regenerated_result_never_reuses_a_notification_id(loop, deleted):  # noqa: F811
    """Receivers drop a webhook-id they have seen: a person deleting the
    version fields must not make the next result go out under an old id."""
    receiver = Receiver()
    try:
        tid = completed_meeting(loop, receiver.url)
        delete_fields(loop, tid, *deleted)
        assert regenerate(loop, tid).status_code == 200
        delete_fields(loop, tid, *deleted)
        assert regenerate(loop, tid).status_code == 200
    finally:
        receiver.close()
    ids = [r["id"] for r in receiver.received]
    assert len(ids) == 3 and len(set(ids)) == 3, ids
    assert loop.aai.gateway_calls[tid] == 3
    doc = loop.doc(tid)
    results = [doc["result_id"], *(h.get("result_id") for h in doc["history"])]
    assert len(set(results)) == len(results) >= 2, "each result has an id of its own"


def test_an_error_result_has_one_body_on_every_retry(loop):  # noqa: F811
    receiver = Receiver(answers=[500, 503])
    loop.aai.gateway = lambda _: (_ for _ in ()).throw(assemblyai.ApiError("400 bad request", 400))
    try:
        tid = completed_meeting(loop, receiver.url)
        assert loop.doc(tid)["status"] == "error"
        for _ in range(2):
            make_due(loop, tid)
            loop.sweep()
    finally:
        receiver.close()
    assert len(receiver.received) == 3 and loop.doc(tid)["notification"]["status"] == "delivered"
    assert len({r["id"] for r in receiver.received}) == 1
    bodies = [{k: v for k, v in r.items() if k != "id"} for r in receiver.received]
    assert bodies[0]["type"] == "meeting.error" and bodies == [bodies[0]] * 3, bodies


def test_an_edit_of_the_items_between_retries_goes_out_under_a_new_id(loop):  # noqa: F811
    """One webhook-id, one body: a person who corrects the items before a
    retry sends a different message, so it gets an id of its own."""
    receiver = Receiver(answers=[500])
    try:
        tid = completed_meeting(loop, receiver.url)
        edited = [{**loop.doc(tid)["action_items"][0], "owner": "Dana"}]
        loop.store.set_field("meetings", tid, action_items=edited)
        make_due(loop, tid)
        loop.sweep()
    finally:
        receiver.close()
    first, second = receiver.received
    assert first["id"] != second["id"] and second["action_items"] == edited
    assert first["timestamp"] == second["timestamp"] and first["version"] == second["version"]
    assert loop.doc(tid)["notification"]["id"] == second["id"]


# --- 6. a slow receiver cannot stall the sweep (AssemblyAI's deadline: test_console_e2e.py)


def test_a_trickling_receiver_holds_the_sweep_no_longer_than_one_attempts_timeout(
    loop,  # noqa: F811
    monkeypatch,
):
    from local import notify_receiver
    from meeting_actions import notify

    monkeypatch.setattr(notify, "DEFAULT_TIMEOUT", 1.0)
    server, url, received = notify_receiver.start(SIGNING_SECRET, quiet=True, trickle=0.3)
    try:
        tid = notified_meeting_without_attempt(loop, url)
        started = dt.datetime.now(dt.UTC)
        loop.sweep()
        elapsed = (dt.datetime.now(dt.UTC) - started).total_seconds()
    finally:
        server.shutdown()
        server.server_close()
    assert elapsed < 2.0, f"the sweep took {elapsed:.1f} s over one 1 s attempt"
    note = loop.doc(tid)["notification"]
    assert note["status"] == "pending" and "no answer within 1 s" in note["error"]
    assert len(received) == 1


# --- 7. smaller cases ---------------------------------------------------------------------


def test_console_writes_during_the_final_write_never_drop_a_paid_answer(loop):  # noqa: F811
    """Five console edits land between the holder's reads and its final
    write (each changes the version the write is conditioned on) and leave
    the claim alone: the holder writes its result all the same, and the
    answer is paid for once. (Before: three such writes and it gave up.)"""
    tid = loop.queued_meeting()
    edits = {"left": 5}

    def person_types(op, _collection, doc_id, fields):
        if op == "update" and doc_id == tid and "action_items" in (fields or {}) and edits["left"]:
            edits["left"] -= 1
            loop.store.set_field("meetings", tid, metadata={"typed": str(edits["left"])})
        return None

    loop.store.faults.append(person_types)
    assert loop.deliver(tid).status_code == 200
    doc = loop.doc(tid)
    assert doc["status"] == "completed" and doc["metadata"] == {"typed": "0"}
    assert loop.aai.gateway_calls[tid] == 1 and edits["left"] == 0


def test_an_upload_whose_notify_url_is_refused_falls_back_to_the_default(loop, monkeypatch):  # noqa: F811
    from cloudevents.conversion import to_binary
    from test_lifecycle import storage_event

    monkeypatch.setattr(
        storage_object, "signed_url", lambda obj, seconds: "https://signed.example/a?s=1"
    )
    receiver = Receiver()
    loop.configure(NOTIFY_SIGNING_SECRET=SIGNING_SECRET, NOTIFY_ALLOW_LOCAL="true",
                   NOTIFY_URL=receiver.url)  # fmt: skip
    try:
        event = storage_event(generation="41")
        event.data["metadata"] = {"notify_url": "https://10.0.0.7/internal"}  # refused: private
        headers, body = to_binary(event)
        fn = loop.client("transcribe_uploaded_audio", "cloudevent")
        assert fn.post("/", headers=headers, data=body).status_code == 200
        (tid,) = [d for (c, d) in loop.store.docs if c == "meetings"]
        loop.aai.finish(tid)
        assert loop.deliver(tid).status_code == 200
    finally:
        receiver.close()
    assert loop.doc(tid)["notify_url"] == receiver.url
    assert [r["transcript_id"] for r in receiver.received] == [tid]


@pytest.mark.parametrize(
    "url",
    [
        "https://2130706433/hook",  # 127.0.0.1 as one number
        "https://0x7f.1/hook",
        "https://127.1/hook",
        "https://0177.0.0.1/hook",
        "https://0x7f000001/hook",
        "https://167772161/hook",  # 10.0.0.1
        "https://1.2.3.4.5/hook",  # numeric last label, not an address
    ],
)
def test_numeric_host_forms_are_refused_at_submit(product, url):  # noqa: F811
    product.configure(NOTIFY_SIGNING_SECRET=SIGNING_SECRET)
    refused = product.submit(notify_url=url)
    assert refused.status_code == 400, refused.get_json()
    assert refused.get_json()["field"] == "notify_url"
    assert "address" in refused.get_json()["error"]
    assert product.aai.submitted == [], "refused before AssemblyAI was asked"
