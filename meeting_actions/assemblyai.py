"""AssemblyAI: the transcript API and the LLM Gateway, over plain HTTP.

Only the calls the product makes. Every failure becomes an ApiError whose
message is AssemblyAI's own words (from any of its error envelopes), never
the API key.
"""

from __future__ import annotations

import time
from typing import IO, Any

import requests

from . import lifecycle, logs, transport
from .config import Config


class ApiError(Exception):
    """AssemblyAI refused or failed a call."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.status = status  # None: no HTTP answer at all
        self.retry_after = retry_after  # seconds, from the Retry-After header

    def failure(self) -> lifecycle.Failure:
        """This error, classified (see lifecycle.py)."""
        return lifecycle.from_api_status(self.status, self.message, self.retry_after)

    @property
    def transient(self) -> bool:
        """Worth trying again later (rate limit, server trouble, no answer)."""
        return self.failure().kind is lifecycle.Kind.TRANSIENT


def _headers(cfg: Config) -> dict[str, str]:
    return {"Authorization": cfg.api_key, "User-Agent": "meeting-actions/1"}


def error_message(response: requests.Response) -> str:
    """AssemblyAI's message from whichever error envelope it used.

    The transcript API sends {"error": "..."}; the gateway sends
    {"error": {"code", "message"}}, {"message", "code", ...} or, for a bad
    key, {"error": "...", "status": "error"}.
    """
    try:
        body = response.json()
    except ValueError:
        body = None
    message = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            message = err.get("message")
        elif isinstance(err, str):
            message = err
        if not message and isinstance(body.get("message"), str):
            message = body["message"]
    if not message:
        text = (response.text or "").strip()
        message = text[:300] if text and not text.startswith("<") else response.reason
    return f"{response.status_code} {message or 'error'}"


def _call(
    cfg: Config, method: str, url: str, deadline: float, read_timeout: float, **kw: Any
) -> Any:
    try:
        response = transport.request(
            method, url, deadline=deadline, read_timeout=read_timeout, **kw
        )
    except transport.TransportError as exc:
        raise ApiError(_scrub(cfg, str(exc))) from None
    if response.status_code >= 300:
        raise ApiError(
            _scrub(cfg, error_message(response)),
            response.status_code,
            transport.retry_after_seconds(response),
        )
    try:
        return response.json()
    except ValueError:
        raise ApiError("AssemblyAI answered with a body that is not JSON", 502) from None


def _scrub(cfg: Config, message: str) -> str:
    """No message leaves this module carrying the key or a URL's query
    (a signed URL in a download error is a credential)."""
    message = message.replace(cfg.api_key, "***") if cfg.api_key else message
    return logs.strip_url_queries(message)


def submit_transcript(cfg: Config, params: dict[str, Any], timeout: float = 30) -> dict:
    """Create a transcription job; AssemblyAI calls the webhook when done."""
    return _call(
        cfg,
        "POST",
        f"{cfg.api_base_url}/v2/transcript",
        time.monotonic() + timeout,
        read_timeout=20,
        json=params,
        headers=_headers(cfg),
        # A second POST after a lost answer would start a second job.
        resend_if_maybe_sent=False,
        retry_statuses=transport.NOT_PROCESSED_STATUSES,
    )


def get_transcript(cfg: Config, transcript_id: str, timeout: float = 15) -> dict:
    """The transcript object: status, error message, duration, language."""
    return _call(
        cfg,
        "GET",
        f"{cfg.api_base_url}/v2/transcript/{requests.utils.quote(transcript_id)}",
        time.monotonic() + timeout,
        read_timeout=10,
        headers=_headers(cfg),
    )


def read_transcript(cfg: Config, tid: str) -> dict[str, Any]:
    """The transcript as an object; a failure to read it, classified."""
    try:
        transcript = get_transcript(cfg, tid)
    except ApiError as exc:
        raise exc.failure() from None
    if not isinstance(transcript, dict):
        raise lifecycle.Failure(
            lifecycle.Kind.TRANSIENT, "AssemblyAI's transcript is not an object"
        )
    return transcript


def upload(cfg: Config, stream: IO[bytes], timeout: float = 3000) -> str:
    """Stream bytes to AssemblyAI's private upload storage; return its URL."""
    body = _call(
        cfg,
        "POST",
        f"{cfg.api_base_url}/v2/upload",
        time.monotonic() + timeout,
        read_timeout=300,
        data=stream,
        headers={**_headers(cfg), "Content-Type": "application/octet-stream"},
        attempts=1,  # a consumed stream cannot be sent again
    )
    url = body.get("upload_url") if isinstance(body, dict) else None
    if not isinstance(url, str):
        raise ApiError("AssemblyAI's upload answer has no upload_url", 502)
    return url


def chat_completion(cfg: Config, body: dict[str, Any], deadline: float) -> dict:
    """One LLM Gateway completion, retried on 429/5xx until `deadline`.

    A request that may have reached the gateway without an answer (read
    timeout) is not resent: a second successful completion is paid twice.
    """
    return _call(
        cfg,
        "POST",
        f"{cfg.gateway_base_url}/chat/completions",
        deadline,
        read_timeout=cfg.gateway_timeout,
        json=body,
        headers=_headers(cfg),
        attempts=4,
        resend_if_maybe_sent=False,
        # A long rate-limit wait is better spent with the claim given back.
        max_wait=5,
    )


def delete_transcript(cfg: Config, transcript_id: str, timeout: float = 5) -> dict:
    """DELETE /v2/transcript/{id}: its text, words and audio (an upload too) go."""
    return _call(
        cfg,
        "DELETE",
        f"{cfg.api_base_url}/v2/transcript/{requests.utils.quote(transcript_id)}",
        time.monotonic() + timeout,
        read_timeout=timeout,
        headers=_headers(cfg),
        attempts=1,
    )
