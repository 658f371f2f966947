"""What callers may send: the submit body and AssemblyAI's webhook body.

Everything is checked before anything is called or written, and every
refusal names the field, so a caller can fix its request.
"""

from __future__ import annotations

import dataclasses
import json
import re
import urllib.parse
from typing import Any

import flask

from . import languages, text
from .languages import FIELDS as LANGUAGE_FIELDS

# Every cap on text is in UTF-8 bytes, as Firestore and URLs count it; every
# string is read through text.check (no lone surrogates, no control
# characters unless said), and every pattern must match the whole string
# (fullmatch: "$" also matches before a final newline).
MAX_URL_BYTES = 4096
MAX_METADATA_KEYS = 20
MAX_METADATA_VALUE = 500  # bytes
MAX_ANSWER_FORMAT = 200  # bytes
MAX_CODE = 64  # bytes: language codes and model names
# The meeting's participants, for AssemblyAI's speaker identification: each
# name (the spec: "35 characters or less"), an optional short description.
# Both in characters, AssemblyAI's unit (at most 4 bytes each).
MAX_SPEAKERS = 20
MAX_SPEAKER_NAME = 35
MAX_SPEAKER_DESCRIPTION = 200
_METADATA_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
# AssemblyAI ids are UUIDs; allow any plain token that is safe as a
# Firestore document id (no "/", not "." or "..").
_TRANSCRIPT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


