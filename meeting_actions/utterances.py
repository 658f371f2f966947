"""Who spoke when, read once from the transcript, and the utterance
prompt's lines written from it (moments.py checks the model's answer
against the same turns).

With speaker labels, AssemblyAI's transcript carries `utterances` (speaker,
start and end in ms, text, words). The gateway's `{{ transcript }}`
substitution inserts the plain text only, so the webhook writes the
utterances into the prompt itself. A turn is consecutive utterances of one
speaker (at most MERGE_GAP_MS apart, spanning at most MAX_TURN_MS). The
lines cost as few tokens as the model can read: each speaker is a letter,
named once in a legend; then a line per minute in which a turn starts:
the minute, then its turns one after another, each a bar and its
speaker's letter, then what they said:

    A = Priya
    B = Lena
    C = not identified
    12|A what she said.|B what she said.|C what they said.
    13|A ...

`12` is the minute (from the start; `62` after the first hour) in which
the line's first turn starts, and every turn on the line starts in it.
Why a bar, not ` A:` (BENCHMARKS.md, "Moments"): in Claude's published
tokenizer a letter never shares a token with punctuation, so ` A:` costs
two tokens a turn; the bar joins a full stop before it (`.|` is one
token), so a turn after a full stop costs only its letter (two tokens
still after `?` or `,`), and a choppy meeting has about 780 turns an
hour. The minute without brackets saves two more a line. The minute is
enough: moments.py finds each quote in the turns and takes its time from
the words, looking first near the time the model gives. A speaker's letter is their AssemblyAI label (a fresh one for a
speaker without); one whom identification did not name is "not
identified" in the legend and shown as "Speaker C". The words' timings
are not sent. The lines are bounded (MAX_PROMPT_CHARS): a longer meeting
is cut at a turn and the document says up to when the model read it.

Memory: the webhook holds a meeting's turns across its gateway call, up
to 80 meetings at once on one instance (BENCHMARKS.md, "Memory under a
burst"). So the transcript reader turns each utterance into a Said as it
arrives (Sayings.said), and AssemblyAI's word objects are never kept: a
word costs its token, its start and its text, each distinct string once
in the meeting, the starts in an array.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import itertools
import re
import string
from array import array
from collections.abc import Iterator
from typing import Any

from . import prompt
from .action_items import clock, storable
from .tokens import split
from .tokens import words_of as tokens_of

# Consecutive utterances of one speaker share a turn when this close, up
# to this span.
MERGE_GAP_MS = 10_000
MAX_TURN_MS = 120_000
# The prompt's transcript lines, at most: 150,000 tokens at four characters
# a token, 171,000 at three and a half, which leaves room for the
# instructions and max_tokens in the smallest context on the gateway's
# list (200,000 tokens). About eleven hours of speech (bench/moments.py).
MAX_PROMPT_CHARS = 600_000
UNIDENTIFIED = "not identified"
# Distinct word texts whose split the process keeps (_pairs, least recently
# said dropped first): a language's common words, a few MiB at most.
WORDS_KEPT = 20_000

_LABEL = re.compile(r"[A-Z]{1,2}")
_TRANSCRIPT_TAG = re.compile(r"</?\s*transcript\s*>", re.I)


def words_of(text: str) -> list[str]:
    """A text's words as compared (tokens.py: a character each in a
    script written without spaces)."""
    return tokens_of(text)


def is_label_name(name: str) -> bool:
    """ "Speaker B": a speaker whom identification did not name."""
    return name.startswith("Speaker ") and (name == "Speaker ?" or bool(_LABEL.fullmatch(name[8:])))


@dataclasses.dataclass(slots=True)
class Said:
    """An utterance as the turns take it, its words read once. The
    transcript reader makes these as the utterances arrive
    (assemblyai.parse_transcript), so AssemblyAI's word objects are never
    kept: a word costs a token, a start and its text, each distinct string
    once in the meeting."""

    speaker: Any  # as AssemblyAI gave it
    start: int  # ms
    end: int  # ms
    text: str
    tokens: list[str]
    starts: list[int]
    raw: list[str]


class Sayings:
    """A transcript's utterances, read one by one (said())."""

    def __init__(self) -> None:
        # Each distinct speaker once, however often they speak (words: _pairs).
        self.seen: dict[str, str] = {}
        self.split = _pairs

    def said(self, u: Any) -> Said | None:
        """The utterance, or None for one without a text or a start."""
        try:
            if not isinstance(u, dict) or not isinstance(u.get("text"), str):
                return None
            start = _int(u.get("start"))
            if start is None:
                return None
            end = max(start, _int(u.get("end")) or start)
            tokens, starts, raw = _words(u, start, end, self)
        except (AttributeError, TypeError, ValueError):
            return None  # an odd utterance costs its own moments, never the meeting's
        return Said(u.get("speaker"), start, end, u["text"], tokens, starts, raw)


