"""What a claimed meeting does: read the transcript if needed, ask the LLM
Gateway once, turn the paid answer into the document's fields, write the
final result, and send its first notification. Every failure after the
claim is handed to outcomes.py, which decides what state it leads to.
"""

from __future__ import annotations

import time
from typing import Any

from . import (
    action_items,
    assemblyai,
    console,
    languages,
    lease,
    lifecycle,
    logs,
    models,
    moments,
    notify,
    outcomes,
    privacy,
    prompt,
    record,
    retention,
    text,
)
from .config import Config
from .hints import Hints
from .lifecycle import Busy, Done, Failure, Kind, Result

MAX_NOTE_BYTES = 2000
# AssemblyAI waits this long for the webhook's answer before it delivers
# again; the first notification attempt keeps NOTIFY_MARGIN of it free
# (for its writes, and the answer's way back).
ASSEMBLYAI_WAITS = 10.0
NOTIFY_MARGIN = 2.0


# AssemblyAI's deleted transcript (DELETE /v2/transcript/{id}): still
# "completed", its text replaced by this, no words and no utterances.
DELETED_TEXT = "Deleted by user."


def transcript_problem(transcript: dict[str, Any], has_items: bool = False) -> str | None:
    """Why a completed transcript cannot be generated from, or None.

    Deleted at AssemblyAI: never (a paid call would find no meeting in it).
    No text and no words at all: not when the result it would replace has
    items (`has_items`): a result with no items may replace one with items
    only if the transcript is whole."""
    words, utterances = transcript.get("words"), transcript.get("utterances")
    spoken = bool(words) or bool(utterances)
    if transcript.get("text") == DELETED_TEXT and not spoken:
        return 'AssemblyAI says the transcript was deleted (its text is "Deleted by user.")'
    text_ = transcript.get("text")
    if has_items and not spoken and not (isinstance(text_, str) and text_.strip()):
        return "AssemblyAI's transcript has no text and no words"
    return None


def transcript_facts(transcript: dict[str, Any]) -> dict[str, Any]:
    """What the document keeps of the transcript itself, in every final state."""
    return {
        "audio_duration": transcript.get("audio_duration"),
        **languages.facts(transcript),
    }


def holding(
    cfg: Config,
    held: lease.Lease,
    transcript: dict[str, Any] | None,
    hints: Hints,
    deadline: float,
    started: float,
) -> Result:
    """Generate while holding the claim: a crash gives it back, a result is
    notified. Shared by deliveries, the sweep and regenerations."""
    attempts = held.state["attempts"]
    if attempts >= cfg.max_generation_attempts:
        # Counted already (given back, or expired unsettled): never pay again.
        last = str(held.state.get("last_error") or "unknown")
        return outcomes.fail(held, f"gave up after {attempts} failed attempts; last: {last}",
                             "action_items", attempts=attempts)  # fmt: skip
    try:
        result = _generate(cfg, held, transcript, hints, deadline, started)
    except record.Unavailable:
        raise  # Firestore is away: the guard answers "later", the lease expires
    except Exception as exc:  # noqa: BLE001 - never leave a claim held by a crash
        return outcomes.crashed(cfg, held, exc)
    if not isinstance(result, Done) or result.detail.get("kept_previous"):
        return result
    if held.data.get("result_version") == 1:
        # Once per meeting, at its first result (not on every claim).
        _resolve_upload(cfg, held.data.get("source"), held.doc_id)
    if held.data.get("notify_url"):
        _notify_now(cfg, held.doc_id, deadline, started)
    retention.after_result(cfg, held.doc_id)
    return result


def _resolve_upload(cfg: Config, source: Any, tid: str) -> None:
    """Record the transcript id on the upload that started this meeting, if
    the storage trigger could not (it failed right after AssemblyAI
    accepted the job): a retried event then knows not to submit it again."""
    if not isinstance(source, dict) or source.get("kind") != "gcs":
        return
    parts = [source.get(k) for k in ("bucket", "name", "generation")]
    if not all(isinstance(p, str) and p for p in parts):
        return
    key = record.upload_key(*parts)
    collection = record.uploads_collection(cfg)
    try:
        data, version = record.store().get(collection, key)
        if data and data.get("status") == lifecycle.SUBMITTING and not data.get("transcript_id"):
            record.store().update(
                collection, key,
                {"status": lifecycle.SUBMITTED, "transcript_id": tid, "sweep_at": None,
                 "updated_at": record.SERVER_TIMESTAMP},
                version,
            )  # fmt: skip
            logs.info("recorded the transcript on its upload", tid, upload=key)
    except Exception:  # noqa: BLE001 - best effort: the upload's own lease still holds
        logs.warning("could not record the transcript on its upload", tid, upload=key)


