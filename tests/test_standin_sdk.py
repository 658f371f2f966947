"""The AssemblyAI stand-in, driven with AssemblyAI's official Python SDK.

Every answer the stand-in gives here is parsed by the SDK's own models and
checked against the official spec files; and the stand-in's rule-based
"LLM" is scored against the sample meetings' ground truth.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator

import assemblyai as aai
import httpx
import jsonschema
import pytest
import requests
from assemblyai import types as aai_types
from assemblyai.llm_gateway.v1 import models as gateway_models
from conftest import SAMPLES

from local.assemblyai_standin import spec
from meeting_actions import prompt

SAMPLE_NAMES = sorted(p.stem for p in SAMPLES.glob("*.json"))
TRUTH = [
    n for n in SAMPLE_NAMES if json.loads((SAMPLES / f"{n}.json").read_text()).get("expected_items")
]
MODEL = "claude-sonnet-4-6"


def sample(name: str) -> dict:
    return json.loads((SAMPLES / f"{name}.json").read_text())


# --- the SDK, pointed at the stand-in, recording every answer it parses ------


class Recorder:
    """Every HTTP answer an SDK client received, for checking against the spec."""

    def __init__(self) -> None:
        self.answers: list[tuple[str, str, int, object]] = []

    def __call__(self, response: httpx.Response) -> None:
        response.read()
        try:
            body = response.json()
        except ValueError:
            body = None
        self.answers.append(
            (response.request.method, response.request.url.path, response.status_code, body)
        )


@pytest.fixture
def sdk(stack) -> Iterator[tuple[aai.Client, Recorder]]:
    settings = aai.Settings(
        api_key=stack.api_key,
        base_url=stack.standin.url,
        llm_gateway_base_url=stack.standin.url,
        polling_interval=0.05,
    )
    client = aai.Client(settings=settings)
    recorder = Recorder()
    client.http_client.event_hooks["response"].append(recorder)
    yield client, recorder
    client.http_client.close()


def gateway(client: aai.Client) -> aai.LLMGateway:
    return aai.LLMGateway(client=client)


def check_against_spec(method: str, path: str, status: int, body: object) -> str:
    """Validate one 200 answer against its schema; the schema's name."""
    assert status == 200, (method, path, status, body)
    if path == "/v2/upload":
        name, validator = "UploadedFile", spec.openapi_schema("UploadedFile")
    elif re.fullmatch(r"/v2/transcript/[^/]+/sentences", path):
        name, validator = "SentencesResponse", spec.openapi_schema("SentencesResponse")
    elif re.fullmatch(r"/v2/transcript/[^/]+/paragraphs", path):
        name, validator = "ParagraphsResponse", spec.openapi_schema("ParagraphsResponse")
    elif path == "/v2/transcript" or re.fullmatch(r"/v2/transcript/[^/]+", path):
        name, validator = "Transcript", spec.transcript()
    elif path == "/v1/chat/completions":
        name, validator = "Response", spec.gateway_schema("Response")
    elif path == "/v1/models":
        return "(no schema in the spec files)"
    else:
        raise AssertionError(f"no schema for {method} {path}")
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
    assert not errors, f"{method} {path} breaks {name}: {errors[:5]}"
    return name


def speaker_identification(**request) -> aai.SpeechUnderstandingRequest:
    return aai.SpeechUnderstandingRequest(
        request=aai.SpeechUnderstandingFeatureRequests(
            speaker_identification=aai.SpeakerIdentificationRequest(**request)
        )
    )


# --- transcripts ---------------------------------------------------------------


