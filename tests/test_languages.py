"""Meetings in any language (issue 19): the language is detected unless
the caller gives one, the items are asked for in the meeting's language
(or items_language), and moments are verified in scripts written without
spaces. End to end on the stand-in's Spanish and Japanese samples, and in
process on AssemblyAI-shaped Japanese words."""

from __future__ import annotations

import json

import pytest
from conftest import SAMPLES, upload_sample, wait_for_document

from meeting_actions import (
    action_items,
    config,
    inputs,
    languages,
    moments,
    prompt,
    storage_object,
    tokens,
)


def sample(name: str) -> dict:
    return json.loads((SAMPLES / f"{name}.json").read_text())


def sent_to_assemblyai(standin, tid: str) -> dict:
    return next(
        r["body"]
        for r in standin.requests()
        if r["path"] == "/v2/transcript" and r.get("transcript_id") == tid
    )


def prompts(standin, tid: str) -> list[str]:
    return [
        r["instructions"]
        for r in standin.requests()
        if r["path"].endswith("/chat/completions") and r.get("transcript_id") == tid
    ]


def verified(doc: dict, truth: list[dict]) -> list[tuple]:
    """Each true item the document has, with its quote, time and speaker."""
    got = {(i["quote"], i["said_at"], i["said_by"], i["owner"]) for i in doc["action_items"]}
    return [
        (e["quote"], e["said_at"], e["said_by"], e["owner"])
        for e in truth
        if (e["quote"], e["said_at"], e["said_by"], e["owner"]) in got
    ]


# --- end to end ---------------------------------------------------------------------


def test_a_spanish_meeting_without_a_language_is_detected_and_its_items_verify(
    stack, functions, standin, db
):
    meeting = sample("revision-trimestral")
    audio_url = upload_sample(stack, "revision-trimestral")
    names = list(meeting["speakers"].values())
    accepted = functions.submit_json({"audio_url": audio_url, "speakers": names})
    assert accepted.status_code == 202, accepted.text
    tid = accepted.json()["transcript_id"]
    doc = wait_for_document(db, accepted.json()["document"])
    assert doc["status"] == "completed", doc.get("error")

    sent = sent_to_assemblyai(standin, tid)
    assert sent["language_detection"] is True and "language_code" not in sent
    assert doc["language_code"] == "es"
    assert doc["language_confidence"] == meeting["language_confidence"]
    assert doc["options"]["language_detection"] is True
    asked = prompts(standin, tid)
    assert asked and all("in Spanish" in p for p in asked)
    truth = meeting["expected_items"]
    assert verified(doc, truth) == [
        (e["quote"], e["said_at"], e["said_by"], e["owner"]) for e in truth
    ]
    assert doc["llm"]["quotes"]["not_found"] == 0
    # The readable list's few words are Spanish too.
    assert "(para viernes)" in doc["action_items_text"] and "due" not in doc["action_items_text"]


def test_items_language_en_asks_for_english_items_from_a_spanish_meeting(
    stack, functions, standin, db
):
    audio_url = upload_sample(stack, "revision-trimestral")
    accepted = functions.submit_json({"audio_url": audio_url, "items_language": "en"})
    assert accepted.status_code == 202, accepted.text
    tid = accepted.json()["transcript_id"]
    doc = wait_for_document(db, accepted.json()["document"])
    assert doc["status"] == "completed", doc.get("error")
    assert doc["language_code"] == "es" and doc["options"]["items_language"] == "en"
    asked = prompts(standin, tid)
    assert asked and all("in English" in p and "Spanish" not in p for p in asked)
    assert "(due viernes)" in doc["action_items_text"]


def test_a_japanese_meeting_gets_verified_times_speakers_and_links(stack, functions, standin, db):
    meeting = sample("teireikai")
    audio_url = upload_sample(stack, "teireikai")
    names = list(meeting["speakers"].values())
    accepted = functions.submit_json({"audio_url": audio_url, "speakers": names})
    assert accepted.status_code == 202, accepted.text
    tid = accepted.json()["transcript_id"]
    doc = wait_for_document(db, accepted.json()["document"])
    assert doc["status"] == "completed", doc.get("error")
    assert doc["language_code"] == "ja" and doc["language_confidence"] > 0.9
    assert all("in Japanese" in p for p in prompts(standin, tid))
    truth = meeting["expected_items"]
    assert len(verified(doc, truth)) == len(truth) == 3
    assert all(i["link"] == f"{audio_url}#t={i['said_at']}" for i in doc["action_items"])


