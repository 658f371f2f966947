"""Speakers by name, and items with their moments, end to end: the real
functions, Firestore and the AssemblyAI stand-in over HTTP, each sample
meeting submitted with its participants' names and scored against its
ground truth (attribution accuracy: `said_at` within 10 s of the truth and
the owner right). Also the `speakers` option's validation and the storage
path's metadata, in process."""

from __future__ import annotations

import json
import re

import pytest
from conftest import SAMPLES, upload_sample, wait_for_document

from meeting_actions import inputs, storage_object

NAMES = sorted(p.stem for p in SAMPLES.glob("*.json"))
LINE = re.compile(r"^\[(?:\d+:)?\d\d:\d\d\] \S")


def sample(name: str) -> dict:
    return json.loads((SAMPLES / f"{name}.json").read_text())


def accuracy(items: list[dict], truth: list[dict]) -> tuple[int, int]:
    """How many true items the document attributes right: an item with the
    same owner whose said_at is within 10 s of the truth."""
    right = 0
    left = list(items)
    for expected in truth:
        hit = next(
            (
                i
                for i in left
                if i.get("owner") == expected["owner"]
                and i.get("said_at") is not None
                and abs(i["said_at"] - expected["said_at"]) <= 10
            ),
            None,
        )
        if hit is not None:
            right += 1
            left.remove(hit)
    return right, len(truth)


# --- end to end -------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_each_sample_with_its_speakers_is_attributed_right(stack, functions, standin, db, name):
    meeting = sample(name)
    names = list(meeting["speakers"].values())
    # One sample names its people with descriptions, the others by name alone.
    speakers = (
        [{"name": n, "description": f"takes part in the {meeting['title']}"} for n in names]
        if name == "launch-review"
        else names
    )
    audio_url = upload_sample(stack, name)
    accepted = functions.submit_json({"audio_url": audio_url, "speakers": speakers})
    assert accepted.status_code == 202, accepted.text
    tid = accepted.json()["transcript_id"]
    doc = wait_for_document(db, accepted.json()["document"])
    assert doc["status"] == "completed", doc.get("error")

    right, total = accuracy(doc["action_items"], meeting["expected_items"])
    print(f"\nattribution accuracy, {name}: {right}/{total} = {right / total:.0%}")
    assert right == total

    # The document shows names, times and links.
    assert doc["speakers"] == meeting["speakers"]
    assert doc["options"]["speakers"] == names and doc["options"]["speaker_labels"] is True
    assert doc["llm"]["prompt"] == "utterances"
    assert doc["llm"]["quotes"]["not_found"] == 0
    spoke = set(meeting["speakers"].values())
    for item, expected in zip(doc["action_items"], meeting["expected_items"], strict=True):
        assert item["said_by"] == expected["said_by"] and item["said_by"] in spoke
        assert item["quote"] == expected["quote"]
        assert item["owner_source"] == expected["owner_source"]
        assert item["link"] == f"{audio_url}#t={item['said_at']}"
        assert "note" not in item
    lines = doc["action_items_text"].splitlines()
    assert len(lines) == total and all(LINE.match(line) for line in lines)
    first = meeting["expected_items"][0]
    minutes, seconds = divmod(first["said_at"], 60)
    assert lines[0].startswith(f"[{minutes:02d}:{seconds:02d}] {first['owner']}: ")

    # AssemblyAI was asked to identify the speakers, in the spec's shape.
    sent = next(
        r["body"]
        for r in standin.requests()
        if r["path"] == "/v2/transcript" and r.get("transcript_id") == tid
    )
    asked = sent["speech_understanding"]["request"]["speaker_identification"]
    assert asked["speaker_type"] == "name" and sent["speaker_labels"] is True
    if name == "launch-review":
        assert [s["name"] for s in asked["speakers"]] == names
    else:
        assert asked["known_values"] == names
    gateway = [
        r
        for r in standin.requests()
        if r["path"].endswith("/chat/completions") and r.get("transcript_id") == tid
    ]
    assert gateway and not any(r["substituted"] for r in gateway)
    assert all(r["transcript_lines"] > 0 for r in gateway)


def test_without_names_the_labels_stay(stack, functions, db):
    meeting = sample("weekly-sync")
    accepted = functions.submit_json({"audio_url": upload_sample(stack, "weekly-sync")})
    assert accepted.status_code == 202, accepted.text
    doc = wait_for_document(db, accepted.json()["document"])
    assert doc["status"] == "completed", doc.get("error")
    assert doc["options"]["speaker_labels"] is True, "speaker labels are on by default"
    assert doc["speakers"] is None
    by_quote = {i["quote"]: i for i in doc["action_items"]}
    own = by_quote["I'll update the roadmap slide before Thursday's all-hands."]
    assert own["owner"] == own["said_by"] == "Speaker A" and own["owner_source"] == "speaker"
    budget = by_quote["Priya, can you send the revised budget to finance by Friday?"]
    assert budget["owner"] == "Priya" and budget["said_by"] == "Speaker A"
    right, total = accuracy(
        doc["action_items"],
        [e for e in meeting["expected_items"] if e["owner_source"] == "spoken"],
    )
    assert right == total


