"""The signed "done" notification: one POST per attempt to the caller's
notify URL, signed per Standard Webhooks, with the retry policy the sweep
follows.

The flow (outcomes.py, generate.py, sweep.py) owns the document state
(`notification: {status, attempts, last_status, next_at}`); this module
checks URLs, signs, sends one attempt and says whether another attempt is
worth making. `send` never
raises for a delivery problem: a notification must not endanger the result.

Address check (server-side request forgery). A notify URL is chosen by
whoever submits a meeting, and the function runs inside Google's network,
next to the metadata server that hands out its credentials. So at send time
the host is resolved and the request is refused when ANY of its addresses is
private, loopback, link-local, multicast, reserved, unspecified, not globally
routable (such as 100.64.0.0/10), or the metadata server (169.254.169.254,
fd00:ec2::254, metadata.google.internal); IPv4 inside IPv6 (::ffff:a.b.c.d,
64:ff9b::a.b.c.d) is judged by its IPv4 address. The connection then goes
to an address that passed the check, never to a second lookup of the name,
so a name that resolves differently a moment later (DNS rebinding) cannot
redirect it. TLS still verifies the certificate for the URL's host name,
and redirects are not followed (a 3xx is a failed attempt). Notifications
go straight out, not through an HTTP proxy from the environment: a proxy
would resolve the name itself and void the check. One deadline bounds each
attempt as a whole, so a receiver that answers a byte at a time cannot hold
the function (see "one attempt, under one deadline" below). Local runs
(`allow_local`) may also reach loopback addresses, and nothing else private.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import functools
import hashlib
import ipaddress
import json
import os
import selectors
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import requests
from standardwebhooks import Webhook

from meeting_actions import logs, record

MAX_URL_LENGTH = 2048
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
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata"})
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# At most this many resolved addresses are tried, while none accepts.
_MAX_ADDRESSES = 4
_TYPES = {"completed": "meeting.completed", "error": "meeting.error"}


class RefusedURL(ValueError):
    """The notify URL may not be used; another attempt would not change that."""


@dataclass(frozen=True)
class Delivery:
    """The outcome of one attempt. `error` is safe to store and show: it
    names the URL without its query and never holds the secret."""

    delivered: bool
    status: int | None = None
    error: str | None = None
    retryable: bool = False


def check_notify_url(url: str, allow_local: bool) -> str:
    """The URL, if a meeting may be submitted with it; else ValueError.

    https anywhere public; http (or https) to localhost, 127.0.0.1 or [::1]
    only when `allow_local` (local runs). This is the cheap check at submit
    time: the addresses a host name resolves to are checked at send time.
    An address is accepted only as written canonically (93.184.216.34, or
    IPv6 in brackets): the other IPv4 forms resolvers accept (2130706433,
    0x7f.1, 127.1) are refused, as is a host ending in a number that is no
    address.
    """
    if not isinstance(url, str) or not url:
        raise RefusedURL("notify_url must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise RefusedURL(f"notify_url is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise RefusedURL("notify_url must not contain whitespace or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise RefusedURL(f"notify_url is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise RefusedURL("notify_url must be an https URL")
    if "@" in parts.netloc:
        raise RefusedURL("notify_url must not contain a user name or password")
    host = _host_name(parts)
    if not host:
        raise RefusedURL("notify_url has no host")
    local = host in LOCAL_HOSTS
    if local and not allow_local:
        raise RefusedURL("notify_url may not point at this machine (localhost)")
    if scheme == "http" and not local:
        what = "https, or http to localhost" if allow_local else "https"
        raise RefusedURL(f"notify_url must use {what}")
    if host in METADATA_HOSTS:
        raise RefusedURL("notify_url may not point at the metadata server")
    form = _ipv4_form(host)
    if form is False:
        raise RefusedURL("notify_url's host ends in a number but is not an IPv4 address")
    if form is not None and str(form) != host:
        # 2130706433, 0x7f.1, 127.1, 0177.0.0.1: resolvers read these as
        # addresses (inet_aton), which a check of names would let through.
        reason = _refusal(form, allow_local)
        judged = f", a {reason} address" if reason else ""
        raise RefusedURL(
            f"notify_url's host {host} is the IPv4 address {form}{judged} written another "
            f"way: write an address as four decimal numbers"
        )
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return url
    reason = _refusal(address, allow_local)
    if reason:
        raise RefusedURL(f"notify_url may not point at a {reason} address")
    return url


def resolve_allowed(url: str, allow_local: bool) -> list[str]:
    """The addresses to connect to for `url`, after checking every one.

    Raises RefusedURL when the URL fails check_notify_url or any address the
    host resolves to is not public (see the module's docstring); OSError
    (socket.gaierror) when the name does not resolve, which may be passing.
    """
    check_notify_url(url, allow_local)
    parts = urllib.parse.urlsplit(url)
    host = _host_name(parts)
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for family, *_rest, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        reason = _refusal(address, allow_local)
        if reason:
            raise RefusedURL(f"{host} resolves to {address}, a {reason} address: refused")
        if str(address) not in addresses:
            addresses.append(str(address))
    if not addresses:
        raise RefusedURL(f"{host} resolves to no IP address")
    return addresses


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
        addresses = _resolve_by(url, allow_local, deadline)
    except RefusedURL as exc:
        return Delivery(False, None, f"{shown}: {exc}", retryable=False)
    except TimeoutError:
        return Delivery(
            False,
            None,
            f"{shown}: the host name did not resolve within {_seconds(timeout)} s",
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
        host = _host_name(parts).encode("idna").decode("ascii")
    except UnicodeError:
        return Delivery(False, None, f"{shown}: the host name is not valid", retryable=False)
    timestamp = datetime.now(UTC)
    headers = {
        "Host": _host_header(host, parts.port),
        "Content-Type": "application/json",
        "User-Agent": "meeting-actions-notify/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signer.sign(msg_id, timestamp, data),
        "Content-Length": str(len(data.encode())),
        "Connection": "close",
    }
    request = _request(parts, headers, data.encode())
    failure = "no address accepted a connection"
    for address in addresses[:_MAX_ADDRESSES]:
        if deadline - time.monotonic() <= 0:
            failure = f"timed out after {_seconds(timeout)} s"
            break
        try:
            status = _exchange(parts, host, address, request, deadline)
        except _NotConnected as exc:
            failure = (
                f"connecting timed out after {_seconds(timeout)} s"
                if exc.timed_out
                else "the connection was refused or failed"
            )
            continue
        except ssl.SSLError:  # certificate verification included
            failure = "TLS failed (is the certificate valid for the host?)"
            break
        except TimeoutError:
            failure = f"no answer within {_seconds(timeout)} s"
            break
        except (OSError, _NotHTTP):
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


# --- one attempt, under one deadline -------------------------------------------------
#
# The deadline covers everything an attempt waits for: the name lookup, the
# connection, TLS, sending and the whole answer. A per-read timeout (what
# HTTP clients offer) lets a receiver that trickles a byte now and then hold
# an attempt for minutes; so the attempt is one plain HTTP/1.1 exchange on a
# non-blocking socket, every wait bounded by what is left of the deadline.
# Only the status line matters: the answer's body is never read.

# Lookups run here, so a slow resolver cannot outlast the deadline (a lookup
# that does is left to finish on its own; the resolver's own timeouts end it).
_LOOKUPS = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="notify-dns")
_MAX_HEAD = 64 * 1024


class _NotConnected(OSError):
    """The receiver never got the request: another address may be tried."""

    def __init__(self, timed_out: bool):
        super().__init__("timed out" if timed_out else "refused")
        self.timed_out = timed_out


class _NotHTTP(ValueError):
    """The answer is not an HTTP status line."""


def _resolve_by(url: str, allow_local: bool, deadline: float) -> list[str]:
    """resolve_allowed, given up at the deadline (TimeoutError)."""
    check_notify_url(url, allow_local)  # refused at once, without a lookup
    lookup = _LOOKUPS.submit(resolve_allowed, url, allow_local)
    try:
        return lookup.result(timeout=max(0.0, deadline - time.monotonic()))
    except concurrent.futures.TimeoutError:
        lookup.cancel()
        raise TimeoutError("the lookup outlasted the attempt") from None


def _seconds(value: float) -> str:
    return f"{round(value, 1):g}"


def _host_header(host: str, port: int | None) -> str:
    shown_host = f"[{host}]" if ":" in host else host
    return f"{shown_host}:{port}" if port else shown_host


def _request(parts: urllib.parse.SplitResult, headers: dict[str, str], body: bytes) -> bytes:
    target = requests.utils.requote_uri(parts.path or "/")
    if parts.query:
        target += "?" + requests.utils.requote_uri(parts.query)
    head = f"POST {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (head + "\r\n").encode("latin-1") + body


def _exchange(
    parts: urllib.parse.SplitResult, host: str, address: str, request: bytes, deadline: float
) -> int:
    """Send `request` to the checked `address` and return the answer's
    status; TLS verifies the certificate for `host`, never the address.
    Raises _NotConnected, ssl.SSLError, TimeoutError, OSError or _NotHTTP."""
    https = parts.scheme.lower() == "https"
    port = parts.port or (443 if https else 80)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    raw = socket.socket(family, socket.SOCK_STREAM)
    conn: socket.socket = raw
    try:
        raw.setblocking(False)
        code = raw.connect_ex((address, port))
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
            raise _NotConnected(timed_out=False)
        if not _ready(raw, write=True, deadline=deadline):
            raise _NotConnected(timed_out=True)
        if raw.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            raise _NotConnected(timed_out=False)
        if https:
            conn = _tls_context().wrap_socket(
                raw, server_hostname=host, do_handshake_on_connect=False
            )
            _io(conn, conn.do_handshake, deadline, write=False)
        view = memoryview(request)
        while view:
            sent = _io(conn, functools.partial(conn.send, view), deadline, write=True)
            view = view[sent:]
        head = b""
        while True:
            end = head.find(b"\r\n\r\n")
            if end >= 0:
                status = _status(head[:end])
                if status >= 200 or status == 101:
                    return status
                head = head[end + 4 :]  # an interim 1xx answer: the real one follows
                continue
            if len(head) > _MAX_HEAD:
                raise _NotHTTP("the answer's head is too long")
            chunk = _io(conn, functools.partial(conn.recv, 4096), deadline, write=False)
            if not chunk:
                if head.startswith(b"HTTP/") and b"\r\n" in head:
                    return _status(head)  # closed right after its status line
                raise ConnectionResetError("closed before an answer")
            head += chunk
    finally:
        conn.close()


def _status(head: bytes) -> int:
    line = head.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(line) < 2 or not line[0].startswith(b"HTTP/") or not line[1].isdigit():
        raise _NotHTTP("not an HTTP answer")
    status = int(line[1])
    if not 100 <= status <= 599:
        raise _NotHTTP("not an HTTP status")
    return status


def _io(conn: socket.socket, op: Any, deadline: float, write: bool) -> Any:
    """Run a non-blocking socket operation, waiting (until the deadline) as
    often as it asks to; TimeoutError once the deadline has passed."""
    while True:
        try:
            return op()
        except ssl.SSLWantReadError:
            wait_write = False
        except ssl.SSLWantWriteError:
            wait_write = True
        except (BlockingIOError, InterruptedError):
            wait_write = write
        if not _ready(conn, write=wait_write, deadline=deadline):
            raise TimeoutError("the attempt's deadline passed")


def _ready(sock: socket.socket, write: bool, deadline: float) -> bool:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_WRITE if write else selectors.EVENT_READ)
        return bool(selector.select(remaining))


def _refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_local: bool) -> str:
    """Why the address is refused, or '' when it may be used."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return _refusal(address.ipv4_mapped, allow_local)
        if address in _NAT64:
            return _refusal(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), allow_local)
    if address in METADATA_ADDRESSES:
        return "metadata server"
    if address.is_loopback:
        return "" if allow_local else "loopback"
    for reason, flagged in (
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("non-public", not address.is_global),
    ):
        if flagged:
            return reason
    return ""


def _ipv4_form(host: str) -> ipaddress.IPv4Address | bool | None:
    """For a host whose last label is a number (a URL parser's sign of an
    IPv4 host), the address a resolver reads in it, in any of the forms
    inet_aton accepts (one to four parts, decimal, octal or hex), or False
    if it reads none; None for a host name."""
    if ":" in host:  # IPv6, judged as itself
        return None
    last = host.rsplit(".", 1)[-1]
    digits = last[2:] if last.startswith("0x") else last
    if not last or not digits.isascii() or not all(c in "0123456789abcdef" for c in digits):
        return None
    if not last.startswith("0x") and not last.isdigit():
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return False


def _host_name(parts: urllib.parse.SplitResult) -> str:
    return (parts.hostname or "").rstrip(".").lower()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Certificates verified for the URL's host name, against the CA bundle
    requests would use (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, or its certifi bundle)."""
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    return ssl.create_default_context(cafile=bundle or requests.certs.where())


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