def test_sdk_transcribes_a_sample_with_speaker_identification(sdk):
    client, recorder = sdk
    truth = sample("weekly-sync")["speakers"]  # {"A": "Dana", "B": "Lena", "C": "Priya", ...}
    config = aai.TranscriptionConfig(
        speaker_labels=True,
        speech_understanding=speaker_identification(
            speaker_type="name",
            # Dana is not named, Zoe was not there; the order is not the labels'.
            speakers=[
                {"name": "Priya", "description": "finance partner"},
                {"name": "Zoe", "description": "was invited"},
                {"name": "Marcus", "description": "writes the launch email"},
                {"name": "Lena", "description": "runs the usability study"},
            ],
        ),
    )
    transcript = aai.Transcriber(client=client).transcribe(str(SAMPLES / "weekly-sync.wav"), config)
    assert transcript.status == aai.TranscriptStatus.completed, transcript.error

    mapping = transcript.speech_understanding.response.speaker_identification.mapping
    assert mapping == {"B": "Lena", "C": "Priya", "D": "Marcus"}
    assert transcript.speech_understanding.response.speaker_identification.status
    assert truth["B"] == "Lena" and "A" not in mapping

    utterances = transcript.utterances
    assert [u.text for u in utterances] == [u["text"] for u in sample("weekly-sync")["utterances"]]
    assert {u.speaker for u in utterances} == {"A", "Lena", "Priya", "Marcus"}
    for u in utterances:
        assert u.words and " ".join(w.text for w in u.words) == u.text
        assert all(w.speaker == u.speaker for w in u.words)
        assert u.start <= u.words[0].start and u.words[-1].end <= u.end
        assert all(a.end <= b.start for a, b in zip(u.words, u.words[1:], strict=False))
        assert 0 <= u.confidence <= 1
    assert [w.text for w in transcript.words] == [w.text for u in utterances for w in u.words]
    assert transcript.text == " ".join(u.text for u in utterances)

    sentences = transcript.get_sentences()
    assert any(
        s.text == "Priya, can you send the revised budget to finance by Friday?" for s in sentences
    )
    assert {s.speaker for s in sentences} == {u.speaker for u in utterances}
    paragraphs = transcript.get_paragraphs()
    assert [p.text for p in paragraphs] == [u.text for u in utterances]

    # Everything the SDK was answered (upload, create, polls, sentences,
    # paragraphs) also follows the spec files.
    seen = {check_against_spec(*answer) for answer in recorder.answers}
    assert seen == {"UploadedFile", "Transcript", "SentencesResponse", "ParagraphsResponse"}


def test_known_values_name_people_as_given(sdk, stack):
    client, _ = sdk
    upload_url = stack.upload_sample("launch-review")
    config = aai.TranscriptionConfig(
        speaker_labels=True,
        speech_understanding=speaker_identification(
            speaker_type="name", known_values=["Sam Ortiz", "Ruth", "Omar"]
        ),
    )
    transcript = aai.Transcriber(client=client).transcribe(upload_url, config)
    assert transcript.status == aai.TranscriptStatus.completed, transcript.error
    mapping = transcript.speech_understanding.response.speaker_identification.mapping
    assert mapping == {"A": "Ruth", "B": "Omar", "C": "Sam Ortiz"}
    assert [u.speaker for u in transcript.utterances][:4] == ["Ruth", "Omar", "Ruth", "Sam Ortiz"]
    assert {w.speaker for w in transcript.words} == {"Ruth", "Omar", "Sam Ortiz", "D"}


def test_without_speaker_labels_there_are_words_but_no_utterances(sdk, stack):
    client, recorder = sdk
    transcript = aai.Transcriber(client=client).transcribe(
        stack.upload_sample("weekly-sync"), aai.TranscriptionConfig()
    )
    assert transcript.status == aai.TranscriptStatus.completed
    assert transcript.utterances is None
    assert transcript.words and all(w.speaker is None for w in transcript.words)
    assert transcript.text.startswith("Good morning everyone")
    assert all(s.speaker is None for s in transcript.get_sentences())
    for answer in recorder.answers:
        check_against_spec(*answer)


def test_long_meetings_parse_with_the_sdk(sdk, stack, standin):
    """--meeting-hours (bench/memory.py): the sample said again and again
    at 150 words a minute, in AssemblyAI's full shape, for the SDK too."""
    client, recorder = sdk
    standin.configure(meeting_hours=0.1)
    try:
        config = aai.TranscriptionConfig(
            speaker_labels=True,
            speech_understanding=speaker_identification(speaker_type="name"),
        )
        transcript = aai.Transcriber(client=client).transcribe(
            stack.upload_sample("weekly-sync"), config
        )
    finally:
        standin.configure(meeting_hours=0)
    assert transcript.status == aai.TranscriptStatus.completed, transcript.error
    # Six minutes, the last utterance said to its end: 150 words a minute.
    assert 360 <= transcript.audio_duration < 370
    assert len(transcript.words) == sum(len(u.words) for u in transcript.utterances)
    assert abs(len(transcript.words) - transcript.audio_duration * 150 / 60) <= 2
    said = [u["text"] for u in sample("weekly-sync")["utterances"]]
    assert [u.text for u in transcript.utterances][: len(said) + 1] == [*said, said[0]]
    assert {u.speaker for u in transcript.utterances} == {"Dana", "Lena", "Priya", "Marcus"}
    assert all(
        a.end <= b.start for a, b in zip(transcript.words, transcript.words[1:], strict=False)
    )
    for answer in recorder.answers:
        check_against_spec(*answer)


