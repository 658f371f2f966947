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

MAX_URL_LENGTH = 4096
MAX_METADATA_KEYS = 20
MAX_METADATA_VALUE = 500
_METADATA_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(?:[_-][A-Za-z0-9]{2,4})?$")
_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
# AssemblyAI ids are UUIDs; allow any plain token that is safe as a
# Firestore document id (no "/", not "." or "..").
_TRANSCRIPT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


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
class Submission:
    audio_url: str
    speech_models: tuple[str, ...] | None = None
    language_code: str | None = None
    speaker_labels: bool | None = None
    answer_format: str | None = None
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)


SUBMIT_FIELDS = (
    "audio_url",
    "speech_models",
    "language_code",
    "speaker_labels",
    "answer_format",
    "metadata",
)


def audio_url(value: Any, field: str = "audio_url") -> str:
    """An absolute http(s) URL AssemblyAI can fetch."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{field} is required: the http(s) URL of the recording", field=field)
    value = value.strip()
    if len(value) > MAX_URL_LENGTH or any(c.isspace() for c in value):
        raise InvalidRequest(f"{field} is not a valid URL", field=field)
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise InvalidRequest(f"{field} is not a valid URL", field=field) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"{field} must be an http or https URL", field=field)
    return value


def submission(body: Any) -> Submission:
    """Validate a submit_transcription body."""
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    unknown = sorted(str(k) for k in body if k not in SUBMIT_FIELDS)
    if unknown:
        raise InvalidRequest("unknown field(s): " + ", ".join(unknown)[:200], field=unknown[0][:64])
    return Submission(
        audio_url=audio_url(body.get("audio_url")),
        speech_models=_speech_models(body.get("speech_models")),
        language_code=_optional_str(
            body, "language_code", _LANGUAGE, "a language code such as en_us"
        ),
        speaker_labels=_optional_bool(body, "speaker_labels"),
        answer_format=_answer_format(body.get("answer_format")),
        metadata=metadata(body.get("metadata")),
    )


def _speech_models(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= 10
        or not all(isinstance(m, str) and _MODEL.match(m) for m in value)
    ):
        raise InvalidRequest(
            "speech_models must be a list of 1 to 10 model names", field="speech_models"
        )
    return tuple(value)


def _optional_str(body: dict, field: str, pattern: re.Pattern, what: str) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.match(value):
        raise InvalidRequest(f"{field} must be {what}", field=field)
    return value


def _optional_bool(body: dict, field: str) -> bool | None:
    value = body.get(field)
    if value is not None and not isinstance(value, bool):
        raise InvalidRequest(f"{field} must be true or false", field=field)
    return value


def _answer_format(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise InvalidRequest(
            "answer_format must be a short text such as 'bullet points'", field="answer_format"
        )
    return " ".join(value.split())


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
        if not _METADATA_KEY.match(key):
            raise InvalidRequest(
                "metadata keys must be 1-64 letters, digits, '_' or '-', starting with a letter",
                field="metadata",
            )
        if not isinstance(item, str) or len(item) > MAX_METADATA_VALUE:
            raise InvalidRequest(
                f"metadata.{key} must be a string of at most {MAX_METADATA_VALUE} characters",
                field="metadata",
            )
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
    if not isinstance(tid, str) or not _TRANSCRIPT_ID.match(tid):
        raise InvalidRequest("transcript_id is missing or malformed", field="transcript_id")
    return WebhookEvent(tid, status)
