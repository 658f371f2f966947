"""Cloud Functions entry points: parse the request, call the flow, map
the outcome to an HTTP answer. The logic lives in the meeting_actions
package beside this file.
"""

from __future__ import annotations

import functools
import hmac
import time
import traceback
from collections.abc import Callable
from typing import Any

import flask
import functions_framework
from cloudevents.http import CloudEvent

from meeting_actions import (
    config,
    hints,
    inputs,
    lifecycle,
    logs,
    regenerate,
    submit,
    sweep,
    transcript_ready,
    uploads,
)
from meeting_actions.config import WEBHOOK_SECRET_HEADER
from meeting_actions.lifecycle import Busy, Done, Refused, Result


def _json(
    body: dict[str, Any], status: int, headers: dict[str, str] | None = None
) -> flask.Response:
    response = flask.jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _busy(result: Busy) -> flask.Response:
    """503 with Retry-After: AssemblyAI, Eventarc and callers come back later."""
    body: dict[str, Any] = {"error": result.reason, "kind": str(result.kind)}
    if result.transcript_id:
        body["transcript_id"] = result.transcript_id
    return _json(body, 503, {"Retry-After": str(max(1, round(result.retry_after)))})


def _answers_json(
    func: Callable[[flask.Request], flask.Response],
) -> Callable[[flask.Request], flask.Response]:
    """Every answer is JSON, refusals included; nothing escapes as an HTML 500."""

    @functools.wraps(func)
    def wrapper(request: flask.Request) -> flask.Response:
        try:
            return func(request)
        except inputs.InvalidRequest as exc:
            return _json(exc.body(), exc.status)
        except config.ConfigError as exc:
            logs.error(f"misconfigured: {exc}", kind="operator", fix="function_configuration")
            return _json({"error": f"the function is misconfigured: {exc}"}, 500)
        except Exception:  # noqa: BLE001 - a bug: log it, answer JSON, let callers retry
            logs.error("unexpected error", traceback=traceback.format_exc(limit=20))
            return _json({"error": "internal error"}, 500)

    return wrapper


@functions_framework.http
@_answers_json
def submit_transcription(request: flask.Request) -> flask.Response:
    """POST {"audio_url": ...}: start turning a recording into action items."""
    cfg = config.get()
    body = inputs.read_json(request, cfg.max_body_bytes)
    result = submit.submit(cfg, inputs.submission(body, cfg.notify_allow_local))
    if isinstance(result, Done):  # also when only its record is late: never resubmit
        return _json(
            {"transcript_id": result.transcript_id, "status": result.status,
             "document": result.document, **result.detail},
            202,
        )  # fmt: skip
    if isinstance(result, Refused):  # AssemblyAI said no: resubmitting will not help
        return _json({"error": result.reason}, 502)
    return _busy(result)


def _webhook_answer(result: Result) -> flask.Response:
    """AssemblyAI retries a 5xx and stops at a 4xx."""
    if isinstance(result, Done):
        body = {"status": result.status, **result.detail}
        if result.document:
            body["document"] = result.document
        return _json(body, 200)
    if isinstance(result, Refused):  # not a transcript of this account: stop delivering
        return _json({"error": result.reason}, 404)
    return _busy(result)


@functions_framework.http
@_answers_json
def assemblyai_webhook(request: flask.Request) -> flask.Response:
    """Called by AssemblyAI when a transcript is completed or failed."""
    started = time.monotonic()
    if request.method != "POST":
        raise inputs.InvalidRequest(f"method {request.method} not allowed, use POST", 405)
    cfg = config.get()
    cfg.require("webhook_secret")
    # Authenticate before reading anything: a wrong caller learns nothing
    # and causes no read, no write and no LLM call. During a rotation the
    # previous secret is accepted too: deliveries of meetings submitted
    # before it carry that one.
    given = request.headers.get(WEBHOOK_SECRET_HEADER, "").encode("utf-8", "surrogateescape")
    accepted = [s for s in (cfg.webhook_secret, cfg.webhook_secret_previous) if s]
    if not any([hmac.compare_digest(given, s.encode()) for s in accepted]):
        logs.warning("refused a webhook call without the right secret header")
        raise inputs.InvalidRequest(f"missing or wrong {WEBHOOK_SECRET_HEADER} header", 401)
    event = inputs.webhook_event(inputs.read_json(request, cfg.max_body_bytes))
    return _webhook_answer(
        transcript_ready.on_webhook(
            cfg, event, hints.from_query(request.args), lifecycle.deadline_of(cfg, started)
        )
    )


@functions_framework.http
@_answers_json
def recover_meetings(request: flask.Request) -> flask.Response:
    """Called every minute by Cloud Scheduler: move on every meeting whose
    deadline passed (lost deliveries, expired or given-back claims)."""
    started = time.monotonic()
    if request.method != "POST":
        raise inputs.InvalidRequest(f"method {request.method} not allowed, use POST", 405)
    cfg = config.get()
    result = sweep.sweep(cfg, lifecycle.deadline_of(cfg, started))
    if isinstance(result, Done):
        return _json(result.detail, 200)
    assert isinstance(result, Busy)
    return _busy(result)


@functions_framework.cloud_event
def transcribe_uploaded_audio(cloud_event: CloudEvent) -> None:
    """Triggered by google.cloud.storage.object.v1.finalized on the bucket.

    Returns to acknowledge (done, skipped, or malformed: retrying would not
    help); raises to have Eventarc deliver the event again.
    """
    uploads.on_object_finalized(config.get(), cloud_event["type"], cloud_event.get_data())


class RetryLater(Exception):
    """Raised to an event trigger so Eventarc delivers the event again."""


@functions_framework.cloud_event
def regenerate_action_items(cloud_event: CloudEvent) -> None:
    """Triggered by google.cloud.firestore.document.v1.updated on the meetings'
    documents: a person set `regenerate: true` in the Firestore console."""
    started = time.monotonic()
    request = regenerate.requested(cloud_event.data)
    if request is None:  # not a request: most often one of our own writes
        return
    cfg = config.get()
    if request.collection != cfg.collection:
        return
    result = regenerate.run(cfg, request.doc_id, lifecycle.deadline_of(cfg, started))
    if isinstance(result, Busy):
        raise RetryLater(result.reason)
