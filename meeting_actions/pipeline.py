"""The flow of one meeting: submit, then on AssemblyAI's webhook claim the
work, ask the LLM Gateway once, and write the result.

Every public function returns an Outcome (an HTTP status and a JSON body)
chosen so the caller does the right thing: AssemblyAI retries a 5xx and
gives up on a 4xx, so "try again later" is a 503 and "done, or never
possible" is a 2xx with the reason written to the meeting's document.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from . import action_items, assemblyai, inputs, logs, record
from .config import WEBHOOK_SECRET_HEADER, Config

# AssemblyAI retries a failed delivery 10 seconds later.
RETRY_AFTER = 10


@dataclasses.dataclass
class Outcome:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


def _busy(message: str, retry_after: float = RETRY_AFTER, **body: Any) -> Outcome:
    seconds = str(max(1, round(retry_after)))
    return Outcome(503, {"error": message, **body}, {"Retry-After": seconds})


def firestore_guard(func: Callable[..., Outcome]) -> Callable[..., Outcome]:
    """Firestore being away is a 503: the caller comes back later."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Outcome:
        try:
            return func(*args, **kwargs)
        except record.Unavailable as exc:
            tid = kwargs.get("transcript_id") or next((a for a in args if isinstance(a, str)), None)
            logs.error("Firestore is unavailable", tid, detail=type(exc).__name__)
            return _busy("the meeting store (Firestore) is unavailable, try again later")

    return wrapper


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


def webhook_url(cfg: Config, hints: Hints) -> str:
    params: list[tuple[str, str]] = []
    if hints.answer_format:
        params.append(("answer_format", hints.answer_format))
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
    return Hints(
        answer_format=fmt[:200] if fmt else None,
        metadata=meta,
        source={"kind": "gcs", **source} if source else None,
    )


def options_of(sub: inputs.Submission, cfg: Config) -> dict[str, Any]:
    models = sub.speech_models or cfg.speech_models
    return {
        "speech_models": list(models) if models else None,
        "language_code": sub.language_code,
        "speaker_labels": sub.speaker_labels,
        "answer_format": sub.answer_format or action_items.DEFAULT_ANSWER_FORMAT,
    }


