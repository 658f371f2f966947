"""Who said what, and when: the check of every moment the model cites
against the utterances read (utterances.py reads them and writes the
prompt's lines), and links to those moments.

The model's answer is never trusted for a moment. Each item's `quote` is
looked up in the turns (a fuzzy, in-order match of its words, or of
its characters in a script written without spaces: tokens.py): first in
the turns within NEAR_SECONDS of the time the model gave (the prompt's
lines give the minute a turn starts in, so the model's time is at most a
minute early), then in the whole meeting. A match gives the item its real
time (the quote's first word), its real speaker and the transcript's own
words as the quote. No match: the item keeps its text, and gets no time,
speaker, quote or link, and a note. An owner the model calls "spoken" or
"speaker" keeps that source only when the transcript shows it; otherwise
it is "inferred".
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import urllib.parse
from typing import Any

from . import action_items, tokens
from .action_items import storable
from .utterances import Meeting, Turn, is_label_name, read, words_of

# What the webhook uses: read() the transcript, the Meeting's lines for the
# prompt, checked() the answer, document_fields() for the document.
__all__ = ["Meeting", "Turn", "checked", "document_fields", "link", "read"]

# A quote is first looked for this close to the time the model gave.
NEAR_SECONDS = 90
# The share of a quote's words that must be found, in order.
MIN_COVERAGE = 0.8
# A quote this short must be found whole.
SHORT_QUOTE = 4
# A link longer than this is left out (a link cut short would be broken).
MAX_LINK_CHARS = 1000

_LABEL_REF = re.compile(r"speaker\s+([A-Za-z]{1,2})", re.I)
# Query parameters that make a URL a credential (signed URLs, SAS tokens,
# API keys): a link never carries a query that has one.
_CREDENTIAL = re.compile(
    r"x-(?:amz|goog|ms)-.*|.*(?:signature|token|credential|secret|password|key|auth).*"
    r"|sig|policy|expires|googleaccessid|awsaccessid|se|sp|sv|sr|st|spr|srt|ss|sdd|sk\w*",
    re.I,
)


# --- checking the model's moments ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class Match:
    turn: Turn
    first: int  # token index of the quote's first word found
    last: int
    coverage: float

    @property
    def seconds(self) -> int:
        return self.turn.starts[self.first] // 1000

    @property
    def quote(self) -> str:
        span = slice(self.first, self.last + 1)
        return tokens.joined(self.turn.raw[span], self.turn.tokens[span])


def _align(turn: Turn, quote: list[str]) -> tuple[float, int, int] | None:
    """The best in-order match of the quote's words in the turn:
    (share of the quote's words found, first and last token index)."""
    heads: dict[str, int] = {}
    for j, token in enumerate(quote[:3]):
        heads.setdefault(token, j)
    slack = max(2, len(quote) // 4)
    best: tuple[float, int, int] | None = None
    tried: set[int] = set()
    for i, token in enumerate(turn.tokens):
        j = heads.get(token)
        if j is None or max(0, i - j) in tried:
            continue
        at = max(0, i - j)
        tried.add(at)
        if turn.tokens[at : at + len(quote)] == quote:
            # Word for word from here: what the matcher below finds too.
            return 1.0, at, at + len(quote) - 1
        window = turn.tokens[at : at + len(quote) + slack]
        blocks = [
            b
            for b in difflib.SequenceMatcher(
                None, quote, window, autojunk=False
            ).get_matching_blocks()
            if b.size
        ]
        if not blocks:
            continue
        coverage = sum(b.size for b in blocks) / len(quote)
        if best is None or coverage > best[0]:
            best = (coverage, at + blocks[0].b, at + blocks[-1].b + blocks[-1].size - 1)
            if coverage == 1.0:
                break
    return best


def find(
    meeting: Meeting, quote: str, claimed_at: int | None, claimed_by: str | None = None
) -> tuple[Match | None, bool]:
    """Where the quote was said: (the match or None, whether it was near the
    claimed time). Near the claimed time, the closest good match wins;
    elsewhere only an unambiguous one."""
    words = words_of(quote)
    if not words:
        return None, False
    needed = 1.0 if len(words) < SHORT_QUOTE else MIN_COVERAGE
    if claimed_at is not None:
        lo, hi = (claimed_at - NEAR_SECONDS) * 1000, (claimed_at + NEAR_SECONDS) * 1000
        near = meeting.around(lo, hi)
        found = _matches(near, words, needed)
        if found:
            best = max(
                found,
                key=lambda m: (m.coverage, claimed_by in (m.turn.key, m.turn.speaker),
                               -abs(m.seconds - claimed_at)),
            )  # fmt: skip
            # Near: the quote, or the line the model read it on, is where it said.
            shown = min(abs(best.seconds - claimed_at), abs(best.turn.start // 1000 - claimed_at))
            return best, shown <= NEAR_SECONDS
    found = _matches(meeting.turns, words, needed)
    if not found:
        return None, False
    top = max(m.coverage for m in found)
    best = [m for m in found if m.coverage == top]
    if len(best) > 1 and claimed_by is not None:
        best = [m for m in best if claimed_by in (m.turn.key, m.turn.speaker)] or best
    # Said more than once and nothing tells which: no time is better than a guess.
    return (best[0], False) if len(best) == 1 else (None, False)


def _matches(turns: list[Turn], words: list[str], needed: float) -> list[Match]:
    """The turns that hold the quote well enough, each at its best place."""
    vocabulary = set(words)
    # A cheap test first: the turn has enough of the quote's distinct words.
    enough = needed * 0.75 * len(vocabulary)
    found = []
    for turn in turns:
        if len(vocabulary & turn.vocabulary) < enough:
            continue
        aligned = _align(turn, words)
        if aligned and aligned[0] >= needed:
            found.append(Match(turn, aligned[1], aligned[2], aligned[0]))
    return found


def _same_person(a: str, b: str) -> bool:
    """ "Wei" and "Wei Chen" name the same person; case is ignored."""
    x, y = a.casefold().split(), b.casefold().split()
    return bool(x and y) and (x == y or x[0] == y[0] and (len(x) == 1 or len(y) == 1))


def owner_name(owner: str | None, meeting: Meeting) -> str | None:
    """The owner as the meeting names people: "Speaker B" or "B" for the
    label B as the prompt writes it (nobody, if B never spoke); a first
    name as the one named speaker it belongs to; anyone else as given (an
    owner may be absent from the meeting)."""
    if not owner:
        return None
    ref = _LABEL_REF.fullmatch(owner)
    if ref:
        return meeting.labels.get(ref.group(1).upper())
    if owner in meeting.labels:
        return meeting.labels[owner]
    named = [s for s in meeting.speakers if not is_label_name(s)]
    exact = [s for s in named if s.casefold() == owner.casefold()]
    if exact:
        return exact[0]
    same = [s for s in named if _same_person(owner, s)]
    return same[0] if len(same) == 1 and len(owner.split()) == 1 else owner


def _owner_source(
    owner: str | None, claimed: str | None, match: Match | None, meeting: Meeting
) -> str | None:
    """Keep "spoken" or "speaker" only where the transcript shows it."""
    if owner is None:
        return None
    if match is None or claimed == "inferred":
        return "inferred"
    name = words_of(owner)[:1]
    spoken = bool(name) and not is_label_name(owner) and name[0] in match.turn.vocabulary
    speaker = _same_person(owner, match.turn.speaker)
    if claimed == "spoken" and spoken:
        return "spoken"
    if speaker:
        return "speaker"
    return "spoken" if spoken else "inferred"


def check(
    items: list[dict[str, Any]], meeting: Meeting, source: Any
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The items with their moments checked: each has `text, owner,
    owner_source, said_by, said_at, quote, link, due`, and `note` when its
    quote was not found. Also how many quotes were found near the time the
    model gave, found elsewhere, or not found."""
    counts = {"found": 0, "moved": 0, "not_found": 0}
    out = []
    for item in items:
        match, near = find(
            meeting, item.get("quote") or "", item.get("said_at"), item.get("said_by")
        )
        owner = owner_name(item.get("owner"), meeting)
        checked: dict[str, Any] = {"text": item["text"], "owner": owner}
        if match is not None:
            counts["found" if near else "moved"] += 1
            seconds = match.seconds
            owner_source = _owner_source(owner, item.get("owner_source"), match, meeting)
            if owner_source == "speaker":
                checked["owner"] = match.turn.speaker
            checked.update(
                owner_source=owner_source,
                said_by=match.turn.speaker,
                said_at=seconds,
                quote=storable(match.quote),
                link=link(source, seconds),
                due=item.get("due"),
            )
        else:
            counts["not_found"] += 1
            quote = item.get("quote")
            checked.update(
                owner_source=_owner_source(owner, item.get("owner_source"), None, meeting),
                said_by=None,
                said_at=None,
                quote=None,
                link=None,
                due=item.get("due"),
                note=f"quote not found in the transcript: “{quote[:120]}”"
                if quote
                else "no quote given, so no moment",
            )
        out.append(checked)
    return out, counts


def checked(
    result: action_items.ActionItems,
    meeting: Meeting,
    source: Any,
    answer_format: str | None = None,
    language: str | None = None,
) -> tuple[action_items.ActionItems, dict[str, int]]:
    """A parsed answer with its moments checked, its readable list written
    from them (numbered if `answer_format` asks for numbers, its words in
    `language`, a code), and capped as every answer is."""
    result.items, counts = check(result.items, meeting, source)
    result.text = action_items.render(result.items, answer_format, language)
    return action_items.capped(result), counts


# --- links ----------------------------------------------------------------------


def link(source: Any, seconds: int) -> str | None:
    """The moment, where a player can open it: `audio_url#t=SECONDS` for an
    http(s) source (without a query that carries a credential, and without
    user info), `gs://bucket/name#t=SECONDS` for an upload."""
    if not isinstance(source, dict):
        return None
    gcs = source.get("kind") == "gcs"
    base = _gcs_uri(source) if gcs else public_url(source.get("audio_url"))
    if not base:
        return None
    out = f"{base}#t={int(seconds)}"
    return out if len(out) <= MAX_LINK_CHARS else None


def _gcs_uri(source: dict[str, Any]) -> str | None:
    bucket, name = source.get("bucket"), source.get("name")
    if not (isinstance(bucket, str) and bucket and isinstance(name, str) and name):
        uri = source.get("uri")
        if not isinstance(uri, str) or not uri.startswith("gs://") or "/" not in uri[5:]:
            return None
        bucket, name = uri[5:].split("/", 1)
    return f"gs://{bucket}/" + urllib.parse.quote(name, safe="/!$&'()*+,;=:@~")


def public_url(url: Any) -> str | None:
    """An http(s) URL fit to show: no user info, no fragment, and no query
    at all if any of its parameters looks like a credential."""
    if not isinstance(url, str):
        return None
    try:
        parts = urllib.parse.urlsplit(url.strip())
        host = parts.netloc.rsplit("@", 1)[-1]
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    keep = parts.query if not any(_CREDENTIAL.fullmatch(k) for k, _ in query) else ""
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, keep, ""))


def document_fields(meeting: Meeting) -> dict[str, Any]:
    """What the meeting's document records of its speakers: label -> name."""
    return {"speakers": dict(meeting.mapping) or None}