def _generate(
    cfg: Config,
    held: lease.Lease,
    transcript: dict[str, Any] | None,
    hints: Hints,
    deadline: float,
    started: float,
) -> Result:
    tid = held.doc_id
    doc = record.path(cfg, tid)
    claimed = time.monotonic()
    if transcript is None:
        try:
            transcript = assemblyai.read_transcript(cfg, tid)
        except Failure as failure:
            if failure.kind is Kind.PERMANENT:
                message = f"AssemblyAI could not return the transcript: {failure.message}"
                if outcomes.regenerating(held):
                    return outcomes.keep_previous(held, f"{message}; the previous result is kept")
                return outcomes.fail(held, message, "transcription")
            held.release(f"reading the transcript: {failure.message}",
                         sweep_at=record.later(cfg.recheck_seconds))  # fmt: skip
            return lifecycle.busy_for(failure, tid, "could not read the transcript from AssemblyAI")
    facts = transcript_facts(transcript)
    if transcript.get("status") == "error":
        message = logs.strip_url_queries(str(transcript.get("error") or "transcription failed"))
        logs.warning("transcription failed", tid, error=message)
        return outcomes.fail(held, message, "transcription", facts)
    problem = transcript_problem(transcript, bool(console.items(held.data)))
    if transcript.get("status") == "completed" and problem:
        if outcomes.regenerating(held):
            return outcomes.keep_previous(held, f"{problem}; the previous result is kept")
        return outcomes.fail(held, problem, "transcription", facts)
    if transcript.get("status") != "completed":
        held.release("the transcript is not completed yet",
                     extra={"status": lifecycle.QUEUED},
                     sweep_at=record.later(cfg.stale_queued_seconds))  # fmt: skip
        return Busy("the transcript is not completed yet", transcript_id=tid)

    # With PII redaction, only what AssemblyAI redacted reaches the prompt
    # and the document (privacy.py).
    transcript, redaction = privacy.for_prompt(transcript)
    if redaction is not None:
        facts["privacy"] = redaction
    # Never start a gateway call that cannot finish, with its write, in time.
    gateway_deadline = deadline - lifecycle.write_budget(cfg)
    if time.monotonic() + min(cfg.gateway_timeout, 30) > gateway_deadline:
        held.release("no time left in this run for the LLM Gateway")
        return Busy("no time left in this run for the LLM Gateway", transcript_id=tid)
    # What a person set on the document (console.py): a malformed field
    # keeps the previous result of a regeneration, and is ignored, with a
    # note, by a first generation.
    asked = console.asked(held.data)
    if asked.refusals and outcomes.regenerating(held):
        return outcomes.keep_previous(
            held,
            console.note(
                asked.refusals[0],
                "the previous result is kept; fix it, then set regenerate again",
            ),
        )
    notes = [console.note(r, "ignored: generated with the default") for r in asked.refusals]
    answer_format = asked.answer_format or hints.answer_format
    # With utterances the prompt carries who said what, and when; without
    # (speaker labels off), the gateway substitutes the plain text.
    meeting = moments.read(transcript)
    # The turns are all the answer's check needs: the utterances go now,
    # from the one dict that the callers' frames (transcript_ready.complete,
    # sweep.check_queued) also hold, so none keeps them through the call.
    transcript.pop("utterances", None)
    person = asked.llm_model if asked.llm_model not in (None, cfg.llm_model) else None
    items_language = languages.items_language(held.data, hints.items_language, transcript)
    body = prompt.request_body(
        tid, person or cfg.llm_model, answer_format or prompt.DEFAULT_ANSWER_FORMAT,
        cfg.llm_max_tokens, meeting.lines if meeting.turns else None, meeting.unnamed,
        languages.name(items_language),
    )  # fmt: skip
    meeting.lines = ""  # the body's prompt holds them now
    asked_at = time.monotonic()
    # The model a person chose is asked alone, first: refused (or not on the
    # gateway's list), it is the person's to fix, never the meeting's end.
    got = models.ask(cfg, held.state, body, tid, gateway_deadline, (person,)) if person else None
    if got is not None and got.answer is None and not got.no_time:
        if got.error is not None or got.limited:
            models.keep_waits(held.data, got.limited)
            return (outcomes.gateway_failed(cfg, held, got.error) if got.error is not None
                    else outcomes.no_model(cfg, held, got))  # fmt: skip
        reason = (f"the LLM Gateway refused llm_model {person!r}: {got.refused[person]}"
                  if person in got.refused else f"llm_model {models.not_listed(cfg, person)}")  # fmt: skip
        if outcomes.regenerating(held):
            return outcomes.keep_previous(
                held,
                f"{reason}; the previous result is kept; fix or remove llm_model, then set "
                "regenerate again",
            )
        notes.append(f"{reason}; generated with {cfg.llm_model} instead")
        got = None
    if got is None:
        got = models.ask(cfg, held.state, body, tid, gateway_deadline)
    if got.no_time:
        models.keep_waits(held.data, got.limited)
        held.release("no time left in this run for the LLM Gateway")
        return Busy("no time left in this run for the LLM Gateway", transcript_id=tid)
    if got.answer is None:
        if got.error is not None:
            models.keep_waits(held.data, got.limited)
            return outcomes.gateway_failed(cfg, held, got.error)
        return outcomes.no_model(cfg, held, got)
    answer, model = got.answer, got.model
    answered = time.monotonic()
    # From here on the answer is paid for: whatever fails is poison.
    try:
        fields = _result_fields(
            cfg, answer, facts, meeting, console.source(held.data), model, answer_format,
            items_language,
        )  # fmt: skip
        fields["llm"]["tried"] = got.tried
        if held.data.get("error"):  # a retry after an earlier failure: clear it
            fields.update(error=None, error_stage=None)
        if notes:
            fields["regenerate_note"] = text.storable(" ".join(notes), MAX_NOTE_BYTES)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError) as exc:
        return outcomes.poison(cfg, held, _reason(exc))
    try:
        written = outcomes.final(held, fields)
    except record.Unavailable as exc:
        failure = lifecycle.from_firestore(exc)
        if failure.kind is Kind.TRANSIENT:
            raise  # the guard answers 503; the lease expires, the work is redone
        return outcomes.poison(cfg, held, f"the result could not be stored: {failure.message}")
    except (ValueError, TypeError, UnicodeError) as exc:
        return outcomes.poison(cfg, held, f"the result could not be stored: {_reason(exc)}")
    if not written:
        return Busy("lost the claim before the result was written", transcript_id=tid)
    ms = {"claim": claimed - started, "transcript": asked_at - claimed,
          "gateway": answered - asked_at, "write": time.monotonic() - answered}  # fmt: skip
    logs.info("action items written", tid, event="meeting_completed", items=len(fields["action_items"]),
              parsed_as=fields["llm"]["parsed_as"], ms={k: round(v * 1000) for k, v in ms.items()})  # fmt: skip
    return Done(lifecycle.COMPLETED, tid, doc, {"action_items": len(fields["action_items"])})


