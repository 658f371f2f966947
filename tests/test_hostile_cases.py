"""Hostile input, case by case (issue 22, points 3-7): each test here failed
on the code before its fix (commit 2fe610c) and names what it guards.

Real servers where the answer is an HTTP status (submit, the webhook, the
storage trigger); in process where the property is of a function alone
(patterns, parsing time, caps).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
import types
import urllib.parse
from pathlib import Path

import pytest
import requests
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent
from conftest import process_logs, upload_sample, wait_for_document, wait_until
from hypothesis import given, settings
from hypothesis import strategies as st

from meeting_actions import (
    action_items,
    generate,
    hints,
    inputs,
    logs,
    storage_object,
    text,
)

ROOT = Path(__file__).resolve().parent.parent
URL = "https://media.example/a.mp3"


def transcripts_created(standin) -> int:
    return sum(1 for r in standin.requests() if r["path"] == "/v2/transcript")


# --- 3. lone surrogates and byte caps at submit ------------------------------------------


def _raw(fields: str) -> str:
    """A raw submit body: "\\ud800" is a valid JSON escape that decodes to a lone surrogate."""
    return '{"audio_url": "' + URL + '", ' + fields + "}"


REFUSED_SUBMITS = [
    ("answer_format", _raw('"answer_format": "bullets \\ud800"')),
    ("metadata", _raw('"metadata": {"team": "pl\\udfffatform"}')),
    ("metadata", _raw('"metadata": {"te\\ud800am": "x"}')),
    ("metadata", _raw('"metadata": {"team\\n": "x"}')),
    ("notify_url", _raw('"notify_url": "https://ci.example/\\ud83d"')),
    ("audio_url", '{"audio_url": "https://media.example/\\ud800.mp3"}'),
    ("speakers", _raw('"speakers": ["Pri\\udc00ya"]')),
    ("speakers", _raw('"speakers": [{"name": "Dana", "description": "\\ud800"}]')),
    ("language_code", _raw('"language_code": "en\\n"')),
    ("speech_models", _raw('"speech_models": ["universal\\n"]')),
    # Caps in UTF-8 bytes, where the text is stored: 100 CJK characters are 300 bytes.
    ("answer_format", json.dumps({"audio_url": URL, "answer_format": "箇条書き" * 25})),
    ("metadata", json.dumps({"audio_url": URL, "metadata": {"team": "開発" * 100}})),
    ("audio_url", json.dumps({"audio_url": "https://media.example/" + "音" * 1400})),
]


@pytest.mark.parametrize(
    ("field", "body"), REFUSED_SUBMITS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(REFUSED_SUBMITS)]
)
def test_submit_refuses_bad_text_naming_the_field_before_assemblyai(
    stack, functions, standin, field, body
):
    before = transcripts_created(standin)
    answer = requests.post(
        functions.submit.url,
        data=body.encode(),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == field, answer.json()
    assert transcripts_created(standin) == before, "refused before AssemblyAI is called"


def test_every_validation_pattern_matches_the_whole_text():
    """`$` also matches before a final newline: every pattern must be whole."""
    for bad in ("en_us\n", "en\n"):
        with pytest.raises(inputs.InvalidRequest):
            inputs.submission({"audio_url": URL, "language_code": bad})
    assert not inputs.is_model_name("claude-sonnet-4-6\n")
    with pytest.raises(inputs.InvalidRequest):
        inputs.webhook_event({"transcript_id": "abc\n", "status": "completed"})
    with pytest.raises(ValueError):
        storage_object.parse({"bucket": "team-recordings\n", "name": "a.mp3", "generation": "1"})


# --- 4. the webhook: junk hints on its query, junk in its body --------------------------


def _completed_transcript_without_a_document(stack, standin) -> str:
    """A transcript AssemblyAI finished, whose document does not exist yet and
    whose deliveries are made by the test itself."""
    answer = requests.post(
        f"{stack.standin.url}/v2/transcript",
        json={"audio_url": upload_sample(stack)},
        headers={"Authorization": stack.api_key},
        timeout=10,
    )
    tid = answer.json()["id"]
    wait_until(lambda: standin.transcript(tid)["status"] == "completed", 30, "transcription")
    return tid


@pytest.mark.parametrize(
    "query",
    [
        "src.=",
        "src.__x__=1",
        "src.bucket=b&src.name=n.mp3&src.__name__=x&src.a.b=c&src.evil=1&meta.__x__=y",
        "meta.=x&meta.a%0A=x&answer_format=%ED%A0%80",
    ],
    ids=["empty-source-key", "reserved-source-key", "unknown-source-keys", "junk-metadata"],
)
def test_webhook_drops_unknown_or_malformed_hints(stack, functions, standin, db, query):
    tid = _completed_transcript_without_a_document(stack, standin)
    answer = requests.post(
        f"{functions.webhook.url}/?{query}",
        json={"transcript_id": tid, "status": "completed"},
        headers={"X-Webhook-Secret": stack.webhook_secret},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    doc = wait_for_document(db, f"meetings/{tid}")
    assert doc["status"] == "completed", doc
    known = {"kind", "audio_url", "uri", "bucket", "name", "generation", "size", "content_type"}
    assert set(doc["source"]) <= known, doc["source"]
    assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,63}", k) for k in doc["metadata"])


def test_the_hints_submit_writes_are_read_back_whole():
    source = storage_object.parse(
        {
            "bucket": "team-recordings",
            "name": "recordings/週次 #1.mp3",
            "generation": "17",
            "size": "1000",
            "contentType": "audio/mpeg",
        }  # fmt: skip
    ).source()
    sent = hints.Hints(
        "a numbered list", {"team": "開発", "n": "1"}, source, "https://ci.example/h"
    )
    url = hints.webhook_url(types.SimpleNamespace(webhook_url="https://hooks.example/"), sent)
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert hints.from_query(query) == sent


def test_webhook_status_with_a_lone_surrogate_is_acknowledged_and_logged(stack, functions):
    answer = functions.call_webhook(
        b'{"transcript_id": "t-surrogate", "status": "comp\\ud800leted"}',
        stack.webhook_secret,
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "ignored"
    assert wait_until(
        lambda: "comp\ufffdleted" in process_logs(stack), 10, "the repaired status in the log"
    )


def test_a_log_line_never_crashes(capsys):
    logs.warning("odd \ud800", "t-1", status="x\udfff", nested={"k\ud800": ["\udc00"]}, n=1)
    (line,) = capsys.readouterr().out.splitlines()
    entry = json.loads(line)
    assert entry["message"] == "odd \ufffd" and entry["status"] == "x\ufffd"
    assert entry["nested"] == {"k\ufffd": ["\ufffd"]} and entry["n"] == 1


# --- 5. storage events ----------------------------------------------------------------------


def _send_event(fn, data) -> requests.Response:
    event = CloudEvent(
        {
            "type": storage_object.EVENT_TYPE,
            "source": "//storage.googleapis.com/projects/_/buckets/team-recordings",
        },
        data,
    )
    head, body = to_structured(event)
    return requests.post(fn.url, data=body, headers=head, timeout=30)


GOOD_OBJECT = {"bucket": "team-recordings", "generation": "7", "contentType": "audio/mpeg"}


def test_a_storage_event_with_a_lone_surrogate_is_acknowledged(stack, storage_events_fn, standin):
    before = transcripts_created(standin)
    # A lone surrogate cannot travel in UTF-8 JSON as a character: as an escape it can.
    event = {"specversion": "1.0", "type": storage_object.EVENT_TYPE, "source": "//s", "id": "1",
             "datacontenttype": "application/json",
             "data": dict(GOOD_OBJECT, name="recordings/a\udc80.mp3")}  # fmt: skip
    answer = requests.post(
        storage_events_fn.url,
        data=json.dumps(event).encode(),
        headers={"Content-Type": "application/cloudevents+json"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert transcripts_created(standin) == before
    assert wait_until(
        lambda: (
            "ignored a malformed storage event: the object name holds invalid Unicode"
            in process_logs(stack)
        ),
        10,
        "the log line",
    )


@pytest.mark.parametrize(
    "data",
    [
        dict(GOOD_OBJECT, name="recordings/b.mp3", bucket="team-recordings\n"),
        dict(GOOD_OBJECT, name="recordings/c.mp3", generation="²"),
        dict(GOOD_OBJECT, name="recordings/" + "x" * 1100 + ".mp3"),
    ],
    ids=["bucket-newline", "generation-superscript", "name-over-1024-bytes"],
)
def test_malformed_storage_events_are_acknowledged_unsubmitted(storage_events_fn, standin, data):
    before = transcripts_created(standin)
    assert _send_event(storage_events_fn, data).status_code == 200
    assert transcripts_created(standin) == before


def test_a_storage_event_whose_time_has_no_offset_is_submitted(stack, storage_events_fn, standin):
    before = transcripts_created(standin)
    data = {"bucket": "team-recordings", "name": "recordings/naive-time.mp3", "generation": "8",
            "contentType": "audio/mpeg", "timeCreated": "2026-12-01"}  # fmt: skip
    answer = _send_event(storage_events_fn, data)
    assert answer.status_code == 200, answer.text
    assert transcripts_created(standin) == before + 1


def test_storage_times_are_read_as_utc_without_an_offset():
    obj = storage_object.parse({"bucket": "b-1", "name": "a.mp3", "generation": "1",
                         "timeCreated": "2026-12-01T10:00:00"})  # fmt: skip
    assert obj.time_created is not None and obj.time_created.utcoffset().total_seconds() == 0


# --- 6. parsing time linear in the answer --------------------------------------------------

# Each runs in a child process so that a quadratic version fails by the time
# limit instead of running for minutes. The bound is relative: the same
# child first times json.loads of an input of the same size.
_TIMED = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, {root!r})
    from meeting_actions import action_items, logs
    N = n = {n}
    inputs = {inputs}
    baseline = float("inf")
    sample = json.dumps(["ab"] * (n // 6))  # a JSON text of n characters
    for _ in range(3):
        started = time.perf_counter(); json.loads(sample); baseline = min(baseline, time.perf_counter() - started)
    worst = 0.0
    for made in inputs:
        value = eval(made)
        started = time.perf_counter()
        {call}
        worst = max(worst, time.perf_counter() - started)
    print(json.dumps({{"baseline": baseline, "worst": worst}}))
    """
)
FACTOR = 100  # generous: the linear code takes at most ~25x json.loads on these inputs


