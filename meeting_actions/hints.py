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

from . import inputs, languages, notify_address
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


def from_query(args: Mapping[str, str]) -> Hints:
    """The Hints of webhook_url(), read back; anything malformed is dropped."""
    meta = {k[5:]: v for k, v in args.items() if k.startswith("meta.")}
    try:
        meta = inputs.metadata(meta)
    except inputs.InvalidRequest:
        meta = {}
    source = {k[4:]: v for k, v in args.items() if k.startswith("src.")}
    fmt = args.get("answer_format")
    notify_to = args.get("notify")
    try:  # the production address check runs again at send time
        notify_to = notify_address.check_notify_url(notify_to, True) if notify_to else None
    except ValueError:
        notify_to = None
    items_language = args.get("items_language")
    return Hints(
        items_language=items_language if languages.is_code(items_language) else None,
        notify_url=notify_to,
        answer_format=fmt[:200] if fmt else None,
        metadata=meta,
        source={"kind": "gcs", **source} if source else None,
    )
