"""Text as moments.py compares it, in every script.

A quote is matched against the transcript token by token. Where a
language separates words with spaces a token is a word; where it does not
(Japanese, Chinese, Thai, Lao, Khmer, Burmese, Tibetan) every character is
a token, so a quote is found whatever AssemblyAI's word boundaries are
(its Japanese "words" are short runs of characters). Each token is
normalised: NFKC (full-width letters and digits, half-width katakana),
case-folded, and stripped of everything but letters, marks and digits
(punctuation, symbols, spaces). What was stripped stays in the token's
`raw` text, so a quote rebuilt from the transcript reads as transcribed.

One pass over the text, a constant amount of work per character.
"""

from __future__ import annotations

import unicodedata

# ASCII: everything but letters and digits dropped, letters lowered (what
# NFKC and casefold do to ASCII), in one str.translate.
_ASCII_TOKEN = str.maketrans(
    {chr(c): (chr(c).lower() if chr(c).isalnum() else None) for c in range(128)}
)

# Scripts written without spaces between words (code point ranges).
_SPACELESS = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x0F00, 0x0FFF),  # Tibetan
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3005, 0x3007),  # 々 〆 〇
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x31F0, 0x31FF),  # Katakana extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x20000, 0x3FFFF),  # CJK extensions B and on
)


def spaceless(char: str) -> bool:
    """A character of a script written without spaces between words."""
    point = ord(char)
    return point >= _SPACELESS[0][0] and any(lo <= point <= hi for lo, hi in _SPACELESS)


def tight(token: str) -> bool:
    """A token that is a character of such a script (joined without a space)."""
    return bool(token) and spaceless(token[0])


def split(piece: str) -> list[tuple[str, str]]:
    """A whitespace-free piece of text as (token, raw) pairs: the token as
    compared, and the piece's text it stands for (punctuation included)."""
    if piece.isascii():
        token = piece.translate(_ASCII_TOKEN)
        return [(token, piece)] if token else []
    tokens: list[list[str]] = []  # [token, raw]
    pending = ""  # stripped characters before the first token
    word = False  # the last token is a word (not a spaceless character)
    for char in piece:
        placed = False
        for c in unicodedata.normalize("NFKC", char).casefold():
            kind = unicodedata.category(c)[0]
            if kind not in "LMN":
                continue
            if kind == "M" and tokens:
                tokens[-1][0] += c  # a combining mark belongs to what it marks
            elif spaceless(c):
                tokens.append([c, ""])
                word = False
            elif word and tokens:
                tokens[-1][0] += c
            else:
                tokens.append([c, ""])
                word = True
            if not placed:
                tokens[-1][1] += pending + char
                pending, placed = "", True
        if not placed:
            if tokens:
                tokens[-1][1] += char
            else:
                pending += char
    return [(unicodedata.normalize("NFKC", t), raw) for t, raw in tokens]


def words_of(text: str) -> list[str]:
    """A text's tokens as compared."""
    return [t for piece in text.split() for t, _ in split(piece)]


def joined(raw: list[str], tokens: list[str]) -> str:
    """Tokens' raw text as one text: a space between two tokens, except
    between two characters of a script written without spaces."""
    out: list[str] = []
    for i, piece in enumerate(raw):
        if i and not (tight(tokens[i - 1]) and tight(tokens[i])):
            out.append(" ")
        out.append(piece)
    return "".join(out)
