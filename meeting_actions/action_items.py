"""Parsing of the model's answer into action items, their caps, and the
readable list (the prompts and schemas are prompt.py's).

The model is asked for structured output, but the parser copes with a
model that answers in plain text or is cut off at max_tokens.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from typing import Any

from .text import storable, stored_size, utf8_size

# What one meeting's document may hold of the answer, in UTF-8 bytes as
# Firestore counts them: a document is at most 1 MiB (text.DOCUMENT_BYTES).
# The result (items, readable list, note) gets RESULT_BYTES; `history` keeps
# at most regenerate.MAX_HISTORY_BYTES (300,000) of earlier results; the
# rest of the document (source, options, metadata, speakers, llm, error,
# generation, notification: each capped where it is read) stays well under
# REST_BYTES. And a person reads a few dozen items, not thousands.
RESULT_BYTES = 600_000
REST_BYTES = 100_000
MAX_ITEMS = 200
# (A link is never cut, which would break it: moments.py drops a long one.)
MAX_FIELD_BYTES = {
    "text": 1000, "owner": 120, "due": 120,
    "quote": 300, "said_by": 120, "owner_source": 20, "note": 200,
}  # fmt: skip
MAX_TEXT_BYTES = 100_000
# Kept back from RESULT_BYTES for the result's note.
_NOTE_BYTES = 2_000
_ELLIPSIS = "…"  # 3 bytes


class Unparseable(ValueError):
    """The answer cannot be read at all (a poison answer: asking again repeats it)."""


@dataclasses.dataclass
class ActionItems:
    items: list[dict[str, Any]]
    text: str
    # "json": the schema was followed; "salvaged": cut off at max_tokens and
    # the complete items kept; "plain_text": the model ignored the schema.
    parsed_as: str
    note: str | None = None


_NONE_WORDS = {"", "none", "null", "n/a", "na", "unknown", "unassigned", "tbd", "-"}
# The answer is read with string methods, each pass linear in its length: a
# regular expression such as r"\s*```$" retries at every position of a
# whitespace run (66 s of CPU for 300,000 spaces).
_BULLETS = "-*•‣▪"
# What may stand between the objects of a salvaged array.
_GAP = re.compile(r"[ \t\r\n,]*")


def parse(content: str, finish_reason: str | None, moments: bool = False) -> ActionItems:
    """Turn the model's answer into items and readable text a document can hold.

    `moments`: keep each item's claimed quote, time and speakers, for
    moments.py to check (never stored unchecked). Raises Unparseable for an
    answer no reading can make sense of.
    """
    try:
        return capped(_parse(content, finish_reason, moments))
    except RecursionError:
        raise Unparseable("the model's answer is nested too deeply to read") from None


def _repaired(value: str) -> str:
    """Lone surrogates (invalid UTF-8) replaced, nothing cut."""
    return storable(value, 4 * len(value))


def _shortened(value: str, max_bytes: int) -> str:
    return storable(value, max_bytes - len(_ELLIPSIS.encode())) + _ELLIPSIS


def capped(result: ActionItems) -> ActionItems:
    """Items and readable text within their byte caps and the document's
    budget (RESULT_BYTES), and a note saying what was cut."""
    cuts = []
    total = len(result.items)
    items = result.items[:MAX_ITEMS]
    shortened = 0
    for item in items:
        for key, limit in MAX_FIELD_BYTES.items():
            value = item.get(key)
            if isinstance(value, str) and utf8_size(value) > limit:
                item[key] = _shortened(value, limit)
                shortened += 1
    if utf8_size(result.text) > MAX_TEXT_BYTES:
        result.text = _shortened(result.text, MAX_TEXT_BYTES)
        cuts.append(f"cut the readable list at {MAX_TEXT_BYTES:,} bytes")
    budget = RESULT_BYTES - stored_size(result.text) - _NOTE_BYTES
    sizes = itertools.accumulate(stored_size(item) for item in items)
    keep = sum(1 for size in sizes if size <= budget)
    result.items = items[:keep]
    if keep < total:
        cuts.insert(0, f"kept the first {keep} of {total} items")
    if shortened:
        cuts.insert(1 if keep < total else 0, f"shortened {shortened} over-long field(s)")
    if cuts:
        note = (
            "The answer was too large to keep whole (a meeting's document holds at most 1 MiB): "
            + "; ".join(cuts)
            + "."
        )
        result.note = f"{result.note} {note}" if result.note else note
    return result


def _parse(content: str, finish_reason: str | None, moments: bool) -> ActionItems:
    content = _repaired(content or "").strip()
    cut = finish_reason == "length"
    data = _load_json(content)
    if isinstance(data, dict) and isinstance(data.get("action_items"), list):
        items = _clean_items(data["action_items"], moments)
        text = data.get("formatted")
        if not isinstance(text, str) or not text.strip():
            text = render(items)
        return ActionItems(items, _repaired(text).strip(), "json")
    if _unfenced(content).lstrip().startswith("{"):
        items = _salvage(content, moments)
        reason = "cut off at max_tokens" if cut else "not valid JSON"
        note = f"The model's answer was {reason}; kept the {len(items)} complete item(s)."
        return ActionItems(items, render(items), "salvaged", note)
    items = _from_plain_text(content)
    note = "The model answered in plain text instead of the requested JSON."
    if cut:
        note += " It was cut off at max_tokens."
    return ActionItems(items, content or render(items), "plain_text", note)


def clock(seconds: int) -> str:
    """A time from the meeting's start: MM:SS, or H:MM:SS from the first hour on."""
    hours, minutes, secs = seconds // 3600, seconds % 3600 // 60, seconds % 60
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def render(
    items: list[dict[str, Any]], answer_format: str | None = None, language: str | None = None
) -> str:
    """The readable list: one `[12:34] Priya: task (due Friday)` line per item
    when the items have moments (numbered when the answer_format asks for
    numbers), else bullet points (for when the model gave no
    readable list of its own). Its few words ("due") are in `language`
    (a code) where languages.py knows them."""
    from .languages import words

    said = words(language)
    if not items:
        return said["none"]
    if any("said_at" in item for item in items):
        numbered = "number" in (answer_format or "").lower()
        return "\n".join(
            (f"{i}. " if numbered else "") + _moment_line(item, said)
            for i, item in enumerate(items, 1)
        )
    lines = []
    for item in items:
        extra = ", ".join(
            v for v in (item.get("owner"), item.get("due") and said["due"].format(item["due"])) if v
        )
        lines.append(f"- {item['text']}" + (f" ({extra})" if extra else ""))
    return "\n".join(lines)


