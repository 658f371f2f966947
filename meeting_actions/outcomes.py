"""How a claimed meeting ends an attempt: its final result written as a new
result version (completed or error), or a failure classified into what
happens next. A rate limit waits uncounted, a transient failure is retried
a bounded number of times, an operator failure waits for a person, a
refusal or a poison answer ends the meeting in `error`, and a crash gives
the claim back counted. A regeneration that cannot produce a result it
should (a person's edit the gateway refused, say) keeps the previous one.
"""

from __future__ import annotations

import datetime as dt
import traceback
import uuid
from typing import Any

from . import assemblyai, console, lease, lifecycle, logs, models, notify, record, text
from .config import Config
from .lifecycle import Busy, Done, Kind, Result


def gateway_failed(cfg: Config, held: lease.Lease, exc: assemblyai.ApiError) -> Result:
    """Rate limits wait, transient failures count, operator ones wait
    uncounted, refusals end the meeting."""
    tid = held.doc_id
    failure = exc.failure()
    message = f"LLM Gateway: {failure.message}"
    if failure.rate_limited:
        logs.warning("the LLM Gateway is rate limiting, will try later", tid)
        wait = min(max(failure.retry_after or lifecycle.RETRY_AFTER, 1), 300)
        held.release(message, not_before=record.later(wait))
        return Busy("the LLM Gateway is rate limiting, try again later", wait, transcript_id=tid,
                    rate_limited=True)  # fmt: skip
    if failure.kind is Kind.OPERATOR:
        held.release(message, sweep_at=record.later(cfg.recheck_seconds))
        return lifecycle.busy_for(failure, tid, "the LLM Gateway refused the key")
    if failure.kind is Kind.TRANSIENT:
        attempts = held.state["attempts"] + 1
        if attempts < cfg.max_generation_attempts:
            logs.warning("the LLM Gateway failed, will try again", tid, error=message,
                         attempts=attempts)  # fmt: skip
            held.release(message, count_attempt=True)
            return Busy("the LLM Gateway failed, try again later", transcript_id=tid)
        message = f"gave up after {attempts} failed attempts; last: {message}"
        return fail(held, message, "action_items", attempts=attempts)
    return fail(held, message, "action_items")


def no_model(cfg: Config, held: lease.Lease, asked: models.Asked) -> Result:
    """No configured model answered (models.py). Some rate limited: wait for
    the earliest. Every listed one refused the request: it ends the meeting.
    None usable (not listed, or refused while the list is unknown): the
    operator's to fix; the meeting waits."""
    tid = held.doc_id
    models.keep_waits(held.data, asked.limited)
    earliest = asked.earliest()
    if earliest is not None:
        wait = max((earliest - record.now()).total_seconds(), 1)
        logs.warning("every configured model is rate limited, will try later", tid,
                     models=sorted(asked.limited), wait=round(wait, 1))  # fmt: skip
        said = f" ({asked.limit_message})" if asked.limit_message else ""
        held.release(f"LLM Gateway: every configured model is rate limited{said}",
                     not_before=earliest)  # fmt: skip
        return Busy("the LLM Gateway is rate limiting every configured model, try again later",
                    wait, transcript_id=tid, rate_limited=True)  # fmt: skip
    if asked.refused and asked.listed_known:
        reasons = "; ".join(f"{m}: {r}" for m, r in asked.refused.items())
        return fail(held, f"LLM Gateway: every listed model refused the request ({reasons})",
                    "action_items")  # fmt: skip
    unusable = [f"{m} (not listed)" for m in asked.unlisted]
    unusable += [f"{m} (refused: {r[:120]})" for m, r in asked.refused.items()]
    failure = lifecycle.Failure(
        Kind.OPERATOR,
        f"no configured LLM Gateway model can be used: {', '.join(unusable)}; set "
        f"{models.SETTING} to models on the gateway's list; the meeting waits and is retried",
        fix="llm_models",
    )
    held.release(failure.message, sweep_at=record.later(cfg.recheck_seconds))
    return lifecycle.busy_for(failure, tid, "the LLM Gateway has none of the configured models")


def poison(cfg: Config, held: lease.Lease, reason: str) -> Result:
    """A paid answer that cannot be parsed or stored: asking again would
    most likely pay for the same failure, so stop after MAX_POISON_CALLS."""
    tid = held.doc_id
    calls = console.count(held.state.get("poison_calls")) + 1
    message = f"the model's answer could not be used: {reason}"
    if calls < cfg.max_poison_calls:
        logs.error(message + "; will ask again", tid, poison_calls=calls)
        held.data.setdefault("generation", {})["poison_calls"] = calls
        held.release(message, count_attempt=True)
        return Busy(message, transcript_id=tid)
    return fail(held, message, "action_items", poison_calls=calls)


