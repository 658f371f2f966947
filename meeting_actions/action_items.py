"""The action-item prompt, its JSON schema, and parsing of the answer.

The transcript itself never passes through the function: the LLM Gateway
puts its text where the exact placeholder `{{ transcript }}` stands. The
model is asked for structured output, but the parser copes with a model
that answers in plain text or is cut off at max_tokens.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

PLACEHOLDER = "{{ transcript }}"
# What one meeting's document may hold of the answer: Firestore refuses a
# document over 1 MiB, and a person reads a few dozen items, not thousands.
MAX_ITEMS = 200
MAX_FIELD_CHARS = {"text": 1000, "owner": 120, "due": 120}
MAX_TEXT_CHARS = 100_000
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


class Unparseable(ValueError):
    """The answer cannot be read at all (a poison answer: asking again repeats it)."""


DEFAULT_ANSWER_FORMAT = "bullet points"

SYSTEM_PROMPT = (
    "You read meeting transcripts and list the action items agreed in them. "
    "An action item is a concrete task someone committed to or was asked to "
    "do. Only list tasks that were actually said in the meeting; never invent "
    "tasks, owners or dates. Write each task succinctly, starting with a verb."
)

USER_PROMPT = """Here is the transcript of a meeting:

<transcript>
{placeholder}
</transcript>

List the meeting's action items.
- Each item must trace back to something said in the transcript.
- "owner": the person responsible, by name as said in the meeting, or null if no one was named.
- "due": when it is due, in the meeting's own words (for example "Friday"), or null if no time was said.
- "formatted": the same items as readable text, written as {answer_format}.
If there are no action items, return an empty list and say so in "formatted"."""

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "action_items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "text": {"type": "string"},
                    "owner": {"type": ["string", "null"]},
                    "due": {"type": ["string", "null"]},
                },
                "required": ["text", "owner", "due"],
                "additionalProperties": False,
            },
        },
        "formatted": {"type": "string"},
    },
    "required": ["action_items", "formatted"],
    "additionalProperties": False,
}


def request_body(
    transcript_id: str, model: str, answer_format: str, max_tokens: int
) -> dict[str, Any]:
    """The chat-completions body asking for one meeting's action items."""
    # Strip braces so a caller's answer_format cannot add a second placeholder.
    answer_format = answer_format.replace("{", "").replace("}", "")
    return {
        "model": model,
        "transcript_id": transcript_id,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {
                "role": "user",
                "content": USER_PROMPT.format(placeholder=PLACEHOLDER, answer_format=answer_format),
            },
        ],
        "max_tokens": max_tokens,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "action_items", "schema": SCHEMA, "strict": True},
        },
    }


@dataclasses.dataclass
class ActionItems:
    items: list[dict[str, str]]
    text: str
    # "json": the schema was followed; "salvaged": cut off at max_tokens and
    # the complete items kept; "plain_text": the model ignored the schema.
    parsed_as: str
    note: str | None = None


_NONE_WORDS = {"", "none", "null", "n/a", "na", "unknown", "unassigned", "tbd", "-"}
_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")
_BULLET = re.compile(r"^\s*(?:[-*•‣▪]|\d{1,3}[.)])\s+(.*\S)\s*$")


def parse(content: str, finish_reason: str | None) -> ActionItems:
    """Turn the model's answer into items and readable text a document can hold.

    Raises Unparseable for an answer no reading can make sense of.
    """
    try:
        return _capped(_parse(content, finish_reason))
    except RecursionError:
        raise Unparseable("the model's answer is nested too deeply to read") from None


