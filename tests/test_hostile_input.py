"""Random and malformed input (hypothesis) at every entry point: submit,
the webhook (body and query, with and without its secret), the storage
trigger, and the parser of the model's answer.

The HTTP and event entry points run against real servers on a stack of
their own (its own Firestore server and AssemblyAI stand-in), where
nothing else writes: AssemblyAI's deliveries go to a dead port, so every
write the Firestore server counts during an input was made by that input.
For each input: never an unexpected 5xx, always a JSON answer (or the
event acknowledged), and no write at all for an input that is refused.

How many inputs: FUZZ_EXAMPLES per entry point (default 300, what CI runs
on every change). The goal's volume is one command:

    FUZZ_EXAMPLES=10000 ./dev test tests/test_hostile_input.py

With FUZZ_REPORT=path, each entry point appends a JSON line with its
figures (inputs, 5xx, writes for refused input) to that file.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import urllib.parse
from pathlib import Path

import pytest
import requests
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from conftest import STANDIN_OPTIONS
from google.cloud.firestore_v1 import _helpers as firestore_encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local import stack as local_stack
from meeting_actions import (
    action_items,
    config,
    generate,
    hints,
    record,
    storage_object,
    text,
)

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

# Text as it arrives from outside: any character, lone surrogates (a JSON
# escape such as "\ud800" decodes to one), control characters, CJK.
outside_char = st.one_of(
    st.characters(),
    st.characters(categories=["Cs"]),
    st.sampled_from("\n\r\t\x00\x7f \u3000日本語😀:/?#.%"),
)
# (A list joined, not st.text: text() drops the surrogates of a one_of alphabet.)
outside_text = st.lists(outside_char, max_size=40).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | outside_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(outside_text, children, max_size=4)
    ),
    max_leaves=12,
)
URLS = [
    "https://",
    "ftp://x/y",
    "http://[::1",
    "javascript:alert(1)",
    "https://example.invalid/a.mp3",
    "https://media.example/週次.mp3",
    "https://media.example/a.mp3?sig=\ud800",
    "http://127.0.0.1:9/a.wav",
]
speaker = st.one_of(
    outside_text,
    st.fixed_dictionaries({"name": outside_text}, optional={"description": json_values}),
    json_values,
)
submit_like = st.fixed_dictionaries(
    {},
    optional={
        "audio_url": st.one_of(st.sampled_from(URLS), outside_text, json_values),
        "speech_models": st.one_of(
            st.lists(st.sampled_from(["universal-3-pro", "universal-2", "x\n"]), max_size=3),
            json_values,
        ),
        "language_code": st.one_of(
            st.sampled_from(["en_us", "fr", "en\n", "xx_YYYYY"]), json_values
        ),
        "speaker_labels": json_values,
        "speakers": st.one_of(st.lists(speaker, max_size=4), json_values),
        "answer_format": st.one_of(
            st.sampled_from(["numbered list", "箇条書き" * 30]), json_values
        ),
        "metadata": st.one_of(
            st.dictionaries(
                st.one_of(st.sampled_from(["team", "a-b", "__x__", "k\n"]), outside_text),
                st.one_of(outside_text, st.just("開発" * 300), json_values),
                max_size=4,
            ),
            json_values,
        ),
        "notify_url": st.one_of(
            st.sampled_from(
                ["https://ci.example/hook", "http://169.254.169.254/", "https://x/\ud83d"]
            ),
            json_values,
        ),
        "extra": json_values,
    },
)
# Mostly valid bodies with the odd bad field: the paths past validation.
near_valid_submit = st.fixed_dictionaries(
    {
        "audio_url": st.sampled_from(
            ["https://media.example/a.mp3", "https://media.example/週次.wav"]
        )
    },
    optional={
        "speech_models": st.sampled_from([["universal-3-pro"], ["universal-2", "universal-3-pro"]]),
        "language_code": st.sampled_from(["en_us", "fr", "de"]),
        "speaker_labels": st.booleans(),
        "speakers": st.lists(
            st.sampled_from(["Priya", "Dana Lee", "開発"]), max_size=3, unique=True
        ),
        "answer_format": st.one_of(st.sampled_from(["numbered list", "箇条書き"]), outside_text),
        "metadata": st.dictionaries(
            st.sampled_from(["team", "a-b", "n"]), st.one_of(st.just("x"), outside_text), max_size=3
        ),
        "notify_url": st.sampled_from(["https://ci.example/hook", "https://ci.example/\ud83d"]),
    },
)
hook_like = st.fixed_dictionaries(
    {},
    optional={
        "transcript_id": st.one_of(
            st.sampled_from(["t-1", "5551ab1c-0000-4000-8000-000000000000", "../x", "a" * 129]),
            st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,20}", fullmatch=True),
            outside_text,
            json_values,
        ),
        "status": st.one_of(
            st.sampled_from(["completed", "error", "redacted_audio_ready", "queued"]),
            outside_text,
            json_values,
        ),
        "redacted_audio_url": json_values,
    },
)
# A delivery's shape with junk in its fields: the paths past the body's check.
delivery_like = st.fixed_dictionaries(
    {
        "transcript_id": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,20}", fullmatch=True),
        "status": st.one_of(st.sampled_from(["completed", "error", "queued"]), outside_text),
    }
)
bodies = st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()))
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
headers = st.dictionaries(
    st.sampled_from(
        ["Content-Type", "X-Webhook-Secret", "Content-Encoding", "Accept", "X-Forwarded-For"]
    ),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40),
    max_size=3,
)
# The webhook URL's query: what submit writes, and junk around it. Keys and
# values are percent-encoded from arbitrary bytes (invalid UTF-8 included).
query_key = st.one_of(
    st.sampled_from(
        [f"src.{k}" for k in hints.SOURCE_KEYS]
        + ["src.", "src.__x__", "src.a.b", "meta.team", "meta.", "meta.__x__", "meta.a b"]
        + ["answer_format", "notify", "x"]
    ),
    outside_text,
)
query_value = st.one_of(
    outside_text,
    st.sampled_from(
        ["", "1", "17", "team-recordings", "https://ci.example/h", "http://127.0.0.1:1/x"]
    ),
    st.binary(max_size=20),
)
queries = st.lists(st.tuples(query_key, query_value), max_size=6)


def encode_query(pairs: list[tuple[str, str | bytes]]) -> str:
    def enc(part: str | bytes) -> str:
        raw = part if isinstance(part, bytes) else part.encode("utf-8", "surrogatepass")
        return urllib.parse.quote(raw, safe="")

    return "&".join(f"{enc(k)}={enc(v)}" for k, v in pairs)


# --- the stack of this module ------------------------------------------------------------


class FuzzStack:
    """Firestore, the stand-in and the functions, alone; and what each input did."""

    def __init__(self, s: local_stack.Stack, tmp: Path):
        self.stack = s
        s.start_firestore(count=True)  # the counting proxy: writes per input
        # One delivery attempt, to a dead port: no background writes.
        s.start_standin(None, *STANDIN_OPTIONS, "--webhook-attempts", "1")
        dead = f"http://127.0.0.1:{local_stack.free_port()}/"
        self.env = s.function_env(WEBHOOK_URL=dead, FIRESTORE_COLLECTION="fuzz")
        key = tmp / "sa.json"
        key.write_text(json.dumps(local_stack.service_account_key(s.project)))
        self.storage_env = dict(self.env, GOOGLE_APPLICATION_CREDENTIALS=str(key))
        self.submit = s.start_function("submit_transcription", self.env, name="fuzz-submit")
        self.webhook = s.start_function("assemblyai_webhook", self.env, name="fuzz-webhook")
        self.storage = s.start_function(
            "transcribe_uploaded_audio", self.storage_env, signature_type="cloudevent",
            name="fuzz-storage",
        )  # fmt: skip
        self.audio = s.upload_sample()
        self.fresh: list[str] = []
        self.tally: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

    def writes(self) -> int:
        """Documents written so far, as the counting proxy in front of Firestore counts them."""
        return self.stack.firestore_stats()["writes"]

    def transcripts_created(self) -> int:
        stats = requests.get(f"{self.stack.standin.url}/_standin/stats", timeout=30).json()
        return stats["requests_by_path"].get("/v2/transcript", 0)

    def fresh_transcript(self) -> str:
        """A transcript AssemblyAI finished, with no document yet (made in batches)."""
        if not self.fresh:
            for _ in range(20):
                answer = requests.post(
                    f"{self.stack.standin.url}/v2/transcript",
                    json={"audio_url": self.audio},
                    headers={"Authorization": self.stack.api_key},
                    timeout=30,
                )
                self.fresh.append(answer.json()["id"])
            control = local_stack.StandInControl(self.stack.standin.url)
            local_stack.wait_until(
                lambda: all(control.transcript(t)["status"] == "completed" for t in self.fresh),
                30,
                "transcriptions",
            )
        return self.fresh.pop()

    def document(self, tid: str) -> dict | None:
        from google.cloud import firestore

        if not hasattr(self, "_db"):
            saved = os.environ.get("FIRESTORE_EMULATOR_HOST")
            os.environ["FIRESTORE_EMULATOR_HOST"] = f"127.0.0.1:{self.stack.firestore.port}"
            try:
                self._db = firestore.Client(project=self.stack.project)
            finally:
                if saved is None:
                    os.environ.pop("FIRESTORE_EMULATOR_HOST")
                else:
                    os.environ["FIRESTORE_EMULATOR_HOST"] = saved
        return self._db.document(f"fuzz/{tid}").get().to_dict()

    def report(self) -> None:
        path = os.environ.get("FUZZ_REPORT")
        if not path:
            return
        with open(path, "a") as f:
            for entry, counts in sorted(self.tally.items()):
                f.write(json.dumps({"entry": entry, "examples_setting": EXAMPLES, **counts}) + "\n")


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz-stack")
    with local_stack.Stack(tmp / "logs") as s:
        made = FuzzStack(s, tmp)
        yield made
        made.report()


def _check(answer: requests.Response, fuzz: FuzzStack) -> None:
    """A JSON answer that names no secret."""
    assert fuzz.stack.api_key not in answer.text
    assert fuzz.stack.webhook_secret not in answer.text
    if answer.status_code != 204:
        assert isinstance(answer.json(), dict), answer.text


# --- submit_transcription --------------------------------------------------------------------


@FUZZ
@given(
    method=st.one_of(st.just("POST"), methods),
    body=st.one_of(bodies, submit_like, near_valid_submit).map(
        lambda b: b if isinstance(b, bytes) else json.dumps(b).encode()
    ),
    extra=headers,
)
def test_submit_never_fails_and_writes_nothing_it_refuses(fuzz, method, body, extra):
    tally = fuzz.tally["submit_transcription"]
    tally.update({"5xx": 0, "writes_for_refused": 0})
    before = fuzz.writes()
    answer = requests.request(method, fuzz.submit.url, data=body, headers=extra, timeout=60)
    wrote = fuzz.writes() - before
    tally["inputs"] += 1
    _check(answer, fuzz)
    refused_by_assemblyai = answer.status_code == 502 and "AssemblyAI" in answer.json()["error"]
    if answer.status_code >= 500 and not refused_by_assemblyai:
        tally["5xx"] += 1
    assert answer.status_code < 500 or refused_by_assemblyai, (answer.status_code, answer.text)
    tally["refused_by_assemblyai"] += refused_by_assemblyai
    if answer.status_code == 202:
        tally["accepted"] += 1
        assert wrote == 1, "the queued meeting's document, once"
    else:
        tally["refused"] += 1
        tally["writes_for_refused"] += wrote
        assert wrote == 0, (answer.status_code, answer.text)


def test_submit_called_assemblyai_only_for_what_it_accepted(fuzz):
    """After the submit fuzzing (same module, same stack, nothing else has
    asked for a transcript yet): one request to AssemblyAI per 202, or per
    502 that passes on AssemblyAI's own refusal; none for what submit refused."""
    tally = fuzz.tally["submit_transcription"]
    if not tally["inputs"]:
        pytest.skip("runs after the submit fuzzing")
    assert fuzz.transcripts_created() == tally["accepted"] + tally["refused_by_assemblyai"]


