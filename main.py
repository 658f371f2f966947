"""Cloud Functions entry points: parse the request, call the pipeline, map
the outcome to an HTTP answer. The logic lives in the meeting_actions
package beside this file.
"""

from __future__ import annotations

import functools
import hmac
import traceback
from collections.abc import Callable
from typing import Any

import flask
import functions_framework
from cloudevents.http import CloudEvent

from meeting_actions import config, inputs, logs, pipeline, uploads
from meeting_actions.config import WEBHOOK_SECRET_HEADER


def _json(
    body: dict[str, Any], status: int, headers: dict[str, str] | None = None
) -> flask.Response:
    response = flask.jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _answers_json(
    func: Callable[[flask.Request], pipeline.Outcome],
) -> Callable[[flask.Request], flask.Response]:
    """Every answer is JSON, refusals included; nothing escapes as an HTML 500."""

    @functools.wraps(func)
    def wrapper(request: flask.Request) -> flask.Response:
        try:
            outcome = func(request)
        except inputs.InvalidRequest as exc:
            return _json(exc.body(), exc.status)
        except config.ConfigError as exc:
            logs.error(f"misconfigured: {exc}")
            return _json({"error": f"the function is misconfigured: {exc}"}, 500)
        except Exception:  # noqa: BLE001 - a bug: log it, answer JSON, let callers retry
            logs.error("unexpected error", traceback=traceback.format_exc(limit=20))
            return _json({"error": "internal error"}, 500)
        return _json(outcome.body, outcome.status, outcome.headers)

    return wrapper


@functions_framework.http
@_answers_json
def submit_transcription(request: flask.Request) -> pipeline.Outcome:
    """POST {"audio_url": ...}: start turning a recording into action items."""
    cfg = config.get()
    body = inputs.read_json(request, cfg.max_body_bytes)
    return pipeline.submit(cfg, inputs.submission(body))


@functions_framework.http
@_answers_json
def assemblyai_webhook(request: flask.Request) -> pipeline.Outcome:
    """Called by AssemblyAI when a transcript is completed or failed."""
    if request.method != "POST":
        raise inputs.InvalidRequest(f"method {request.method} not allowed, use POST", 405)
    cfg = config.get()
    cfg.require("webhook_secret")
    # Authenticate before reading anything: a wrong caller learns nothing
    # and causes no read, no write and no LLM call.
    given = request.headers.get(WEBHOOK_SECRET_HEADER, "")
    if not hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), cfg.webhook_secret.encode()
    ):
        logs.warning("refused a webhook call without the right secret header")
        raise inputs.InvalidRequest(f"missing or wrong {WEBHOOK_SECRET_HEADER} header", 401)
    event = inputs.webhook_event(inputs.read_json(request, cfg.max_body_bytes))
    return pipeline.on_webhook(cfg, event, pipeline.hints_from_query(request.args))


@functions_framework.http
@_answers_json
def recover_meetings(request: flask.Request) -> pipeline.Outcome:
    """Called every minute by Cloud Scheduler: finish meetings stuck in
    `generating` after AssemblyAI's webhook retries ran out."""
    if request.method != "POST":
        raise inputs.InvalidRequest(f"method {request.method} not allowed, use POST", 405)
    cfg = config.get()
    return pipeline.recover(cfg, cfg.recovery_batch)


@functions_framework.cloud_event
def transcribe_uploaded_audio(cloud_event: CloudEvent) -> None:
    """Triggered by google.cloud.storage.object.v1.finalized on the bucket.

    Returns to acknowledge (done, skipped, or malformed: retrying would not
    help); raises to have Eventarc deliver the event again.
    """
    uploads.on_object_finalized(config.get(), cloud_event["type"], cloud_event.get_data())
