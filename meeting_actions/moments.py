"""Who said what, and when: the utterance prompt, the check of every moment
the model cites against the utterances read, and links to those moments.

With speaker labels, AssemblyAI's transcript carries `utterances` (speaker,
start and end in ms, text, words). The gateway's `{{ transcript }}`
substitution inserts the plain text only, so the webhook writes the
utterances into the prompt itself, one line per speaker turn:

    [12:34] Priya: what she said          ([1:02:03] from the first hour on)

A speaker whom identification did not name is written as the bare label
("B"; the prompt says what a letter means) and shown as "Speaker B". A
turn is consecutive utterances of one speaker (at most MERGE_GAP_MS apart,
spanning at most MAX_TURN_MS), so a line's cost, its time and name, is
paid once per turn; the words are not sent. The lines are bounded
(MAX_PROMPT_CHARS): a longer meeting is cut at a turn and the document
says up to when the model read it.

The model's answer is never trusted for a moment. Each item's `quote` is
looked up in the turns (a fuzzy, in-order match of its words): first in
the turns within NEAR_SECONDS of the time the model gave, then in the
whole meeting. A match gives the item its real time (the quote's first
word), its real speaker and the transcript's own words as the quote. No
match: the item keeps its text, and gets no time, speaker, quote or link,
and a note. An owner the model calls "spoken" or "speaker" keeps that
source only when the transcript shows it; otherwise it is "inferred".
"""

from __future__ import annotations

import bisect
import dataclasses
import difflib
import re
import urllib.parse
from typing import Any

from . import action_items
from .action_items import clock, storable

# Consecutive utterances of one speaker share a line (one time, one name)
# when this close, up to this span.
MERGE_GAP_MS = 10_000
MAX_TURN_MS = 120_000
# The prompt's transcript lines, at most: 150,000 tokens at four characters
# a token, 171,000 at three and a half, which leaves room for the
# instructions and max_tokens in the smallest context on the gateway's
# list (200,000 tokens). About ten hours of speech (bench/moments.py).
MAX_PROMPT_CHARS = 600_000
# A quote is first looked for this close to the time the model gave.
NEAR_SECONDS = 90
# The share of a quote's words that must be found, in order.
MIN_COVERAGE = 0.8
# A quote this short must be found whole.
SHORT_QUOTE = 4
# A link longer than this is left out (a link cut short would be broken).
MAX_LINK_CHARS = 1000

_LABEL = re.compile(r"[A-Z]{1,2}")
_LABEL_REF = re.compile(r"speaker\s+([A-Za-z]{1,2})", re.I)
_NOT_WORD = re.compile(r"[\W_]+")
_TRANSCRIPT_TAG = re.compile(r"</?\s*transcript\s*>", re.I)
# Query parameters that make a URL a credential (signed URLs, SAS tokens,
# API keys): a link never carries a query that has one.
_CREDENTIAL = re.compile(
    r"x-(?:amz|goog|ms)-.*|.*(?:signature|token|credential|secret|password|key|auth).*"
    r"|sig|policy|expires|googleaccessid|awsaccessid|se|sp|sv|sr|st|spr|srt|ss|sdd|sk\w*",
    re.I,
)


def words_of(text: str) -> list[str]:
    """A text's words as compared: case-folded, letters and digits only."""
    return [w for w in (_NOT_WORD.sub("", t.casefold()) for t in text.split()) if w]


@dataclasses.dataclass
class Turn:
    """Consecutive utterances of one speaker: one line of the prompt."""

    speaker: str  # as the document shows it: a name, or "Speaker A"
    key: str  # as the prompt writes it: a name, or the label "A"
    start: int  # ms
    end: int  # ms
    texts: list[str]
    tokens: list[str]  # the words as compared
    starts: list[int]  # ms, each token's word's start
    raw: list[str]  # each token's word as transcribed
    _vocabulary: set[str] | None = dataclasses.field(default=None, repr=False)

    @property
    def vocabulary(self) -> set[str]:
        if self._vocabulary is None:
            self._vocabulary = set(self.tokens)
        return self._vocabulary


