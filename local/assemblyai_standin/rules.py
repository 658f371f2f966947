"""The stand-in's "LLM": deterministic rules, not a model.

It finds sentences in which someone commits to or is asked to do
something, and answers in whatever JSON schema the request asked for. It
cannot understand a meeting; it only lets the product's flow be tested
end to end with answers that really come from the transcript.
"""

from __future__ import annotations

import json
import re
from typing import Any

_SENTENCE = re.compile(r"[^.!?]+[.!?]?")
_DAYS = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_DUE = re.compile(
    rf"\b(?:by|before|on|until)\s+((?:next |this )?{_DAYS}(?:'s [\w-]+)?|tomorrow|end of (?:the )?(?:day|week|month)|the \w+ of \w+|the \d+(?:st|nd|rd|th))"
    rf"|\b(tomorrow|next week|end of (?:the )?(?:day|week|month))\b",
    re.I,
)
_ASKED = re.compile(
    r"^(?:so\s+|and\s+|okay\s+|ok\s+)?([A-Z][a-z]+),\s+(?:can|could|would) you\s+(.*)$", re.I
)
_WILL = re.compile(
    r"^(?:[Aa]ction item:\s*|[Ss]o\s+|[Aa]nd\s+|[Tt]hen\s+)?([A-Z][a-z]+) (?:will|is going to|needs to|has to)\s+(.*)$"
)
_SELF = re.compile(
    r"^(?:action item:\s*|so\s+|and\s+|okay,?\s+|sure,?\s+)?(?:I'll|I will|I'm going to|let me)\s+(.*)$",
    re.I,
)
_NOT_NAMES = {"We", "I", "You", "It", "That", "This", "They", "Someone", "Everyone", "Nobody"}


def extract(text: str) -> list[dict[str, str | None]]:
    items = []
    for raw in _SENTENCE.findall(text or ""):
        sentence = raw.strip()
        owner, task = None, None
        for pattern in (_ASKED, _WILL):
            match = pattern.match(sentence)
            if match and match.group(1) not in _NOT_NAMES:
                owner, task = match.group(1), match.group(2)
                break
        else:
            match = _SELF.match(sentence)
            if match:
                task = match.group(1)
        if not task or len(task.split()) < 3:
            continue
        due_match = _DUE.search(task)
        due = (due_match.group(1) or due_match.group(2)) if due_match else None
        if due_match:
            task = (task[: due_match.start()] + task[due_match.end() :]).strip()
        task = task.rstrip(" ?.!,")
        items.append({"text": task[0].upper() + task[1:], "owner": owner, "due": due})
    return items


def bullets(items: list[dict[str, Any]]) -> str:
    if not items:
        return "No action items."
    lines = []
    for item in items:
        extra = ", ".join(
            x for x in (item.get("owner"), item.get("due") and f"due {item['due']}") if x
        )
        lines.append(f"- {item['text']}" + (f" ({extra})" if extra else ""))
    return "\n".join(lines)


_TEXT_KEYS = {"text", "task", "description", "title", "action", "item"}
_OWNER_KEYS = {"owner", "assignee", "who", "responsible"}
_DUE_KEYS = {"due", "deadline", "when", "due_date"}


def fill(schema: dict[str, Any], items: list[dict[str, Any]], key: str = "") -> Any:
    """A value that validates against `schema`, built from the items."""
    types = schema.get("type")
    types = types if isinstance(types, list) else [types]
    if "object" in types:
        return {k: fill(s, items, k) for k, s in (schema.get("properties") or {}).items()}
    if "array" in types:
        sub = schema.get("items") or {}
        sub_types = sub.get("type") if isinstance(sub.get("type"), list) else [sub.get("type")]
        if "object" in sub_types:
            return [_item(sub, item) for item in items]
        if "string" in sub_types:
            return [item["text"] for item in items]
        return []
    if "string" in types:
        return bullets(items)
    if "null" in types:
        return None
    if "integer" in types or "number" in types:
        return len(items)
    if "boolean" in types:
        return bool(items)
    return None


def _item(schema: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, sub in (schema.get("properties") or {}).items():
        types = sub.get("type") if isinstance(sub.get("type"), list) else [sub.get("type")]
        value = None
        if name in _TEXT_KEYS:
            value = item["text"]
        elif name in _OWNER_KEYS:
            value = item.get("owner")
        elif name in _DUE_KEYS:
            value = item.get("due")
        if value is None and "null" not in types:
            value = "" if "string" in types else fill(sub, [], name)
        out[name] = value
    return out


def answer(text: str, response_format: dict[str, Any] | None) -> str:
    items = extract(text)
    if response_format and response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        return json.dumps(fill(schema, items))
    if response_format and response_format.get("type") == "json_object":
        return json.dumps({"action_items": items})
    return bullets(items)
