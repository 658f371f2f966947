"""Outgoing HTTP: one pooled session per process, explicit timeouts, and
bounded retries with backoff that honour Retry-After.

A retry never outlives the caller's deadline: the webhook must not hold a
meeting's claim past its expiry, and a retry that cannot finish in time is
worse than an honest failure the caller can report or hand back.
"""

from __future__ import annotations

import email.utils
import functools
import os
import random
import time
import urllib.request
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

CONNECT_TIMEOUT = 5.0
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Statuses after which the request is known not to have been acted on, so
# even a non-idempotent POST (creating a transcript) can be sent again.
NOT_PROCESSED_STATUSES = frozenset({429, 502, 503, 504})


class TransportError(Exception):
    """No HTTP answer at all (connection refused, reset, timed out)."""


@functools.cache
def session() -> requests.Session:
    """The process's pooled session, created on first use and reused."""
    s = requests.Session()
    # With trust_env on, requests scans the whole environment for proxy and
    # CA settings on every request: about a fifth of our CPU per meeting
    # under the profiler (BENCHMARKS.md). The environment does not change while the process
    # lives, so read it once here. Only a proxy with exceptions (NO_PROXY)
    # or a ~/.netrc still needs requests' own per-request lookup.
    proxies = {k: v for k, v in urllib.request.getproxies().items() if k != "no"}
    no_proxy = os.environ.get("NO_PROXY") or os.environ.get("no_proxy")
    netrc = os.environ.get("NETRC") or os.path.exists(os.path.expanduser("~/.netrc"))
    if not ((proxies and no_proxy) or netrc):
        s.trust_env = False
        s.proxies.update(proxies)
        s.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    # Sized for the webhook's 80 concurrent requests on one instance.
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=100, max_retries=0)
    s.mount("https://", adapter)
    s.mount("http://", adapter)
    return s


def retry_after_seconds(response: requests.Response) -> float | None:
    """The Retry-After header in seconds (number or HTTP date), if any."""
    raw = response.headers.get("Retry-After", "").strip()
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def request(
    method: str,
    url: str,
    *,
    deadline: float,
    read_timeout: float,
    attempts: int = 3,
    retry_statuses: frozenset[int] = RETRY_STATUSES,
    resend_if_maybe_sent: bool = True,
    max_wait: float = 30.0,
    **kwargs: Any,
) -> requests.Response:
    """Send a request, retrying transient failures until `deadline`.

    `deadline` is a time.monotonic() value. Returns the last response, which
    may be an error status the caller maps; raises TransportError when no
    answer came at all. With `resend_if_maybe_sent` false, a request that
    may have reached the server (a read timeout, a reset connection) is not
    sent again: creating a transcript twice, or paying for a second LLM
    answer, is worse than reporting the failure. A Retry-After longer than
    `max_wait` returns the answer at once: the caller can hand the work
    back instead of holding a thread asleep.
    """
    last_error: Exception | None = None
    for attempt in range(1, attempts + 1):
        remaining = deadline - time.monotonic()
        if remaining <= 0.5:
            break
        timeout = (min(CONNECT_TIMEOUT, remaining), min(read_timeout, remaining))
        try:
            response = _send(method, url, timeout, **kwargs)
        except requests.RequestException as exc:
            last_error = exc
            if (not resend_if_maybe_sent and _maybe_sent(exc)) or attempt == attempts:
                break  # no sleep after the last attempt: the caller's time is short
            wait = _backoff(attempt)
        else:
            if response.status_code not in retry_statuses or attempt == attempts:
                return response
            hinted = retry_after_seconds(response)
            wait = hinted if hinted is not None else _backoff(attempt)
            if wait > max_wait or time.monotonic() + wait >= deadline - 0.5:
                return response
            response.close()
            last_error = None
        if time.monotonic() + wait >= deadline - 0.5:
            break
        time.sleep(wait)
    if last_error is None:
        raise TransportError(f"no answer from {_host(url)} before the deadline")
    raise TransportError(f"{_host(url)} did not answer: {_describe(last_error)}")


def _send(
    method: str,
    url: str,
    timeout: tuple[float, float],
    headers: dict[str, str] | None = None,
    stream: bool = False,
    **body: Any,
) -> requests.Response:
    """One exchange through the session's adapter, without Session.request.

    Session.request merges cookies, hooks and settings and looks for
    redirects on every call: 0.3 ms of CPU a call, three calls a meeting
    (BENCHMARKS.md). None of it applies here: the session holds no cookies
    or hooks, and AssemblyAI's API answers without redirects; a 3xx is
    returned as it came, so the key is never sent anywhere else. With
    trust_env on (see session()), requests' own per-request lookup is kept.
    """
    s = session()
    if s.trust_env:
        return s.request(method, url, timeout=timeout, headers=headers, stream=stream,
                         allow_redirects=False, **body)  # fmt: skip
    merged = CaseInsensitiveDict(s.headers)  # User-Agent, Accept-Encoding: gzip ...
    for key, value in (headers or {}).items():
        if value is None:
            merged.pop(key, None)  # as requests' merge_setting
        else:
            merged[key] = value
    prepared = requests.Request(method, url, headers=merged, **body).prepare()
    response = s.get_adapter(url).send(
        prepared, stream=stream, timeout=timeout, verify=s.verify, proxies=s.proxies, cert=s.cert
    )
    if not stream:
        response.content  # noqa: B018 - read now, so the connection goes back to the pool
    return response


def _maybe_sent(exc: requests.RequestException) -> bool:
    """Whether the server may have received (and acted on) the request."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.ConnectionError):
        reason = str(exc)
        return not any(s in reason for s in ("NewConnectionError", "Connection refused"))
    return True


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter: 0.5 s, 1 s, 2 s ... capped at 8 s."""
    return random.uniform(0, min(8.0, 0.5 * 2 ** (attempt - 1))) + 0.1


def _host(url: str) -> str:
    return requests.utils.urlparse(url).netloc or url


def _describe(exc: Exception) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    return type(exc).__name__
