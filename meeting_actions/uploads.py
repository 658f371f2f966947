"""Recordings uploaded to a Cloud Storage bucket start the same flow.

Eventarc delivers each `object.finalized` event at least once, so the
object's (bucket, name, generation) is claimed with the same lease as a
meeting (lease.py), in <collection>-uploads: one submission per object
version, however often its event arrives. A malformed, foreign or
unwanted event is logged and acknowledged (raising would make Eventarc
retry it for a day); so is one that can never be submitted (it ends the
upload in error). A transient failure before AssemblyAI accepted the job
raises, so the platform retries it. Once AssemblyAI accepted it, the transcript
id is recorded on the claim and the event is acknowledged whatever fails
next: a retried event would start a second, paid, transcript.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from typing import Any

from . import inputs, lease, lifecycle, logs, record, retention, storage_object, submit
from .config import Config
from .lifecycle import Done, Failure, Kind

# How long an attempt that may have reached AssemblyAI blocks a new one:
# longer than a long recording takes to transcribe and be delivered.
UNCERTAIN_SECONDS = 6 * 3600


class Transient(Exception):
    """Worth retrying: Eventarc redelivers the event when this is raised."""


def claim_key(obj: storage_object.StorageObject) -> str:
    return record.upload_key(obj.bucket, obj.name, obj.generation)


def on_object_finalized(cfg: Config, event_type: str, data: Any) -> None:
    """Submit a finalized object once; raise Transient to be retried."""
    if event_type != storage_object.EVENT_TYPE:
        logs.warning("ignored an event of another type", event_type=str(event_type)[:100])
        return
    try:
        obj = storage_object.parse(data)
    except ValueError as exc:
        logs.warning(f"ignored a malformed storage event: {exc}")
        return
    reason = storage_object.skip_reason(obj, cfg)
    if reason:
        logs.info(f"skipped {obj.uri}: {reason}", object=obj.uri)
        return
    if obj.time_created and record.now() - obj.time_created > dt.timedelta(
        seconds=cfg.max_event_age
    ):
        logs.error(f"dropped an event older than {cfg.max_event_age} s", object=obj.uri)
        return
    cfg.require("api_key", "webhook_url", "webhook_secret")
    deadline = lifecycle.deadline_of(cfg)
    try:
        held = _claim(cfg, obj)
    except record.Unavailable as exc:
        failure = lifecycle.from_firestore(exc)
        logs.error(f"could not claim {obj.uri}: {failure.message}", object=obj.uri)
        raise Transient(f"{obj.uri}: {failure.message}") from None
    if isinstance(held, lifecycle.Busy) and held.detail.get("uncertain"):
        logs.warning(f"{obj.uri}: {held.reason}; waiting for its webhook", object=obj.uri)
        raise Transient(f"{obj.uri}: {held.reason}")
    if not isinstance(held, lease.Lease):
        logs.info(f"{obj.uri}#{obj.generation} is submitted already, or being submitted",
                  object=obj.uri)  # fmt: skip
        return
    _submit(cfg, obj, held, deadline)


def _claim(cfg: Config, obj: storage_object.StorageObject) -> lease.Lease | lifecycle.Result:
    def decide(doc: dict[str, Any] | None, at: dt.datetime) -> lifecycle.Result | None:
        if doc and (doc.get("status") != lifecycle.SUBMITTING or doc.get("transcript_id")):
            return Done(str(doc.get("status")), doc.get("transcript_id"))
        maybe = (doc or {}).get("maybe_submitted_at")
        if isinstance(maybe, dt.datetime):
            # An earlier attempt died, or could not record its answer, after
            # asking AssemblyAI: it may have a transcript already. Its webhook
            # records the id here when it arrives; only after UNCERTAIN_SECONDS
            # without one is the object submitted again.
            wait = (maybe + dt.timedelta(seconds=UNCERTAIN_SECONDS) - at).total_seconds()
            if wait > 0:
                return lifecycle.Busy("an earlier attempt may have submitted this object",
                                      wait, detail={"uncertain": True})  # fmt: skip
        return None

    return lease.claim(
        record.uploads_collection(cfg), claim_key(obj), "lease", os.urandom(8).hex(),
        cfg.claim_seconds, decide, lambda _: {"status": lifecycle.SUBMITTING},
        create=lambda: {"uri": obj.uri, "generation": obj.generation,
                        **retention.expire_fields(cfg)},  # fmt: skip
    )  # fmt: skip


def _submit(
    cfg: Config, obj: storage_object.StorageObject, held: lease.Lease, deadline: float
) -> None:
    try:
        audio_url = (
            storage_object.streamed_upload(cfg, obj, deadline)
            if cfg.audio_delivery == "upload"
            else storage_object.signed_url(obj, cfg.signed_url_seconds)
        )
        sub = storage_object.submission_for(obj, audio_url, cfg.notify_url, cfg.notify_allow_local)
        # From the next call on, AssemblyAI may hold a transcript we have no
        # record of: say so first, so no takeover submits the object again.
        marked = held.mark({"maybe_submitted_at": record.now()})
    except Exception as exc:  # noqa: BLE001 - every failure before acceptance is classified
        failure = _classify(exc)
        if failure.kind is Kind.PERMANENT:  # retrying cannot help: acknowledged
            _finish_in_error(held, obj, failure)
            return
        log = logs.error if failure.kind is Kind.OPERATOR else logs.warning
        log(f"could not submit {obj.uri} yet: {failure.message}", object=obj.uri,
            kind=str(failure.kind), fix=failure.fix)  # fmt: skip
        _release(held, failure.message)
        raise Transient(f"{obj.uri}: {failure.message}") from None
    if not marked:
        return  # taken over: the one that holds it now goes on
    try:
        tid = submit.start_transcription(cfg, sub, obj.source())
    except Exception as exc:  # noqa: BLE001 - every failure before acceptance is classified
        failure = _classify(exc)
        if failure.kind is Kind.PERMANENT:
            _finish_in_error(held, obj, failure)
            return
        log = logs.error if failure.kind is Kind.OPERATOR else logs.warning
        log(f"could not submit {obj.uri} yet: {failure.message}", object=obj.uri,
            kind=str(failure.kind), fix=failure.fix)  # fmt: skip
        _release(held, failure.message)
        raise Transient(f"{obj.uri}: {failure.message}") from None
    # AssemblyAI accepted the job: from here on nothing raises, or the
    # retried event would start a second transcript.
    try:
        if not held.finish({"status": lifecycle.SUBMITTED, "transcript_id": tid}):
            logs.error(f"the claim on {obj.uri} was taken over after submitting", tid)
    except Exception as exc:  # noqa: BLE001 - acknowledged all the same, see above
        logs.error(f"AssemblyAI accepted {obj.uri} but the upload's record could not be "
                   f"written ({type(exc).__name__}); the event is acknowledged", tid)  # fmt: skip
    try:
        submit.record_queued(cfg, tid, sub, obj.source())
    except Exception as exc:  # noqa: BLE001 - the webhook builds the document itself
        logs.error(f"the meeting of {obj.uri} could not be recorded yet ({_text(exc)}); "
                   "the webhook will write it", tid)  # fmt: skip
    logs.info(f"submitted {obj.uri}", tid, object=obj.uri)


def _finish_in_error(
    held: lease.Lease, obj: storage_object.StorageObject, failure: Failure
) -> None:
    """The object cannot be submitted, ever: its claim ends in error and
    the event is acknowledged."""
    logs.error(f"could not submit {obj.uri}: {failure.message}", object=obj.uri)
    with contextlib.suppress(Exception):  # if this fails, the lease expires: retried once more
        held.finish({"status": lifecycle.ERROR, "error": failure.message})


def _classify(exc: Exception) -> Failure:
    """Failures before AssemblyAI accepted the job, classified."""
    from google.api_core import exceptions

    from . import assemblyai

    if isinstance(exc, Failure):
        return exc
    if isinstance(exc, assemblyai.ApiError):
        return exc.failure()
    if isinstance(exc, exceptions.NotFound):
        return Failure(Kind.PERMANENT, "the object no longer exists")
    if isinstance(exc, inputs.InvalidRequest):  # what we would send AssemblyAI is refused
        return Failure(Kind.PERMANENT, f"the submission is not valid: {_text(exc)}")
    if isinstance(exc, ValueError | TypeError):  # what the event names cannot be fetched
        return Failure(Kind.PERMANENT, f"the object cannot be read: {_text(exc)}")
    if isinstance(exc, exceptions.Forbidden | exceptions.Unauthorized):
        return Failure(Kind.OPERATOR, f"Cloud Storage refused access ({_text(exc)}): grant the "
                       "function's service account roles/storage.objectViewer on the bucket",
                       fix="storage_permission")  # fmt: skip
    return Failure(Kind.TRANSIENT, _text(exc))


def _text(exc: Exception) -> str:
    return logs.strip_url_queries(str(exc) or type(exc).__name__)[:300]


def _release(held: lease.Lease, message: str) -> None:
    """Give the claim back so the retried event can take it at once; AssemblyAI
    did not accept the job, so the object may be submitted again."""
    with contextlib.suppress(Exception):  # the lease expires by itself
        held.release(message, extra={"maybe_submitted_at": None})
