"""One notification attempt: a plain HTTP/1.1 POST to an address that was
checked (notify_address.py), under one deadline.

The deadline covers everything an attempt waits for: the name lookup, the
connection, TLS, sending and the whole answer. A per-read timeout (what
HTTP clients offer) lets a receiver that trickles a byte now and then hold
an attempt for minutes; so the attempt is one plain HTTP/1.1 exchange on a
non-blocking socket, every wait bounded by what is left of the deadline.
Only the status line matters: the answer's body is never read.
"""

from __future__ import annotations

import concurrent.futures
import errno
import functools
import os
import selectors
import socket
import ssl
import time
import urllib.parse
from typing import Any

import requests

from . import notify_address

# Lookups run here, so a slow resolver cannot outlast the deadline (a lookup
# that does is left to finish on its own; the resolver's own timeouts end it).
_LOOKUPS = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="notify-dns")
_MAX_HEAD = 64 * 1024


class NotConnected(OSError):
    """The receiver never got the request: another address may be tried."""

    def __init__(self, timed_out: bool):
        super().__init__("timed out" if timed_out else "refused")
        self.timed_out = timed_out


class NotHTTP(ValueError):
    """The answer is not an HTTP status line."""


def resolve_by(url: str, allow_local: bool, deadline: float) -> list[str]:
    """notify_address.resolve_allowed, given up at the deadline (TimeoutError)."""
    notify_address.check_notify_url(url, allow_local)  # refused at once, without a lookup
    lookup = _LOOKUPS.submit(notify_address.resolve_allowed, url, allow_local)
    try:
        return lookup.result(timeout=max(0.0, deadline - time.monotonic()))
    except concurrent.futures.TimeoutError:
        lookup.cancel()
        raise TimeoutError("the lookup outlasted the attempt") from None


def seconds(value: float) -> str:
    return f"{round(value, 1):g}"


def host_header(host: str, port: int | None) -> str:
    shown_host = f"[{host}]" if ":" in host else host
    return f"{shown_host}:{port}" if port else shown_host


def request_bytes(parts: urllib.parse.SplitResult, headers: dict[str, str], body: bytes) -> bytes:
    target = requests.utils.requote_uri(parts.path or "/")
    if parts.query:
        target += "?" + requests.utils.requote_uri(parts.query)
    head = f"POST {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (head + "\r\n").encode("latin-1") + body


def exchange(
    parts: urllib.parse.SplitResult, host: str, address: str, request: bytes, deadline: float
) -> int:
    """Send `request` to the checked `address` and return the answer's
    status; TLS verifies the certificate for `host`, never the address.
    Raises NotConnected, ssl.SSLError, TimeoutError, OSError or NotHTTP."""
    https = parts.scheme.lower() == "https"
    port = parts.port or (443 if https else 80)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    raw = socket.socket(family, socket.SOCK_STREAM)
    conn: socket.socket = raw
    try:
        raw.setblocking(False)
        code = raw.connect_ex((address, port))
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
            raise NotConnected(timed_out=False)
        if not _ready(raw, write=True, deadline=deadline):
            raise NotConnected(timed_out=True)
        if raw.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            raise NotConnected(timed_out=False)
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
                raise NotHTTP("the answer's head is too long")
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
        raise NotHTTP("not an HTTP answer")
    status = int(line[1])
    if not 100 <= status <= 599:
        raise NotHTTP("not an HTTP status")
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


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Certificates verified for the URL's host name, against the CA bundle
    requests would use (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, or its certifi bundle)."""
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    return ssl.create_default_context(cafile=bundle or requests.certs.where())
