"""Structured logs: one JSON object per line on stdout.

Cloud Logging reads `severity` and `message` from each line and keeps the
other keys as the entry's payload, so every line carries the transcript id
it is about and can be found by it.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from typing import Any

from . import text

_lock = threading.Lock()
# The query of a URL can be a credential (a signed URL is valid for a day).
# A URL is `scheme://rest?query`, the scheme starting with a letter at a word
# boundary; each is found from its "://" so that the work stays linear in the
# text (a single regular expression would retry at every letter of a run
# such as "a.a.a.a...": quadratic).
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_SCHEME_CHAR = re.compile(r"[a-zA-Z0-9+.-]*")
_SCHEME_START = re.compile(r"[+.-][a-zA-Z]")
_BEFORE_QUERY = re.compile(r"[^\s?#\"'<>]+")
_QUERY = re.compile(r"[^\s#\"'<>]*")


def strip_url_queries(text: str) -> str:
    """Text safe to store or log: every URL in it loses its query string."""
    if "?" not in text or "://" not in text:
        return text
    out: list[str] = []
    done = 0  # text[:done] is in `out` already
    at = text.find("://")
    floor = 0  # no scheme starts before this: the end of the last "://" or URL
    while at >= 0:
        start = _scheme_start(text, max(floor, done), at)
        floor = at + 3
        if start is None:
            at = text.find("://", floor)
            continue
        rest = _BEFORE_QUERY.match(text, floor)
        end = rest.end() if rest else floor
        if rest is None or text[end : end + 1] != "?":
            # Every "://" before `end` would stop at the same character.
            at = text.find("://", end)
            continue
        query_end = _QUERY.match(text, end + 1).end()
        out.append(text[done : end + 1] + "…")
        done = floor = query_end
        at = text.find("://", query_end)
    out.append(text[done:])
    return "".join(out)


def _scheme_start(text: str, lo: int, at: int) -> int | None:
    """Where the URL scheme that ends at `at` starts (its leftmost letter
    after a non-word character), looking no further back than `lo`."""
    if at <= lo or text[at - 1] not in _SCHEME_CHARS:
        return None
    run = _SCHEME_CHAR.match(text[lo:at][::-1]).end()
    first = at - run
    if first < at and text[first].isascii() and text[first].isalpha():
        before = text[first - 1] if first > 0 else ""
        if not (before.isalnum() or before == "_"):
            return first
    inner = _SCHEME_START.search(text, first, at)
    return inner.start() + 1 if inner else None


def log(severity: str, message: str, transcript_id: str | None = None, **fields: Any) -> None:
    """Write one log line. Never pass secrets or request headers here."""
    entry: dict[str, Any] = {"severity": severity, "message": strip_url_queries(message)}
    if transcript_id is not None:
        entry["transcript_id"] = transcript_id
    base = dict(entry)
    entry.update({k: strip_url_queries(v) if isinstance(v, str) else v for k, v in fields.items()})
    try:
        line = json.dumps(entry, default=str, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):  # a field JSON cannot hold: say what it was
        line = json.dumps({**base, "fields": repr(fields)[:10_000]}, ensure_ascii=False)
    # Outside text may carry lone surrogates (a JSON escape such as "\ud800"),
    # which no UTF-8 stream can take: repaired here, at the boundary, so that
    # a log line never fails the request it describes.
    line = text.storable(line, sys.maxsize)
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def info(message: str, transcript_id: str | None = None, **fields: Any) -> None:
    log("INFO", message, transcript_id, **fields)


def warning(message: str, transcript_id: str | None = None, **fields: Any) -> None:
    log("WARNING", message, transcript_id, **fields)


def error(message: str, transcript_id: str | None = None, **fields: Any) -> None:
    log("ERROR", message, transcript_id, **fields)
