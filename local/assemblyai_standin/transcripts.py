"""A sample meeting as AssemblyAI returns it: words, utterances, sentences,
paragraphs and speaker identification, all derived deterministically from
the sample's utterances (speaker label, start, end, text).

Word times are spread evenly over their utterance (real word timestamps are
accurate to about 400 ms; these are exact by construction), and every
confidence is a fixed function of the word, so two runs answer the same.
"""

from __future__ import annotations

import re
import zlib
from typing import Any

_SENTENCE_END = re.compile(r"[.!?。！？][\"')\]」』]*$")
# Where a language is written without spaces (Japanese here), AssemblyAI's
# words are short runs of characters of one kind, punctuation attached to
# the run before it, and no spaces between them in any text.
_RUN = 3


def _kind(char: str) -> str:
    point = ord(char)
    if 0x3040 <= point <= 0x309F:
        return "hiragana"
    if 0x30A0 <= point <= 0x30FF:
        return "katakana"
    if 0x3400 <= point <= 0x9FFF or 0x3005 <= point <= 0x3007:
        return "kanji"
    return "other" if char.isalnum() else "punct"


def spaceless(text: str) -> bool:
    """An utterance of a language written without spaces (no space, some kana or kanji)."""
    return " " not in text.strip() and any(
        _kind(c) != "other" and _kind(c) != "punct" for c in text
    )


def runs(text: str) -> list[str]:
    """The utterance's words as AssemblyAI gives them for such a language:
    runs of at most _RUN characters of one kind, punctuation kept on the run before."""
    out: list[str] = []
    kind = None
    for char in text:
        k = _kind(char)
        if k == "punct" and out:
            out[-1] += char
            kind = "punct"
        elif out and k == kind and len(out[-1]) < _RUN:
            out[-1] += char
        else:
            out.append(char)
            kind = k
    return out


# A long meeting's pace (lengthened): an hour is 9,000 words.
WORDS_PER_MINUTE = 150


def _confidence(token: str, index: int) -> float:
    """A deterministic confidence between 0.80 and 0.99."""
    return round(0.80 + (zlib.crc32(f"{index}:{token}".encode()) % 20) / 100, 2)


def _words(utterance: dict, speaker: str | None, first_index: int) -> list[dict]:
    text = utterance["text"]
    tokens = runs(text) if spaceless(text) else text.split()
    start, end = int(utterance["start"]), int(utterance["end"])
    span = max(end - start, len(tokens))
    words = []
    for i, token in enumerate(tokens):
        words.append(
            {
                "text": token,
                "start": start + span * i // len(tokens),
                "end": start + span * (i + 1) // len(tokens),
                "confidence": _confidence(token, first_index + i),
                "speaker": speaker,
            }
        )
    return words


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 5) if values else 0.0


def lengthened(sample: dict, seconds: float) -> dict:
    """The sample said again and again for `seconds`: its utterances in
    order, each lasting its words at WORDS_PER_MINUTE, one right after the
    other (an hour is 9,000 words). Speakers and ground truth names stay
    the sample's, so speaker identification answers as it does for it."""
    ms_per_word = 60_000 / WORDS_PER_MINUTE
    end = int(seconds * 1000)
    utterances, at = [], 0
    while at < end and sample["utterances"]:
        for u in sample["utterances"]:
            length = max(1, round(len(u["text"].split()) * ms_per_word))
            utterances.append({"speaker": u["speaker"], "start": at, "end": at + length,
                               "text": u["text"]})  # fmt: skip
            at += length
            if at >= end:
                break
    return {**sample, "utterances": utterances, "audio_duration": max(1, round(at / 1000))}


def segments(sample: dict, labels: bool, mapping: dict[str, str]) -> list[dict]:
    """One segment per sample utterance: its speaker (None without speaker
    labels; the identified name where there is one) and its words."""
    out, index = [], 0
    for u in sample["utterances"]:
        speaker = mapping.get(u["speaker"], u["speaker"]) if labels else None
        words = _words(u, speaker, index)
        index += len(words)
        out.append(
            {
                "speaker": speaker,
                "start": int(u["start"]),
                "end": int(u["end"]),
                "text": u["text"],
                "words": words,
                "confidence": _mean([w["confidence"] for w in words]),
                "tight": spaceless(u["text"]),
            }
        )
    return out


def transcript_fields(segs: list[dict], labels: bool) -> dict[str, Any]:
    """text, words, utterances (null without speaker labels) and confidence."""
    words = [w for s in segs for w in s["words"]]
    utterances = (
        [
            {
                "speaker": s["speaker"],
                "start": s["start"],
                "end": s["end"],
                "text": s["text"],
                "confidence": s["confidence"],
                "words": s["words"],
            }
            for s in segs
        ]
        if labels
        else None
    )
    return {
        "text": " ".join(s["text"] for s in segs),
        "words": words,
        "utterances": utterances,
        "confidence": _mean([w["confidence"] for w in words]),
    }


