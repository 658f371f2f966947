"""Recordings uploaded to a Cloud Storage bucket start the same pipeline.

Eventarc delivers each `object.finalized` event at least once, so the
object's (bucket, name, generation) is claimed in Firestore with a create
that fails if it exists: one submission per object version, however often
its event arrives. A malformed, foreign or unwanted event is logged and
acknowledged (raising would make Eventarc retry it forever); a transient
failure raises, so the platform retries it, and the claim keeps the retry
idempotent.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import os
from typing import Any

from . import inputs, logs, pipeline, record
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
GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
OVERRIDE_KEYS = ("language_code", "speaker_labels", "speech_models", "answer_format")
# Custom metadata that marks an object as not a meeting (for example one a
# team's own tooling wrote next to the recordings).
SKIP_MARK = ("meeting-actions", "skip")
CLAIM_SECONDS = 300


class Transient(Exception):
    """Worth retrying: Eventarc redelivers the event when this is raised."""


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
    """A StorageObjectData; size and generation may be strings or numbers."""
    if not isinstance(data, dict):
        raise ValueError("event data is not an object")
    bucket, name = data.get("bucket"), data.get("name")
    if not isinstance(bucket, str) or not bucket or not isinstance(name, str) or not name:
        raise ValueError("event data has no bucket or object name")
    generation = data.get("generation")
    if (
        isinstance(generation, bool)
        or not isinstance(generation, (str, int))
        or not str(generation).isdigit()
    ):
        raise ValueError("event data has no valid generation")
    size = data.get("size")
    try:
        size = int(size) if size is not None and not isinstance(size, bool) else None
    except (TypeError, ValueError):
        size = None
    metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    created = None
    if isinstance(data.get("timeCreated"), str):
        try:
            created = dt.datetime.fromisoformat(data["timeCreated"].replace("Z", "+00:00"))
        except ValueError:
            created = None
    content_type = data.get("contentType") if isinstance(data.get("contentType"), str) else ""
    return StorageObject(
        bucket, name, str(generation), size, content_type.split(";")[0].strip().lower(),
        {str(k): v for k, v in metadata.items() if isinstance(v, str)}, created,
    )  # fmt: skip


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


def submission_for(obj: StorageObject, audio_url: str) -> inputs.Submission:
    """The submission, with per-object overrides from custom metadata."""
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
    extra = {k: v for k, v in meta.items() if k not in OVERRIDE_KEYS and k != SKIP_MARK[0]}
    body["metadata"] = dict(sorted(extra.items())[: inputs.MAX_METADATA_KEYS])
    try:
        return inputs.submission(body)
    except inputs.InvalidRequest as exc:
        logs.warning(f"ignored the object's metadata overrides: {exc.message}", object=obj.uri)
        return inputs.submission({"audio_url": audio_url})


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


def streamed_upload(cfg: Config, obj: StorageObject) -> str:
    """Stream the object to AssemblyAI's /v2/upload, a chunk at a time."""
    from . import assemblyai

    blob = _storage_client().bucket(obj.bucket).blob(obj.name, generation=int(obj.generation))
    with blob.open("rb", chunk_size=8 * 1024 * 1024) as stream:
        return assemblyai.upload(cfg, stream)


# --- the event ------------------------------------------------------------------


def _claim_ref(cfg: Config, obj: StorageObject):
    key = hashlib.sha256(f"{obj.bucket}/{obj.name}#{obj.generation}".encode()).hexdigest()[:40]
    return record.client().collection(f"{cfg.collection}-uploads").document(key)


def _claim(cfg: Config, obj: StorageObject) -> Any | None:
    """Claim this object version; None if it is (being) submitted already."""
    ref = _claim_ref(cfg, obj)
    at = record.now()
    fields = {
        "status": "submitting",
        "uri": obj.uri,
        "generation": obj.generation,
        "lease_expires_at": at + dt.timedelta(seconds=CLAIM_SECONDS),
        "updated_at": record.firestore.SERVER_TIMESTAMP,
    }
    try:
        return ref.create(fields, **record.QUICK).update_time
    except record.LostRace:
        pass
    snap = ref.get(**record.QUICK)
    data = snap.to_dict() or {}
    expires = data.get("lease_expires_at")
    if data.get("status") != "submitting" or (isinstance(expires, dt.datetime) and expires > at):
        return None
    try:  # an earlier attempt failed or died: take over its claim
        option = record.client().write_option(last_update_time=snap.update_time)
        return ref.update(fields, option=option, **record.QUICK).update_time
    except record.LostRace:
        return None


def on_object_finalized(cfg: Config, event_type: str, data: Any) -> None:
    """Submit a finalized object once; raise Transient to be retried."""
    if event_type != EVENT_TYPE:
        logs.warning("ignored an event of another type", event_type=str(event_type)[:100])
        return
    try:
        obj = parse(data)
    except ValueError as exc:
        logs.warning(f"ignored a malformed storage event: {exc}")
        return
    reason = skip_reason(obj, cfg)
    if reason:
        logs.info(f"skipped {obj.uri}: {reason}", object=obj.uri)
        return
    if obj.time_created and record.now() - obj.time_created > dt.timedelta(
        seconds=cfg.max_event_age
    ):
        logs.error(f"dropped an event older than {cfg.max_event_age} s", object=obj.uri)
        return
    cfg.require("api_key", "webhook_url", "webhook_secret")
    version = _claim(cfg, obj)
    if version is None:
        logs.info(f"{obj.uri}#{obj.generation} was submitted already", object=obj.uri)
        return
    ref = _claim_ref(cfg, obj)
    try:
        if cfg.audio_delivery == "upload":
            audio_url = streamed_upload(cfg, obj)
        else:
            audio_url = signed_url(obj, cfg.signed_url_seconds)
        outcome = pipeline.submit(cfg, submission_for(obj, audio_url), source=obj.source())
    except Exception:
        _release(ref, version)
        raise
    tid = outcome.body.get("transcript_id")
    if outcome.status == 202:
        ref.update(
            {"status": "submitted", "transcript_id": tid, "lease_expires_at": None},
            **record.PATIENT,
        )
        logs.info(f"submitted {obj.uri}", tid, object=obj.uri)
        return
    if outcome.status >= 500 and outcome.status != 502:
        _release(ref, version)
        raise Transient(f"{obj.uri}: {outcome.body.get('error')}")
    message = outcome.body.get("error", "refused")
    ref.update({"status": "error", "error": message, "lease_expires_at": None}, **record.PATIENT)
    logs.error(f"could not submit {obj.uri}: {message}", object=obj.uri)


def _release(ref: Any, version: Any) -> None:
    """Give the claim back so the retried event can take it at once."""
    try:
        option = record.client().write_option(last_update_time=version)
        ref.update({"lease_expires_at": record.now()}, option=option, **record.QUICK)
    except (record.LostRace, *record.Unavailable):
        pass  # the lease expires by itself