def test_speaker_identification_needs_speaker_labels(stack):
    body = {
        "audio_url": stack.upload_sample("weekly-sync"),
        "speech_understanding": {
            "request": {
                "speaker_identification": {"speaker_type": "name", "known_values": ["Priya"]}
            }
        },
    }
    headers = {"Authorization": stack.api_key}
    url = f"{stack.standin.url}/v2/transcript"
    answer = requests.post(url, json=body, headers=headers, timeout=10)
    assert answer.status_code == 400 and "speaker_labels" in answer.json()["error"]
    too_long = {**body, "speaker_labels": True}
    too_long["speech_understanding"] = {
        "request": {"speaker_identification": {"speaker_type": "name", "known_values": ["x" * 36]}}
    }
    answer = requests.post(url, json=too_long, headers=headers, timeout=10)
    assert answer.status_code == 400 and "35 characters" in answer.json()["error"]


def test_every_transcript_state_parses_with_the_sdk(stack, standin):
    """queued, processing, completed and error answers, read raw and parsed
    with the SDK's TranscriptResponse; sentences before completion refuse."""
    headers = {"Authorization": stack.api_key}
    base = f"{stack.standin.url}/v2/transcript"
    standin.fault(
        target="transcript_create", kind="fail_transcript", match={"audio_url_contains": "fail"}
    )
    ok = requests.post(
        base,
        json={"audio_url": stack.upload_sample(), "speaker_labels": True},
        headers=headers,
        timeout=10,
    )
    failed = requests.post(
        base, json={"audio_url": stack.upload_sample() + "?fail"}, headers=headers, timeout=10
    )
    answers = [ok.json(), failed.json()]
    early = requests.get(f"{base}/{ok.json()['id']}/sentences", headers=headers, timeout=10)
    assert early.status_code == 400 and "error" in early.json()
    for tid in (ok.json()["id"], failed.json()["id"]):
        for _ in range(200):
            got = requests.get(f"{base}/{tid}", headers=headers, timeout=10).json()
            answers.append(got)
            if got["status"] in ("completed", "error"):
                break
            time.sleep(0.02)
    statuses = {a["status"] for a in answers}
    assert {"queued", "completed", "error"} <= statuses
    for body in answers:
        aai_types.TranscriptResponse.parse_obj(body)
        check_against_spec("GET", "/v2/transcript/x", 200, body)
    assert answers[-1]["status"] == "error" and answers[-1]["error"]


def test_a_deleted_transcript_answers_the_specs_deleted_shape(stack):
    """DELETE /v2/transcript/{id}, as AssemblyAI documents it: the same id,
    completed, "Deleted by user.", no words or utterances, on every later
    GET too; it parses with the SDK and follows the spec."""
    headers = {"Authorization": stack.api_key}
    base = f"{stack.standin.url}/v2/transcript"
    tid = requests.post(
        base,
        json={"audio_url": stack.upload_sample(), "speaker_labels": True},
        headers=headers,
        timeout=10,
    ).json()["id"]
    early = requests.delete(f"{base}/{tid}", headers=headers, timeout=10)
    assert early.status_code == 400, "still being processed"
    for _ in range(200):
        if (
            requests.get(f"{base}/{tid}", headers=headers, timeout=10).json()["status"]
            == "completed"
        ):
            break
        time.sleep(0.02)
    deleted = requests.delete(f"{base}/{tid}", headers=headers, timeout=10)
    assert deleted.status_code == 200, deleted.text
    later = requests.get(f"{base}/{tid}", headers=headers, timeout=10).json()
    for body in (deleted.json(), later):
        assert body["id"] == tid and body["status"] == "completed"
        assert body["text"] == "Deleted by user." and body["audio_url"] == "http://deleted_by_user"
        assert body["words"] is None and body["utterances"] is None
        assert body["audio_duration"] > 0
        aai_types.TranscriptResponse.parse_obj(body)
        check_against_spec("DELETE", "/v2/transcript/x", 200, body)
    unknown = requests.delete(f"{base}/no-such-transcript", headers=headers, timeout=10)
    assert unknown.status_code == 400 and "not found" in unknown.json()["error"]
    assert requests.delete(f"{base}/{tid}", timeout=10).status_code == 401


