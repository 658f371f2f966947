"""An uploaded object, as a storage event describes it: checked (a
malformed one is refused, never retried), what its metadata asks for (the
same options as submit's body), and how AssemblyAI gets its bytes (a signed
URL, or the bytes streamed to /v2/upload).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import os
import re
import time
from typing import Any

from . import inputs, languages, logs, text
from .config import Config

EVENT_TYPE = "google.cloud.storage.object.v1.finalized"
AUDIO_EXTENSIONS = frozenset(
    [
        "mp3",
        "mp4",
        "m4a",
        "m4v",
        "wav",
        "wave",
        "aac",
        "flac",
        "ogg",
        "oga",
        "opus",
        "webm",
        "mov",
        "mkv",
        "wma",
        "amr",
        "3gp",
        "3ga",
        "aiff",
        "aif",
        "mpeg",
        "mpga",
        "mpg",
        "avi",
        "wmv",
    ]
)
# Cloud Storage's bucket naming rules (3-222 characters, dots for domain
# names), matched whole (fullmatch: "$" also matches before a final newline).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
# Cloud Storage's limit for an object name, in UTF-8 bytes.
MAX_NAME_BYTES = 1024
MAX_CONTENT_TYPE_BYTES = 255
GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
OVERRIDE_KEYS = ("language_code", "speaker_labels", "speech_models", "answer_format",
                 "redact_pii", "redact_pii_policies", "redact_pii_sub",
                 "expected_languages", "language_confidence_threshold", "items_language")  # fmt: skip
# Custom metadata that marks an object as not a meeting (for example one a
# team's own tooling wrote next to the recordings).
SKIP_MARK = ("meeting-actions", "skip")


@dataclasses.dataclass(frozen=True)
class StorageObject:
    bucket: str
    name: str
    generation: str
    size: int | None
    content_type: str
    metadata: dict[str, str]
    time_created: dt.datetime | None

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}"

    def source(self) -> dict[str, Any]:
        return {
            "kind": "gcs",
            "uri": self.uri,
            "bucket": self.bucket,
            "name": self.name,
            "generation": self.generation,
            "size": self.size,
            "content_type": self.content_type or None,
        }


def parse(data: Any) -> StorageObject:
    """A StorageObjectData; size and generation may be strings or numbers.
    Raises ValueError (text.BadText is one) for an event that names no
    object this function could submit."""
    if not isinstance(data, dict):
        raise ValueError("event data is not an object")
    bucket, name = data.get("bucket"), data.get("name")
    if not isinstance(bucket, str) or not bucket or not isinstance(name, str) or not name:
        raise ValueError("event data has no bucket or object name")
    if not _BUCKET.fullmatch(bucket):
        raise ValueError("event data has no valid bucket name")
    text.check(name, "the object name", MAX_NAME_BYTES, control=True)
    generation = data.get("generation")
    if (
        isinstance(generation, bool)
        or not isinstance(generation, (str, int))
        or not str(generation).isascii()
        or not str(generation).isdigit()
        or len(str(generation)) > 20
    ):
        raise ValueError("event data has no valid generation")
    size = data.get("size")
    try:
        size = int(size) if size is not None and not isinstance(size, bool) else None
    except (TypeError, ValueError):
        size = None
    metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    created = _time(data.get("timeCreated"))
    content_type = data.get("contentType")
    if not isinstance(content_type, str) or not _storable(content_type, MAX_CONTENT_TYPE_BYTES):
        content_type = ""  # read as missing
    return StorageObject(
        bucket, name, str(generation), size, content_type.split(";")[0].strip().lower(),
        {str(k): v for k, v in metadata.items() if isinstance(v, str)}, created,
    )  # fmt: skip


def _time(value: Any) -> dt.datetime | None:
    """An RFC 3339 time; one without an offset is read as UTC."""
    if not isinstance(value, str):
        return None
    try:
        at = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)


def _storable(value: str, max_bytes: int) -> bool:
    try:
        text.check(value, "value", max_bytes)
    except text.BadText:
        return False
    return True


def skip_reason(obj: StorageObject, cfg: Config) -> str | None:
    """Why this object is not a meeting to transcribe, or None."""
    if obj.name.endswith("/"):
        return "a folder placeholder"
    if cfg.audio_prefix and not obj.name.startswith(cfg.audio_prefix):
        return f"outside the prefix {cfg.audio_prefix!r}"
    if obj.size is not None and obj.size == 0:
        return "an empty object"
    if obj.size is not None and obj.size > cfg.max_audio_bytes:
        return f"larger than MAX_AUDIO_BYTES ({cfg.max_audio_bytes})"
    if obj.metadata.get(SKIP_MARK[0]) == SKIP_MARK[1]:
        return "marked meeting-actions=skip"
    major = obj.content_type.split("/")[0]
    if major in ("audio", "video"):
        return None
    extension = obj.name.rsplit(".", 1)[-1].lower() if "." in obj.name.rsplit("/", 1)[-1] else ""
    if obj.content_type in GENERIC_TYPES and extension in AUDIO_EXTENSIONS:
        return None
    return f"not audio or video (content type {obj.content_type or 'missing'!r})"


def submission_for(
    obj: StorageObject, audio_url: str, default_notify_url: str = "", allow_local: bool = False
) -> inputs.Submission:
    """The submission, with per-object overrides from custom metadata.

    `speakers` names the meeting's participants: comma-separated names
    (`Priya, Dana Lee`), or, to describe them, `;`-separated entries of
    `Name: description` (`Priya: runs finance; Dana Lee: chairs`). Overrides
    that do not validate are ignored with a warning (speakers alone when
    only they are at fault), and the meeting is transcribed all the same.
    """
    meta = obj.metadata
    body: dict[str, Any] = {"audio_url": audio_url}
    if meta.get("language_code"):
        body["language_code"] = meta["language_code"]
    if meta.get("speaker_labels", "").lower() in ("true", "false"):
        body["speaker_labels"] = meta["speaker_labels"].lower() == "true"
    if meta.get("speech_models"):
        body["speech_models"] = [m.strip() for m in meta["speech_models"].split(",") if m.strip()]
    if meta.get("answer_format"):
        body["answer_format"] = meta["answer_format"]
    if meta.get("redact_pii", "").lower() in ("true", "false"):
        body["redact_pii"] = meta["redact_pii"].lower() == "true"
    if meta.get("redact_pii_policies"):
        body["redact_pii_policies"] = [
            p.strip() for p in meta["redact_pii_policies"].split(",") if p.strip()
        ]
    if meta.get("redact_pii_sub"):
        body["redact_pii_sub"] = meta["redact_pii_sub"].strip()
    body.update(languages.of_metadata(meta))
    notify_url = meta.get("notify_url", "").strip() or default_notify_url
    if meta.get("speakers", "").strip():
        raw = meta["speakers"]
        entries = [e.strip() for e in raw.split(";" if ";" in raw else ",") if e.strip()]
        body["speakers"] = [
            {"name": e.split(":", 1)[0].strip(), "description": e.split(":", 1)[1].strip() or None}
            if ":" in e
            else e
            for e in entries
        ]
    overrides = (*OVERRIDE_KEYS, "speakers", "notify_url", SKIP_MARK[0])
    extra = {k: v for k, v in meta.items() if k not in overrides}
    body["metadata"] = dict(sorted(extra.items())[: inputs.MAX_METADATA_KEYS])
    if notify_url:
        try:
            body["notify_url"] = inputs.notify_url(notify_url, allow_local)
        except inputs.InvalidRequest as exc:
            logs.warning(f"ignored the object's notify_url: {exc.message}", object=obj.uri)
    try:
        return inputs.submission(body, allow_local)
    except inputs.InvalidRequest as exc:
        if exc.field == "speakers" and body.pop("speakers", None) is not None:
            logs.warning(f"ignored the object's speakers metadata: {exc.message}", object=obj.uri)
            try:
                return inputs.submission(body, allow_local)
            except inputs.InvalidRequest as again:
                exc = again
        logs.warning(f"ignored the object's metadata overrides: {exc.message}", object=obj.uri)
        kept = {k: body[k] for k in ("audio_url", "notify_url") if k in body}
        return inputs.submission(kept, allow_local)


# --- getting the audio to AssemblyAI --------------------------------------------


@functools.cache
def _storage_client():
    from google.cloud import storage  # only the storage function pays for this import

    return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT") or None)


def signed_url(obj: StorageObject, seconds: int) -> str:
    """A V4 signed GET URL of exactly this object version.

    With a key file (tests, local runs) the URL is signed locally; on Cloud
    Functions there is none, and the function's own service account signs
    through the IAM Credentials signBlob API (it needs Token Creator on
    itself).
    """
    import google.auth
    import google.auth.transport.requests

    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    kwargs: dict[str, Any] = {"credentials": credentials}
    if not hasattr(credentials, "sign_bytes"):
        credentials.refresh(google.auth.transport.requests.Request())
        kwargs = {
            "service_account_email": credentials.service_account_email,
            "access_token": credentials.token,
        }
    client = _storage_client()
    blob = client.bucket(obj.bucket).blob(obj.name)
    return blob.generate_signed_url(
        version="v4",
        method="GET",
        expiration=dt.timedelta(seconds=seconds),
        api_access_endpoint=os.environ.get("STORAGE_EMULATOR_HOST")
        or "https://storage.googleapis.com",
        query_parameters={"generation": obj.generation},
        **kwargs,
    )


def streamed_upload(cfg: Config, obj: StorageObject, deadline: float) -> str:
    """Stream the object to AssemblyAI's /v2/upload, a chunk at a time,
    within the function's own deadline."""
    from . import assemblyai

    blob = _storage_client().bucket(obj.bucket).blob(obj.name, generation=int(obj.generation))
    with blob.open("rb", chunk_size=8 * 1024 * 1024) as stream:
        return assemblyai.upload(cfg, stream, timeout=max(1.0, deadline - time.monotonic()))


# --- the event ------------------------------------------------------------------