# --- assemblyai_webhook ----------------------------------------------------------------------


@FUZZ
@given(
    method=methods,
    body=st.one_of(bodies, hook_like.map(lambda d: json.dumps(d).encode())),
    query=queries,
    extra=headers,
)
def test_webhook_without_the_secret_writes_nothing(fuzz, method, body, query, extra):
    tally = fuzz.tally["assemblyai_webhook (no secret)"]
    tally.update({"5xx": 0, "writes_for_refused": 0})
    before = fuzz.writes()
    answer = requests.request(
        method, f"{fuzz.webhook.url}/?{encode_query(query)}", data=body, headers=extra, timeout=60
    )
    wrote = fuzz.writes() - before
    tally["inputs"] += 1
    tally["5xx"] += answer.status_code >= 500
    tally["refused"] += 1
    tally["writes_for_refused"] += wrote
    _check(answer, fuzz)
    assert answer.status_code in (401, 405), answer.text
    assert wrote == 0


@FUZZ
@given(
    body=st.one_of(bodies, hook_like, delivery_like).map(
        lambda b: b if isinstance(b, bytes) else json.dumps(b).encode()
    ),
    known=st.sampled_from([None] * 5 + ["completed", "error", "queued"]),
    query=queries,
)
def test_webhook_with_the_secret_never_fails_on_bad_input(fuzz, body, known, query):
    """Random bodies (unknown transcripts: 404 or 400, nothing written) and,
    for three inputs in eight, a delivery for a transcript AssemblyAI
    finished whose document does not exist yet: built from a random query,
    it must hold only the hints submit writes ("queued" is ignored)."""
    tally = fuzz.tally["assemblyai_webhook (secret, body + query)"]
    tally.update({"5xx": 0, "writes_for_refused": 0})
    tid = None
    if known is not None:
        tid = fuzz.fresh_transcript()
        body = json.dumps({"transcript_id": tid, "status": known}).encode()
    before = fuzz.writes()
    answer = requests.post(
        f"{fuzz.webhook.url}/?{encode_query(query)}",
        data=body,
        headers={"X-Webhook-Secret": fuzz.stack.webhook_secret},
        timeout=60,
    )
    wrote = fuzz.writes() - before
    tally["inputs"] += 1
    tally["5xx"] += answer.status_code >= 500
    _check(answer, fuzz)
    assert answer.status_code < 500, (answer.status_code, answer.text)
    if tid is not None and known in ("completed", "error"):
        tally["accepted"] += 1
        assert answer.status_code == 200, answer.text
        doc = fuzz.document(tid)
        assert doc and doc["status"] == "completed", doc
        assert set(doc["source"]) <= {"kind", "audio_url", *hints.SOURCE_KEYS}, doc["source"]
    else:
        tally["refused"] += 1
        tally["writes_for_refused"] += wrote
        assert wrote == 0, (answer.status_code, answer.text)