# --- the LLM Gateway ---------------------------------------------------------------


def test_models_list_parses_with_the_sdk(sdk):
    client, recorder = sdk
    listed = gateway(client).models.list()
    ids = [m.id for m in listed.data]
    assert MODEL in ids and "claude-sonnet-5" in ids
    for m in listed.data:
        assert m.pricing.global_.prompt > 0 and m.context_length > 0 and m.default_provider.id
    assert recorder.answers[-1][1] == "/v1/models"
    gateway_models.LLMGatewayModelList.parse_obj(recorder.answers[-1][3])


def test_chat_answer_follows_the_spec_and_the_sdk(sdk, stack):
    client, recorder = sdk
    transcript = aai.Transcriber(client=client).transcribe(
        stack.upload_sample("launch-review"), aai.TranscriptionConfig(speaker_labels=True)
    )
    system = "List the action items."
    user = "<transcript>\n{{ transcript }}\n</transcript>\nWhat was agreed?"
    answer = gateway(client).chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
        transcript_id=transcript.id,
        max_tokens=500,
    )
    raw = recorder.answers[-1][3]
    check_against_spec(*recorder.answers[-1])
    assert "model" not in raw and raw["request"]["model"] == MODEL
    assert "messages" not in raw["request"] and raw["request"]["max_tokens"] == 500
    assert answer.choices[0].index == 0 and answer.choices[0].finish_reason == "stop"
    assert "Rotate the staging credentials" in answer.choices[0].message.content
    substituted = system + user.replace("{{ transcript }}", transcript.text)
    usage = answer.usage
    assert usage.input_tokens == usage.prompt_tokens == math.ceil(len(substituted) / 4)
    assert usage.output_tokens == usage.completion_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


# --- the rules against the ground truth ----------------------------------------

# The product's own schemas: with moments (issue 11), and without them.
ITEM_SCHEMA = prompt.MOMENTS_SCHEMA
OLD_SCHEMA = prompt.SCHEMA


def stamp(ms: int) -> str:
    s = ms // 1000
    hours, minutes, seconds = s // 3600, s % 3600 // 60, s % 60
    return f"[{hours}:{minutes:02d}:{seconds:02d}]" if hours else f"[{minutes:02d}:{seconds:02d}]"


def utterance_prompt(meeting: dict) -> list[dict]:
    """The prompt issue 11 describes: one `[MM:SS] Name: text` line per utterance."""
    names = meeting.get("speakers") or {}
    lines = "\n".join(
        f"{stamp(u['start'])} {names.get(u['speaker'], 'Speaker ' + u['speaker'])}: {u['text']}"
        for u in meeting["utterances"]
    )
    return [
        {
            "role": "system",
            # An example line outside the transcript block is not the meeting.
            "content": "List the action items. Cite each like [12:34] Priya: send the budget.",
        },
        {"role": "user", "content": f"<transcript>\n{lines}\n</transcript>\n\nList the items."},
    ]


def ask(client: aai.Client, messages: list[dict], schema: dict) -> dict:
    answer = gateway(client).chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=4000,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "action_items", "schema": schema, "strict": True},
        },
    )
    assert answer.choices[0].finish_reason == "stop"
    content = json.loads(answer.choices[0].message.content)
    jsonschema.validate(content, schema)
    return content