@dataclasses.dataclass(slots=True)
class Turn:
    """Consecutive utterances of one speaker (slots: a turn costs its words,
    not a dict of its own)."""

    speaker: str  # as the document shows it: a name, or "Speaker A"
    label: str | None  # AssemblyAI's label for the speaker, when known
    start: int  # ms
    end: int  # ms
    tokens: list[str]  # the words as compared
    starts: array  # ms, each token's word's start (array("q"))
    raw: list[str]  # each token's word as transcribed
    key: str = ""  # the speaker's letter in the prompt
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
    # Each label that spoke, and each letter the prompt gives a speaker ->
    # the speaker as the document shows them.
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
        return any(is_label_name(s) for s in self.speakers)


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return int(value) if 0 <= value < 10**12 else None


def _name(value: str) -> str:
    """A speaker's name as a prompt line can hold it: one line, no colon or bar."""
    return " ".join(storable(value).replace(":", " ").replace("|", " ").split())[:60]


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
    texts: list[list[str]] = []  # each turn's utterances' texts, for the lines only
    sayings = Sayings()
    utterances = transcript.get("utterances")
    for u in utterances if isinstance(utterances, list) else []:
        said = u if isinstance(u, Said) else sayings.said(u)
        if said is None:
            continue
        label, speaker = _speaker(said.speaker, mapping, names, labels)
        speaker = sayings.seen.setdefault(speaker, speaker)
        last = turns[-1] if turns else None
        if (
            last is not None
            and last.speaker == speaker
            and said.start - last.end <= MERGE_GAP_MS
            and said.end - last.start <= MAX_TURN_MS
        ):
            last.end = max(last.end, said.end)
            texts[-1].append(said.text)
            last.tokens += said.tokens
            last.starts.extend(said.starts)
            last.raw += said.raw
        else:
            turns.append(Turn(speaker, label, said.start, said.end, list(said.tokens),
                              array("q", said.starts), list(said.raw)))  # fmt: skip
            texts.append([said.text])
    duration = _int(transcript.get("audio_duration"))
    duration_ms = duration * 1000 if duration else (turns[-1].end if turns else 0)
    order = sorted(range(len(turns)), key=lambda i: turns[i].start)
    turns, texts = [turns[i] for i in order], [texts[i] for i in order]
    _give_keys(turns, mapping, labels)
    meeting = Meeting(turns, mapping, labels, duration_ms)
    meeting.speakers = {t.speaker for t in turns}
    # The texts end here: the lines hold them, and the turns their words.
    meeting.lines, meeting.cut_note, read = _lines(meeting, texts, max_chars)
    # A quote can only be what the model read; and a meeting longer than
    # the prompt holds no more turns than fit in it, whatever its length.
    del meeting.turns[read:]
    meeting.starts = [t.start for t in meeting.turns]
    meeting.longest_ms = max((t.end - t.start for t in meeting.turns), default=0)
    return meeting


def _speaker(
    value: Any, mapping: dict[str, str], names: set[str], labels: dict[str, str]
) -> tuple[str | None, str]:
    """An utterance's speaker: its AssemblyAI label, if known, and the
    speaker as the document shows them (a name, or "Speaker A")."""
    raw = _name(value) if isinstance(value, str) else ""
    if not raw:
        return None, "Speaker ?"
    if raw in names:
        own = [label for label, name in mapping.items() if name == raw]
        labels.update((label, raw) for label in own)
        return min(own, key=lambda label: (len(label), label)), raw
    if raw in mapping:  # a label that identification named but did not relabel
        labels[raw] = mapping[raw]
        return raw, mapping[raw]
    if _LABEL.fullmatch(raw):
        labels[raw] = f"Speaker {raw}"
        return raw, labels[raw]
    return None, raw


def _letters() -> Iterator[str]:
    """A, B, ..., Z, AA, AB, ..., ZZ, AAA, ..."""
    for size in itertools.count(1):
        for letters in itertools.product(string.ascii_uppercase, repeat=size):
            yield "".join(letters)