def crashed(cfg: Config, held: lease.Lease, exc: Exception) -> Result:
    """A bug after the claim: give the claim back and count the attempt, so
    the meeting is retried a bounded number of times, then ends. Always
    returns: if nothing can be written, the claim stays unsettled and the
    next claim, after its lease, counts this attempt (lease.py)."""
    tid = held.doc_id
    logs.error("unexpected error while holding the meeting", tid,
               traceback=traceback.format_exc(limit=20))  # fmt: skip
    attempts = held.state["attempts"] + 1
    message = f"internal error ({type(exc).__name__})"
    try:
        if attempts >= cfg.max_generation_attempts:
            return fail(held, f"{message} after {attempts} attempts", "action_items",
                        attempts=attempts)  # fmt: skip
        held.release(f"internal error: {type(exc).__name__}", count_attempt=True)
    except record.Unavailable:
        logs.error("could not give the claim back; the next claim counts this attempt", tid)
    except Exception:  # noqa: BLE001 - the lease expires by itself, and the next claim counts it
        logs.error("could not give the claim back; the next claim counts this attempt", tid,
                   traceback=traceback.format_exc(limit=5))  # fmt: skip
    return Busy("internal error, try again later", transcript_id=tid)


def regenerating(held: lease.Lease) -> str | None:
    """The status a regeneration's claim goes back to if it fails
    (regenerate.py marks the claim), or None for any other claim."""
    previous = held.state.get("regenerating_from")
    return previous if previous in lifecycle.FINAL else None


def keep_previous(held: lease.Lease, note: str) -> Result:
    """A regeneration that should not replace the result: the meeting goes
    back to the result it had when the request was claimed (its fields
    were never touched), with `regenerate_note` saying why. No new result
    version, no notification; the copy the claim put in `history` goes."""
    tid = held.doc_id
    data = held.data
    previous = held.state.get("regenerating_from")
    if previous not in lifecycle.FINAL:
        previous = lifecycle.COMPLETED if console.items(data) else lifecycle.ERROR
    history = console.history(data)
    same = ("result_version", "result_id", "completed_at", "error")
    if history and all(history[-1].get(k) == data.get(k) for k in same):
        history.pop()
    note = text.storable(logs.strip_url_queries(note), 2000)
    logs.warning("regeneration refused; the previous result is kept", tid, note=note)
    fields: dict[str, Any] = {"status": previous, "history": history, "regenerate_note": note}
    pending = console.notification(data)
    if pending.get("status") in ("pending", "sending") and isinstance(
        pending.get("next_at"), dt.datetime
    ):
        fields["sweep_at"] = pending["next_at"]  # the previous result's notification goes on
    if not held.finish(fields):
        return Busy("lost the claim before the previous result was put back", transcript_id=tid)
    return Done(previous, tid, f"{held.collection}/{tid}", {"kept_previous": True})


def final(held: lease.Lease, fields: dict[str, Any]) -> bool:
    """Write a final result (completed or error) as a new result version,
    with its notification due when the meeting has a notify URL. The
    version follows the highest the document shows anywhere (console.py),
    so a person's edit can neither lower it nor break the write."""
    version = console.result_version(held.data) + 1
    result_id = uuid.uuid4().hex
    try:
        started = notify.started(held.doc_id, version, console.notify_url(held.data), result_id)
    except Exception:  # noqa: BLE001 - a notification must never cost the result
        logs.error("could not start the notification; the result is written without it",
                   held.doc_id, traceback=traceback.format_exc(limit=5))  # fmt: skip
        started = {}
    return held.finish({**fields, "result_version": version, "result_id": result_id, **started})


def fail(
    held: lease.Lease,
    message: str,
    stage: str,
    facts: dict[str, Any] | None = None,
    **generation: Any,
) -> Result:
    tid = held.doc_id
    message = logs.strip_url_queries(message)[:1000]
    if regenerating(held) == lifecycle.COMPLETED:
        # A person asked for a new result: failing to make one keeps the old.
        return keep_previous(held, f"the regeneration failed: {message}; the previous "
                             "result is kept")  # fmt: skip
    logs.error("the meeting failed", tid, event="meeting_failed", error=message, stage=stage)
    fields: dict[str, Any] = {
        "status": lifecycle.ERROR,
        "error": message,
        "error_stage": stage,
        **(facts or {}),
    }
    if generation:
        fields["generation"] = generation
    try:
        written = final(held, fields)
    except record.Unavailable:
        raise
    except Exception:  # noqa: BLE001 - the meeting must end: the error alone, plainly
        logs.error("could not write the error in full; writing it alone", tid,
                   traceback=traceback.format_exc(limit=5))  # fmt: skip
        written = held.finish({k: fields[k] for k in ("status", "error", "error_stage")})
    if not written:
        return Busy("lost the claim before the error was written", transcript_id=tid)
    return Done(lifecycle.ERROR, tid, f"{held.collection}/{tid}")