@pytest.mark.parametrize("name", TRUTH)
def test_rules_match_the_ground_truth(sdk, name):
    client, _ = sdk
    meeting = sample(name)
    expected = meeting["expected_items"]
    items = ask(client, utterance_prompt(meeting), ITEM_SCHEMA)["action_items"]

    by_quote = {item["quote"]: item for item in items}
    attributed = 0
    for truth in expected:
        item = by_quote.get(truth["quote"])
        if (
            item
            and item["owner"] == truth["owner"]
            and item["said_at"] is not None
            and abs(item["said_at"] - truth["said_at"]) <= 10
        ):
            attributed += 1
    accuracy = attributed / len(expected)
    print(f"\nattribution accuracy, {name}: {attributed}/{len(expected)} = {accuracy:.0%}")
    assert accuracy == 1.0
    assert len(items) == len(expected), "no item beyond the known ones"
    for truth, item in zip(expected, items, strict=True):
        assert item["said_by"] == truth["said_by"] and item["owner_source"] == truth["owner_source"]
        assert item["due"] == truth["due"] and item["quote"] in meeting_text(meeting)


def meeting_text(meeting: dict) -> str:
    return " ".join(u["text"] for u in meeting["utterances"])


@pytest.mark.parametrize("name", TRUTH)
def test_expected_moments_are_the_quotes_first_words(stack, sdk, name):
    """The truth's said_at is the second at which the quote's first word
    starts in the stand-in's own word timings (its /sentences answer)."""
    client, _ = sdk
    meeting = sample(name)
    transcript = aai.Transcriber(client=client).transcribe(
        stack.upload_sample(name), aai.TranscriptionConfig(speaker_labels=True)
    )
    sentences = {s.text: s for s in transcript.get_sentences()}
    for truth in meeting["expected_items"]:
        assert sentences[truth["quote"]].start // 1000 == truth["said_at"]
        label = sentences[truth["quote"]].speaker
        assert meeting["speakers"][label] == truth["said_by"]


def test_old_schema_and_placeholder_prompt_keep_working(sdk, stack):
    """Lines in the prompt but the old schema: only text, owner and due.
    The placeholder prompt: items from the plain text, no times."""
    client, _ = sdk
    meeting = sample("weekly-sync")
    old = ask(client, utterance_prompt(meeting), OLD_SCHEMA)["action_items"]
    assert all(set(item) == {"text", "owner", "due"} for item in old)
    assert [item["owner"] for item in old] == [e["owner"] for e in meeting["expected_items"]]

    transcript = aai.Transcriber(client=client).transcribe(
        stack.upload_sample("weekly-sync"), aai.TranscriptionConfig(speaker_labels=True)
    )
    answer = gateway(client).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "<transcript>\n{{ transcript }}\n</transcript>"}],
        transcript_id=transcript.id,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "action_items", "schema": ITEM_SCHEMA, "strict": True},
        },
    )
    items = json.loads(answer.choices[0].message.content)["action_items"]
    assert [i["owner"] for i in items] == ["Priya", "Marcus", "Lena", None, None]
    assert all(i["said_at"] is None and i["said_by"] is None for i in items)
    assert [i["owner_source"] for i in items] == ["spoken", "spoken", "spoken", None, None]
    assert all(i["quote"] in transcript.text for i in items)


@pytest.mark.parametrize("name", TRUTH)
def test_prompt_sizes_are_reported(sdk, stack, name):
    """The gateway's usage measures the prompt after substitution, so the
    utterance prompt and the placeholder prompt can be compared."""
    client, recorder = sdk
    meeting = sample(name)
    transcript = aai.Transcriber(client=client).transcribe(
        stack.upload_sample(name), aai.TranscriptionConfig(speaker_labels=True)
    )
    lines = utterance_prompt(meeting)
    placeholder = [
        lines[0],
        {
            "role": "user",
            "content": "<transcript>\n{{ transcript }}\n</transcript>\n\nList the items.",
        },
    ]
    sizes = {}
    for kind, messages, extra in (
        ("placeholder", placeholder, {"transcript_id": transcript.id}),
        ("utterances", lines, {}),
    ):
        answer = gateway(client).chat.completions.create(model=MODEL, messages=messages, **extra)
        sizes[kind] = answer.usage.input_tokens
    ratio = sizes["utterances"] / sizes["placeholder"]
    print(f"\nprompt tokens, {name}: {sizes} (utterances / placeholder = {ratio:.2f})")
    assert sizes["utterances"] > sizes["placeholder"] > 0
    for answer in recorder.answers:
        check_against_spec(*answer)
