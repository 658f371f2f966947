"""What submit does: hand a recording to AssemblyAI with the webhook URL
and its hints, then record the queued meeting. Shared by the HTTP submit
function and the storage trigger (uploads.py).
"""

from __future__ import annotations

from typing import Any

from . import (
    assemblyai,
    inputs,
    languages,
    lifecycle,
    logs,
    privacy,
    prompt,
    record,
    retention,
)
from .config import WEBHOOK_SECRET_HEADER, Config
from .hints import Hints, webhook_url
from .lifecycle import Done, Failure, Kind, Refused, Result


def options_of(sub: inputs.Submission, cfg: Config) -> dict[str, Any]:
    models = sub.speech_models or cfg.speech_models
    return {
        "speech_models": list(models) if models else None,
        "language_code": sub.language_code,
        # On unless the caller turns them off: they give the items their moments.
        "speaker_labels": sub.speaker_labels is not False,
        "speakers": [s.name for s in sub.speakers] or None,
        "answer_format": sub.answer_format or prompt.DEFAULT_ANSWER_FORMAT,
        **redaction_of(sub, cfg),
        **language_options(sub, cfg),
    }


def language_options(sub: inputs.Submission, cfg: Config) -> dict[str, Any]:
    """The language as asked: the caller's code wins; else detection, with
    the caller's options or the environment's. Items in items_language,
    else (None) the meeting's."""
    detect = not sub.language_code
    return {
        "language_detection": detect,
        "expected_languages": list(sub.expected_languages or cfg.expected_languages or ())
        if detect
        else None,
        "language_confidence_threshold": (
            sub.language_confidence_threshold
            if sub.language_confidence_threshold is not None
            else cfg.language_confidence_threshold
        )
        if detect
        else None,
        "items_language": sub.items_language or cfg.items_language,
    }


def redaction_of(sub: inputs.Submission, cfg: Config) -> dict[str, Any]:
    """The redaction asked of AssemblyAI: the submission's, else the deployment's."""
    if sub.redact_pii is None:
        return privacy.params(cfg.redact_pii, cfg.redact_pii_policies, cfg.redact_pii_sub)
    return privacy.params(sub.redact_pii, sub.redact_pii_policies, sub.redact_pii_sub)


def _speaker_identification(sub: inputs.Submission) -> dict[str, Any]:
    """AssemblyAI's speech_understanding request naming the meeting's people."""
    if any(s.description for s in sub.speakers):
        people: dict[str, Any] = {
            "speakers": [
                {"name": s.name, **({"description": s.description} if s.description else {})}
                for s in sub.speakers
            ]
        }
    else:
        people = {"known_values": [s.name for s in sub.speakers]}
    return {"request": {"speaker_identification": {"speaker_type": "name", **people}}}


def start_transcription(cfg: Config, sub: inputs.Submission, source: dict[str, Any]) -> str:
    """Hand the recording to AssemblyAI; its transcript id. Raises Failure."""
    cfg.require("api_key", "webhook_url", "webhook_secret")
    options = options_of(sub, cfg)
    carried = Hints(
        sub.answer_format,
        sub.metadata,
        source if source.get("kind") != "url" else None,
        sub.notify_url,
        options["items_language"],
    )
    params: dict[str, Any] = {
        "audio_url": sub.audio_url,
        "webhook_url": webhook_url(cfg, carried),
        "webhook_auth_header_name": WEBHOOK_SECRET_HEADER,
        "webhook_auth_header_value": cfg.webhook_secret,
    }
    for key in ("speech_models", "speaker_labels"):
        if options[key] is not None:
            params[key] = options[key]
    params.update(redaction_of(sub, cfg))
    params.update(
        languages.detection_params(
            sub.language_code,
            options["expected_languages"],
            options["language_confidence_threshold"],
        )
    )
    if sub.speakers:
        params["speech_understanding"] = _speaker_identification(sub)
    try:
        transcript = assemblyai.submit_transcript(cfg, params)
    except assemblyai.ApiError as exc:
        raise exc.failure() from None
    tid = transcript.get("id") if isinstance(transcript, dict) else None
    if not isinstance(tid, str) or not tid:
        raise Failure(Kind.PERMANENT, "AssemblyAI's answer has no transcript id")
    return tid


def record_queued(cfg: Config, tid: str, sub: inputs.Submission, source: dict[str, Any]) -> None:
    """Write the queued meeting's document. Raises Failure if Firestore fails."""
    fields = {
        "status": lifecycle.QUEUED,
        "transcript_id": tid,
        "source": source,
        "options": options_of(sub, cfg),
        "metadata": sub.metadata,
        "notify_url": sub.notify_url,
        # Deliveries normally move it on long before; if all of them are
        # lost, the sweep asks AssemblyAI then.
        "sweep_at": lifecycle.queued_check_at(record.now(), 0, cfg.stale_queued_seconds),
        "queued_checks": 0,
        **retention.expire_fields(cfg),
    }
    try:
        try:
            record.create(cfg, tid, fields)
        except record.LostRace:
            # The webhook got there first (a very fast failure, say) and built
            # the document from AssemblyAI's record and the webhook URL's
            # hints. Nothing to add, and any write now would void a live
            # holder's final write, which is conditioned on its claim.
            logs.info("the meeting was recorded by its webhook already", tid)
    except record.Unavailable as exc:
        raise lifecycle.from_firestore(exc) from None


# What the caller is told when AssemblyAI accepted the job but its document
# could not be written: the job is theirs, and asking again would pay twice.
NOT_RECORDED = (
    "AssemblyAI accepted the job; the meeting's document could not be written now and will "
    "be written when the transcript is ready (the webhook builds it from AssemblyAI's record). "
    "Do not resubmit."
)


def submit(cfg: Config, sub: inputs.Submission, source: dict[str, Any] | None = None) -> Result:
    """Hand the recording to AssemblyAI, then record the queued meeting.

    Once AssemblyAI accepted the job the answer is Done whatever fails next:
    a retryable answer would invite a second, paid, transcript."""
    source = source or record.source_of_url(sub.audio_url)
    try:
        tid = start_transcription(cfg, sub, source)
    except Failure as failure:
        if failure.kind is Kind.PERMANENT:
            logs.warning("AssemblyAI did not accept the recording", error=failure.message)
            return Refused(f"AssemblyAI refused the job: {failure.message}", by="assemblyai")
        return lifecycle.busy_for(failure, None, "AssemblyAI did not accept the recording")
    done = Done(lifecycle.QUEUED, tid, record.path(cfg, tid))
    try:
        record_queued(cfg, tid, sub, source)
    except Exception as exc:  # noqa: BLE001 - accepted: the webhook writes the document
        failure = exc if isinstance(exc, Failure) else None
        logs.error("AssemblyAI accepted the job but its record could not be written; "
                   "the webhook will write it", tid,
                   error=failure.message if failure else f"{type(exc).__name__}: {exc}"[:300],
                   kind=str(failure.kind) if failure else "bug",
                   fix=failure.fix if failure else None)  # fmt: skip
        done.detail = {"recorded": False, "note": NOT_RECORDED}
        return done
    logs.info("submitted", tid, source=source.get("kind"))
    return done