def _result_fields(
    cfg: Config,
    answer: Any,
    facts: dict[str, Any],
    meeting: moments.Meeting | None = None,
    source: Any = None,
    requested: str | None = None,
    answer_format: str | None = None,
    items_language: str | None = None,
) -> dict[str, Any]:
    """The document's fields from a gateway answer; raises on an unusable one.

    With the meeting's turns (the utterance prompt), every item's moment is
    checked against them and linked into `source`."""
    choice = answer["choices"][0]
    content = choice["message"]["content"]
    if not isinstance(content, str):
        raise TypeError("the answer's content is not text")
    finish_reason = choice.get("finish_reason")
    with_moments = meeting is not None and bool(meeting.turns)
    result = action_items.parse(
        content, finish_reason if isinstance(finish_reason, str) else None, with_moments
    )
    quotes = None
    if meeting is not None and with_moments:
        result, quotes = moments.checked(result, meeting, source, answer_format, items_language)
        if meeting.cut_note:
            result.note = f"{result.note} {meeting.cut_note}" if result.note else meeting.cut_note
    usage = answer.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    request = answer.get("request")
    model = (request.get("model") if isinstance(request, dict) else None) or answer.get("model")

    def text(value: Any, limit: int = 200) -> str | None:  # in UTF-8 bytes
        return action_items.storable(value, limit) if isinstance(value, str) else None

    def count(value: Any) -> int | None:  # Firestore's integers are 64-bit
        if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63:
            return value
        return None

    return {
        "status": lifecycle.COMPLETED,
        "action_items": result.items,
        "action_items_text": result.text,
        "llm": {
            "model": text(model) or requested or cfg.llm_model,
            "requested_model": requested or cfg.llm_model,
            "request_id": text(answer.get("request_id")),
            "finish_reason": text(finish_reason),
            "parsed_as": result.parsed_as,
            "input_tokens": count(usage.get("input_tokens", usage.get("prompt_tokens"))),
            "output_tokens": count(usage.get("output_tokens", usage.get("completion_tokens"))),
            "total_tokens": count(usage.get("total_tokens")),
            "prompt": "utterances" if with_moments else "placeholder",
            "quotes": quotes,
        },
        **(moments.document_fields(meeting) if meeting is not None else {}),
        "note": result.note,
        "completed_at": record.SERVER_TIMESTAMP,
        **facts,
    }


def _reason(exc: BaseException) -> str:
    return logs.strip_url_queries(str(exc) or type(exc).__name__)[:300]


def _notify_now(cfg: Config, tid: str, deadline: float, started: float) -> None:
    """The first attempt, right after the result; the sweep makes the rest.
    Never delays or endangers the result: it is written already. Nor the
    answer to AssemblyAI, which waits ASSEMBLYAI_WAITS seconds for it: the
    attempt gets what is left of them (less a margin for its own two
    writes), and is left to the sweep when that is under a second. The
    sweep's own attempts have DEFAULT_TIMEOUT each."""
    now = time.monotonic()
    if deadline - now < 4 * notify.DEFAULT_TIMEOUT:
        return
    budget = min(notify.DEFAULT_TIMEOUT, started + ASSEMBLYAI_WAITS - NOTIFY_MARGIN - now)
    if budget < 1.0:
        logs.info("no time for the first notification attempt now; the sweep makes it", tid)
        return
    try:
        notify.deliver(cfg, tid, timeout=budget)
    except Exception as exc:  # noqa: BLE001 - the notification stays due; the sweep retries
        logs.warning("could not send the notification now; the sweep will", tid,
                     error=_reason(exc), error_type=type(exc).__name__)  # fmt: skip
