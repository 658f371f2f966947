"""The signed "done" notification: one POST per attempt to the caller's
notify URL, signed per Standard Webhooks, with the retry policy the sweep
follows.

The flow (outcomes.py, generate.py, sweep.py) owns the document state
(`notification: {status, attempts, last_status, next_at}`); this module
signs, sends one attempt and says whether another attempt is worth making.
`send` never raises for a delivery problem: a notification must not
endanger the result. Where a notification may go is notify_address.py's;
the attempt itself, under one deadline, is notify_http.py's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from standardwebhooks import Webhook

from meeting_actions import logs, notify_address, notify_http, record

DEFAULT_TIMEOUT = 5.0
# Attempts in all, the first included; the sweep gives up after the last.
MAX_ATTEMPTS = 8
# Wait before attempt n+1 after n failed ones: 30 s, 2 min, 10 min, 30 min,
# 1 h, 2 h, 4 h (about 7 h 42 min from the first failure to the last try).
BACKOFF = (
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=2),
    timedelta(hours=4),
)
# Answers after which the same request may well succeed later. Any other
# non-2xx is retried too (Standard Webhooks senders retry every failure, and
# a 401 after a secret rotation or a 404 during a receiver's deploy heals),
# except the ones in PERMANENT_STATUSES.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# 410 Gone: the receiver says the endpoint no longer exists.
PERMANENT_STATUSES = frozenset({410})
# At most this many resolved addresses are tried, while none accepts.
_MAX_ADDRESSES = 4
_TYPES = {"completed": "meeting.completed", "error": "meeting.error"}


@dataclass(frozen=True)
class Delivery:
    """The outcome of one attempt. `error` is safe to store and show: it
    names the URL without its query and never holds the secret."""

    delivered: bool
    status: int | None = None
    error: str | None = None
    retryable: bool = False


def message_id(transcript_id: str, version: int | str, result_id: str | None = None) -> str:
    """The webhook-id: the same on every retry of one result, so a receiver
    can drop duplicates, and new for every result. `result_id` is random
    per result (outcomes.final), so no edit of the version fields in the
    console can make an id come round again."""
    key = f"{transcript_id}\x00{version}" + (f"\x00{result_id}" if result_id else "")
    return f"msg_{hashlib.sha256(key.encode()).hexdigest()[:32]}"


def body_digest(body: dict[str, Any]) -> str:
    """What a message says, in 16 hex digits: one webhook-id, one body."""
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def payload(
    transcript_id: str,
    status: str,
    *,
    document: str,
    version: int | str,
    action_items: list[Any] | None = None,
    action_items_text: str | None = None,
    error: str | None = None,
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    """The notification body for a meeting that reached `completed` or
    `error`. Pass the result's own time as `timestamp`, so every retry of a
    message carries the same body."""
    if status not in _TYPES:
        raise ValueError(f"a notification is sent for completed or error, not {status!r}")
    when = (timestamp or datetime.now(UTC)).astimezone(UTC)
    return {
        "type": _TYPES[status],
        "transcript_id": transcript_id,
        "status": status,
        "action_items": list(action_items or []),
        "action_items_text": action_items_text,
        "error": error,
        "document": document,
        "version": version,
        "timestamp": when.isoformat().replace("+00:00", "Z"),
    }


def next_attempt_at(attempts: int, now: datetime | None = None) -> datetime:
    """When to try again after `attempts` failed attempts (BACKOFF, capped
    at its last step). The caller stops at MAX_ATTEMPTS instead."""
    now = now or datetime.now(UTC)
    if attempts <= 0:
        return now
    return now + BACKOFF[min(attempts, len(BACKOFF)) - 1]


def send(
    url: str,
    payload: dict[str, Any],
    msg_id: str,
    secret: str,
    allow_local: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    transcript_id: str | None = None,
) -> Delivery:
    """One signed POST of `payload` (as JSON) to `url`; never raises.

    `secret` is NOTIFY_SIGNING_SECRET (`whsec_` + base64). `timeout` (s)
    bounds the whole attempt: the name lookup, connecting, TLS, sending and
    the answer, however slowly a receiver trickles it. Retryable: timeouts,
    connection failures, names that do not resolve, every non-2xx answer but
    410, and a missing or malformed secret (a redeploy with the right one
    heals it within the backoff).
    Permanent: a URL that fails the checks, an address that is refused, a
    payload that is not JSON, and 410.
    """
    started = time.monotonic()
    shown = redact(url)
    try:
        result = _attempt(url, payload, msg_id, secret, allow_local, timeout, shown)
    except Exception as exc:  # noqa: BLE001 - a notification must not break its caller
        result = Delivery(False, None, f"{shown}: unexpected {type(exc).__name__}", True)
    fields = {
        "msg_id": msg_id,
        "url": shown,
        "http_status": result.status,
        "retryable": result.retryable,
        "elapsed_ms": round((time.monotonic() - started) * 1000),
    }
    if result.delivered:
        logs.info("notification delivered", transcript_id, event="notification_delivered", **fields)
    else:
        logs.warning("notification not delivered", transcript_id, error=result.error, **fields)
    return result


def redact(url: str) -> str:
    """The URL as it may be logged or stored: no user info, query or fragment."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(malformed URL)"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _attempt(
    url: str,
    body: dict[str, Any],
    msg_id: str,
    secret: str,
    allow_local: bool,
    timeout: float,
    shown: str,
) -> Delivery:
    deadline = time.monotonic() + timeout
    try:
        addresses = notify_http.resolve_by(url, allow_local, deadline)
    except notify_address.RefusedURL as exc:
        return Delivery(False, None, f"{shown}: {exc}", retryable=False)
    except TimeoutError:
        return Delivery(
            False,
            None,
            f"{shown}: the host name did not resolve within {notify_http.seconds(timeout)} s",
            True,
        )
    except OSError:
        return Delivery(False, None, f"{shown}: the host name did not resolve", retryable=True)
    try:
        signer = Webhook(secret)
        if not secret.startswith("whsec_"):
            raise ValueError
    except Exception:  # noqa: BLE001 - any malformed secret; its text may quote it
        return Delivery(
            False, None, "NOTIFY_SIGNING_SECRET is missing or not in the whsec_ form", True
        )
    try:
        data = json.dumps(body, separators=(",", ":"), default=_json_default)
    except (TypeError, ValueError) as exc:
        return Delivery(False, None, f"the notification body is not JSON: {exc}", False)
    parts = urllib.parse.urlsplit(url)
    try:
        host = notify_address.host_name(parts).encode("idna").decode("ascii")
    except UnicodeError:
        return Delivery(False, None, f"{shown}: the host name is not valid", retryable=False)
    timestamp = datetime.now(UTC)
    headers = {
        "Host": notify_http.host_header(host, parts.port),
        "Content-Type": "application/json",
        "User-Agent": "meeting-actions-notify/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signer.sign(msg_id, timestamp, data),
        "Content-Length": str(len(data.encode())),
        "Connection": "close",
    }
    request = notify_http.request_bytes(parts, headers, data.encode())
    failure = "no address accepted a connection"
    for address in addresses[:_MAX_ADDRESSES]:
        if deadline - time.monotonic() <= 0:
            failure = f"timed out after {notify_http.seconds(timeout)} s"
            break
        try:
            status = notify_http.exchange(parts, host, address, request, deadline)
        except notify_http.NotConnected as exc:
            failure = (
                f"connecting timed out after {notify_http.seconds(timeout)} s"
                if exc.timed_out
                else "the connection was refused or failed"
            )
            continue
        except ssl.SSLError:  # certificate verification included
            failure = "TLS failed (is the certificate valid for the host?)"
            break
        except TimeoutError:
            failure = f"no answer within {notify_http.seconds(timeout)} s"
            break
        except (OSError, notify_http.NotHTTP):
            failure = "the connection broke before an answer"
            break
        if 200 <= status < 300:
            return Delivery(True, status, None, retryable=False)
        note = " (redirects are not followed)" if 300 <= status < 400 else ""
        return Delivery(
            False,
            status,
            f"{shown}: the receiver answered {status}{note}",
            retryable=status not in PERMANENT_STATUSES,
        )
    return Delivery(False, None, f"{shown}: {failure}", retryable=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# --- the notification on the meeting's document ------------------------------------
#
# The document says where its notification stands:
#   notification: {status: pending | sending | delivered | failed, id, version,
#                  result_id, result_at, body, attempts, last_status, next_at, error}
# (`body`: a digest of the last body sent under `id`.)
# and its `sweep_at` is the notification's `next_at` while one is due, so the
# scheduled sweep retries it after the request that produced the result.


def started(
    transcript_id: str, version: int, url: str | None, result_id: str | None = None
) -> dict[str, Any]:
    """The fields that start the notification of result `version`, or none.
    `result_at` is the body's timestamp on every attempt."""
    if not url:
        return {}
    first_retry = next_attempt_at(1)
    return {
        "notification": {
            "status": "pending",
            "id": message_id(transcript_id, version, result_id),
            "version": version,
            "result_id": result_id,
            "result_at": datetime.now(UTC),
            "attempts": 0,
            "last_status": None,
            "next_at": datetime.now(UTC),
            "error": None,
        },
        # If the attempt made right after the result fails or never happens.
        "sweep_at": first_retry,
    }


def _body(cfg: Any, tid: str, data: dict[str, Any], note: dict[str, Any]) -> dict[str, Any]:
    """The notification's body, the same on every attempt for one result:
    its time is the result's own (`result_at`), never the document's last
    write, and every field is read as the type the body needs."""
    version = note.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        version = 1
    when = note.get("result_at")
    if not isinstance(when, datetime):  # a notification started before result_at existed
        when = data.get("completed_at")
        when = when if isinstance(when, datetime) else None
    items = data.get("action_items")
    text, error = data.get("action_items_text"), data.get("error")
    return payload(
        tid,
        data["status"],
        document=record.path(cfg, tid),
        version=version,
        action_items=items if isinstance(items, list) else [],
        action_items_text=text if isinstance(text, str) else None,
        error=error if isinstance(error, str) else None,
        timestamp=when or datetime(1970, 1, 1, tzinfo=UTC),
    )


def upload_default(cfg: Any, data: dict[str, Any] | None) -> dict[str, Any]:
    """`{"notify_url": NOTIFY_URL}` for a meeting that came from an upload
    and has no notify URL of its own (its metadata named none, or one that
    was refused), when the deployment has a default; else nothing. Uploads
    are notified at their own URL or the default, never at neither."""
    source = (data or {}).get("source")
    if (
        not cfg.notify_url
        or not isinstance(source, dict)
        or source.get("kind") != "gcs"
        or isinstance((data or {}).get("notify_url"), str)
    ):
        return {}
    return {"notify_url": cfg.notify_url}


def is_due(data: dict[str, Any] | None, now: datetime | None = None) -> bool:
    note = (data or {}).get("notification")
    note = note if isinstance(note, dict) else {}
    next_at = note.get("next_at")
    return (
        note.get("status") in ("pending", "sending")
        and isinstance(next_at, datetime)
        and next_at <= (now or datetime.now(UTC))
    )


def deliver(cfg: Any, transcript_id: str, timeout: float | None = None) -> str | None:
    """Send the meeting's due notification once, and record the outcome.
    `timeout`: the attempt's deadline in seconds (DEFAULT_TIMEOUT).

    The attempt is claimed first with a conditioned write (status `sending`,
    next_at past the attempt's time), so the request that wrote the result
    and a sweep never send the same attempt together. Returns the new
    status, or None when nothing was due. Never raises for the receiver's
    sake; a Firestore failure propagates (the sweep tries again later).
    """
    data, version = record.read(cfg, transcript_id)
    if not is_due(data) or (data or {}).get("status") not in _TYPES:
        # Not due; or its result is being regenerated: it goes on once the
        # meeting is final again (the new result's notification replaces it).
        return None
    note = dict(data["notification"])
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    now = datetime.now(UTC)
    attempt_ends = now + timedelta(seconds=4 * max(timeout, DEFAULT_TIMEOUT))
    try:
        version = record.update(
            cfg, transcript_id,
            {"notification": {**note, "status": "sending", "next_at": attempt_ends},
             "sweep_at": attempt_ends},
            if_unchanged_since=version,
        )  # fmt: skip
    except record.LostRace:
        return None  # another sender, or a new result, got there first
    body = _body(cfg, transcript_id, data, note)
    # One webhook-id, one body: if a person edited the result since the last
    # attempt, this is another message, under an id of its own.
    digest = body_digest(body)
    if note.get("body") not in (None, digest) or not isinstance(note.get("id"), str):
        note["id"] = message_id(transcript_id, body["version"], f"{note.get('result_id')}:{digest}")
    note["body"] = digest
    url = data.get("notify_url")
    outcome = send(
        url if isinstance(url, str) else "", body, note["id"], cfg.notify_signing_secret,
        cfg.notify_allow_local, timeout, transcript_id=transcript_id,
    )  # fmt: skip
    attempts = int(note.get("attempts") or 0) + 1
    note.update(attempts=attempts, last_status=outcome.status, error=outcome.error)
    if outcome.delivered:
        note.update(status="delivered", next_at=None, error=None)
    elif outcome.retryable and attempts < MAX_ATTEMPTS:
        note.update(status="pending", next_at=next_attempt_at(attempts))
    else:
        note.update(
            status="failed",
            next_at=None,
            error=f"gave up after {attempts} attempt(s): {outcome.error}",
        )
        logs.error("notification given up", transcript_id, event="notification_given_up",
                   attempts=attempts, error=note["error"])  # fmt: skip
    # On a lost race a new result replaced this one; its own notification follows.
    with contextlib.suppress(*record.LostRace):
        record.update(
            cfg, transcript_id,
            {"notification": note,
             "sweep_at": note["next_at"] if note["status"] == "pending" else None},
            if_unchanged_since=version,
        )  # fmt: skip
    return note["status"]