def test_a_callers_language_code_wins_and_detection_options_pass_through(
    stack, functions, standin, db
):
    audio_url = upload_sample(stack, "revision-trimestral")
    given = functions.submit_json({"audio_url": audio_url, "language_code": "es"})
    assert given.status_code == 202, given.text
    sent = sent_to_assemblyai(standin, given.json()["transcript_id"])
    assert sent["language_code"] == "es" and "language_detection" not in sent

    options = {"expected_languages": ["es", "en"], "language_confidence_threshold": 0.5}
    detected = functions.submit_json({"audio_url": audio_url, **options})
    assert detected.status_code == 202, detected.text
    sent = sent_to_assemblyai(standin, detected.json()["transcript_id"])
    assert sent["language_detection"] is True
    assert sent["language_detection_options"] == {"expected_languages": ["es", "en"]}
    assert sent["language_confidence_threshold"] == 0.5
    doc = wait_for_document(db, detected.json()["document"])
    assert doc["language_code"] == "es"


# --- in process: AssemblyAI's Japanese words ---------------------------------------------

# As AssemblyAI shapes Japanese: `text` without spaces, words short runs of
# characters with their own times, punctuation on the run before.
JAPANESE = [
    ("A", 15000, ["田中", "さん、", "金曜日", "までに", "報告書", "を", "送って", "ください。"]),
    ("B", 24000, ["はい、", "わかり", "ました。"]),
    (
        "A",
        38000,
        ["では", "鈴木", "さんが", "月曜", "日までに", "テンプ", "レートを", "作ります。"],
    ),
    ("C", 52000, ["承知", "しました。", "私が", "明日", "までに", "予算案", "を", "まとめます。"]),
]


def japanese_transcript() -> dict:
    utterances = []
    for speaker, start, runs in JAPANESE:
        words = [
            {"text": r, "start": start + 700 * i, "end": start + 700 * (i + 1),
             "confidence": 0.9, "speaker": speaker}
            for i, r in enumerate(runs)
        ]  # fmt: skip
        utterances.append({"speaker": speaker, "start": start, "end": words[-1]["end"],
                           "text": "".join(runs), "confidence": 0.9, "words": words})  # fmt: skip
    return {"id": "t-ja", "status": "completed", "audio_duration": 120, "speaker_labels": True,
            "language_code": "ja", "utterances": utterances,
            "text": "".join(u["text"] for u in utterances),
            "words": [w for u in utterances for w in u["words"]]}  # fmt: skip


def check(quotes: list[tuple[str, int]]) -> tuple[list[dict], dict]:
    meeting = moments.read(japanese_transcript())
    answer = {"action_items": [
        {"quote": q, "said_at": at, "said_by": "A", "text": "x", "owner": None,
         "owner_source": None, "due": None}
        for q, at in quotes
    ]}  # fmt: skip
    parsed = action_items.parse(json.dumps(answer), "stop", moments=True)
    result, counts = moments.checked(parsed, meeting, {"kind": "url", "audio_url": "https://m/a"})
    return result.items, counts


def test_japanese_quotes_copied_exactly_get_their_times_and_speakers():
    items, counts = check([
        ("田中さん、金曜日までに報告書を送ってください。", 0),
        ("鈴木さんが月曜日までにテンプレートを作ります。", 0),
        ("私が明日までに予算案をまとめます。", 60),
    ])  # fmt: skip
    assert counts["not_found"] == 0, items
    assert [(i["said_at"], i["said_by"]) for i in items] == [
        (15, "Speaker A"), (38, "Speaker A"), (53, "Speaker C"),
    ]  # fmt: skip
    # The quote's first character's word gives the time: 私が is the third word of C's turn.
    assert items[2]["quote"] == "私が明日までに予算案をまとめます。"
    assert items[0]["link"] == "https://m/a#t=15"


def test_full_width_forms_and_other_punctuation_still_match():
    # Half-width katakana, full-width comma and digits, Western punctuation.
    items, counts = check([("田中さん,金曜日までに報告書を送ってください!", 0),
                           ("鈴木さんが月曜日までにﾃﾝﾌﾟﾚｰﾄを作ります", 40)])  # fmt: skip
    assert counts["not_found"] == 0, items
    assert [i["said_at"] for i in items] == [15, 38]
    assert tokens.words_of("ＡＢＣ１２３\u3000Ｆｒｉｄａｙ!") == ["abc123", "friday"]
    assert tokens.words_of("Straße ÉTÉ") == ["strasse", "été"]


def test_a_quote_not_said_is_still_not_found_in_japanese():
    items, counts = check([("山田さん、水曜日までに請求書を払ってください。", 0)])
    assert counts["not_found"] == 1 and items[0]["said_at"] is None


# --- what a caller may send --------------------------------------------------------------