def _timed(call: str, inputs: list[str], n: int = 1_000_000) -> dict:
    code = _TIMED.format(root=str(ROOT), n=n, inputs=inputs, call=call)
    # A first calibration to set the wall limit of the real run.
    sample = json.dumps(["ab"] * (n // 6))
    started = time.perf_counter()
    json.loads(sample)
    limit = FACTOR * (time.perf_counter() - started) * len(inputs) * 3 + 10
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=limit
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{call} took more than {limit:.0f} s on {n:,}-character inputs")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_parsing_an_answer_with_a_whitespace_run_is_linear():
    made = [  # expressions, evaluated in the child
        """'{"action_items": [' + " " * N + '], "formatted": "x"}'""",
        """'```json\\n{' + " " * N + '\\n```'""",
        """'{"action_items": [{"text": "a"},' + " " * N""",  # cut off: salvaged
        """'-' + " " * N + '\\n- a' + " " * N""",  # plain-text bullets
        """'1.' + " " * N + 'x' + " " * N""",
        """" " * N + '```' + " " * N""",
    ]
    timed = _timed("action_items.parse(value, 'length', False)", made)
    assert timed["worst"] < FACTOR * max(timed["baseline"], 1e-4), timed


def test_stripping_url_queries_is_linear():
    made = [
        '"a." * (N // 2) + "?"',
        '"a://" * (N // 4) + "?"',
        '"_://" * (N // 4) + "?"',
        '"http://" + "a" * N + " ?"',
        '"http://h?" * (N // 9)',
        '"a" * N + "://x?y"',
    ]
    timed = _timed("logs.strip_url_queries(value)", made)
    assert timed["worst"] < FACTOR * max(timed["baseline"], 1e-4), timed


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("see https://h.example/a?sig=1 now", "see https://h.example/a?… now"),
        ("x:https://h/a?b=1#frag", "x:https://h/a?…#frag"),
        ("gs://b/o?generation=1&sig=2, http://k/?q", "gs://b/o?… http://k/?…"),
        ("_https://h/a?q=1", "_https://h/a?q=1"),  # no word boundary: left alone, as before
        ("a.b+c-d://h/x?y 'z?'", "a.b+c-d://h/x?… 'z?'"),
        ("1http://h/x?y", "1http://h/x?y"),
        ("no url? none", "no url? none"),
        ("http://?q", "http://?q"),
        ("x-http://h/?q&r:s://t?u", "x-http://h/?…"),
    ],
)
def test_url_queries_are_stripped_as_before(given, expected):
    assert logs.strip_url_queries(given) == expected


