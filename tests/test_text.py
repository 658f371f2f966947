"""The one text check: refuse or repair what Firestore and the logs cannot take."""

from __future__ import annotations

import pytest

from meeting_actions import text


@pytest.mark.parametrize(
    "value, reason",
    [
        ("cut \ud83d", "lone surrogate"),
        ("\udc00", "lone surrogate"),
        ("a" * 11, "longer than 10 bytes"),
        ("日本語日", "longer than 10 bytes"),  # 4 characters, 12 bytes
        ("tab\there", "control characters"),
        (5, "must be a string"),
    ],
)
def test_check_refuses_and_names_the_field(value, reason):
    with pytest.raises(text.BadText) as refused:
        text.check(value, "answer_format", 10)
    assert refused.value.field == "answer_format" and reason in str(refused.value)


def test_check_accepts_text_within_its_bytes():
    assert text.check("日本語", "f", 9) == "日本語"
    assert text.check("a\tb", "f", 9, control=True) == "a\tb"


def test_storable_replaces_lone_surrogates_and_cuts_on_a_character_boundary():
    assert text.storable("ok \ud800 \udfff") == "ok \ufffd \ufffd"
    assert text.storable("日本語", 7) == "日本"  # never half a character
    assert text.storable("abc", 3) == "abc"
    stored = text.storable("x\ud83d" * 1000, 100)
    assert text.utf8_size(stored) <= 100 and not text.has_lone_surrogate(stored)


def test_deep_storable_reaches_keys_and_nested_values():
    value = {"k\ud800": ["v\udc00", {"n": 1, "s": "\ud83d"}]}
    assert text.deep_storable(value) == {"k\ufffd": ["v\ufffd", {"n": 1, "s": "\ufffd"}]}


def test_stored_size_counts_as_firestore_does():
    # A string is its UTF-8 bytes + 1; a map its keys (bytes + 1) and values.
    assert text.stored_size("日本") == 7
    assert text.stored_size({"ab": "c", "n": 5, "z": None, "t": True}) == 5 + 10 + 3 + 3
    assert text.stored_size([1, 2.5, "x"]) == 8 + 8 + 2


def test_control_characters_are_exactly_c0_and_del():
    """Refused: U+0000-U+001F and U+007F; every other character of the
    first two UTF-8 byte lengths passes (C1 controls and NBSP included)."""
    for code in range(0x800):
        refused = code < 0x20 or code == 0x7F
        value = f"a{chr(code)}b"
        if refused:
            with pytest.raises(text.BadText, match="control characters"):
                text.check(value, "f", 100)
        else:
            assert text.check(value, "f", 100) == value
        assert text.check(value, "f", 100, control=True) == value
