"""What happens when a transcript is ready: an authenticated delivery from
AssemblyAI (or the sweep, for a delivery that never came) claims the
meeting, building its document from AssemblyAI's record if submit could
not write it, and hands the claim to generate.py. A meeting already final,
held by someone else, or waiting out a rate limit is left alone.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

from . import (
    assemblyai,
    generate,
    inputs,
    languages,
    lease,
    lifecycle,
    logs,
    models,
    notify,
    privacy,
    prompt,
    record,
    retention,
)
from .config import Config
from .hints import Hints
from .lifecycle import Busy, Done, Failure, Kind, Refused, Result


def on_webhook(
    cfg: Config, event: inputs.WebhookEvent, hints: Hints, deadline: float | None = None
) -> Result:
    """Act on one (authenticated) delivery from AssemblyAI."""
    if event.status == "redacted_audio_ready":
        logs.info("ignored a redacted_audio_ready delivery")
        return Done("ignored", detail={"reason": "redacted_audio_ready"})
    tid = event.transcript_id
    assert tid is not None
    deadline = deadline or lifecycle.deadline_of(cfg)
    if event.status in ("completed", "error"):
        return complete(cfg, tid, hints, deadline)
    logs.warning("ignored a delivery with an unknown status", tid, status=event.status[:40])
    return Done("ignored", tid, detail={"reason": "unknown status"})


def _document_from_transcript(transcript: dict[str, Any], hints: Hints) -> dict[str, Any]:
    """A meeting's full document, built from AssemblyAI's own record of it."""
    source = hints.source or record.source_of_url(str(transcript.get("audio_url") or ""))
    # The names speaker identification was asked for, if it was.
    asked: Any = transcript
    for key in ("speech_understanding", "request", "speaker_identification"):
        asked = asked.get(key) if isinstance(asked, dict) else None
    asked = asked if isinstance(asked, dict) else {}
    values, people = asked.get("known_values"), asked.get("speakers")
    names = values if isinstance(values, list) else [
        p.get("name") for p in (people if isinstance(people, list) else []) if isinstance(p, dict)
    ]  # fmt: skip
    return {
        "transcript_id": transcript.get("id"),
        "source": source,
        "options": {
            "speech_models": transcript.get("speech_models"),
            **languages.asked(transcript),
            "speaker_labels": transcript.get("speaker_labels"),
            "speakers": [n for n in names if isinstance(n, str)][: inputs.MAX_SPEAKERS] or None,
            "answer_format": hints.answer_format or prompt.DEFAULT_ANSWER_FORMAT,
            **_redaction_asked(transcript),
            "items_language": hints.items_language,
        },
        "metadata": hints.metadata,
        "notify_url": hints.notify_url,
        **generate.transcript_facts(transcript),
    }


def _redaction_asked(transcript: dict[str, Any]) -> dict[str, Any]:
    """The redaction AssemblyAI's record says was asked for, if valid."""
    redact = transcript.get("redact_pii") is True
    policies, sub = transcript.get("redact_pii_policies"), transcript.get("redact_pii_sub")
    try:
        privacy.check_redaction(redact, policies if redact else None, sub if redact else None)
    except privacy.Invalid:
        return {"redact_pii": True} if redact else {}
    return privacy.params(redact, tuple(policies or ()), sub)


@lifecycle.firestore_guard
def complete(
    cfg: Config,
    transcript_id: str,
    hints: Hints,
    deadline: float,
    transcript: dict[str, Any] | None = None,
) -> Result:
    """Generate and store the action items of a transcribed meeting, once;
    or record why AssemblyAI could not transcribe it."""
    cfg.require("api_key")
    tid = transcript_id
    started = time.monotonic()
    read: dict[str, Any] = {"transcript": transcript}

    def decide(data: dict[str, Any] | None, at: dt.datetime) -> Result | None:
        if data and data.get("status") in lifecycle.FINAL:
            return Done(data["status"], tid, record.path(cfg, tid))
        not_before = ((data or {}).get("generation") or {}).get("not_before")
        if (not isinstance(not_before, dt.datetime) or not_before <= at) and (data or {}).get(
            "status"
        ) == lifecycle.GENERATING:
            # Heard by this instance; a queued meeting is still claimed and
            # given back, so the sweep has it due when the limit ends.
            not_before = models.all_limited_until(cfg)
        if isinstance(not_before, dt.datetime) and not_before > at:
            wait = (not_before - at).total_seconds()
            return Busy("waiting for the LLM Gateway's rate limit", wait, transcript_id=tid,
                        rate_limited=True)  # fmt: skip
        return None

    def create() -> dict[str, Any]:
        # A delivery before its document (Firestore was away at submit
        # time, or AssemblyAI failed very fast): build it from AssemblyAI's record.
        read["transcript"] = read["transcript"] or assemblyai.read_transcript(cfg, tid)
        return {**_document_from_transcript(read["transcript"], hints),
                **retention.expire_fields(cfg)}  # fmt: skip

    try:
        claimed = lease.claim(
            cfg.collection, tid, "generation", uuid.uuid4().hex, cfg.claim_seconds,
            decide, lambda data: {"status": lifecycle.GENERATING, **notify.upload_default(cfg, data)},
            create,
        )  # fmt: skip
    except Failure as failure:  # reading the transcript for a missing document
        if failure.kind is Kind.PERMANENT:
            logs.warning("AssemblyAI does not know this transcript", tid, error=failure.message)
            return Refused(f"AssemblyAI: {failure.message}", by="unknown")
        return lifecycle.busy_for(failure, tid, "could not read the transcript from AssemblyAI")
    if not isinstance(claimed, lease.Lease):
        if isinstance(claimed, Refused):
            return Refused("no such meeting", by="unknown")
        return claimed
    logs.info("claimed the meeting", tid, attempt=claimed.state.get("attempts"))
    return generate.holding(cfg, claimed, read["transcript"], hints, deadline, started)