def test_speaker_labels_off_keeps_the_placeholder_prompt(stack, functions, standin, db):
    accepted = functions.submit_json(
        {"audio_url": upload_sample(stack, "weekly-sync"), "speaker_labels": False}
    )
    assert accepted.status_code == 202, accepted.text
    tid = accepted.json()["transcript_id"]
    doc = wait_for_document(db, accepted.json()["document"])
    assert doc["status"] == "completed", doc.get("error")
    assert doc["llm"]["prompt"] == "placeholder"
    assert all(set(item) <= {"text", "owner", "due"} for item in doc["action_items"])
    gateway = [
        r
        for r in standin.requests()
        if r["path"].endswith("/chat/completions") and r.get("transcript_id") == tid
    ]
    assert gateway and all(r["substituted"] for r in gateway)


def test_speakers_without_speaker_labels_is_refused(functions, standin):
    seen = len(standin.requests())
    answer = functions.submit_json(
        {"audio_url": "https://h.example/a.mp3", "speakers": ["Priya"], "speaker_labels": False}
    )
    assert answer.status_code == 400
    assert answer.json()["field"] == "speakers" and "speaker_labels" in answer.json()["error"]
    assert len(standin.requests()) == seen


# --- the option, in process -------------------------------------------------------


def submission(**body):
    return inputs.submission({"audio_url": "https://h.example/a.mp3", **body})


def test_speakers_are_names_or_named_objects():
    sub = submission(speakers=["Priya", {"name": " Dana  Lee ", "description": "chairs"}])
    assert sub.speakers == (inputs.Speaker("Priya"), inputs.Speaker("Dana Lee", "chairs"))
    assert submission(speakers=[]).speakers == () and submission().speakers == ()
    assert submission(speakers=["x" * 35]).speakers[0].name == "x" * 35


@pytest.mark.parametrize(
    "speakers, says",
    [
        ("Priya", "list"),
        ([5], "list"),
        (["x" * 36], "longer than 35"),
        ([{"name": "P", "description": "d" * 201}], "longer than 200"),
        ([""], "empty"),
        ([{"description": "no name"}], "must be a string"),
        ([{"name": "P", "role": "host"}], "unknown key"),
        (["Priya", "priya"], "twice"),
        (["Dr: Who"], "':'"),
        (["Pri\x01ya"], "control"),
        ([f"P{i}" for i in range(inputs.MAX_SPEAKERS + 1)], "at most"),
    ],
)
def test_bad_speakers_are_refused_naming_the_field(speakers, says):
    with pytest.raises(inputs.InvalidRequest) as refused:
        submission(speakers=speakers)
    assert refused.value.field == "speakers" and refused.value.status == 400
    assert says in refused.value.message


def obj(**metadata) -> storage_object.StorageObject:
    return storage_object.StorageObject(
        "b", "m/a.wav", "1", 10, "audio/wav", metadata, None
    )  # fmt: skip


def test_object_metadata_names_the_speakers():
    sub = storage_object.submission_for(
        obj(speakers="Priya, Dana Lee ,Marcus", team="web"), "https://s/u"
    )
    assert [s.name for s in sub.speakers] == ["Priya", "Dana Lee", "Marcus"]
    assert sub.metadata == {"team": "web"}, "speakers is an override, not metadata"
    sub = storage_object.submission_for(
        obj(speakers="Priya: runs finance, and the budget; Dana: chairs; Marcus"), "https://s/u"
    )
    assert sub.speakers == (
        inputs.Speaker("Priya", "runs finance, and the budget"),
        inputs.Speaker("Dana", "chairs"),
        inputs.Speaker("Marcus"),
    )


def test_bad_speakers_metadata_is_ignored_and_the_rest_kept():
    sub = storage_object.submission_for(
        obj(speakers="x" * 40, language_code="de", team="web"), "https://s/u"
    )
    assert sub.speakers == () and sub.language_code == "de" and sub.metadata == {"team": "web"}
    sub = storage_object.submission_for(
        obj(speakers="Priya", speaker_labels="false"), "https://s/u"
    )
    assert sub.speakers == () and sub.speaker_labels is False