def sentences(segs: list[dict]) -> list[dict]:
    """TranscriptSentence objects: a sentence ends at a word ending in . ! or ?,
    and never spans two utterances."""
    out = []
    for s in segs:
        current: list[dict] = []
        for i, word in enumerate(s["words"]):
            current.append(word)
            if _SENTENCE_END.search(word["text"]) or i == len(s["words"]) - 1:
                out.append(
                    {
                        "text": ("" if s.get("tight") else " ").join(w["text"] for w in current),
                        "start": current[0]["start"],
                        "end": current[-1]["end"],
                        "confidence": _mean([w["confidence"] for w in current]),
                        "words": current,
                        "speaker": s["speaker"],
                    }
                )
                current = []
    return out


def paragraphs(segs: list[dict]) -> list[dict]:
    """TranscriptParagraph objects, one per utterance. The spec's paragraph
    has no speaker field (additionalProperties: false); its words carry it."""
    return [
        {
            "text": s["text"],
            "start": s["start"],
            "end": s["end"],
            "confidence": s["confidence"],
            "words": s["words"],
        }
        for s in segs
    ]


# --- speaker identification -------------------------------------------------


def _same_person(given: str, true: str) -> bool:
    """ "Priya" and "Priya Raman" name the same person; case is ignored."""
    g, t = given.casefold().split(), true.casefold().split()
    return bool(g and t) and (g == t or g[0] == t[0] and (len(g) == 1 or len(t) == 1))


def identify(sample: dict, request: dict) -> dict[str, str]:
    """The label -> name (or role) mapping for a SpeakerIdentificationRequestBody's
    `speaker_identification` object.

    speaker_type "name": the sample's true map (`"speakers": {"A": "Dana"}`)
    decides who is who; each given name (known_values, or speakers[].name)
    that matches a true name takes that label, written as given. Labels whose
    person was not named stay labels. With no names given, the true names.
    Without a true map (or for roles, or the sample's `"roles"` map if any),
    the given values go to the labels in order of first appearance.
    """
    kind = request.get("speaker_type", "name")
    given = list(request.get("known_values") or []) or [
        str(s[kind]) for s in request.get("speakers") or [] if isinstance(s, dict) and s.get(kind)
    ]
    labels = list(dict.fromkeys(u["speaker"] for u in sample["utterances"]))
    truth = sample.get("speakers" if kind == "name" else "roles") or {}
    if not truth:
        return dict(zip(labels, given, strict=False))
    if not given:
        return {label: truth[label] for label in labels if label in truth}
    mapping: dict[str, str] = {}
    for label in labels:
        if label not in truth:
            continue
        match = next(
            (g for g in given if g not in mapping.values() and _same_person(g, truth[label])),
            None,
        )
        if match is not None:
            mapping[label] = match
    return mapping


# --- the language ----------------------------------------------------------


def language(transcript: dict, options: dict, sample: dict) -> dict[str, Any]:
    """language_code and language_confidence of a completed transcript.

    With language_detection: the sample's language and confidence; a
    language not in expected_languages gives the first expected one (the
    "auto" fallback), at a lower confidence; a confidence under
    language_confidence_threshold fails the transcript (ValueError), as the
    spec says. Without: the code asked for (en_us by default), no confidence.
    """
    if not transcript.get("language_detection"):
        return {"language_code": transcript.get("language_code") or "en_us"}
    code = sample.get("language_code", "en_us")
    confidence = float(sample.get("language_confidence", 0.99))
    expected = [c for c in options.get("expected_languages") or [] if c != "all"]
    if expected and code not in expected and code.split("_")[0] not in expected:
        fallback = options.get("fallback_language", "auto")
        code = expected[0] if fallback in ("auto", None) else fallback
        confidence = round(confidence / 3, 4)
    limit = transcript.get("language_confidence_threshold")
    if isinstance(limit, (int, float)) and confidence < limit:
        raise ValueError(
            f"detected language '{code}', confidence {confidence}, is below the requested "
            f"confidence threshold value of '{limit}'"
        )
    return {"language_code": code, "language_confidence": confidence}


# --- PII redaction ----------------------------------------------------------

# The policies the stand-in can redact, and what it finds for each.
_PII = {
    "phone_number": re.compile(r"\(?\b\d{3}\)?[-. ]\d{3}[-. ]\d{4}\b|\b\d{3}-\d{4}\b"),
    "email_address": re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b"),
}


def redact(text: str, policies: list[str], sub: str) -> str:
    """`text` with each match of a supported policy replaced: by `#` for
    each character (redact_pii_sub "hash", the default) or by the entity's
    name ("entity_name": "[PHONE_NUMBER]")."""
    for policy in policies:
        pattern = _PII.get(policy)
        if pattern is None:
            continue
        if sub == "entity_name":
            text = pattern.sub(f"[{policy.upper()}]", text)
        else:
            text = pattern.sub(lambda m: re.sub(r"\S", "#", m.group(0)), text)
    return text
