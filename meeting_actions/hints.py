"""What the webhook needs to build a meeting's document by itself, carried
on the webhook URL's query string (AssemblyAI's documented way to attach
metadata): the answer format, the caller's metadata, the upload it came
from and where to notify.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Mapping
from typing import Any

from . import inputs, languages, text
from .config import Config


@dataclasses.dataclass(frozen=True)
class Hints:
    """What the webhook needs to build a meeting's document by itself.

    Carried on the webhook URL's query string (AssemblyAI's documented way
    to attach metadata), so a meeting whose document could not be written
    at submit time, or was lost, is still recorded in full.
    """

    answer_format: str | None = None
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    source: dict[str, Any] | None = None
    notify_url: str | None = None
    # The language the items are written in, when not the meeting's.
    items_language: str | None = None


def webhook_url(cfg: Config, hints: Hints) -> str:
    params: list[tuple[str, str]] = []
    if hints.answer_format:
        params.append(("answer_format", hints.answer_format))
    if hints.notify_url:
        params.append(("notify", hints.notify_url))
    if hints.items_language:
        params.append(("items_language", hints.items_language))
    params += [(f"meta.{k}", v) for k, v in sorted(hints.metadata.items())]
    for key, value in (hints.source or {}).items():
        if key != "kind" and value is not None:
            params.append((f"src.{key}", str(value)))
    if not params:
        return cfg.webhook_url
    parts = urllib.parse.urlsplit(cfg.webhook_url)
    query = "&".join(q for q in (parts.query, urllib.parse.urlencode(params)) if q)
    return urllib.parse.urlunsplit(parts._replace(query=query))


# What submit carries of an upload's source (storage_object.StorageObject.source(),
# but its kind), and how many bytes each may take: Cloud Storage's limits.
SOURCE_KEYS = {
    "uri": 5 + 222 + 1 + 1024,
    "bucket": 222,
    "name": 1024,
    "generation": 20,
    "size": 20,
    "content_type": 255,
}
_NUMBERS = ("generation", "size")


def from_query(args: Mapping[str, str]) -> Hints:
    """The Hints of webhook_url(), read back; anything unknown or malformed
    is dropped (the query is outside input like any other: only the keys
    submit writes are read, each through text.check)."""
    meta: dict[str, str] = {}
    for key, value in args.items():
        name = key[5:]
        if (
            key.startswith("meta.")
            and inputs.is_metadata_key(name)
            and _fits(value, inputs.MAX_METADATA_VALUE, True)
        ):
            meta[name] = value
    meta = dict(sorted(meta.items())[: inputs.MAX_METADATA_KEYS])
    source: dict[str, Any] = {}
    for key, limit in SOURCE_KEYS.items():
        value = args.get(f"src.{key}")
        if value and _fits(value, limit, key in ("name", "uri")):
            if key not in _NUMBERS:
                source[key] = value
            elif value.isascii() and value.isdigit():
                source[key] = int(value) if key == "size" else value
    try:
        fmt = inputs.answer_format(args.get("answer_format") or None)
    except inputs.InvalidRequest:
        fmt = None
    try:  # the production address check runs again at send time
        notify_to = inputs.notify_url(args.get("notify") or None, True)
    except inputs.InvalidRequest:
        notify_to = None
    items_language = args.get("items_language")
    return Hints(
        items_language=items_language if languages.is_code(items_language) else None,
        notify_url=notify_to,
        answer_format=fmt,
        metadata=meta,
        source={"kind": "gcs", **source} if source else None,
    )


def _fits(value: Any, max_bytes: int, control: bool = False) -> bool:
    try:
        text.check(value, "hint", max_bytes, control)
    except text.BadText:
        return False
    return True