def _give_keys(turns: list[Turn], mapping: dict[str, str], labels: dict[str, str]) -> None:
    """Each speaker's letter in the prompt: their label when it is one
    (A-ZZ), else the first letter nobody has; recorded in `labels`."""
    keys: dict[str, str] = {}
    given: set[str] = set()
    taken = set(mapping) | set(labels)
    fresh = _letters()
    for turn in turns:
        key = keys.get(turn.speaker)
        if key is None:
            label = turn.label
            if label is not None and _LABEL.fullmatch(label) and label not in given:
                key = label
            else:
                key = next(k for k in fresh if k not in taken)
            keys[turn.speaker] = key
            given.add(key)
            taken.add(key)
            labels[key] = turn.speaker
        turn.key = key


@functools.lru_cache(maxsize=WORDS_KEPT)
def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    """A word's (token, raw) pairs. Kept for the process's most frequent
    words: a word is split once, not each time any meeting says it, and
    each kept word's strings are held once however often they are said."""
    return tuple(pair for piece in text.split() for pair in split(piece))


def _words(
    u: dict[str, Any], start: int, end: int, sayings: Sayings
) -> tuple[list[str], list[int], list[str]]:
    """The utterance's words as compared, their starts (ms) and their text,
    each string the one `seen` first. Without usable word timings, the
    words of its text spread over it."""
    tokens: list[str] = []
    starts: list[int] = []
    raw: list[str] = []
    words = u.get("words")
    if isinstance(words, list) and words:
        for w in words:
            if not isinstance(w, dict) or not isinstance(text := w.get("text"), str):
                continue
            at = w.get("start")
            if type(at) is not int or not 0 <= at < 10**12:  # the usual case, checked fast
                at = _int(at)
            for t, r in sayings.split(text):
                tokens.append(t)
                starts.append(start if at is None else at)
                raw.append(r)
        if tokens:
            return tokens, starts, raw
    pieces = u["text"].split()
    span = max(end - start, 1)
    for i, piece in enumerate(pieces):
        for t, r in sayings.split(piece):
            tokens.append(t)
            starts.append(start + span * i // len(pieces))
            raw.append(r)
    return tokens, starts, raw


# --- the prompt's lines -----------------------------------------------------------


def _safe(text: str) -> str:
    """A turn's text on a prompt line: no line breaks, no placeholder, no
    tags, and no bar, which would read as a turn's start ("|" becomes "/")."""
    text = " ".join(storable(text).split()).replace("|", "/")
    text = text.replace(prompt.PLACEHOLDER, "{ transcript }").replace("{{", "{ {")
    return _TRANSCRIPT_TAG.sub("(transcript)", text)


def _lines(meeting: Meeting, texts: list[list[str]], max_chars: int) -> tuple[str, str | None, int]:
    """The transcript lines of the prompt (each turn's `texts`), a note
    when they were cut, and how many turns they hold: a legend line per
    speaker who speaks in them, then a line per minute."""
    legend: dict[str, str] = {}
    pieces: list[str] = []
    used = 0
    minute = None
    for i, turn in enumerate(meeting.turns):
        text = _safe(" ".join(texts[i]))
        at = turn.start // 60_000
        piece = f"\n{at}|{turn.key} {text}" if at != minute else f"|{turn.key} {text}"
        new = turn.key not in legend
        entry = f"{turn.key} = {UNIDENTIFIED if is_label_name(turn.speaker) else turn.speaker}"
        cost = len(piece) + (len(entry) + 1 if new else 0)
        if used + cost > max_chars:
            read_to = meeting.turns[i - 1].end // 1000 if i else 0
            note = (
                f"The meeting is too long for one prompt: the model read {i} of "
                f"{len(meeting.turns)} turns, up to [{clock(read_to)}] of "
                f"[{clock(meeting.duration_ms // 1000)}]; nothing said after that is listed."
            )
            return _joined(legend, pieces), note, i
        if new:
            legend[turn.key] = entry
        pieces.append(piece)
        used += cost
        minute = at
    return _joined(legend, pieces), None, len(meeting.turns)


def _joined(legend: dict[str, str], pieces: list[str]) -> str:
    """The legend in letter order, then the minutes (each piece that starts
    a minute starts with its line break)."""
    ordered = sorted(legend, key=lambda k: (len(k), k))
    return "\n".join(legend[k] for k in ordered) + "".join(pieces)
