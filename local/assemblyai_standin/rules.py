"""The stand-in's "LLM": deterministic rules, not a model.

It finds sentences in which someone commits to or is asked to do
something, and answers in whatever JSON schema the request asked for. It
cannot understand a meeting; it only lets the product's flow be tested
end to end with answers that really come from the transcript.

It reads the transcript in one of two forms:

- plain text (the gateway's `{{ transcript }}` substitution): items have a
  text, an owner when a name was said, a due date and the quote;
- utterance lines the caller wrote into its prompt, inside
  `<transcript>...</transcript>`, in either of two forms: one utterance a
  line,

      [MM:SS] Name: text          ([H:MM:SS] from the first hour on)

  or the webhook's: a legend line per speaker, then a line per minute
  holding the turns that start in it: the minute, then each turn as a
  bar, its speaker's letter and text (a bar not followed by a legend
  letter and a space is part of the text, as a reader would take it),

      A = Priya                   (A = not identified: no name)
      12|A text.|B text.          (62|... after the first hour)

  Items then also say who said them and when (`said_by`: the name, or the
  letter of a speaker not identified; `said_at` in whole seconds: the
  line's time, as a prompt gives no finer one), and
  `owner_source`: "spoken" when the owner's name was said in the sentence,
  "speaker" when the speaker committed ("I'll ...", "I will ..."). The
  rules never infer an owner, so never answer "inferred".

Only the keys the request's JSON schema asks for are answered.
"""

from __future__ import annotations

import json
import re
from typing import Any

_SENTENCE = re.compile(r"[^.!?。！？]+[.!?。！？]?")
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

# Spanish: "Mateo, ¿puedes ...?", "Sofía va a ...", "Voy a ...". Names are
# checked to start with a capital in code (\w takes accented letters).
_DAYS_ES = r"(?:lunes|martes|miércoles|jueves|viernes|sábado|domingo)"
_DUE_ES = re.compile(
    rf"\b(?:antes del?|para el|hasta el)\s+((?:próximo\s+)?{_DAYS_ES})"
    r"|\b(mañana|la próxima semana|fin de mes)\b",
    re.I,
)
_ASKED_ES = re.compile(
    r"^(?:y\s+|entonces\s+)?(\w+),\s+¿?(?:puedes|podrías|puede|podría)\s+(.*)$", re.I
)
_WILL_ES = re.compile(r"^(?:y\s+|entonces\s+)?(\w+) (?:va a|tiene que|debe)\s+(.*)$")
_SELF_ES = re.compile(
    r"^(?:y\s+|entonces,?\s+|vale,?\s+)?(?:yo\s+)?(?:voy a|me encargo de)\s+(.*)$", re.I
)
_NOT_NAMES_ES = {"Yo", "Tú", "Usted", "Nosotros", "Alguien", "Todos", "Eso", "Esto", "Entonces"}


_LINE = re.compile(
    r"[ \t]*\[(?:(\d+):)?(\d+):([0-5]\d)\][ \t]+([^:\n]{1,80}?):[ \t]+(.*\S)[ \t\r]*"
)
_LEGEND = re.compile(r"([A-Z]{1,3}) = (\S.{0,79}?)[ \t\r]*")
_MINUTE = re.compile(r"(\d{1,5})(\|.*\S)[ \t\r]*")
_BLOCK = re.compile(r"<transcript>(.*?)</transcript>", re.S)


def message_text(message: dict[str, Any]) -> str:
    """A message's content as text (a string, or the text of its content parts)."""
    content = message.get("content")
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def instructions(messages: list[dict[str, Any]]) -> str:
    """The prompt's words without the meeting (its <transcript> block), for tests to read."""
    texts = [message_text(m) for m in messages if isinstance(m, dict)]
    return _BLOCK.sub("<transcript/>", "\n".join(texts))[:4000]