def _moment_line(item: dict[str, Any], said: dict[str, str]) -> str:
    parts = []
    at = item.get("said_at")
    if isinstance(at, int) and not isinstance(at, bool) and at >= 0:
        parts.append(f"[{clock(at)}]")
    if item.get("owner"):
        inferred = f" ({said['inferred']})" if item.get("owner_source") == "inferred" else ""
        parts.append(f"{item['owner']}{inferred}:")
    parts.append(item["text"])
    due = f" ({said['due'].format(item['due'])})" if item.get("due") else ""
    return " ".join(parts) + due


def _unfenced(content: str) -> str:
    """The answer without a Markdown code fence around it: an opening
    ```lang and the whitespace after it, a closing ``` and the whitespace
    before it."""
    if content.startswith("```"):
        i = 3
        while i < len(content) and content[i].isascii() and content[i].isalpha():
            i += 1
        content = content[i:].lstrip()
    if content.endswith("```"):
        content = content[:-3].rstrip()
    return content


def _load_json(content: str) -> Any:
    try:
        return json.loads(_unfenced(content))
    except ValueError:
        return None
    # RecursionError (a deeply nested answer) is left to parse(): poison.


def _clean_items(raw: list[Any], moments: bool = False) -> list[dict[str, Any]]:
    items = []
    for entry in raw:
        if isinstance(entry, str):
            entry = {"text": entry}
        if not isinstance(entry, dict):
            continue
        text = entry.get("text") or entry.get("task") or entry.get("description")
        if not isinstance(text, str) or not text.strip():
            continue
        item = {"text": _repaired(" ".join(text.split()))}
        keys = ("owner", "due", "owner_source", "said_by", "quote") if moments else ("owner", "due")
        for key in keys:
            value = entry.get(key)
            if isinstance(value, str) and value.strip().lower() not in _NONE_WORDS:
                item[key] = _repaired(" ".join(value.split()))
        if moments:
            item["said_at"] = seconds(entry.get("said_at"))
        items.append(item)
    return items


def seconds(value: Any) -> int | None:
    """A claimed time as whole seconds: a number, or "12:34" / "1:02:03"; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value) if 0 <= value < 10**7 else None
    if isinstance(value, str):
        parts = value.strip().strip("[]").split(":")
        if 1 <= len(parts) <= 3 and all(p.isascii() and p.isdigit() and len(p) <= 7 for p in parts):
            total = 0
            for part in parts:
                total = total * 60 + int(part)
            return total
    return None


def _salvage(content: str, moments: bool = False) -> list[dict[str, Any]]:
    """The complete objects of a JSON answer cut off in its items array."""
    start = content.find("[", content.find('"action_items"'))
    if start < 0:
        return []
    decoder = json.JSONDecoder()
    found: list[Any] = []
    pos = start + 1
    while True:
        pos = _GAP.match(content, pos).end()
        try:
            obj, pos = decoder.raw_decode(content, pos)
        except ValueError:
            break
        found.append(obj)
    return _clean_items(found, moments)


def _from_plain_text(content: str) -> list[dict[str, str]]:
    items = []
    for line in content.splitlines():
        text = _bullet_text(line)
        if text:
            items.append({"text": text})
    return items


def _bullet_text(line: str) -> str | None:
    """The text of a list line: `- text`, `* text`, `• text`, `12. text`
    or `3) text`; None for any other line."""
    line = line.lstrip()
    if line[:1] and line[0] in _BULLETS:
        rest = line[1:]
    else:
        digits = 0
        while digits < len(line) and digits < 4 and line[digits].isdecimal():
            digits += 1
        if not 1 <= digits <= 3 or line[digits : digits + 1] not in (".", ")"):
            return None
        rest = line[digits + 1 :]
    if not rest[:1].isspace():
        return None
    return rest.strip().strip("*").strip() or None
