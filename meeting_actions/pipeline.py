"""The flow of one meeting: submit; on AssemblyAI's webhook, claim the work,
ask the LLM Gateway once and write the result; and the scheduled sweep
that finishes what deliveries could not.

Every public function returns a lifecycle result (Done, Busy, Refused);
the entry points in main.py map them to HTTP, uploads.py to acknowledge
or raise. The states, their deadlines and the failure kinds are in
lifecycle.py; the claim is lease.py's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import time
import traceback
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from . import action_items, assemblyai, inputs, lease, lifecycle, logs, moments, notify, record
from . import regenerate as regenerate_
from .config import WEBHOOK_SECRET_HEADER, Config
from .lifecycle import Busy, Done, Failure, Kind, Refused, Result


def write_budget(cfg: Config) -> float:
    """Seconds kept back at the end of a run for the final write."""
    return min(record.PATIENT_SECONDS, max(2.0, cfg.function_timeout / 10))


def deadline_of(cfg: Config, started: float | None = None) -> float:
    """The monotonic time this invocation must be done by: its timeout, less a margin."""
    started = time.monotonic() if started is None else started
    return started + cfg.function_timeout - min(5.0, cfg.function_timeout / 20)


def firestore_guard(func: Callable[..., Result]) -> Callable[..., Result]:
    """A Firestore failure that escapes the flow is classified and handed
    back as Busy: transient ones are retried, operator ones say what to fix."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Result:
        try:
            return func(*args, **kwargs)
        except record.Unavailable as exc:
            failure = lifecycle.from_firestore(exc)
            tid = kwargs.get("transcript_id") or next(
                (a for a in args[1:] if isinstance(a, str)), None
            )
            logs.error(failure.message, tid, kind=str(failure.kind))
            return Busy(
                "the meeting store (Firestore) is unavailable, try again later"
                if failure.kind is Kind.TRANSIENT
                else failure.message,
                60 if failure.kind is Kind.OPERATOR else lifecycle.RETRY_AFTER,
                kind=failure.kind,
                transcript_id=tid,
            )

    return wrapper


def _busy_for(failure: Failure, tid: str | None, what: str) -> Busy:
    """The Busy a transient or operator failure becomes, logged once."""
    if failure.kind is Kind.OPERATOR:
        logs.error(f"{what}: {failure.message}", tid, kind=str(failure.kind))
        return Busy(f"{what}: {failure.message}", 60, Kind.OPERATOR, tid)
    logs.warning(f"{what}: {failure.message}", tid, kind=str(failure.kind))
    wait = min(max(failure.retry_after or lifecycle.RETRY_AFTER, 1), 300)
    return Busy(f"{what}: {failure.message}", wait, Kind.TRANSIENT, tid)


# --- submit ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Hints:
    """What the webhook needs to build a meeting's document by itself.

    Carried on the webhook URL's query string (AssemblyAI's documented way
    to attach metadata), so a meeting whose document could not be written
    at submit time, or was lost, is still recorded in full.
    """

    answer_format: str | None = None
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    source: dict[str, Any] | None = None
    notify_url: str | None = None


def webhook_url(cfg: Config, hints: Hints) -> str:
    params: list[tuple[str, str]] = []
    if hints.answer_format:
        params.append(("answer_format", hints.answer_format))
    if hints.notify_url:
        params.append(("notify", hints.notify_url))
    params += [(f"meta.{k}", v) for k, v in sorted(hints.metadata.items())]
    for key, value in (hints.source or {}).items():
        if key != "kind" and value is not None:
            params.append((f"src.{key}", str(value)))
    if not params:
        return cfg.webhook_url
    parts = urllib.parse.urlsplit(cfg.webhook_url)
    query = "&".join(q for q in (parts.query, urllib.parse.urlencode(params)) if q)
    return urllib.parse.urlunsplit(parts._replace(query=query))


