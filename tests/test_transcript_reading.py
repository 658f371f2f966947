"""Reading a transcript the way the webhook keeps it: only the fields it
uses, no top-level `words` and only the start of `text`, each utterance a compact Said, the
JSON read as it arrives; exactly what json.loads accepts and refuses; and
the utterances gone before the gateway call. Fast: no servers."""

from __future__ import annotations

import json
import threading
import time

import pytest
from conftest import SAMPLES
from fakes import FakeAssemblyAI, MemoryStore, answer
from hypothesis import given, settings
from hypothesis import strategies as st

from local.assemblyai_standin import transcripts
from meeting_actions import (
    assemblyai,
    config,
    hints,
    lifecycle,
    moments,
    record,
    transcript_ready,
    utterances,
)


@pytest.fixture(autouse=True, params=["read whole", "read as it arrives"])
def reading(request, monkeypatch):
    """Every test here both ways: a short JSON is read whole, a long one as
    it arrives (here, any JSON longer than nothing)."""
    if request.param == "read as it arrives":
        monkeypatch.setattr(assemblyai, "WHOLE_CHARS", 0)
    return request.param


def full_transcript(name: str = "weekly-sync", hours: float = 0) -> dict:
    """A completed transcript in AssemblyAI's full shape, as the stand-in
    answers it (top-level words and text, utterances with their words)."""
    sample = json.loads((SAMPLES / f"{name}.json").read_text())
    if hours:
        sample = transcripts.lengthened(sample, hours * 3600)
    mapping = dict(sample["speakers"])
    segments = transcripts.segments(sample, True, mapping)
    return {
        "id": "t-1", "status": "completed", "audio_url": "https://media.example/a.wav",
        **transcripts.transcript_fields(segments, True),
        "audio_duration": sample["audio_duration"], "language_code": "en_us",
        "speaker_labels": True, "speech_models": ["universal-3-pro"],
        "speech_understanding": {
            "request": {"speaker_identification": {"speaker_type": "name"}},
            "response": {"speaker_identification": {"mapping": mapping, "status": "success"}},
        },
        "webhook_url": "https://hooks.example/", "confidence": 0.9,
    }  # fmt: skip


def in_pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def turns_of(meeting: moments.Meeting) -> list[tuple]:
    return [(t.speaker, t.start, t.end, t.tokens, list(t.starts), t.raw) for t in meeting.turns]


def test_the_top_level_words_are_not_kept_and_utterances_are_compact():
    t = full_transcript(hours=0.1)
    text = json.dumps(t)
    parsed = assemblyai.parse_transcript(text)
    assert "words" not in parsed and parsed["text"] == t["text"][: assemblyai.TEXT_KEPT]
    assert set(parsed) == set(t) & (assemblyai.TRANSCRIPT_FIELDS | {"text"})
    assert {k: parsed[k] for k in parsed if k not in ("utterances", "text")} == {
        k: t[k] for k in assemblyai.TRANSCRIPT_FIELDS - {"utterances"} if k in t
    }
    said = parsed["utterances"]
    assert len(said) == len(t["utterances"]) > 80
    # Each utterance a Said (slots, no dict of its own), its words three
    # flat lists: no word object of AssemblyAI's is left.
    assert all(type(s) is utterances.Said and not hasattr(s, "__dict__") for s in said)
    first = said[0]
    assert (first.speaker, first.start, first.text) == (
        t["utterances"][0]["speaker"], t["utterances"][0]["start"], t["utterances"][0]["text"]
    )  # fmt: skip
    assert first.raw == [w["text"] for w in t["utterances"][0]["words"]]
    assert first.starts == [w["start"] for w in t["utterances"][0]["words"]]
    assert all(type(x) is str for s in said for x in s.tokens + s.raw)
    # Each distinct word is one string, however often it is said.
    repeated = [s for s in said if s.text == first.text]
    assert len(repeated) > 1 and all(s.raw[0] is first.raw[0] for s in repeated)


@pytest.mark.parametrize("size", [1, 3, 16, 1000, 16 * 1024, 10**9])
def test_read_in_pieces_the_meeting_is_the_one_json_loads_gives(size):
    t = full_transcript("planning-offsite")
    text = json.dumps(t)
    want = moments.read(json.loads(text))
    got = moments.read(assemblyai.parse_transcript(in_pieces(text, size)))
    assert turns_of(got) == turns_of(want) and len(got.turns) > 5
    assert (got.lines, got.mapping, got.labels, got.duration_ms) == (
        want.lines, want.mapping, want.labels, want.duration_ms
    )  # fmt: skip


def test_odd_utterances_are_dropped_one_by_one():
    t = {"status": "completed", "words": [{"text": "x"}], "utterances": [
        {"text": 5}, None, {"start": "x", "text": "a"}, [1],
        {"speaker": "A", "start": 0, "end": 900, "text": "Hello there all", "words": "odd"},
        {"speaker": "B", "start": 1000, "end": 2000, "text": "Fine", "words": [None, {"text": 3}]},
    ]}  # fmt: skip
    parsed = assemblyai.parse_transcript(json.dumps(t))
    assert [s.text for s in parsed["utterances"]] == ["Hello there all", "Fine"]
    assert parsed["utterances"][0].starts == [0, 300, 600]  # spread over the utterance
    assert turns_of(moments.read(parsed)) == turns_of(moments.read(t))
    assert assemblyai.parse_transcript('{"utterances": null}') == {"utterances": None}
    assert assemblyai.parse_transcript(' [1, {"words": 2}] ') == [1, {"words": 2}]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)
