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

_lock = threading.Lock()
# The query of a URL can be a credential (a signed URL is valid for a day).
_URL_QUERY = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s?#\"'<>]+)\?[^\s#\"'<>]*", re.I)


def strip_url_queries(text: str) -> str:
    """Text safe to store or log: every URL in it loses its query string."""
    return _URL_QUERY.sub(r"\1?…", text) if "?" in text else text


def log(severity: str, message: str, transcript_id: str | None = None, **fields: Any) -> None:
    """Write one log line. Never pass secrets or request headers here."""
    entry: dict[str, Any] = {"severity": severity, "message": strip_url_queries(message)}
    if transcript_id is not None:
        entry["transcript_id"] = transcript_id
    entry.update({k: strip_url_queries(v) if isinstance(v, str) else v for k, v in fields.items()})
    line = json.dumps(entry, default=str, ensure_ascii=False)
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def info(message: str, transcript_id: str | None = None, **fields: Any) -> None:
    log("INFO", message, transcript_id, **fields)


def warning(message: str, transcript_id: str | None = None, **fields: Any) -> None:
    log("WARNING", message, transcript_id, **fields)


def error(message: str, transcript_id: str | None = None, **fields: Any) -> None:
    log("ERROR", message, transcript_id, **fields)
