"""Regeneration asked for in the Firestore console: a person sets
`regenerate: true` on a meeting's document, and Eventarc delivers a
`google.cloud.firestore.document.v1.updated` event to
`regenerate_action_items`.

Only an update that sets the flag (it is in the event's update mask and
set in the new value) is a request. The product's own writes never set
it, and the claim that takes a request clears it, so they trigger
nothing: a function that writes the document it is triggered on must make
its writes no-ops for the trigger.

Everything a person set is input (console.py says what may be set): a
request is refused, before anything is paid, when the flag is not the
boolean true, a field it uses is malformed, the meeting is not in a state
to regenerate, or AssemblyAI no longer has a usable transcript. A refusal
clears the flag and says in `regenerate_note` which field and why; the
meeting and its result are left as they were.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
import uuid
from typing import Any

from google.events.cloud import firestore as firestore_events

from . import assemblyai, console, generate, lease, lifecycle, logs, notify, record, retention
from .config import Config
from .hints import Hints
from .lifecycle import Done, Failure, Kind, Refused, Result

FLAG = "regenerate"
# Results kept in `history`, newest last, and how large that list may grow:
# the whole document stays under Firestore's 1 MiB.
MAX_HISTORY = 3
MAX_HISTORY_BYTES = 300_000
HISTORY_FIELDS = ("status", "action_items", "action_items_text", "llm", "note", "error",
                  "error_stage", "completed_at", "result_version", "result_id")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Request:
    collection: str
    doc_id: str


def requested(data: bytes | Any) -> Request | None:
    """The document whose update asks for a regeneration, or None.

    `data` is the event's protobuf DocumentEventData, decoded as Google's
    samples do.
    """
    if not isinstance(data, bytes | bytearray):
        return None
    event = firestore_events.DocumentEventData()
    try:
        event._pb.ParseFromString(bytes(data))
    except Exception:  # noqa: BLE001 - a malformed event asks for nothing
        return None
    paths = {p.split(".", 1)[0].strip("`") for p in event.update_mask.field_paths}
    if FLAG not in paths:
        return None
    # Set to anything but false or null: a request, or a malformed one
    # ("true", 1) that deserves a note rather than silence.
    value = event.value._pb.fields.get(FLAG)
    if value is None or value.WhichOneof("value_type") in (None, "null_value"):
        return None
    if value.WhichOneof("value_type") == "boolean_value" and not value.boolean_value:
        return None
    # projects/P/databases/D/documents/<collection>/<id>
    parts = event.value.name.split("/documents/", 1)[-1].split("/")
    if len(parts) != 2 or not all(parts):
        return None
    return Request(parts[0], parts[1])


def history_with(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The document's history with its current result appended, bounded."""
    history = console.history(data)
    if console.status(data) in lifecycle.FINAL:
        history.append({k: data.get(k) for k in HISTORY_FIELDS if data.get(k) is not None})
    history = history[-MAX_HISTORY:]
    while len(history) > 1 and _size(history) > MAX_HISTORY_BYTES:
        history.pop(0)
    if history and _size(history) > MAX_HISTORY_BYTES:  # one result alone too large
        history[-1] = {k: v for k, v in history[-1].items() if k != "action_items"}
    return history


def _size(value: Any) -> int:
    return len(json.dumps(value, default=str).encode())


def refusal(data: dict[str, Any] | None) -> Result | None:
    """Why the document's request cannot be served now, or None to serve it."""
    try:
        if not console.regenerate_flag(data):
            return Done("nothing to do")  # handled already, or never asked
    except console.Refusal as refused:
        return Refused(console.note(refused, "set it again as a boolean to regenerate"),
                       by="regenerate")  # fmt: skip
    assert data is not None
    status = console.status(data)
    if status == lifecycle.GENERATING:
        reason = ("the meeting is generating its action items right now; set regenerate "
                  "again once it is completed or error")  # fmt: skip
    elif status == lifecycle.QUEUED:
        reason = "the meeting is not transcribed yet; its action items will come by themselves"
    elif status is None:
        reason = (f"status is {console.shown(data.get('status'))}, not completed or error: only "
                  "a finished meeting can be regenerated")  # fmt: skip
    elif retention.deleted(data):
        reason = retention.REGENERATE_REFUSAL
    elif status == lifecycle.ERROR and data.get("error_stage") == "transcription":
        reason = ("AssemblyAI could not transcribe this recording, so there is nothing to "
                  "generate from; submit the recording again")  # fmt: skip
    else:
        refused = console.request_refusal(data)
        if refused is None:
            return None
        reason = console.note(refused, "fix it, then set regenerate again")
    return Refused(reason, by="regenerate")