def test_oversized_bodies_are_refused_before_being_read(fuzz):
    """A 50 MB body announced in Content-Length is refused at once, and a
    chunked one is cut off at the limit, not read whole."""
    big = b"x" * (50 * 1024 * 1024)
    for url, extra in (
        (fuzz.submit.url, {}),
        (fuzz.webhook.url, {"X-Webhook-Secret": fuzz.stack.webhook_secret}),
    ):
        answer = requests.post(url, data=big, headers=extra, timeout=60)
        assert answer.status_code == 413

        def chunks():
            for _ in range(100):
                yield b"y" * 1024 * 1024

        try:
            answer = requests.post(url, data=chunks(), headers=extra, timeout=60)
            assert answer.status_code in (400, 413)
        except requests.ConnectionError:
            pass  # the server hung up on the rest of the stream: also refused


# --- transcribe_uploaded_audio ---------------------------------------------------------------

_NOW = dt.datetime.now(dt.UTC)
storage_data = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "bucket": st.one_of(
                st.just("team-recordings"),
                st.sampled_from(["team-recordings\n", "ab", "-x-", "A" * 3, "a" * 223]),
                outside_text,
                json_values,
            ),
            "name": st.one_of(
                st.sampled_from(
                    [
                        "recordings/",
                        "recordings/a.mp3",
                        "x/y.wav",
                        "",
                        "a\udc80.mp3",
                        "recordings/" + "x" * 1100 + ".mp3",
                        "会議/週次.m4a",
                    ]
                ),
                outside_text,
                json_values,
            ),
            "generation": st.one_of(
                st.integers(), st.sampled_from(["²", "1" * 21, "007"]), outside_text, json_values
            ),
            "size": st.one_of(st.integers(), st.text(max_size=10), json_values),
            "contentType": st.one_of(
                st.sampled_from(["audio/mpeg", "text/plain", "", "video/mp4", "audio/\ud800"]),
                outside_text,
                json_values,
            ),
            "metadata": st.one_of(
                st.dictionaries(
                    st.one_of(
                        st.sampled_from(
                            [
                                "language_code",
                                "speakers",
                                "notify_url",
                                "speech_models",
                                "answer_format",
                                "meeting-actions",
                            ]
                        ),
                        outside_text,
                    ),
                    outside_text,
                    max_size=4,
                ),
                json_values,
            ),
            "timeCreated": st.one_of(
                st.sampled_from(
                    [
                        "2026-12-01",
                        "2026-12-01T10:00:00",
                        _NOW.isoformat(),
                        "0001-01-01T00:00:00+23:59",
                        "9999-12-31T23:59:59-23:59",
                    ]
                ),
                outside_text,
                json_values,
            ),
        },
    ),
)