# The regular expressions the string methods replaced: same results, in linear time.
_OLD_URL_QUERY = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s?#\"'<>]+)\?[^\s#\"'<>]*", re.I)
_OLD_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")
_OLD_BULLET = re.compile(r"^\s*(?:[-*•‣▪]|\d{1,3}[.)])\s+(.*\S)\s*$")
_PIECES = st.lists(
    st.sampled_from(list("ab1_+.-:/?#*•) \t\u3000\"'<>é٣\n") + ["://", "http://", "```", "12."]),
    max_size=30,
).map("".join)


@settings(max_examples=2000, deadline=None)
@given(_PIECES)
def test_the_string_methods_answer_as_the_old_patterns(value):
    old = _OLD_URL_QUERY.sub(r"\1?…", value) if "?" in value else value
    assert logs.strip_url_queries(value) == old
    stripped = value.strip()
    assert action_items._unfenced(stripped) == _OLD_FENCE.sub("", stripped)
    for line in value.splitlines():
        match = _OLD_BULLET.match(line)
        old_text = match.group(1).strip().strip("*").strip() if match else ""
        assert action_items._bullet_text(line) == (old_text or None)


# --- 7. caps in bytes, counts within int64 -------------------------------------------------

CJK = "会議の議事録を送付する"  # 11 characters, 33 bytes