class InvalidRequest(Exception):
    """The request cannot be served as sent; `status` is the HTTP answer."""

    def __init__(self, message: str, status: int = 400, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field

    def body(self) -> dict[str, str]:
        body = {"error": self.message}
        if self.field:
            body["field"] = self.field
        return body


def checked_text(
    value: Any, field: str, max_bytes: int, control: bool = False, where: str | None = None
) -> str:
    """text.check, refusing with a 400 that names `field` (`where` says
    where inside it, for the message)."""
    try:
        return text.check(value, where or field, max_bytes, control)
    except text.BadText as exc:
        raise InvalidRequest(str(exc), field=field) from None


def read_json(request: flask.Request, max_bytes: int) -> Any:
    """The request's JSON body, refused before it is read whole if too big."""
    if request.method != "POST":
        raise InvalidRequest(f"method {request.method} not allowed, use POST", 405)
    length = request.content_length
    if length is not None and length > max_bytes:
        raise InvalidRequest(f"body is larger than {max_bytes} bytes", 413)
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise InvalidRequest(f"body is larger than {max_bytes} bytes", 413)
    if not raw.strip():
        raise InvalidRequest("body is empty, expected a JSON object")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidRequest("body is not valid JSON") from None


@dataclasses.dataclass(frozen=True)
class Speaker:
    name: str
    description: str | None = None


@dataclasses.dataclass(frozen=True)
class Submission:
    audio_url: str
    speech_models: tuple[str, ...] | None = None
    language_code: str | None = None
    speaker_labels: bool | None = None
    answer_format: str | None = None
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    speakers: tuple[Speaker, ...] = ()
    notify_url: str | None = None
    # PII redaction (privacy.py); None: the deployment's defaults.
    redact_pii: bool | None = None
    redact_pii_policies: tuple[str, ...] | None = None
    redact_pii_sub: str | None = None
    # The meeting's language (languages.py): detection options when no
    # language_code is given, and the language the items are written in.
    expected_languages: tuple[str, ...] | None = None
    language_confidence_threshold: float | None = None
    items_language: str | None = None


SUBMIT_FIELDS = (
    "audio_url",
    "speech_models",
    "language_code",
    "speaker_labels",
    "speakers",
    "answer_format",
    "metadata",
    "notify_url",
    "redact_pii",
    "redact_pii_policies",
    "redact_pii_sub",
    *LANGUAGE_FIELDS,
)


def audio_url(value: Any, field: str = "audio_url") -> str:
    """An absolute http(s) URL AssemblyAI can fetch."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{field} is required: the http(s) URL of the recording", field=field)
    value = checked_text(value.strip(), field, MAX_URL_BYTES)
    if any(c.isspace() for c in value):
        raise InvalidRequest(f"{field} is not a valid URL", field=field)
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise InvalidRequest(f"{field} is not a valid URL", field=field) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"{field} must be an http or https URL", field=field)
    return value


def submission(body: Any, allow_local_notify: bool = False) -> Submission:
    """Validate a submit_transcription body (loopback notify URLs only in local runs)."""
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    unknown = sorted(text.storable(str(k), 64) for k in body if k not in SUBMIT_FIELDS)
    if unknown:
        raise InvalidRequest("unknown field(s): " + ", ".join(unknown)[:200], field=unknown[0])
    sub = Submission(
        audio_url=audio_url(body.get("audio_url")),
        speech_models=_speech_models(body.get("speech_models")),
        **_languages(body),
        speaker_labels=_optional_bool(body, "speaker_labels"),
        speakers=speakers(body.get("speakers")),
        answer_format=answer_format(body.get("answer_format")),
        metadata=metadata(body.get("metadata")),
        notify_url=notify_url(body.get("notify_url"), allow_local_notify),
        **_redaction(body),
    )
    if sub.language_code and (sub.expected_languages or sub.language_confidence_threshold):
        field = "expected_languages" if sub.expected_languages else "language_confidence_threshold"
        raise InvalidRequest(
            f"{field} is for language detection, which a language_code turns off: "
            "send one or the other",
            field=field,
        )
    if sub.speakers and sub.speaker_labels is False:
        raise InvalidRequest(
            "speakers needs speaker_labels: AssemblyAI names speakers only with speaker "
            "labels on, so leave speaker_labels out or true",
            field="speakers",
        )
    return sub


def _redaction(body: dict) -> dict[str, Any]:
    """redact_pii, redact_pii_policies, redact_pii_sub, checked against the spec's enums."""
    from . import privacy

    redact = body.get("redact_pii")
    policies, sub = body.get("redact_pii_policies"), body.get("redact_pii_sub")
    try:
        privacy.check_redaction(redact, policies, sub)
    except privacy.Invalid as exc:
        raise InvalidRequest(str(exc), field=exc.field) from None
    return {
        "redact_pii": redact,
        "redact_pii_policies": tuple(policies) if policies is not None else None,
        "redact_pii_sub": sub,
    }


def _languages(body: dict) -> dict[str, Any]:
    try:
        return languages.of_body(body)
    except languages.Refused as exc:
        raise InvalidRequest(str(exc), field=exc.field) from None


def notify_url(value: Any, allow_local: bool) -> str | None:
    """Where to POST the signed result: https, or http to loopback in local runs."""
    from . import notify_address

    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest("notify_url must be an https URL", field="notify_url")
    checked_text(value, "notify_url", notify_address.MAX_URL_LENGTH)
    try:
        return notify_address.check_notify_url(value, allow_local)
    except ValueError as exc:
        raise InvalidRequest(f"notify_url: {exc}", field="notify_url") from None


def speakers(value: Any) -> tuple[Speaker, ...]:
    """The meeting's participants: names, or {"name", "description"} objects."""
    if value is None:
        return ()
    what = (
        f"speakers must be a list of at most {MAX_SPEAKERS} names, or of "
        '{"name": ..., "description": ...} objects'
    )
    if not isinstance(value, list) or len(value) > MAX_SPEAKERS:
        raise InvalidRequest(what, field="speakers")
    found: list[Speaker] = []
    for i, entry in enumerate(value):
        where = f"speakers[{i}]"
        description = None
        if isinstance(entry, dict):
            unknown = sorted(str(k)[:40] for k in entry if k not in ("name", "description"))
            if unknown:
                raise InvalidRequest(
                    f"{where} has unknown key(s) {', '.join(unknown)}: use name and description",
                    field="speakers",
                )
            name = entry.get("name")
            description = _speaker_text(
                entry.get("description"), f"{where}.description", MAX_SPEAKER_DESCRIPTION
            )
        elif isinstance(entry, str):
            name = entry
        else:
            raise InvalidRequest(what, field="speakers")
        name = _speaker_text(name, f"{where}.name" if isinstance(entry, dict) else where,
                             MAX_SPEAKER_NAME, required=True)  # fmt: skip
        assert name is not None
        if ":" in name:
            # A prompt line is "[12:34] Name: text": a colon would end the name.
            raise InvalidRequest(f"{where}: a name cannot contain ':'", field="speakers")
        if any(s.name.casefold() == name.casefold() for s in found):
            raise InvalidRequest(f"{where}: {name!r} is listed twice", field="speakers")
        found.append(Speaker(name, description))
    return tuple(found)


def _speaker_text(value: Any, where: str, limit: int, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{where} must be a string", field="speakers")
    said = checked_text(" ".join(value.split()), "speakers", 4 * limit, where=where)
    if not said and required:
        raise InvalidRequest(f"{where} is empty", field="speakers")
    if len(said) > limit:
        raise InvalidRequest(f"{where} is longer than {limit} characters", field="speakers")
    return said or None


def is_model_name(value: Any) -> bool:
    """A plausible model name (speech or LLM): letters, digits and . _ : -."""
    return isinstance(value, str) and bool(_MODEL.fullmatch(value))


def is_metadata_key(value: Any) -> bool:
    """1-64 letters, digits, '_' or '-', starting with a letter."""
    return isinstance(value, str) and bool(_METADATA_KEY.fullmatch(value))


def _speech_models(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    what = "speech_models must be a list of 1 to 10 model names"
    if not isinstance(value, list) or not 1 <= len(value) <= 10:
        raise InvalidRequest(what, field="speech_models")
    for i, model in enumerate(value):
        checked_text(model, "speech_models", MAX_CODE, where=f"speech_models[{i}]")
        if not is_model_name(model):
            raise InvalidRequest(what, field="speech_models")
    return tuple(value)


def _optional_str(body: dict, field: str, pattern: re.Pattern, what: str) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.fullmatch(checked_text(value, field, MAX_CODE)):
        raise InvalidRequest(f"{field} must be {what}", field=field)
    return value


def _optional_bool(body: dict, field: str) -> bool | None:
    value = body.get(field)
    if value is not None and not isinstance(value, bool):
        raise InvalidRequest(f"{field} must be true or false", field=field)
    return value


def answer_format(value: Any) -> str | None:
    """How the readable list is written: whitespace made single spaces."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(
            "answer_format must be a short text such as 'bullet points'", field="answer_format"
        )
    return checked_text(" ".join(value.split()), "answer_format", MAX_ANSWER_FORMAT)


def metadata(value: Any) -> dict[str, str]:
    """A small map of strings, stored as it is on the meeting's document."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_METADATA_KEYS:
        raise InvalidRequest(
            f"metadata must be an object of at most {MAX_METADATA_KEYS} string values",
            field="metadata",
        )
    for key, item in value.items():
        if not is_metadata_key(key):
            raise InvalidRequest(
                "metadata keys must be 1-64 letters, digits, '_' or '-', starting with a letter",
                field="metadata",
            )
        if not isinstance(item, str):
            raise InvalidRequest(
                f"metadata.{key} must be a string of at most {MAX_METADATA_VALUE} bytes",
                field="metadata",
            )
        checked_text(item, "metadata", MAX_METADATA_VALUE, control=True, where=f"metadata.{key}")
    return dict(value)


@dataclasses.dataclass(frozen=True)
class WebhookEvent:
    transcript_id: str | None
    status: str


def webhook_event(body: Any) -> WebhookEvent:
    """Validate AssemblyAI's delivery: {"transcript_id", "status"}."""
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    status = body.get("status")
    if not isinstance(status, str) or not status:
        raise InvalidRequest("status is required", field="status")
    if status == "redacted_audio_ready":
        return WebhookEvent(None, status)
    tid = body.get("transcript_id")
    if not isinstance(tid, str) or not _TRANSCRIPT_ID.fullmatch(tid):
        raise InvalidRequest("transcript_id is missing or malformed", field="transcript_id")
    return WebhookEvent(tid, status)