good_object = st.fixed_dictionaries(
    {
        "bucket": st.just("team-recordings"),
        "name": st.sampled_from(["recordings/a.mp3", "会議/週次.m4a", "x/y.wav"]),
        "generation": st.integers(1, 10**15).map(str),
        "contentType": st.sampled_from(["audio/mpeg", "video/mp4", ""]),
    },
    optional={
        "size": st.one_of(st.integers(0, 10**10), st.text(max_size=5)),
        "timeCreated": st.sampled_from(["2026-12-01", _NOW.isoformat(), "garbage"]),
        "metadata": st.dictionaries(
            st.sampled_from(["language_code", "speakers", "team", "answer_format"]),
            outside_text,
            max_size=3,
        ),
    },
)


def _refused_event(type_: str, data: object, cfg: config.Config) -> bool:
    """What the trigger must acknowledge without writing: the product's own
    reading of the event, before any claim."""
    if type_ != storage_object.EVENT_TYPE:
        return True
    try:
        obj = storage_object.parse(data)
    except ValueError:
        return True
    if storage_object.skip_reason(obj, cfg):
        return True
    age = dt.timedelta(seconds=cfg.max_event_age)
    return bool(obj.time_created and record.now() - obj.time_created > age)


@FUZZ
@given(
    data=st.one_of(storage_data, good_object),
    binary=st.booleans(),
    type_=st.sampled_from(
        ["google.cloud.storage.object.v1.finalized", "google.cloud.storage.object.v1.deleted", "x"]
    ),
)
def test_random_cloudevents_are_acknowledged(fuzz, data, binary, type_):
    tally = fuzz.tally["transcribe_uploaded_audio"]
    tally.update({"5xx": 0, "writes_for_refused": 0})
    event = CloudEvent(
        {"type": type_, "source": "//storage.googleapis.com/projects/_/buckets/x"}, data
    )
    head, body = (to_binary if binary else to_structured)(event)
    refused = _refused_event(type_, data, config.from_env(fuzz.storage_env))
    before = fuzz.writes()
    answer = requests.post(fuzz.storage.url, data=body, headers=head, timeout=60)
    wrote = fuzz.writes() - before
    tally["inputs"] += 1
    tally["5xx"] += answer.status_code >= 500
    assert answer.status_code == 200, answer.text
    if refused:
        tally["refused"] += 1
        tally["writes_for_refused"] += wrote
        assert wrote == 0
    else:
        tally["accepted"] += 1