@dataclasses.dataclass
class Meeting:
    """What the webhook knows of who spoke when, read once from the transcript."""

    turns: list[Turn]
    # Speaker identification's label -> name, as AssemblyAI answered it.
    mapping: dict[str, str]
    # Each label that spoke -> how the prompt writes it.
    labels: dict[str, str]
    duration_ms: int
    lines: str = ""
    cut_note: str | None = None
    # Who spoke (as the document shows them); the turns' starts, and the
    # longest turn, to find the turns around a time.
    speakers: set[str] = dataclasses.field(default_factory=set)
    starts: list[int] = dataclasses.field(default_factory=list)
    longest_ms: int = 0

    def around(self, lo_ms: int, hi_ms: int) -> list[Turn]:
        """The turns that overlap [lo_ms, hi_ms]."""
        first = bisect.bisect_left(self.starts, lo_ms - self.longest_ms)
        last = bisect.bisect_right(self.starts, hi_ms)
        return [t for t in self.turns[first:last] if t.end >= lo_ms]

    @property
    def unnamed(self) -> bool:
        """Some speakers are only labels ("Speaker B")."""
        return any(t.key != t.speaker for t in self.turns)


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return int(value) if 0 <= value < 10**12 else None


def _name(value: str) -> str:
    """A speaker's name as a prompt line can hold it: one line, no colon."""
    return " ".join(storable(value).replace(":", " ").split())[:60]


def _is_label_name(name: str) -> bool:
    return name.startswith("Speaker ") and bool(_LABEL.fullmatch(name[8:]))


def _mapping(transcript: dict[str, Any]) -> dict[str, str]:
    found = (
        ((transcript.get("speech_understanding") or {}).get("response") or {}).get(
            "speaker_identification"
        )
        or {}
    ).get("mapping")
    if not isinstance(found, dict):
        return {}
    return {
        str(label)[:8]: _name(name)
        for label, name in list(found.items())[:100]
        if isinstance(name, str) and _name(name)
    }


def read(transcript: dict[str, Any], max_chars: int = MAX_PROMPT_CHARS) -> Meeting:
    """The meeting's turns and prompt lines. No utterances (speaker labels
    off): no turns, and the caller keeps the placeholder prompt."""
    try:
        return _read(transcript, max_chars)
    except (AttributeError, TypeError, ValueError):
        # An odd transcript costs the moments, never the meeting's items.
        return Meeting([], {}, {}, 0)


def _read(transcript: dict[str, Any], max_chars: int) -> Meeting:
    mapping = _mapping(transcript)
    names = set(mapping.values())
    labels: dict[str, str] = {}
    turns: list[Turn] = []
    utterances = transcript.get("utterances")
    for u in utterances if isinstance(utterances, list) else []:
        if not isinstance(u, dict) or not isinstance(u.get("text"), str):
            continue
        start = _int(u.get("start"))
        if start is None:
            continue
        end = max(start, _int(u.get("end")) or start)
        key, speaker = _speaker(u.get("speaker"), mapping, names, labels)
        tokens, starts, raw = _words(u, start, end)
        last = turns[-1] if turns else None
        if (
            last is not None
            and last.speaker == speaker
            and start - last.end <= MERGE_GAP_MS
            and end - last.start <= MAX_TURN_MS
        ):
            last.end = max(last.end, end)
            last.texts.append(u["text"])
            last.tokens += tokens
            last.starts += starts
            last.raw += raw
        else:
            turns.append(Turn(speaker, key, start, end, [u["text"]], tokens, starts, raw))
    duration = _int(transcript.get("audio_duration"))
    duration_ms = duration * 1000 if duration else (turns[-1].end if turns else 0)
    turns.sort(key=lambda t: t.start)
    meeting = Meeting(turns, mapping, labels, duration_ms)
    meeting.speakers = {t.speaker for t in turns}
    meeting.starts = [t.start for t in turns]
    meeting.longest_ms = max((t.end - t.start for t in turns), default=0)
    meeting.lines, meeting.cut_note = _lines(meeting, max_chars)
    return meeting


