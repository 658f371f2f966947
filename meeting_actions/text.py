"""The one check for text that comes from outside the process.

Request bodies, webhook queries, storage events, console edits, the model's
answer and anything logged may hold text Firestore cannot store or a log
line cannot encode: lone surrogates (valid JSON escapes such as "\\ud800",
a string cut mid-emoji), or more bytes than a document allows. Firestore
counts UTF-8 bytes, not characters, so every cap here is in bytes.

Two ways to use it, chosen where the text is read:
    check(value, field, max_bytes)   refuse: raises BadText naming the field
    storable(value, max_bytes)       repair: lone surrogates become U+FFFD,
                                     and the text is cut to max_bytes on a
                                     character boundary
Both run in time linear in the text. stored_size() is what a value costs
in a document, by Firestore's rules, for byte budgets.
"""

from __future__ import annotations

import re
from typing import Any

# Firestore's limit for a whole document is 1 MiB; a single string field
# can be at most 1,048,487 bytes. Callers pass their own, smaller, caps.
DOCUMENT_BYTES = 1_048_576
REPLACEMENT = "\ufffd"


class BadText(ValueError):
    """Text that cannot be accepted as sent; `field` names where it was."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field} {reason}")
        self.field = field
        self.reason = reason


def utf8_size(value: str) -> int:
    """Bytes the text takes in UTF-8 (a lone surrogate counts as 3, as escaped)."""
    if value.isascii():  # the usual case, without a copy
        return len(value)
    return len(value.encode("utf-8", "surrogatepass"))


def has_lone_surrogate(value: str) -> bool:
    if value.isascii():
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# A single character class: one linear scan, in C.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check(value: Any, field: str, max_bytes: int, control: bool = False) -> str:
    """`value` if it is a string Firestore can store within `max_bytes`.

    `control=False` also refuses control characters (below U+0020, and
    DEL), which no name, key or URL needs.
    """
    if not isinstance(value, str):
        raise BadText(field, "must be a string")
    if has_lone_surrogate(value):
        raise BadText(field, "holds invalid Unicode (a lone surrogate, such as a cut emoji)")
    if utf8_size(value) > max_bytes:
        raise BadText(field, f"is longer than {max_bytes} bytes in UTF-8")
    if not control and _CONTROL.search(value):
        raise BadText(field, "holds control characters")
    return value


def storable(value: str, max_bytes: int = DOCUMENT_BYTES) -> str:
    """`value` repaired to be stored or logged: lone surrogates replaced,
    and cut to at most `max_bytes` of UTF-8 without splitting a character."""
    if not has_lone_surrogate(value):
        if len(value) * 4 <= max_bytes:  # fast path: cannot be too long
            return value
        data = value.encode("utf-8")
    else:
        value = "".join(REPLACEMENT if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
        data = value.encode("utf-8")
    if len(data) <= max_bytes:
        return value
    return data[:max_bytes].decode("utf-8", "ignore")


def deep_storable(value: Any, max_bytes: int = DOCUMENT_BYTES) -> Any:
    """`storable` applied to every string in a JSON-like value (keys too)."""
    if isinstance(value, str):
        return storable(value, max_bytes)
    if isinstance(value, dict):
        return {
            storable(k, max_bytes) if isinstance(k, str) else k: deep_storable(v, max_bytes)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [deep_storable(v, max_bytes) for v in value]
    return value


def stored_size(value: Any) -> int:
    """The bytes Firestore counts for a value in a document
    (cloud.google.com/firestore/docs/storage-size): a string is its UTF-8
    bytes + 1, a map the sum of its keys (bytes + 1) and values, an array the
    sum of its elements, a number or a timestamp 8, null and booleans 1."""
    if isinstance(value, str):
        return utf8_size(value) + 1
    if isinstance(value, dict):
        return sum(utf8_size(str(k)) + 1 + stored_size(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return sum(stored_size(v) for v in value)
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, bytes):
        return len(value) + 1
    return 8