# --- the model's answer ----------------------------------------------------------------------

item_like = st.fixed_dictionaries(
    {},
    optional={
        k: st.one_of(outside_text, st.just("会議の議事録" * 400), json_values)
        for k in ("text", "task", "owner", "due", "quote", "said_by", "owner_source")
    }
    | {"said_at": st.one_of(st.integers(), st.floats(), outside_text, json_values)},
)
answer_json = st.fixed_dictionaries(
    {},
    optional={
        "action_items": st.one_of(
            st.lists(st.one_of(item_like, json_values), max_size=8), json_values
        ),
        "formatted": st.one_of(outside_text, json_values),
    },
).map(lambda d: json.dumps(d))
answer_content = st.one_of(
    answer_json,
    answer_json.flatmap(lambda s: st.integers(0, len(s)).map(lambda n: s[:n])),  # cut off
    answer_json.map(lambda s: f"```json\n{s}\n```"),
    st.lists(
        st.tuples(st.sampled_from(["- ", "* ", "• ", "1. ", "12) ", "", "  -   "]), outside_text),
        max_size=8,
    ).map(lambda lines: "\n".join(a + b for a, b in lines)),
    st.lists(outside_char, max_size=300).map("".join),
)
usage_like = st.one_of(
    json_values,
    st.dictionaries(
        st.sampled_from(["input_tokens", "output_tokens", "total_tokens", "prompt_tokens"]),
        st.one_of(st.integers(), st.sampled_from([2**63 - 1, 2**63, -(2**63) - 1, 2**64])),
    ),
)