def hints_from_query(args: Mapping[str, str]) -> Hints:
    """The Hints of webhook_url(), read back; anything malformed is dropped."""
    meta = {k[5:]: v for k, v in args.items() if k.startswith("meta.")}
    try:
        meta = inputs.metadata(meta)
    except inputs.InvalidRequest:
        meta = {}
    source = {k[4:]: v for k, v in args.items() if k.startswith("src.")}
    fmt = args.get("answer_format")
    notify_to = args.get("notify")
    try:  # the production address check runs again at send time
        notify_to = notify.check_notify_url(notify_to, True) if notify_to else None
    except ValueError:
        notify_to = None
    return Hints(
        notify_url=notify_to,
        answer_format=fmt[:200] if fmt else None,
        metadata=meta,
        source={"kind": "gcs", **source} if source else None,
    )


def options_of(sub: inputs.Submission, cfg: Config) -> dict[str, Any]:
    models = sub.speech_models or cfg.speech_models
    return {
        "speech_models": list(models) if models else None,
        "language_code": sub.language_code,
        # On unless the caller turns them off: they give the items their moments.
        "speaker_labels": sub.speaker_labels is not False,
        "speakers": [s.name for s in sub.speakers] or None,
        "answer_format": sub.answer_format or action_items.DEFAULT_ANSWER_FORMAT,
    }


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
    hints = Hints(
        sub.answer_format,
        sub.metadata,
        source if source.get("kind") != "url" else None,
        sub.notify_url,
    )
    params: dict[str, Any] = {
        "audio_url": sub.audio_url,
        "webhook_url": webhook_url(cfg, hints),
        "webhook_auth_header_name": WEBHOOK_SECRET_HEADER,
        "webhook_auth_header_value": cfg.webhook_secret,
    }
    for key in ("speech_models", "language_code", "speaker_labels"):
        if options[key] is not None:
            params[key] = options[key]
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


def submit(cfg: Config, sub: inputs.Submission, source: dict[str, Any] | None = None) -> Result:
    """Hand the recording to AssemblyAI, then record the queued meeting."""
    source = source or record.source_of_url(sub.audio_url)
    try:
        tid = start_transcription(cfg, sub, source)
    except Failure as failure:
        if failure.kind is Kind.PERMANENT:
            logs.warning("AssemblyAI did not accept the recording", error=failure.message)
            return Refused(f"AssemblyAI refused the job: {failure.message}", by="assemblyai")
        return _busy_for(failure, None, "AssemblyAI did not accept the recording")
    try:
        record_queued(cfg, tid, sub, source)
    except Failure as failure:
        logs.error("AssemblyAI accepted the job but its record could not be written", tid,
                   error=failure.message)  # fmt: skip
        return Busy(
            "AssemblyAI accepted the job but its record could not be written; "
            "it will be written when the transcript is ready. Do not resubmit.",
            kind=failure.kind,
            transcript_id=tid,
        )
    logs.info("submitted", tid, source=source.get("kind"))
    return Done(lifecycle.QUEUED, tid, record.path(cfg, tid))


# --- the webhook ---------------------------------------------------------------


def on_webhook(
    cfg: Config, event: inputs.WebhookEvent, hints: Hints, deadline: float | None = None
) -> Result:
    """Act on one (authenticated) delivery from AssemblyAI."""
    if event.status == "redacted_audio_ready":
        logs.info("ignored a redacted_audio_ready delivery")
        return Done("ignored", detail={"reason": "redacted_audio_ready"})
    tid = event.transcript_id
    assert tid is not None
    deadline = deadline or deadline_of(cfg)
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
            "language_code": transcript.get("language_code"),
            "speaker_labels": transcript.get("speaker_labels"),
            "speakers": [n for n in names if isinstance(n, str)][: inputs.MAX_SPEAKERS] or None,
            "answer_format": hints.answer_format or action_items.DEFAULT_ANSWER_FORMAT,
        },
        "metadata": hints.metadata,
        "notify_url": hints.notify_url,
        **_transcript_facts(transcript),
    }