@firestore_guard
def submit(cfg: Config, sub: inputs.Submission, source: dict[str, Any] | None = None) -> Outcome:
    """Hand the recording to AssemblyAI, then record the queued meeting."""
    cfg.require("api_key", "webhook_url", "webhook_secret")
    options = options_of(sub, cfg)
    source = source or record.source_of_url(sub.audio_url)
    hints = Hints(
        sub.answer_format,
        sub.metadata,
        source if source.get("kind") != "url" else None,
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
    try:
        transcript = assemblyai.submit_transcript(cfg, params)
    except assemblyai.ApiError as exc:
        logs.warning("AssemblyAI did not accept the recording", error=exc.message)
        if exc.transient:
            return _busy(f"AssemblyAI is unavailable: {exc.message}")
        return Outcome(502, {"error": f"AssemblyAI refused the job: {exc.message}"})
    tid = transcript.get("id") if isinstance(transcript, dict) else None
    if not isinstance(tid, str) or not tid:
        return Outcome(502, {"error": "AssemblyAI's answer has no transcript id"})
    fields = {
        "status": record.QUEUED,
        "transcript_id": tid,
        "source": source,
        "options": options,
        "metadata": sub.metadata,
    }
    try:
        record.create(cfg, tid, fields)
    except record.LostRace:
        # The webhook got there first (a very fast failure, say): add what
        # only the submitter knows, leave the status alone.
        record.update(cfg, tid, {k: v for k, v in fields.items() if k != "status"})
    except record.Unavailable:
        logs.error("AssemblyAI accepted the job but Firestore is unavailable", tid)
        return _busy(
            "AssemblyAI accepted the job but its record could not be written; "
            "it will be written when the transcript is ready. Do not resubmit.",
            transcript_id=tid,
        )
    logs.info("submitted", tid, source=source.get("kind"))
    return Outcome(
        202,
        {"transcript_id": tid, "status": record.QUEUED, "document": record.path(cfg, tid)},
    )


# --- webhook ----------------------------------------------------------------


def on_webhook(cfg: Config, event: inputs.WebhookEvent, hints: Hints) -> Outcome:
    """Act on one (authenticated) delivery from AssemblyAI."""
    if event.status == "redacted_audio_ready":
        logs.info("ignored a redacted_audio_ready delivery")
        return Outcome(200, {"status": "ignored", "reason": "redacted_audio_ready"})
    tid = event.transcript_id
    assert tid is not None
    if event.status == "completed":
        return complete(cfg, tid, hints)
    if event.status == "error":
        return record_transcription_error(cfg, tid, hints)
    logs.warning("ignored a delivery with an unknown status", tid, status=event.status[:40])
    return Outcome(200, {"status": "ignored", "reason": "unknown status"})


def _document_from_transcript(transcript: dict[str, Any], hints: Hints) -> dict[str, Any]:
    """A meeting's full document, built from AssemblyAI's own record of it."""
    source = hints.source or record.source_of_url(str(transcript.get("audio_url") or ""))
    return {
        "transcript_id": transcript.get("id"),
        "source": source,
        "options": {
            "speech_models": transcript.get("speech_models"),
            "language_code": transcript.get("language_code"),
            "speaker_labels": transcript.get("speaker_labels"),
            "answer_format": hints.answer_format or action_items.DEFAULT_ANSWER_FORMAT,
        },
        "metadata": hints.metadata,
        **_transcript_facts(transcript),
    }


def _transcript_facts(transcript: dict[str, Any]) -> dict[str, Any]:
    return {
        "audio_duration": transcript.get("audio_duration"),
        "language_code": transcript.get("language_code"),
    }


@firestore_guard
def record_transcription_error(cfg: Config, transcript_id: str, hints: Hints) -> Outcome:
    """AssemblyAI could not transcribe: write its reason on the document."""
    doc = record.path(cfg, transcript_id)
    for _ in range(3):
        snap = record.read(cfg, transcript_id)
        data = snap.to_dict() if snap.exists else None
        if data and data.get("status") in record.FINAL:
            return Outcome(200, {"status": data["status"], "document": doc})
        try:
            transcript = assemblyai.get_transcript(cfg, transcript_id)
        except assemblyai.ApiError as exc:
            if exc.transient:
                return _busy(f"could not read the transcript from AssemblyAI: {exc.message}")
            if data is None:  # not a meeting of ours, nor one AssemblyAI knows
                return Outcome(404, {"error": f"AssemblyAI: {exc.message}"})
            transcript = {"id": transcript_id, "error": f"AssemblyAI: {exc.message}"}
        fields = {
            "status": record.ERROR,
            "error": transcript.get("error") or "AssemblyAI reported an error without a message",
            "error_stage": "transcription",
            **_transcript_facts(transcript),
        }
        try:
            if data is None:
                record.create(
                    cfg, transcript_id, {**_document_from_transcript(transcript, hints), **fields}
                )
            else:
                record.update(cfg, transcript_id, fields, if_unchanged_since=snap.update_time)
        except record.LostRace:
            continue
        logs.warning("transcription failed", transcript_id, error=fields["error"])
        return Outcome(200, {"status": record.ERROR, "document": doc})
    return _busy("the meeting's document kept changing, try again")


# --- generation of the action items -------------------------------------------


class _Claim:
    """This caller's hold on a meeting's generation."""

    def __init__(self, cfg: Config, transcript_id: str, data: dict[str, Any], version: Any):
        self.cfg = cfg
        self.transcript_id = transcript_id
        self.data = data
        self.version = version  # update time of our claim write
        self.generation = dict(data.get("generation") or {})

    def release(self, last_error: str, count_attempt: bool, retry_after: float = 0) -> None:
        """Give the work back so a later delivery or the sweep can take it."""
        gen = {**self.generation, "lease_expires_at": record.now(), "last_error": last_error}
        if count_attempt:
            gen["attempts"] = int(gen.get("attempts") or 0) + 1
        if retry_after:
            gen["not_before"] = record.now() + dt.timedelta(seconds=retry_after)
        self._write({"generation": gen}, "release")

    def finish(self, fields: dict[str, Any], quick: bool = False) -> bool:
        gen = {**self.generation, "lease_expires_at": None, "finished_at": record.now()}
        return self._write({**fields, "generation": gen}, "finish", quick)

    def _write(self, fields: dict[str, Any], what: str, quick: bool = True) -> bool:
        try:
            record.update(
                self.cfg,
                self.transcript_id,
                fields,
                if_unchanged_since=self.version,
                **(record.QUICK if quick else record.PATIENT),
            )
            return True
        except record.LostRace:
            # Our lease ran out and someone else holds the work now.
            logs.warning(f"could not {what}: the claim was taken over", self.transcript_id)
            return False


def _claim(
    cfg: Config, tid: str, hints: Hints, holder: str
) -> tuple[_Claim | None, Outcome | None, dict | None]:
    """Win the right to generate, or say why not (done, or someone else is)."""
    transcript = None
    for _ in range(4):
        snap = record.read(cfg, tid)
        data = snap.to_dict() if snap.exists else None
        doc = record.path(cfg, tid)
        if data and data.get("status") in record.FINAL:
            return None, Outcome(200, {"status": data["status"], "document": doc}), None
        at = record.now()
        gen = dict((data or {}).get("generation") or {})
        if data and record.lease_is_live(data, at):
            if gen.get("holder") == holder:  # our own write, retried after a lost answer
                return _Claim(cfg, tid, data, snap.update_time), None, transcript
            return (
                None,
                _busy(
                    "another delivery is generating this meeting's action items",
                    status=record.GENERATING,
                ),
                None,
            )
        not_before = gen.get("not_before")
        if isinstance(not_before, dt.datetime) and not_before > at:
            wait = (not_before - at).total_seconds()
            return (
                None,
                _busy("waiting for the LLM Gateway's rate limit", wait, status=record.GENERATING),
                None,
            )
        gen.update(
            holder=holder,
            lease_expires_at=at + dt.timedelta(seconds=cfg.claim_seconds),
            claimed_at=at,
            attempts=int(gen.get("attempts") or 0),
        )
        try:
            if data is None:
                # A webhook before its document (Firestore was away at submit
                # time, or AssemblyAI failed very fast): build it from
                # AssemblyAI's record.
                transcript = transcript or assemblyai.get_transcript(cfg, tid)
                data = {
                    **_document_from_transcript(transcript, hints),
                    "status": record.GENERATING,
                    "generation": gen,
                }
                version = record.create(cfg, tid, data)
            else:
                data = {**data, "status": record.GENERATING, "generation": gen}
                version = record.update(
                    cfg,
                    tid,
                    {"status": record.GENERATING, "generation": gen},
                    if_unchanged_since=snap.update_time,
                )
        except record.LostRace:
            continue
        return _Claim(cfg, tid, data, version), None, transcript
    return (
        None,
        _busy(
            "another delivery is generating this meeting's action items", status=record.GENERATING
        ),
        None,
    )


@firestore_guard
def complete(cfg: Config, transcript_id: str, hints: Hints) -> Outcome:
    """Generate and store the action items of a transcribed meeting, once."""
    cfg.require("api_key")
    tid = transcript_id
    doc = record.path(cfg, tid)
    holder = uuid.uuid4().hex
    # The holder stops before its lease ends, so no one overtakes a live one.
    started = time.monotonic()
    stop_at = started + cfg.claim_seconds * 0.9 - 1
    try:
        claim, refusal, transcript = _claim(cfg, tid, hints, holder)
    except assemblyai.ApiError as exc:
        # Only when building a missing document: nothing was written.
        if exc.transient:
            return _busy(f"could not read the transcript from AssemblyAI: {exc.message}")
        logs.warning("AssemblyAI does not know this transcript", tid, error=exc.message)
        return Outcome(404, {"error": f"AssemblyAI: {exc.message}"})
    if claim is None:
        assert refusal is not None
        return refusal
    logs.info(
        "claimed the generation of action items", tid, attempt=claim.generation.get("attempts")
    )

    claimed = time.monotonic()
    if transcript is None:
        try:
            transcript = assemblyai.get_transcript(cfg, tid)
        except assemblyai.ApiError as exc:
            if exc.transient:
                claim.release(f"reading the transcript: {exc.message}", count_attempt=False)
                return _busy(f"could not read the transcript from AssemblyAI: {exc.message}")
            return _fail(
                claim, f"AssemblyAI could not return the transcript: {exc.message}", "transcription"
            )
    facts = _transcript_facts(transcript)
    if transcript.get("status") == "error":
        claim.finish(
            {
                "status": record.ERROR,
                "error": transcript.get("error") or "transcription failed",
                "error_stage": "transcription",
                **facts,
            }
        )
        return Outcome(200, {"status": record.ERROR, "document": doc})
    if transcript.get("status") != "completed":
        claim.release("the transcript is not completed yet", count_attempt=False)
        return _busy("the transcript is not completed yet")

    answer_format = (claim.data.get("options") or {}).get("answer_format") or hints.answer_format
    body = action_items.request_body(
        tid, cfg.llm_model, answer_format or action_items.DEFAULT_ANSWER_FORMAT, cfg.llm_max_tokens
    )
    asked = time.monotonic()
    try:
        answer = assemblyai.chat_completion(cfg, body, deadline=stop_at)
        choice = answer["choices"][0]
        content = choice["message"]["content"]
        if not isinstance(content, str):
            raise TypeError("content is not text")
    except assemblyai.ApiError as exc:
        return _gateway_failed(claim, exc)
    except (KeyError, IndexError, TypeError):
        return _gateway_failed(
            claim, assemblyai.ApiError("the LLM Gateway's answer has no message", 502)
        )

    answered = time.monotonic()
    result = action_items.parse(content, choice.get("finish_reason"))
    usage = answer.get("usage") or {}
    fields = {
        "status": record.COMPLETED,
        "action_items": result.items,
        "action_items_text": result.text,
        "llm": {
            "model": answer.get("model") or cfg.llm_model,
            "requested_model": cfg.llm_model,
            "request_id": answer.get("request_id"),
            "finish_reason": choice.get("finish_reason"),
            "parsed_as": result.parsed_as,
            "input_tokens": usage.get("input_tokens", usage.get("prompt_tokens")),
            "output_tokens": usage.get("output_tokens", usage.get("completion_tokens")),
            "total_tokens": usage.get("total_tokens"),
        },
        "note": result.note,
        "completed_at": record.firestore.SERVER_TIMESTAMP,
        **facts,
    }
    if claim.finish(fields):
        # Where the webhook's time went, for anyone asking why a meeting was slow.
        ms = {
            "claim": claimed - started,
            "transcript": asked - claimed,
            "gateway": answered - asked,
            "write": time.monotonic() - answered,
        }
        logs.info(
            "action items written",
            tid,
            items=len(result.items),
            parsed_as=result.parsed_as,
            ms={k: round(v * 1000) for k, v in ms.items()},
        )
    return Outcome(
        200, {"status": record.COMPLETED, "document": doc, "action_items": len(result.items)}
    )


def _gateway_failed(claim: _Claim, exc: assemblyai.ApiError) -> Outcome:
    """Rate limits wait, transient failures count, refusals end the meeting."""
    tid = claim.transcript_id
    message = f"LLM Gateway: {exc.message}"
    if exc.status == 429:
        logs.warning("the LLM Gateway is rate limiting, will try later", tid)
        wait = min(max(exc.retry_after or RETRY_AFTER, 1), 300)
        claim.release(message, count_attempt=False, retry_after=wait)
        return _busy("the LLM Gateway is rate limiting, try again later", wait)
    if exc.transient:
        attempts = int(claim.generation.get("attempts") or 0) + 1
        if attempts < claim.cfg.max_generation_attempts:
            logs.warning(
                "the LLM Gateway failed, will try again", tid, error=message, attempts=attempts
            )
            claim.release(message, count_attempt=True)
            return _busy("the LLM Gateway failed, try again later")
        claim.generation["attempts"] = attempts
        message = f"gave up after {attempts} failed attempts; last: {message}"
    return _fail(claim, message, "action_items")


def _fail(claim: _Claim, message: str, stage: str) -> Outcome:
    logs.error("the meeting failed", claim.transcript_id, error=message, stage=stage)
    claim.finish({"status": record.ERROR, "error": message, "error_stage": stage})
    return Outcome(
        200, {"status": record.ERROR, "document": record.path(claim.cfg, claim.transcript_id)}
    )


# --- recovery ---------------------------------------------------------------


@firestore_guard
def recover(cfg: Config, batch: int) -> Outcome:
    """Finish meetings left in `generating` once AssemblyAI stopped retrying.

    Called on a schedule. Takes meetings whose claim expired or was given
    back (a dead instance, a gateway that failed or rate limited past
    AssemblyAI's last delivery), at most `batch` per run so the sweep stays
    under the gateway's rate limit, and stops early when the gateway says
    it is still rate limiting. Each goes through the same claim as a
    webhook delivery, so a sweep racing a delivery cannot double the work.
    """
    at = record.now()
    waiting = []
    for snap in record.stuck_generating(cfg, limit=batch * 10):
        data = snap.to_dict()
        gen = data.get("generation") or {}
        not_before = gen.get("not_before")
        if record.lease_is_live(data, at) or (
            isinstance(not_before, dt.datetime) and not_before > at
        ):
            continue
        waiting.append(snap.id)
    results: dict[str, int] = {}
    for tid in waiting[:batch]:
        outcome = complete(cfg, tid, Hints())
        results[tid] = outcome.status
        if "rate limiting" in str(outcome.body.get("error", "")):
            break
    if results:
        logs.info(
            "recovery sweep",
            recovered=sum(1 for s in results.values() if s == 200),
            tried=len(results),
            waiting=len(waiting),
        )
    return Outcome(200, {"waiting": len(waiting), "tried": len(results), "results": results})
