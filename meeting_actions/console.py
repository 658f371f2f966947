"""The console is input: what a person may set on a meeting's document in
the Firestore console, and how the flow reads every field a person can edit.

A person may set three fields (README, "Regenerate from the Firestore console"):

    field                   what it must be                                  bounds from
    regenerate              the boolean true (a string "true" or 1 is not)
    llm_model               a model name: a letter or digit, then letters,   inputs.is_model_name
                            digits and . _ : -, at most 64 characters
    options.answer_format   a text of 1 to 200 characters, no control        inputs (submit)
                            characters; runs of white space count as one
                            space, as at submit

A regeneration whose fields break these is refused before anything is paid
(regenerate.py): the flag is cleared and `regenerate_note` names the field
and why. A first generation (the document was edited while queued) ignores
the malformed field, uses the default, and says so in `regenerate_note`.
Whether the gateway knows a well-formed model is the gateway's to say: a
refusal of a console-set model keeps the previous result (generate.py).

Every other field is the product's own, but a person can edit or delete it
too, so none is trusted where it is read: a value of the wrong type reads
as absent, a count as a non-negative integer, and the result version as
the highest one the document shows anywhere (`result_version`, the
notification, `history`), so an edit can lower neither it nor reuse a
notification id (those come from `result_id`, a random id per result).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

from . import inputs, lifecycle, text

# What a person may set, for the README and for refusals.
MAY_SET = {
    "regenerate": "the boolean true",
    "llm_model": "a model name from the LLM Gateway's list, such as claude-sonnet-4-6",
    "options.answer_format": "a short text such as 'a numbered list', at most 200 characters",
}
MAX_MODEL_CHARS = 64
# submit's cap (inputs._answer_format), in characters; the byte cap keeps
# text.check's linear pass short whatever a person pastes.
MAX_ANSWER_FORMAT = 200
MAX_COUNT = 10**9


class Refusal(ValueError):
    """A console edit that cannot be used: `field` and why, in words for the person."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field} {reason}")
        self.field = field
        self.reason = reason
        self.message = f"{field} {reason}"


def shown(value: Any, limit: int = 40) -> str:
    """A value as a person would recognise it in a note, kept short."""
    if isinstance(value, str):
        kind = "the string"
    elif isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    elif isinstance(value, int | float):
        kind = "the number"
    elif isinstance(value, dict):
        return "a map"
    elif isinstance(value, list | tuple):
        return "an array"
    elif isinstance(value, dt.datetime):
        return "a timestamp"
    else:
        return f"a {type(value).__name__} value"
    try:
        rendered = json.dumps(value, ensure_ascii=False)
    except ValueError:
        rendered = repr(value)
    if len(rendered) > limit:
        rendered = rendered[: limit - 1] + "…"
    return f"{kind} {text.storable(rendered)}"


# --- what a person may set -------------------------------------------------------


def regenerate_flag(data: dict[str, Any] | None) -> bool:
    """True when the document asks for a regeneration; raises Refusal when
    the flag is set to anything but a boolean."""
    value = (data or {}).get("regenerate")
    if value is True:
        return True
    if value is None or value is False:
        return False
    raise Refusal("regenerate", f"must be the boolean true, not {shown(value)}")


def llm_model(data: dict[str, Any] | None) -> str | None:
    """The console's model override, or None; raises Refusal when malformed."""
    value = (data or {}).get("llm_model")
    if value is None:
        return None
    try:
        text.check(value, "llm_model", MAX_MODEL_CHARS)
    except text.BadText as exc:
        raise Refusal("llm_model", f"{exc.reason}: it must be {MAY_SET['llm_model']}") from None
    if not inputs.is_model_name(value):
        raise Refusal("llm_model", f"must be {MAY_SET['llm_model']}, not {shown(value)}")
    return value