def _cjk_answer(items: int = 250) -> str:
    item = {"text": CJK * 200, "owner": CJK * 20, "due": CJK * 20, "quote": CJK * 50,
            "said_at": 1, "said_by": CJK * 20, "owner_source": "spoken"}  # fmt: skip
    return json.dumps({"action_items": [item] * items, "formatted": CJK * 20_000})


def firestore_size(value) -> int:
    """Bytes Firestore counts for a value (cloud.google.com/firestore/docs/storage-size)."""
    if isinstance(value, str):
        return len(value.encode()) + 1
    if isinstance(value, dict):
        return sum(len(k.encode()) + 1 + firestore_size(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(firestore_size(v) for v in value)
    return 1 if value is None or isinstance(value, bool) else 8


def test_a_cjk_answer_at_every_cap_fits_the_document_with_a_note():
    for moments in (False, True):
        result = action_items.parse(_cjk_answer(), "stop", moments)
        size = firestore_size(result.items) + firestore_size(result.text)
        assert size <= action_items.RESULT_BYTES, size
        assert all(
            text.utf8_size(item[k]) <= action_items.MAX_FIELD_BYTES[k]
            for item in result.items
            for k in item
            if isinstance(item[k], str) and k in action_items.MAX_FIELD_BYTES
        )
        assert "too large" in result.note and "1 MiB" in result.note, result.note


def test_items_past_the_documents_budget_are_left_out_with_a_note():
    """Links are never cut (a cut link is broken): 200 items at every cap
    with 1,000-character links are over the budget, so the last ones go."""
    item = {"text": CJK * 200, "owner": CJK * 20, "owner_source": "spoken", "said_by": CJK * 20,
            "said_at": 61, "quote": CJK * 50, "link": "https://m.example/" + "a" * 975 + "#t=61",
            "due": CJK * 20, "note": CJK * 20}  # fmt: skip
    result = action_items.ActionItems([dict(item) for _ in range(200)], CJK * 10_000, "json")
    result = action_items.capped(result)
    assert 150 < len(result.items) < 200
    assert firestore_size(result.items) + firestore_size(result.text) <= action_items.RESULT_BYTES
    assert f"kept the first {len(result.items)} of 200 items" in result.note, result.note
    assert all(i["link"] == item["link"] for i in result.items)


def test_the_result_budget_leaves_room_for_history_and_the_rest():
    from meeting_actions import regenerate

    assert (
        action_items.RESULT_BYTES + regenerate.MAX_HISTORY_BYTES + action_items.REST_BYTES
        <= text.DOCUMENT_BYTES
    )


def _deliver_with_answer(stack, functions, standin, db, **answer) -> dict:
    """One meeting whose single gateway answer is `answer` (the stand-in's fault)."""
    tid = _completed_transcript_without_a_document(stack, standin)
    standin.fault(target="gateway", kind="answer", match={"transcript_id": tid}, **answer)
    delivered = functions.call_webhook({"transcript_id": tid, "status": "completed"},
                                       stack.webhook_secret)  # fmt: skip
    assert delivered.status_code == 200, delivered.text
    doc = wait_for_document(db, f"meetings/{tid}")
    assert doc["status"] == "completed", doc.get("error")
    assert standin.stats()["gateway_success"][tid] == 1, "one paid call"
    return doc


def test_a_cjk_answer_at_every_cap_is_stored_after_one_paid_call(stack, functions, standin, db):
    """Real Firestore refuses a document over 1 MiB; the local server does
    not check, so the size is computed here by Firestore's rules."""
    doc = _deliver_with_answer(stack, functions, standin, db, content=_cjk_answer())
    # Besides its fields, a document counts its name and 32 bytes; history may
    # add up to 300,000 bytes (regenerate.py).
    assert firestore_size(doc) + 100 < 1024 * 1024 - 300_000, firestore_size(doc)
    assert "too large" in doc["note"] and "1 MiB" in doc["note"], doc["note"]


def test_token_counts_outside_int64_become_none(stack, functions, standin, db):
    # (The local Firestore server refuses integers from 2**53 on, which real
    # Firestore stores: the in-process test below covers up to 2**63 - 1.)
    usage = {"input_tokens": 2**64, "output_tokens": -(2**63) - 1, "total_tokens": 120}
    doc = _deliver_with_answer(stack, functions, standin, db, usage=usage,
                               content='{"action_items": [], "formatted": "none"}')  # fmt: skip
    llm = doc["llm"]
    assert llm["input_tokens"] is None and llm["output_tokens"] is None
    assert llm["total_tokens"] == 120


def test_token_counts_are_kept_within_int64():
    answer = {
        "choices": [{"message": {"content": '{"action_items": []}'}, "finish_reason": "stop"}],
        "usage": {"input_tokens": 2**63 - 1, "output_tokens": -(2**63), "total_tokens": 2**63},
    }
    llm = generate._result_fields(types.SimpleNamespace(llm_model="m"), answer, {})["llm"]
    assert llm["input_tokens"] == 2**63 - 1 and llm["output_tokens"] == -(2**63)
    assert llm["total_tokens"] is None