KEYS = st.sampled_from(sorted(assemblyai.TRANSCRIPT_FIELDS - {"utterances"}) + ["words", "text"])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(KEYS | st.text(max_size=4), JSON), max_size=8),
    st.sampled_from([(", ", ": "), (",", ":")]),
    st.integers(1, 40),
    st.booleans(),
)
def test_anything_json_loads_reads_is_read_the_same(pairs, separators, size, spaced):
    body = "{" + separators[0].join(
        json.dumps(k) + separators[1] + json.dumps(v) for k, v in pairs
    ) + "}"  # fmt: skip
    text = f" \n{body}\t " if spaced else body
    want = {k: v for k, v in json.loads(text).items() if k in assemblyai.TRANSCRIPT_FIELDS}
    if "text" in json.loads(text):
        whole = json.loads(text)["text"]
        want["text"] = whole[: assemblyai.TEXT_KEPT] if isinstance(whole, str) else whole
    assert assemblyai.parse_transcript(in_pieces(text, size)) == want
    # Cut short anywhere, it is refused, as json.loads refuses it.
    cut = len(text.rstrip()) * size // 41
    if text[:cut].strip():
        with pytest.raises(ValueError):
            json.loads(text[:cut])
        with pytest.raises(ValueError):
            assemblyai.parse_transcript(in_pieces(text[:cut], size))


@pytest.mark.parametrize(
    "text",
    ['{"a": 1,}', '{"a" 1}', '{"a": 1} x', '{"a": [1 2]}', '{"words": [1,]}', "{'a': 1}",
     '{"status": tru}', '{"a": 1e}', '{"status": "x', "", '{"words": [{"t": 1} {"t": 2}]}',
     '{"utterances": [{"text": "a", "start": 1}, ]}', "[" * 100_000],
)  # fmt: skip
def test_what_json_loads_refuses_is_refused(text):
    with pytest.raises((ValueError, RecursionError)):
        json.loads(text)
    for size in (1, 2, 5, 10**6):
        with pytest.raises((ValueError, RecursionError)):
            assemblyai.parse_transcript(in_pieces(text, size) or [""])


def test_numbers_split_between_pieces_are_read_whole():
    text = '{"audio_duration": 1234.5e+2, "status": "completed", "id": -0.25E-3}'
    for size in range(1, len(text) + 1):
        assert assemblyai.parse_transcript(in_pieces(text, size)) == json.loads(text)


class Chunks:
    """A streamed response's iter_content, in the chunks given."""

    def __init__(self, *chunks: bytes):
        self.chunks = chunks

    def iter_content(self, size: int):
        return iter(self.chunks)


def test_the_body_is_decoded_piece_by_piece_as_requests_would():
    body = '\ufeff{"id": "Zoë ✓", "status": "x"}'.encode()
    split = body.index("ë".encode()) + 1  # inside the two bytes of ë
    pieces = list(assemblyai._pieces(Chunks(body[:split], body[split:], b"")))
    assert "".join(pieces) == '{"id": "Zoë ✓", "status": "x"}'
    assert "".join(assemblyai._pieces(Chunks(b'{"id": "\xff"}'))) == '{"id": "\ufffd"}'


def test_no_more_than_reads_at_once_bodies_are_read_together(monkeypatch):
    """The answers all arrive together; their bodies are read READS_AT_ONCE
    at a time, and no read waits for its answer holding a turn."""
    now = {"reading": 0, "most": 0, "answered": 0}
    lock = threading.Lock()
    all_answered = threading.Barrier(12)

    class SlowBody:
        def iter_content(self, size):
            with lock:
                now["reading"] += 1
                now["most"] = max(now["most"], now["reading"])
            time.sleep(0.02)
            with lock:
                now["reading"] -= 1
            yield b'{"status": "completed"}'

        def close(self):
            pass

    def answer_headers(*args, **kwargs):
        all_answered.wait(timeout=10)  # every answer's headers are in before any body
        with lock:
            now["answered"] += 1
        return SlowBody()

    monkeypatch.setattr(assemblyai, "_answer", answer_headers)
    threads = [
        threading.Thread(target=assemblyai.read_transcript, args=(CFG, f"t{i}")) for i in range(12)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert now["answered"] == 12 and now["most"] == assemblyai.READS_AT_ONCE


# --- the webhook, in process ------------------------------------------------------

CFG = config.from_env(
    {"ASSEMBLYAI_API_KEY": "k", "WEBHOOK_URL": "https://hooks.example/", "WEBHOOK_SECRET": "s"}
)


@pytest.fixture
def aai(monkeypatch):
    store = MemoryStore()
    record.use(store)
    fake = FakeAssemblyAI().install(monkeypatch)
    fake.store = store
    yield fake
    record.use(None)


def test_the_utterances_are_let_go_before_the_gateway_call(aai, monkeypatch):
    """The transcript the read returned is the one dict every caller's frame
    holds: by the gateway call it has no utterances left, and the prompt's
    lines are only in the request body."""
    tid = "t-let-go"
    aai.transcripts[tid] = full_transcript()
    read = []
    fake_get = aai.get_transcript

    def get(cfg, transcript_id, timeout=15):
        read.append(assemblyai.parse_transcript(json.dumps(fake_get(cfg, transcript_id))))
        return read[-1]

    monkeypatch.setattr(assemblyai, "get_transcript", get)
    seen = []

    def gateway(body):
        seen.append(sorted(read[0]))
        return answer(json.dumps({"action_items": []}))

    aai.gateway = gateway
    result = transcript_ready.complete(CFG, tid, hints.Hints(), lifecycle.deadline_of(CFG))
    assert result.status == "completed", result
    assert seen == [
        sorted(
            set(aai.transcripts[tid]) & (assemblyai.TRANSCRIPT_FIELDS | {"text"}) - {"utterances"}
        )
    ]
    doc = aai.store.doc("meetings", tid)
    assert doc["llm"]["prompt"] == "utterances" and doc["audio_duration"] == 1800
