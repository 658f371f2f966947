"""Structured logs: one JSON object per line on stdout.

Cloud Logging reads `severity` and `message` from each line and keeps the
other keys as the entry's payload, so every line carries the transcript id
it is about and can be found by it.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

_lock = threading.Lock()


def log(severity: str, message: str, transcript_id: str | None = None, **fields: Any) -> None:
    """Write one log line. Never pass secrets or request headers here."""
    entry: dict[str, Any] = {"severity": severity, "message": message}
    if transcript_id is not None:
        entry["transcript_id"] = transcript_id
    entry.update(fields)
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