def storable(text: str) -> str:
    """Text Firestore can store: lone surrogates (invalid UTF-8) replaced."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def _capped(result: ActionItems) -> ActionItems:
    """At most MAX_ITEMS items of bounded size, and a note saying what was cut."""
    cuts = []
    if len(result.items) > MAX_ITEMS:
        cuts.append(f"kept the first {MAX_ITEMS} of {len(result.items)} items")
        result.items = result.items[:MAX_ITEMS]
    shortened = 0
    for item in result.items:
        for key, limit in MAX_FIELD_CHARS.items():
            value = item.get(key)
            if isinstance(value, str) and len(value) > limit:
                item[key] = value[: limit - 1] + "…"
                shortened += 1
    if shortened:
        cuts.append(f"shortened {shortened} over-long field(s)")
    if len(result.text) > MAX_TEXT_CHARS:
        result.text = result.text[: MAX_TEXT_CHARS - 1] + "…"
        cuts.append(f"cut the readable list at {MAX_TEXT_CHARS} characters")
    if cuts:
        note = "The answer was too large to keep whole: " + "; ".join(cuts) + "."
        result.note = f"{result.note} {note}" if result.note else note
    return result


def _parse(content: str, finish_reason: str | None) -> ActionItems:
    content = storable(content or "").strip()
    cut = finish_reason == "length"
    data = _load_json(content)
    if isinstance(data, dict) and isinstance(data.get("action_items"), list):
        items = _clean_items(data["action_items"])
        text = data.get("formatted")
        if not isinstance(text, str) or not text.strip():
            text = render(items)
        return ActionItems(items, storable(text).strip(), "json")
    if _FENCE.sub("", content).lstrip().startswith("{"):
        items = _salvage(content)
        reason = "cut off at max_tokens" if cut else "not valid JSON"
        note = f"The model's answer was {reason}; kept the {len(items)} complete item(s)."
        return ActionItems(items, render(items), "salvaged", note)
    items = _from_plain_text(content)
    note = "The model answered in plain text instead of the requested JSON."
    if cut:
        note += " It was cut off at max_tokens."
    return ActionItems(items, content or render(items), "plain_text", note)


def render(items: list[dict[str, str]]) -> str:
    """Bullet points, for when the model gave no readable list of its own."""
    if not items:
        return "No action items."
    lines = []
    for item in items:
        extra = ", ".join(
            v for v in (item.get("owner"), item.get("due") and f"due {item['due']}") if v
        )
        lines.append(f"- {item['text']}" + (f" ({extra})" if extra else ""))
    return "\n".join(lines)


def _load_json(content: str) -> Any:
    try:
        return json.loads(_FENCE.sub("", content))
    except ValueError:
        return None
    # RecursionError (a deeply nested answer) is left to parse(): poison.


def _clean_items(raw: list[Any]) -> list[dict[str, str]]:
    items = []
    for entry in raw:
        if isinstance(entry, str):
            entry = {"text": entry}
        if not isinstance(entry, dict):
            continue
        text = entry.get("text") or entry.get("task") or entry.get("description")
        if not isinstance(text, str) or not text.strip():
            continue
        item = {"text": storable(" ".join(text.split()))}
        for key in ("owner", "due"):
            value = entry.get(key)
            if isinstance(value, str) and value.strip().lower() not in _NONE_WORDS:
                item[key] = storable(" ".join(value.split()))
        items.append(item)
    return items


def _salvage(content: str) -> list[dict[str, str]]:
    """The complete objects of a JSON answer cut off in its items array."""
    start = content.find("[", content.find('"action_items"'))
    if start < 0:
        return []
    decoder = json.JSONDecoder()
    found: list[Any] = []
    pos = start + 1
    while True:
        while pos < len(content) and content[pos] in " \t\r\n,":
            pos += 1
        try:
            obj, pos = decoder.raw_decode(content, pos)
        except ValueError:
            break
        found.append(obj)
    return _clean_items(found)


def _from_plain_text(content: str) -> list[dict[str, str]]:
    items = []
    for line in content.splitlines():
        match = _BULLET.match(line)
        if match:
            text = match.group(1).strip().strip("*").strip()
            if text:
                items.append({"text": text})
    return items