def _transcript_facts(transcript: dict[str, Any]) -> dict[str, Any]:
    return {
        "audio_duration": transcript.get("audio_duration"),
        "language_code": transcript.get("language_code"),
    }


def _read_transcript(cfg: Config, tid: str) -> dict[str, Any]:
    try:
        transcript = assemblyai.get_transcript(cfg, tid)
    except assemblyai.ApiError as exc:
        raise exc.failure() from None
    if not isinstance(transcript, dict):
        raise Failure(Kind.TRANSIENT, "AssemblyAI's transcript is not an object")
    return transcript


@firestore_guard
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
        if isinstance(not_before, dt.datetime) and not_before > at:
            wait = (not_before - at).total_seconds()
            return Busy("waiting for the LLM Gateway's rate limit", wait, transcript_id=tid,
                        rate_limited=True)  # fmt: skip
        return None

    def create() -> dict[str, Any]:
        # A delivery before its document (Firestore was away at submit
        # time, or AssemblyAI failed very fast): build it from AssemblyAI's record.
        read["transcript"] = read["transcript"] or _read_transcript(cfg, tid)
        return _document_from_transcript(read["transcript"], hints)

    try:
        claimed = lease.claim(
            cfg.collection, tid, "generation", uuid.uuid4().hex, cfg.claim_seconds,
            decide, lambda _: {"status": lifecycle.GENERATING}, create,
        )  # fmt: skip
    except Failure as failure:  # reading the transcript for a missing document
        if failure.kind is Kind.PERMANENT:
            logs.warning("AssemblyAI does not know this transcript", tid, error=failure.message)
            return Refused(f"AssemblyAI: {failure.message}", by="unknown")
        return _busy_for(failure, tid, "could not read the transcript from AssemblyAI")
    if not isinstance(claimed, lease.Lease):
        if isinstance(claimed, Refused):
            return Refused("no such meeting", by="unknown")
        return claimed
    logs.info("claimed the meeting", tid, attempt=claimed.state.get("attempts"))
    return _holding(cfg, claimed, read["transcript"], hints, deadline, started)