def transcript_lines(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The utterance lines of a prompt: {"at": seconds, "speaker", "text"}.

    Lines inside <transcript>...</transcript> when any message has such a
    block (so an example line elsewhere in the instructions is not read as
    the meeting); otherwise any such line of a user message."""
    texts = [message_text(m) for m in messages if isinstance(m, dict)]
    blocks = [b for t in texts for b in _BLOCK.findall(t)]
    if not blocks:
        blocks = [
            message_text(m) for m in messages if isinstance(m, dict) and m.get("role") == "user"
        ]
    lines = []
    for block in blocks:
        names: dict[str, str] = {}
        for row in block.split("\n"):
            if old := _LINE.fullmatch(row):
                hours, minutes, seconds, speaker, text = old.groups()
                if speaker.strip():
                    at = int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds)
                    lines.append({"at": at, "speaker": speaker.strip(), "text": text})
            elif legend := _LEGEND.fullmatch(row):
                key, name = legend.groups()
                names[key] = key if name == "not identified" else name
            elif names and (minute := _MINUTE.fullmatch(row)):
                lines += _turns(int(minute.group(1)) * 60, minute.group(2), names)
    return lines


def _turns(at: int, text: str, names: dict[str, str]) -> list[dict[str, Any]]:
    """The turns of a minute's line (after its minute): each starts with a
    bar, a legend letter and a space."""
    turns: list[dict[str, Any]] = []
    for part in text.split("|")[1:]:
        key, space, said = part.partition(" ")
        if space and key in names:
            turns.append({"at": at, "speaker": names[key], "text": said})
        elif turns:
            turns[-1]["text"] += "|" + part
    return [{**t, "text": t["text"].strip()} for t in turns if t["text"].strip()]


def _commitments(text: str) -> list[dict[str, Any]]:
    """The sentences of a text that carry a task: its text, the spoken
    owner's name if any, the due date, and the sentence verbatim."""
    items = []
    for raw in _SENTENCE.findall(text or ""):
        sentence = raw.strip()
        owner, task = None, None
        for pattern in (_ASKED, _WILL, _ASKED_ES, _WILL_ES):
            match = pattern.match(sentence)
            name = match.group(1) if match else ""
            if match and name[:1].isupper() and name not in _NOT_NAMES | _NOT_NAMES_ES:
                owner, task = name, match.group(2)
                break
        else:
            match = _SELF.match(sentence) or _SELF_ES.match(sentence)
            if match:
                task = match.group(1)
            else:
                owner, task = _japanese(sentence)
        if not task or (len(task) < 4 if _tight(task) else len(task.split()) < 3):
            continue
        due = None
        for pattern in (_DUE, _DUE_ES):
            due_match = pattern.search(task)
            if due_match:
                due = due_match.group(1) or due_match.group(2)
                task = (task[: due_match.start()] + task[due_match.end() :]).strip()
                break
        if due is None and _tight(task):
            due, task = _japanese_due(task)
        task = task.rstrip(" ?.!,。？！、")
        items.append(
            {"text": task[:1].upper() + task[1:], "owner": owner, "due": due, "quote": sentence}
        )
    return items


# Japanese, by plain string search (one pass each): "田中さん、...ください",
# "鈴木さんが...ます", "私が...ます", and "金曜日までに" for the due date.
_ASK_JA, _WILL_JA, _SELF_JA, _BY_JA = "さん、", "さんが", "私が", "までに"


def _tight(text: str) -> bool:
    """Written without spaces (kana or kanji, no space)."""
    return " " not in text and any(0x3040 <= ord(c) <= 0x9FFF for c in text)


def _japanese(sentence: str) -> tuple[str | None, str | None]:
    """(owner or None, task) of a Japanese commitment, or (None, None)."""
    for mark in (_ASK_JA, _WILL_JA):
        at = sentence.find(mark)
        if 0 < at <= 12:
            name = sentence[:at].rsplit("、", 1)[-1]
            rest = sentence[at + len(mark) :].rstrip("。")
            if name and name != "皆" and (rest.endswith("ください") or rest.endswith("ます")):
                return name, rest.removesuffix("ください")
    at = sentence.find(_SELF_JA)
    if 0 <= at <= 8 and sentence.rstrip("。").endswith("ます"):
        return None, sentence[at + len(_SELF_JA) :]
    return None, None


def _japanese_due(task: str) -> tuple[str | None, str]:
    """The run of kanji, katakana or digits before までに, and the task without it."""
    at = task.find(_BY_JA)
    start = at
    while (
        start > 0 and not 0x3040 <= ord(task[start - 1]) <= 0x309F and task[start - 1] not in "、。"
    ):
        start -= 1
    if at <= 0 or start == at:
        return None, task
    return task[start:at], task[:start] + task[at + len(_BY_JA) :]


def extract(text: str) -> list[dict[str, Any]]:
    """Items from plain text: no speakers, no times."""
    items = []
    for item in _commitments(text):
        item["owner_source"] = "spoken" if item["owner"] else None
        item["said_by"] = item["said_at"] = None
        items.append(item)
    return items


def _full_name(spoken: str, speakers: list[str]) -> str:
    """A spoken first name as the one speaker whose name starts with it, if exactly one does."""
    matches = [
        s for s in speakers if s.split()[:1] == [spoken] or s.casefold() == spoken.casefold()
    ]
    return matches[0] if len(matches) == 1 else spoken


def extract_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items from utterance lines: each says who said it, when, and whose it is."""
    speakers = list(dict.fromkeys(line["speaker"] for line in lines))
    items = []
    for line in lines:
        for item in _commitments(line["text"]):
            if item["owner"]:
                item["owner"] = _full_name(item["owner"], speakers)
                item["owner_source"] = "spoken"
            else:
                item["owner"], item["owner_source"] = line["speaker"], "speaker"
            item["said_by"], item["said_at"] = line["speaker"], line["at"]
            items.append(item)
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
# Keys answered as they are named: the item's own fields.
_SAME_KEYS = {"owner_source", "said_by", "said_at", "quote"}


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
        elif name in _SAME_KEYS:
            value = item.get(name)
        if value is None and "null" not in types:
            if sub.get("enum"):
                value = sub["enum"][0]
            else:
                value = "" if "string" in types else fill(sub, [], name)
        out[name] = value
    return out


def answer(
    text: str, response_format: dict[str, Any] | None, lines: list[dict[str, Any]] | None = None
) -> str:
    """The answer to a prompt whose transcript is `lines` when there are any,
    else the plain `text`, in the requested format."""
    items = extract_lines(lines) if lines else extract(text)
    if response_format and response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        return json.dumps(fill(schema, items))
    if response_format and response_format.get("type") == "json_object":
        keys = ("text", "owner", "due") if not lines else tuple(items[0]) if items else ()
        return json.dumps({"action_items": [{k: i[k] for k in keys} for i in items]})
    return bullets(items)