def _speaker(
    value: Any, mapping: dict[str, str], names: set[str], labels: dict[str, str]
) -> tuple[str, str]:
    """An utterance's speaker as the prompt writes it (a name, or the label
    "A") and as the document shows it (a name, or "Speaker A")."""
    raw = _name(value) if isinstance(value, str) else ""
    if not raw:
        return "?", "Speaker ?"
    if raw in names:
        labels.update((label, name) for label, name in mapping.items() if name == raw)
        return raw, raw
    if raw in mapping:  # a label that identification named but did not relabel
        labels[raw] = mapping[raw]
        return mapping[raw], mapping[raw]
    if _LABEL.fullmatch(raw):
        labels[raw] = f"Speaker {raw}"
        return raw, labels[raw]
    return raw, raw


def _words(u: dict[str, Any], start: int, end: int) -> tuple[list[str], list[int], list[str]]:
    """The utterance's words as compared, their starts (ms) and their text.
    Without usable word timings, the words of its text spread over it."""
    tokens: list[str] = []
    starts: list[int] = []
    raw: list[str] = []
    words = u.get("words")
    if isinstance(words, list) and words:
        for w in words:
            if not isinstance(w, dict) or not isinstance(w.get("text"), str):
                continue
            at = _int(w.get("start"))
            for piece in w["text"].split():
                token = _NOT_WORD.sub("", piece.casefold())
                if token:
                    tokens.append(token)
                    starts.append(start if at is None else at)
                    raw.append(piece)
        if tokens:
            return tokens, starts, raw
    pieces = u["text"].split()
    span = max(end - start, 1)
    for i, piece in enumerate(pieces):
        token = _NOT_WORD.sub("", piece.casefold())
        if token:
            tokens.append(token)
            starts.append(start + span * i // len(pieces))
            raw.append(piece)
    return tokens, starts, raw


def _safe(text: str) -> str:
    """A turn's text as one prompt line: no line breaks, no placeholder, no tags."""
    text = " ".join(storable(text).split())
    text = text.replace(action_items.PLACEHOLDER, "{ transcript }").replace("{{", "{ {")
    return _TRANSCRIPT_TAG.sub("(transcript)", text)


def line(turn: Turn) -> str:
    return f"[{clock(turn.start // 1000)}] {turn.key}: {_safe(' '.join(turn.texts))}"


def _lines(meeting: Meeting, max_chars: int) -> tuple[str, str | None]:
    """The transcript lines of the prompt, and a note when they were cut."""
    out: list[str] = []
    used = 0
    for i, turn in enumerate(meeting.turns):
        text = line(turn)
        if used + len(text) + 1 > max_chars:
            read_to = meeting.turns[i - 1].end // 1000 if i else 0
            note = (
                f"The meeting is too long for one prompt: the model read {i} of "
                f"{len(meeting.turns)} turns, up to [{clock(read_to)}] of "
                f"[{clock(meeting.duration_ms // 1000)}]; nothing said after that is listed."
            )
            return "\n".join(out), note
        out.append(text)
        used += len(text) + 1
    return "\n".join(out), None


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
        return " ".join(self.turn.raw[self.first : self.last + 1])


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
    named = [s for s in meeting.speakers if not _is_label_name(s)]
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
    spoken = bool(name) and not _is_label_name(owner) and name[0] in match.turn.vocabulary
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
) -> tuple[action_items.ActionItems, dict[str, int]]:
    """A parsed answer with its moments checked, its readable list written
    from them (numbered if `answer_format` asks for numbers), and capped as
    every answer is."""
    result.items, counts = check(result.items, meeting, source)
    result.text = action_items.render(result.items, answer_format)
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