@settings(FUZZ, max_examples=EXAMPLES)
@given(
    content=answer_content,
    finish=st.one_of(st.none(), st.sampled_from(["stop", "length"]), outside_text),
    moments=st.booleans(),
    usage=usage_like,
)
def test_any_answer_parses_to_fields_firestore_can_store(content, finish, moments, usage):
    """action_items.parse, then the document's fields: every string valid
    UTF-8 within its cap, the result within its byte budget, every value
    encodable by Firestore's own client (int64 included), or Unparseable."""
    tally = TALLY["action_items.parse"]
    tally["inputs"] += 1
    try:
        result = action_items.parse(content, finish, moments)
    except action_items.Unparseable:
        tally["refused"] += 1
        return
    for item in result.items:
        for key, value in item.items():
            if isinstance(value, str):
                assert not text.has_lone_surrogate(value)
                assert text.utf8_size(value) <= action_items.MAX_FIELD_BYTES.get(key, 4096)
    assert text.utf8_size(result.text) <= action_items.MAX_TEXT_BYTES
    assert text.stored_size(result.items) + text.stored_size(result.text) <= (
        action_items.RESULT_BYTES
    )
    answer = {"choices": [{"message": {"content": content}, "finish_reason": finish}],
              "usage": usage, "request": {"model": content[:300]}}  # fmt: skip
    fields = generate._result_fields(FAKE_CONFIG, answer, {})
    fields.pop("completed_at")  # the server's timestamp, a sentinel
    firestore_encoding.encode_dict(fields)  # raises as the client would: surrogates, int64
    tally["accepted"] += 1


class _Config:
    llm_model = "claude-sonnet-4-6"


FAKE_CONFIG = _Config()
TALLY: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


@pytest.fixture(scope="module", autouse=True)
def _report_parse():
    yield
    path = os.environ.get("FUZZ_REPORT")
    if path and TALLY:
        with open(path, "a") as f:
            for entry, counts in TALLY.items():
                f.write(json.dumps({"entry": entry, "examples_setting": EXAMPLES, **counts}) + "\n")