@pytest.mark.parametrize(
    "body, field",
    [
        ({"language_code": "klingon"}, "language_code"),
        ({"items_language": "xx"}, "items_language"),
        ({"expected_languages": "es"}, "expected_languages"),
        ({"expected_languages": ["es", "zz"]}, "expected_languages"),
        ({"language_confidence_threshold": 1.5}, "language_confidence_threshold"),
        ({"language_confidence_threshold": True}, "language_confidence_threshold"),
        ({"language_code": "es", "expected_languages": ["es"]}, "expected_languages"),
    ],
)
def test_language_fields_are_checked_against_the_spec(body, field):
    with pytest.raises(inputs.InvalidRequest) as refused:
        inputs.submission({"audio_url": "https://h/a.mp3", **body})
    assert refused.value.field == field and refused.value.status == 400


def test_upload_metadata_and_environment_defaults_carry_the_language_settings():
    obj = storage_object.StorageObject("b", "m.wav", "1", 10, "audio/wav", {
        "expected_languages": "es, en", "language_confidence_threshold": "0.6",
        "items_language": "en"}, None)  # fmt: skip
    sub = storage_object.submission_for(obj, "https://s/u")
    assert sub.expected_languages == ("es", "en") and sub.language_confidence_threshold == 0.6
    assert sub.items_language == "en" and sub.language_code is None

    cfg = config.from_env({"EXPECTED_LANGUAGES": "de,en", "LANGUAGE_CONFIDENCE_THRESHOLD": "0.4",
                           "ITEMS_LANGUAGE": "en"})  # fmt: skip
    assert cfg.expected_languages == ("de", "en") and cfg.language_confidence_threshold == 0.4
    assert cfg.items_language == "en"
    for env in ({"EXPECTED_LANGUAGES": "de,xx"}, {"LANGUAGE_CONFIDENCE_THRESHOLD": "2"},
                {"ITEMS_LANGUAGE": "german"}):  # fmt: skip
        with pytest.raises(config.ConfigError):
            config.from_env(env)


def test_the_prompt_names_the_language_in_words():
    assert languages.name("es") == "Spanish" and languages.name("en_uk") == "English"
    assert languages.name("ja") == "Japanese" and languages.name("no") == "Norwegian"
    body = prompt.request_body("t", "m", "bullet points", 100, "A = X\n0|A hola", False,
                                     "German")  # fmt: skip
    assert "in German" in body["messages"][1]["content"]
    placeholder = prompt.request_body("t", "m", "bullet points", 100, None, False, "German")
    assert "in German" in placeholder["messages"][1]["content"]


@pytest.mark.parametrize(
    "asked",
    [
        {"expected_languages": ["es", "en"], "language_confidence_threshold": 0.6},
        {},
        {"language_code": "es"},
    ],
)
def test_a_document_the_webhook_builds_records_the_language_asked_as_submit_does(
    monkeypatch, asked
):
    """When the delivery comes before submit's write (it loses the race, or
    Firestore was away), the webhook builds the document from AssemblyAI's
    record: its language options are the ones submit would have written,
    not the detected language as if it had been asked for."""
    from fakes import FakeAssemblyAI, MemoryStore, answer

    from meeting_actions import hints, lifecycle, record, submit, transcript_ready

    cfg = config.from_env(
        {"ASSEMBLYAI_API_KEY": "k", "WEBHOOK_URL": "https://h.example/", "WEBHOOK_SECRET": "s"}
    )
    sub = inputs.submission({"audio_url": "https://h.example/a.mp3", **asked})
    store = MemoryStore()
    record.use(store)
    try:
        aai = FakeAssemblyAI().install(monkeypatch)
        aai.gateway = lambda body: answer(json.dumps({"action_items": []}))
        params = {"audio_url": sub.audio_url, "speaker_labels": True}
        params.update(
            languages.detection_params(
                sub.language_code, sub.expected_languages, sub.language_confidence_threshold
            )
        )
        aai.transcripts["t-es"] = {
            "id": "t-es", "status": "completed", "audio_url": sub.audio_url, "text": "Hola.",
            "audio_duration": 60, "language_code": "es", "language_confidence": 0.97,
            "speaker_labels": True, "utterances": [], **params,
        }  # fmt: skip
        done = transcript_ready.complete(cfg, "t-es", hints.Hints(), lifecycle.deadline_of(cfg))
        assert done.status == "completed", done
        doc = store.docs[(cfg.collection, "t-es")][0]
    finally:
        record.use(None)
    wanted = submit.options_of(sub, cfg)
    assert {k: doc["options"].get(k) for k in languages.OPTIONS} == {
        k: wanted[k] for k in languages.OPTIONS
    }
    assert doc["language_code"] == "es" and doc["language_confidence"] == 0.97