@lifecycle.firestore_guard
def run(cfg: Config, transcript_id: str, deadline: float) -> Result:
    """A person set `regenerate: true`: generate the items again from the
    existing transcript (no new transcription), through the same claim as
    everything else, so a duplicated event makes one gateway call. The
    claim clears the flag and keeps the previous result in `history`."""
    cfg.require("api_key")
    tid = transcript_id
    started = time.monotonic()

    def decide(data: dict[str, Any] | None, _at: dt.datetime) -> Result | None:
        refused = refusal(data)
        if isinstance(refused, Done):
            return Done(refused.status, tid)
        return refused

    def on_claim(data: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "status": lifecycle.GENERATING,
            "regenerate": record.DELETE_FIELD,  # the request is taken: no flag left
            "regenerate_note": None,
            "regenerated_at": record.SERVER_TIMESTAMP,
            "history": history_with(data or {}),
            **notify.upload_default(cfg, data),
            # The lease's own map: what to go back to if this request fails.
            "generation": {"regenerating_from": console.status(data)},
        }

    # Before anything is claimed or paid: is the request well formed, and
    # does AssemblyAI still have a transcript to generate from?
    data, _ = record.read(cfg, tid)
    refused = decide(data, record.now())
    if refused is not None:
        if isinstance(refused, Refused):
            _refuse_regeneration(cfg, tid, refused.reason)
        return refused
    assert data is not None
    transcript, refused = _usable_transcript(cfg, tid, data)
    if refused is not None:
        if isinstance(refused, Refused):
            _refuse_regeneration(cfg, tid, refused.reason)
        return refused
    claimed = lease.claim(
        cfg.collection, tid, "generation", uuid.uuid4().hex, cfg.claim_seconds,
        decide, on_claim, fresh=True,
    )  # fmt: skip
    if isinstance(claimed, Refused):
        _refuse_regeneration(cfg, tid, claimed.reason)
        return claimed
    if not isinstance(claimed, lease.Lease):
        return claimed
    logs.info("regenerating the action items", tid)
    return generate.holding(cfg, claimed, transcript, Hints(), deadline, started)


def _usable_transcript(
    cfg: Config, tid: str, data: dict[str, Any]
) -> tuple[dict[str, Any] | None, Result | None]:
    """The transcript to regenerate from, or why not: a lookup AssemblyAI
    refuses (400, 404: it no longer has it) or a deleted transcript is a
    refusal; a failure that may pass is Busy, and the event is retried."""
    kept = "the result is kept; nothing was generated or paid for"
    try:
        transcript = assemblyai.read_transcript(cfg, tid)
    except Failure as failure:
        if failure.kind is Kind.PERMANENT:
            return None, Refused(
                f"AssemblyAI no longer returns this meeting's transcript ({failure.message}): "
                f"there is nothing to generate from; {kept}",
                by="regenerate",
            )
        return None, lifecycle.busy_for(
            failure, tid, "could not read the transcript from AssemblyAI"
        )
    if transcript.get("status") != "completed":
        status = console.shown(transcript.get("status"))
        return None, Refused(f"AssemblyAI's transcript is {status}, not completed; {kept}",
                             by="regenerate")  # fmt: skip
    problem = generate.transcript_problem(transcript, bool(console.items(data)))
    if problem:
        return None, Refused(f"{problem}: there is nothing to generate from; {kept}",
                             by="regenerate")  # fmt: skip
    return transcript, None


def _refuse_regeneration(cfg: Config, tid: str, reason: str) -> None:
    """Clear the flag and say why, without disturbing a live holder (its
    final write tolerates writes that leave its claim alone)."""
    for _ in range(5):
        data, version = record.read(cfg, tid)
        if not data or (data.get(FLAG) is False or data.get(FLAG) is None):
            return
        try:
            record.update(cfg, tid, {FLAG: record.DELETE_FIELD, "regenerate_note": reason},
                          if_unchanged_since=version)  # fmt: skip
        except record.LostRace:
            continue
        logs.warning(f"regeneration refused: {reason}", tid)
        return