def _holding(
    cfg: Config,
    held: lease.Lease,
    transcript: dict[str, Any] | None,
    hints: Hints,
    deadline: float,
    started: float,
) -> Result:
    """Generate while holding the claim: a crash gives it back, a result is
    notified. Shared by deliveries, the sweep and regenerations."""
    try:
        result = _generate(cfg, held, transcript, hints, deadline, started)
    except record.Unavailable:
        raise  # Firestore is away: the guard answers "later", the lease expires
    except Exception as exc:  # noqa: BLE001 - never leave a claim held by a crash
        return _crashed(cfg, held, exc)
    if isinstance(result, Done) and held.data.get("result_version") == 1:
        # Once per meeting, at its first result (not on every claim).
        _resolve_upload(cfg, held.data.get("source"), held.doc_id)
    if isinstance(result, Done) and held.data.get("notify_url"):
        _notify_now(cfg, held.doc_id, deadline)
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
            transcript = _read_transcript(cfg, tid)
        except Failure as failure:
            if failure.kind is Kind.PERMANENT:
                return _fail(held, f"AssemblyAI could not return the transcript: {failure.message}",
                             "transcription")  # fmt: skip
            held.release(f"reading the transcript: {failure.message}",
                         sweep_at=_later(cfg.recheck_seconds))  # fmt: skip
            return _busy_for(failure, tid, "could not read the transcript from AssemblyAI")
    facts = _transcript_facts(transcript)
    if transcript.get("status") == "error":
        message = logs.strip_url_queries(str(transcript.get("error") or "transcription failed"))
        logs.warning("transcription failed", tid, error=message)
        return _fail(held, message, "transcription", facts)
    if transcript.get("status") != "completed":
        held.release("the transcript is not completed yet",
                     extra={"status": lifecycle.QUEUED},
                     sweep_at=_later(cfg.stale_queued_seconds))  # fmt: skip
        return Busy("the transcript is not completed yet", transcript_id=tid)

    # Never start a gateway call that cannot finish, with its write, in time.
    gateway_deadline = deadline - write_budget(cfg)
    if time.monotonic() + min(cfg.gateway_timeout, 30) > gateway_deadline:
        held.release("no time left in this run for the LLM Gateway")
        return Busy("no time left in this run for the LLM Gateway", transcript_id=tid)
    answer_format = (held.data.get("options") or {}).get("answer_format") or hints.answer_format
    # With utterances the prompt carries who said what, and when; without
    # (speaker labels off), the gateway substitutes the plain text.
    meeting = moments.read(transcript)
    # A person may name another model on the document (regeneration).
    override = held.data.get("llm_model")
    model = override if inputs.is_model_name(override) else cfg.llm_model
    body = action_items.request_body(
        tid, model, answer_format or action_items.DEFAULT_ANSWER_FORMAT,
        cfg.llm_max_tokens, meeting.lines if meeting.turns else None, meeting.unnamed,
    )  # fmt: skip
    asked = time.monotonic()
    try:
        answer = assemblyai.chat_completion(cfg, body, deadline=gateway_deadline)
    except assemblyai.ApiError as exc:
        return _gateway_failed(cfg, held, exc)
    answered = time.monotonic()
    # From here on the answer is paid for: whatever fails is poison.
    try:
        fields = _result_fields(
            cfg, answer, facts, meeting, held.data.get("source"), model, answer_format
        )
        if held.data.get("error"):  # a retry after an earlier failure: clear it
            fields.update(error=None, error_stage=None)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError) as exc:
        return _poison(cfg, held, _reason(exc))
    try:
        written = _final(held, fields)
    except record.Unavailable as exc:
        failure = lifecycle.from_firestore(exc)
        if failure.kind is Kind.TRANSIENT:
            raise  # the guard answers 503; the lease expires, the work is redone
        return _poison(cfg, held, f"the result could not be stored: {failure.message}")
    except (ValueError, TypeError, UnicodeError) as exc:
        return _poison(cfg, held, f"the result could not be stored: {_reason(exc)}")
    if not written:
        return Busy("lost the claim before the result was written", transcript_id=tid)
    ms = {"claim": claimed - started, "transcript": asked - claimed,
          "gateway": answered - asked, "write": time.monotonic() - answered}  # fmt: skip
    logs.info("action items written", tid, items=len(fields["action_items"]),
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
        result, quotes = moments.checked(result, meeting, source, answer_format)
        if meeting.cut_note:
            result.note = f"{result.note} {meeting.cut_note}" if result.note else meeting.cut_note
    usage = answer.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    request = answer.get("request")
    model = (request.get("model") if isinstance(request, dict) else None) or answer.get("model")

    def text(value: Any, limit: int = 200) -> str | None:
        return action_items.storable(value[:limit]) if isinstance(value, str) else None

    def count(value: Any) -> int | None:
        return value if isinstance(value, int) and not isinstance(value, bool) else None

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


def _later(seconds: float) -> dt.datetime:
    return record.now() + dt.timedelta(seconds=seconds)


def _gateway_failed(cfg: Config, held: lease.Lease, exc: assemblyai.ApiError) -> Result:
    """Rate limits wait, transient failures count, operator ones wait
    uncounted, refusals end the meeting."""
    tid = held.doc_id
    failure = exc.failure()
    message = f"LLM Gateway: {failure.message}"
    if failure.rate_limited:
        logs.warning("the LLM Gateway is rate limiting, will try later", tid)
        wait = min(max(failure.retry_after or lifecycle.RETRY_AFTER, 1), 300)
        held.release(message, not_before=_later(wait))
        return Busy("the LLM Gateway is rate limiting, try again later", wait, transcript_id=tid,
                    rate_limited=True)  # fmt: skip
    if failure.kind is Kind.OPERATOR:
        held.release(message, sweep_at=_later(cfg.recheck_seconds))
        return _busy_for(failure, tid, "the LLM Gateway refused the key")
    if failure.kind is Kind.TRANSIENT:
        attempts = int(held.state.get("attempts") or 0) + 1
        if attempts < cfg.max_generation_attempts:
            logs.warning("the LLM Gateway failed, will try again", tid, error=message,
                         attempts=attempts)  # fmt: skip
            held.release(message, count_attempt=True)
            return Busy("the LLM Gateway failed, try again later", transcript_id=tid)
        message = f"gave up after {attempts} failed attempts; last: {message}"
        return _fail(held, message, "action_items", attempts=attempts)
    return _fail(held, message, "action_items")


def _poison(cfg: Config, held: lease.Lease, reason: str) -> Result:
    """A paid answer that cannot be parsed or stored: asking again would
    most likely pay for the same failure, so stop after MAX_POISON_CALLS."""
    tid = held.doc_id
    calls = int(held.state.get("poison_calls") or 0) + 1
    message = f"the model's answer could not be used: {reason}"
    if calls < cfg.max_poison_calls:
        logs.error(message + "; will ask again", tid, poison_calls=calls)
        held.data.setdefault("generation", {})["poison_calls"] = calls
        held.release(message, count_attempt=True)
        return Busy(message, transcript_id=tid)
    return _fail(held, message, "action_items", poison_calls=calls)


def _crashed(cfg: Config, held: lease.Lease, exc: Exception) -> Result:
    """A bug after the claim: give the claim back and count the attempt, so
    the meeting is retried a bounded number of times, then ends in error."""
    tid = held.doc_id
    logs.error("unexpected error while holding the meeting", tid,
               traceback=traceback.format_exc(limit=20))  # fmt: skip
    attempts = int(held.state.get("attempts") or 0) + 1
    try:
        if attempts >= cfg.max_generation_attempts:
            return _fail(held, f"internal error ({type(exc).__name__}) after {attempts} attempts",
                         "action_items", attempts=attempts)  # fmt: skip
        held.release(f"internal error: {type(exc).__name__}", count_attempt=True)
    except Exception:  # noqa: BLE001 - the lease expires by itself
        logs.error("could not give the claim back", tid)
    return Busy("internal error, try again later", transcript_id=tid)


def _final(held: lease.Lease, fields: dict[str, Any]) -> bool:
    """Write a final result (completed or error) as a new result version,
    with its notification due when the meeting has a notify URL."""
    version = int(held.data.get("result_version") or 0) + 1
    started = notify.started(held.doc_id, version, held.data.get("notify_url"))
    return held.finish({**fields, "result_version": version, **started})


def _notify_now(cfg: Config, tid: str, deadline: float) -> None:
    """The first attempt, right after the result; the sweep makes the rest.
    Never delays or endangers the result: it is written already."""
    if deadline - time.monotonic() < 4 * notify.DEFAULT_TIMEOUT:
        return
    try:
        notify.deliver(cfg, tid)
    except Exception:  # noqa: BLE001 - the notification stays due; the sweep retries
        logs.warning("could not send the notification now; the sweep will", tid)


def _fail(
    held: lease.Lease,
    message: str,
    stage: str,
    facts: dict[str, Any] | None = None,
    **generation: Any,
) -> Result:
    tid = held.doc_id
    message = logs.strip_url_queries(message)[:1000]
    logs.error("the meeting failed", tid, error=message, stage=stage)
    fields: dict[str, Any] = {
        "status": lifecycle.ERROR,
        "error": message,
        "error_stage": stage,
        **(facts or {}),
    }
    if generation:
        fields["generation"] = generation
    if not _final(held, fields):
        return Busy("lost the claim before the error was written", transcript_id=tid)
    return Done(lifecycle.ERROR, tid, f"{held.collection}/{tid}")


# --- regeneration from the console ------------------------------------------------


@firestore_guard
def regenerate(cfg: Config, transcript_id: str, deadline: float) -> Result:
    """A person set `regenerate: true`: generate the items again from the
    existing transcript (no new transcription), through the same claim as
    everything else, so a duplicated event makes one gateway call. The
    claim clears the flag and keeps the previous result in `history`."""
    cfg.require("api_key")
    tid = transcript_id
    started = time.monotonic()

    def decide(data: dict[str, Any] | None, _at: dt.datetime) -> Result | None:
        if not data or data.get("regenerate") is not True:
            return Done("nothing to do", tid)  # handled already, or never asked
        status = data.get("status")
        if status == lifecycle.GENERATING:
            reason = ("the meeting is generating its action items right now; set regenerate "
                      "again once it is completed or error")  # fmt: skip
        elif status == lifecycle.QUEUED:
            reason = "the meeting is not transcribed yet; its action items will come by themselves"
        elif status == lifecycle.ERROR and data.get("error_stage") == "transcription":
            reason = ("AssemblyAI could not transcribe this recording, so there is nothing to "
                      "generate from; submit the recording again")  # fmt: skip
        elif data.get("llm_model") is not None and not inputs.is_model_name(data["llm_model"]):
            reason = "llm_model must be a model name from the LLM Gateway's list, such as claude-sonnet-4-6"
        else:
            return None
        return Refused(reason, by="regenerate")

    def on_claim(data: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "status": lifecycle.GENERATING,
            "regenerate": False,
            "regenerate_note": None,
            "regenerated_at": record.SERVER_TIMESTAMP,
            "history": regenerate_.history_with(data or {}),
        }

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
    return _holding(cfg, claimed, None, Hints(), deadline, started)


def _refuse_regeneration(cfg: Config, tid: str, reason: str) -> None:
    """Clear the flag and say why, without disturbing a live holder (its
    final write tolerates writes that leave its claim alone)."""
    for _ in range(3):
        data, version = record.read(cfg, tid)
        if not data or data.get("regenerate") is not True:
            return
        try:
            record.update(cfg, tid, {"regenerate": False, "regenerate_note": reason},
                          if_unchanged_since=version)  # fmt: skip
        except record.LostRace:
            continue
        logs.warning(f"regeneration refused: {reason}", tid)
        return


# --- the sweep -----------------------------------------------------------------


@firestore_guard
def check_queued(
    cfg: Config, transcript_id: str, data: dict[str, Any], version: Any, deadline: float
) -> Result:
    """A queued meeting whose deliveries never came (its document and
    version as the sweep's query read them): ask AssemblyAI once."""
    tid = transcript_id
    try:
        transcript = _read_transcript(cfg, tid)
    except Failure as failure:
        if failure.kind is Kind.PERMANENT:
            transcript = {"id": tid, "status": "error", "error": f"AssemblyAI: {failure.message}"}
        else:
            _reschedule(cfg, tid, {"sweep_at": _later(cfg.recheck_seconds)}, version)
            return _busy_for(failure, tid, "could not read the transcript from AssemblyAI")
    if transcript.get("status") in ("completed", "error"):
        logs.warning("AssemblyAI's deliveries were lost; the sweep takes the meeting on", tid,
                     transcript_status=transcript.get("status"))  # fmt: skip
        return complete(cfg, tid, Hints(), deadline, transcript)
    checks = int(data.get("queued_checks") or 0) + 1
    created = data.get("created_at")
    base = created if isinstance(created, dt.datetime) else record.now()
    later = max(
        lifecycle.queued_check_at(base, checks, cfg.stale_queued_seconds),
        _later(cfg.recheck_seconds),
    )
    _reschedule(cfg, tid, {"sweep_at": later, "queued_checks": checks}, version)
    return Busy("AssemblyAI is still transcribing", (later - record.now()).total_seconds(),
                transcript_id=tid)  # fmt: skip


def _reschedule(cfg: Config, tid: str, fields: dict[str, Any], version: Any) -> None:
    # On a lost race someone moved it on meanwhile: nothing to reschedule.
    with contextlib.suppress(*record.LostRace):
        record.update(cfg, tid, fields, if_unchanged_since=version)


@firestore_guard
def sweep(cfg: Config, deadline: float | None = None) -> Result:
    """Move on every meeting whose `sweep_at` has passed (see lifecycle.py).

    Called every minute by Cloud Scheduler. Makes at most RECOVERY_BATCH
    gateway calls, oldest deadline first, each meeting on its own (one bad
    meeting cannot stop the rest), and starts no gateway call that cannot
    finish before the run's deadline. A short rate limit is waited out, so
    the sweep uses the whole limit; a long one ends the run.
    """
    deadline = deadline or deadline_of(cfg)
    at = record.now()
    due = record.due(cfg, at, limit=cfg.recovery_batch * 2)
    results: dict[str, str] = {}
    stopped = None
    needed = min(cfg.gateway_timeout, 30) + write_budget(cfg)
    queue = list(due)
    waited = 0.0
    while queue:
        tid, data, version = queue[0]
        if sum(1 for r in results.values() if r != "rate_limited") >= cfg.recovery_batch:
            stopped = "batch"
            break
        if time.monotonic() + needed > deadline:
            stopped = "deadline"
            break
        result = _sweep_one(cfg, tid, data, version, deadline)
        results[tid] = _name(result) if result is not None else "nothing to do"
        if isinstance(result, Busy) and result.rate_limited:
            wait = result.retry_after
            if wait > cfg.recheck_seconds or time.monotonic() + wait + needed > deadline:
                stopped = "rate_limited"
                break
            time.sleep(wait)  # the gateway said when; the meeting's not_before agrees
            waited += wait
            continue  # the same meeting again: it is the oldest
        queue.pop(0)
        if isinstance(result, Busy) and result.kind is Kind.OPERATOR:
            stopped = "operator"  # every meeting would fail the same way
            break
    counts: dict[str, int] = {}
    for name in results.values():
        counts[name] = counts.get(name, 0) + 1
    if results or stopped:
        logs.info("sweep", due=len(due), handled=len(results), stopped=stopped,
                  waited_s=round(waited, 1), **counts)  # fmt: skip
    return Done("swept", detail={"due": len(due), "tried": len(results), "stopped": stopped,
                                 "results": results})  # fmt: skip


def _sweep_one(
    cfg: Config, tid: str, data: dict[str, Any], version: Any, deadline: float
) -> Result | None:
    """One due meeting; a crash is logged and kept to this meeting."""
    status = data.get("status")
    try:
        if status == lifecycle.QUEUED:
            return check_queued(cfg, tid, data, version, deadline)
        if status == lifecycle.GENERATING:
            return complete(cfg, tid, Hints(), deadline)
        if notify.is_due(data):
            return Done(f"notification_{notify.deliver(cfg, tid)}", tid)
        if (data.get("notification") or {}).get("status") not in ("pending", "sending"):
            _reschedule(cfg, tid, {"sweep_at": None}, version)  # final, nothing pending
        return None
    except Exception:  # noqa: BLE001 - one bad meeting must not stop the run
        logs.error("the sweep could not handle a meeting", tid,
                   traceback=traceback.format_exc(limit=20))  # fmt: skip
        return Busy("crashed", transcript_id=tid, detail={"crashed": True})


def _name(result: Result) -> str:
    if isinstance(result, Busy) and result.detail.get("crashed"):
        return "crashed"
    if isinstance(result, Done):
        return result.status
    if isinstance(result, Busy):
        return "rate_limited" if result.rate_limited else f"busy_{result.kind}"
    return "refused"
