"""How long the product keeps what it knows of a meeting.

RETENTION_DAYS: every meeting and upload document carries `expire_at`,
set when it is created (in whatever state it is then, so failed and stuck
meetings expire too); a Firestore TTL policy on the field (deploy.sh)
deletes it within about a day after that time.

DELETE_TRANSCRIPT_AFTER_ITEMS: once a meeting's final result is written
(completed or error), its transcript is deleted at AssemblyAI (DELETE
/v2/transcript/{id}, which deletes a file sent through /v2/upload too).
Exactly once however many deliveries or sweeps race: the deletion is
claimed with a write conditioned on the version read (`transcript_deletion`,
a short lease as lease.py keeps), and recorded in `transcript_deleted_at`.
When AssemblyAI fails, the claim is given back with `sweep_at`, and the
sweep tries again, backing off, at most MAX_DELETE_ATTEMPTS times.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from . import assemblyai, console, lifecycle, logs, record
from .config import Config

FIELD = "transcript_deletion"
DELETED = "transcript_deleted_at"
CLAIM_SECONDS = 60
MAX_DELETE_ATTEMPTS = 10
MAX_BACKOFF_SECONDS = 6 * 3600


def expire_fields(cfg: Config) -> dict[str, Any]:
    """`expire_at` for a document created now, or nothing without RETENTION_DAYS."""
    if not cfg.retention_days:
        return {}
    return {"expire_at": record.now() + dt.timedelta(days=cfg.retention_days)}


def pending(cfg: Config, data: dict[str, Any] | None) -> bool:
    """The meeting's transcript should be deleted and is not yet."""
    if not cfg.delete_transcripts or not data or console.status(data) not in lifecycle.FINAL:
        return False
    if data.get(DELETED):
        return False
    state = console.mapping(data.get(FIELD))
    return not state.get("gave_up") and console.count(state.get("attempts")) < MAX_DELETE_ATTEMPTS


def deleted(data: dict[str, Any] | None) -> bool:
    """The transcript was deleted at AssemblyAI, or its deletion has started."""
    return bool(data) and bool(data.get(DELETED) or console.mapping(data.get(FIELD)))


def forget(cfg: Config, tid: str, timeout: float = 5) -> str:
    """Delete the meeting's transcript at AssemblyAI if it is due and
    nobody else is: "deleted", "not due", "held" (someone else's live
    claim), or "failed" (the sweep tries again). Raises record.Unavailable."""
    data, version = record.read(cfg, tid)
    if not pending(cfg, data):
        return "not due"
    assert data is not None
    state = console.mapping(data.get(FIELD))
    at = record.now()
    expires = state.get("lease_expires_at")
    if isinstance(expires, dt.datetime) and expires > at:
        return "held"
    attempts = console.count(state.get("attempts")) + 1
    mine = {"holder": uuid.uuid4().hex, "attempts": attempts,
            "lease_expires_at": at + dt.timedelta(seconds=CLAIM_SECONDS)}  # fmt: skip
    try:
        record.update(cfg, tid, {FIELD: mine}, if_unchanged_since=version)
    except record.LostRace:
        return "held"
    try:
        assemblyai.delete_transcript(cfg, tid, timeout)
    except assemblyai.ApiError as exc:
        if exc.status == 400 and "not found" in exc.message.lower():
            logs.info("AssemblyAI has no such transcript: nothing to delete", tid)
        else:
            return _failed(cfg, tid, data, mine, exc.message)
    record.update(cfg, tid, {DELETED: record.SERVER_TIMESTAMP,
                             FIELD: {**mine, "lease_expires_at": None}})  # fmt: skip
    logs.info("deleted the transcript at AssemblyAI", tid, event="transcript_deleted")
    return "deleted"


def _failed(cfg: Config, tid: str, data: dict[str, Any], mine: dict[str, Any], why: str) -> str:
    attempts = mine["attempts"]
    state = {**mine, "lease_expires_at": None, "last_error": why[:300]}
    fields: dict[str, Any] = {FIELD: state}
    if attempts >= MAX_DELETE_ATTEMPTS:
        state["gave_up"] = True
        logs.error("could not delete the transcript at AssemblyAI; giving up", tid,
                   error=why, attempts=attempts,
                   fix="delete it by hand: DELETE /v2/transcript/{id}")  # fmt: skip
    else:
        wait = min(cfg.recheck_seconds * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS)
        retry = record.later(wait)
        current = data.get("sweep_at")
        fields["sweep_at"] = min(current, retry) if isinstance(current, dt.datetime) else retry
        logs.warning("could not delete the transcript at AssemblyAI; the sweep will", tid,
                     error=why, attempts=attempts)  # fmt: skip
    record.update(cfg, tid, fields)
    return "failed"


def after_result(cfg: Config, tid: str) -> None:
    """Right after a final result: delete the transcript, never failing the result."""
    if not cfg.delete_transcripts:
        return
    try:
        forget(cfg, tid)
    except Exception:  # noqa: BLE001 - the result is written; the sweep retries a failure
        logs.error("could not delete the transcript after the result", tid)


REGENERATE_REFUSAL = (
    "the transcript was deleted at AssemblyAI after the action items were written "
    "(DELETE_TRANSCRIPT_AFTER_ITEMS): there is nothing to generate from; the items are "
    "kept; nothing was generated or paid for"
)