def answer_format(data: dict[str, Any] | None) -> str | None:
    """options.answer_format as submit would have accepted it, or None;
    raises Refusal when `options` or the format is malformed."""
    options = (data or {}).get("options")
    if options is None:
        return None
    if not isinstance(options, dict):
        raise Refusal("options", f"must be a map (with answer_format in it), not {shown(options)}")
    value = options.get("answer_format")
    if value is None:
        return None
    field = "options.answer_format"
    try:
        text.check(value, field, MAX_ANSWER_FORMAT * 4, control=True)
    except text.BadText as exc:
        raise Refusal(field, f"{exc.reason}: it must be {MAY_SET[field]}") from None
    value = " ".join(value.split())
    if not value:
        raise Refusal(field, f"is empty: it must be {MAY_SET[field]}")
    if len(value) > MAX_ANSWER_FORMAT:
        raise Refusal(field, f"is {len(value):,} characters long: at most {MAX_ANSWER_FORMAT}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise Refusal(field, "holds control characters")
    return value


@dataclasses.dataclass(frozen=True)
class Asked:
    """What the document asks of a generation, each field read as above."""

    llm_model: str | None
    answer_format: str | None
    refusals: tuple[Refusal, ...]


def asked(data: dict[str, Any] | None) -> Asked:
    """The console's fields for a generation; a malformed one reads as None
    and is listed in `refusals`."""
    values: dict[str, Any] = {}
    refusals = []
    for name, read in (("llm_model", llm_model), ("answer_format", answer_format)):
        try:
            values[name] = read(data)
        except Refusal as refusal:
            values[name] = None
            refusals.append(refusal)
    return Asked(values["llm_model"], values["answer_format"], tuple(refusals))


def request_refusal(data: dict[str, Any] | None) -> Refusal | None:
    """The first field that keeps the document's regeneration request from
    being served, or None. The flag itself is checked by regenerate_flag."""
    refusals = asked(data).refusals
    return refusals[0] if refusals else None


def note(refusal: Refusal, outcome: str) -> str:
    """A regenerate_note for a refused field: which, why, what happened."""
    return f"{refusal.message}; {outcome}"


# --- the product's own fields, read without trusting them --------------------------


def count(value: Any) -> int:
    """A counter: a non-negative integer; anything else counts as 0."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT:
        return value
    return 0


def mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def status(data: dict[str, Any] | None) -> str | None:
    value = (data or {}).get("status")
    states = (lifecycle.QUEUED, lifecycle.GENERATING, lifecycle.COMPLETED, lifecycle.ERROR)
    return value if value in states else None


def history(data: dict[str, Any] | None) -> list[dict[str, Any]]:
    value = (data or {}).get("history")
    return [dict(h) for h in value if isinstance(h, dict)] if isinstance(value, list) else []


def notification(data: dict[str, Any] | None) -> dict[str, Any]:
    """The notification's state, or {} when there is none or it is not a map."""
    return mapping((data or {}).get("notification"))


def result_version(data: dict[str, Any] | None) -> int:
    """The version of the document's latest result (0 before the first):
    the highest the document shows in `result_version`, its notification
    or its history (each entry an earlier result, so at least as many as
    it holds), so deleting or garbling one of them lowers nothing."""
    earlier = history(data)
    versions = [count((data or {}).get("result_version")), len(earlier)]
    versions.append(count(notification(data).get("version")))
    versions += [count(h.get("result_version")) for h in earlier]
    return max(versions)


def source(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """Where the audio came from, if it is a map of plain values."""
    value = (data or {}).get("source")
    if not isinstance(value, dict):
        return None
    return {k: v for k, v in value.items() if isinstance(v, str | int | float | bool)}


def notify_url(data: dict[str, Any] | None) -> str | None:
    """The notify URL as a string, or None; notify.py checks it at send time."""
    value = (data or {}).get("notify_url")
    return value if isinstance(value, str) and value else None


def items(data: dict[str, Any] | None) -> list[Any]:
    value = (data or {}).get("action_items")
    return value if isinstance(value, list) else []
