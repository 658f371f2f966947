"""AssemblyAI: the transcript API and the LLM Gateway, over plain HTTP.

Only the calls the product makes. Every failure becomes an ApiError whose
message is AssemblyAI's own words (from any of its error envelopes), never
the API key.
"""

from __future__ import annotations

import codecs
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from json import decoder as json_decoder
from typing import IO, Any

import requests

from . import lifecycle, logs, transport, utterances
from .config import Config

# What the webhook reads of a transcript (generate.py, transcript_ready.py,
# utterances.py): every other field, the top-level `words` and `text`
# first (over half of the JSON), is skipped as it is parsed, never kept.
TRANSCRIPT_FIELDS = frozenset({
    "id", "status", "error", "audio_url", "audio_duration", "language_code",
    "language_confidence", "speech_models",
    # The language asked for (languages.asked), for a document built here.
    "language_detection", "language_detection_options", "language_confidence_threshold",
    "speaker_labels", "speech_understanding", "utterances",
    # What was redacted (privacy.py): text only, so the utterances are checked.
    "redact_pii", "redact_pii_policies", "redact_pii_sub",
})  # fmt: skip
# Characters of the transcript's `text` kept: the prompt never needs it (the
# gateway substitutes it itself), only whether it is empty or deleted.
TEXT_KEPT = 64
# A transcript whose JSON is at most this many characters (a meeting of
# about nine minutes) is read whole with the standard decoder, three times
# faster than value by value; what that holds at once is a few MiB at most.
WHOLE_CHARS = 256 * 1024
# Transcript bodies read at once by one process. A read holds what it keeps
# (about 1 MiB an hour of meeting) and one piece of the JSON, never the
# whole; this many bound what the instance holds for reads, whatever the
# burst (BENCHMARKS.md, "Memory under a burst"). Reading is CPU under
# the GIL: more at once would not be faster.
READS_AT_ONCE = 4
# A read waits this long for its turn (80 ten-hour reads queue for about
# a minute on one vCPU), then gives the meeting back to be retried.
READ_WAIT_SECONDS = 120
_reads = threading.BoundedSemaphore(READS_AT_ONCE)


class ApiError(Exception):
    """AssemblyAI refused or failed a call."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.status = status  # None: no HTTP answer at all
        self.retry_after = retry_after  # seconds, from the Retry-After header

    def failure(self) -> lifecycle.Failure:
        """This error, classified (see lifecycle.py)."""
        return lifecycle.from_api_status(self.status, self.message, self.retry_after)

    @property
    def transient(self) -> bool:
        """Worth trying again later (rate limit, server trouble, no answer)."""
        return self.failure().kind is lifecycle.Kind.TRANSIENT


def _headers(cfg: Config) -> dict[str, str]:
    return {"Authorization": cfg.api_key, "User-Agent": "meeting-actions/1"}


def error_message(response: requests.Response) -> str:
    """AssemblyAI's message from whichever error envelope it used.

    The transcript API sends {"error": "..."}; the gateway sends
    {"error": {"code", "message"}}, {"message", "code", ...} or, for a bad
    key, {"error": "...", "status": "error"}.
    """
    try:
        body = response.json()
    except ValueError:
        body = None
    message = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            message = err.get("message")
        elif isinstance(err, str):
            message = err
        if not message and isinstance(body.get("message"), str):
            message = body["message"]
    if not message:
        text = (response.text or "").strip()
        message = text[:300] if text and not text.startswith("<") else response.reason
    return f"{response.status_code} {message or 'error'}"


def _call(
    cfg: Config, method: str, url: str, deadline: float, read_timeout: float, **kw: Any
) -> Any:
    response = _answer(cfg, method, url, deadline, read_timeout, **kw)
    try:
        return response.json()
    except ValueError:
        raise ApiError("AssemblyAI answered with a body that is not JSON", 502) from None


def _answer(
    cfg: Config, method: str, url: str, deadline: float, read_timeout: float, **kw: Any
) -> requests.Response:
    """A successful answer; any other, an ApiError."""
    try:
        response = transport.request(
            method, url, deadline=deadline, read_timeout=read_timeout, **kw
        )
    except transport.TransportError as exc:
        raise ApiError(_scrub(cfg, str(exc))) from None
    if response.status_code >= 300:
        raise ApiError(
            _scrub(cfg, error_message(response)),
            response.status_code,
            transport.retry_after_seconds(response),
        )
    return response


def _scrub(cfg: Config, message: str) -> str:
    """No message leaves this module carrying the key or a URL's query
    (a signed URL in a download error is a credential)."""
    message = message.replace(cfg.api_key, "***") if cfg.api_key else message
    return logs.strip_url_queries(message)


def submit_transcript(cfg: Config, params: dict[str, Any], timeout: float = 30) -> dict:
    """Create a transcription job; AssemblyAI calls the webhook when done."""
    return _call(
        cfg,
        "POST",
        f"{cfg.api_base_url}/v2/transcript",
        time.monotonic() + timeout,
        read_timeout=20,
        json=params,
        headers=_headers(cfg),
        # A second POST after a lost answer would start a second job.
        resend_if_maybe_sent=False,
        retry_statuses=transport.NOT_PROCESSED_STATUSES,
    )


def get_transcript(cfg: Config, transcript_id: str, timeout: float = 15) -> dict:
    """The transcript object, as parse_transcript keeps it: status, error
    message, duration, language, utterances read into utterances.Said. Read
    as it arrives: a long one's bytes and text are never held whole."""
    response = _answer(
        cfg,
        "GET",
        f"{cfg.api_base_url}/v2/transcript/{requests.utils.quote(transcript_id)}",
        time.monotonic() + timeout,
        read_timeout=10,
        headers=_headers(cfg),
        stream=True,
    )
    # Only reading the body takes a turn (READS_AT_ONCE): the wait for
    # AssemblyAI's answer is not spent holding one.
    if not _reads.acquire(timeout=READ_WAIT_SECONDS):
        response.close()
        raise ApiError("too many transcripts being read at once here")
    try:
        return parse_transcript(_pieces(response))
    except requests.RequestException as exc:
        raise ApiError(
            _scrub(cfg, f"AssemblyAI's transcript did not arrive whole: {exc}")
        ) from None
    except (ValueError, RecursionError):
        raise ApiError("AssemblyAI answered with a body that is not JSON", 502) from None
    finally:
        _reads.release()
        response.close()


# Bytes read at a time, before any decompression (a gzip piece inflates
# about tenfold).
_READ_BYTES = 16 * 1024


def _pieces(response: requests.Response) -> Iterator[str]:
    """The body's text, piece by piece, decoded as requests' response.text
    would (a leading BOM dropped, a bad byte becomes U+FFFD)."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
    for chunk in response.iter_content(_READ_BYTES):
        if piece := decoder.decode(chunk):
            yield piece
    if piece := decoder.decode(b"", final=True):
        yield piece


_whole = json.JSONDecoder()
_skipped = json.JSONDecoder(object_hook=lambda _: None)  # objects never kept
_WHITESPACE = json_decoder.WHITESPACE
_SPACE = frozenset(" \t\n\r")  # JSON's whitespace


def parse_transcript(text: str | Iterable[str]) -> Any:
    """A transcript's JSON (a text, or its pieces as they arrive), keeping
    only TRANSCRIPT_FIELDS and the start of `text`, each utterance as a utterances.Said. Accepts
    and refuses what json.loads does (ValueError); anything but an object
    is returned whole (the caller refuses it).

    A JSON of at most WHOLE_CHARS is read whole. A longer one is read as
    it arrives: arrays element by element (the top-level `words` too,
    dropped as they go) and values as soon as their text has arrived, so
    what is held at any time is what is kept, plus one value's text and
    WHOLE_CHARS."""
    r = _Reader([text] if isinstance(text, str) else text)
    r.fill(WHOLE_CHARS)
    if r.ended:  # short: read whole, as json.loads reads it
        return _kept(_whole.decode(r.text))
    if r.peek() != "{":
        value = r.value(_whole)
    else:
        value = {}
        r.at += 1
        if r.peek() == "}":
            r.at += 1
        else:
            while True:
                if r.peek() != '"':
                    raise ValueError(f"a key was expected at {r.where}")
                key = r.value(_whole)
                if r.peek() != ":":
                    raise ValueError(f"':' was expected at {r.where}")
                r.at += 1
                if key == "utterances" and r.peek() == "[":
                    # Each read into a Said as it arrives; the odd ones dropped.
                    said = r.array(_whole, each=utterances.Sayings().said)
                    value[key] = [s for s in said if s is not None]
                elif key == "text":
                    # Only its start: enough to tell an empty or deleted
                    # transcript (generate.transcript_problem) from one with words.
                    text_ = r.value(_whole)
                    value[key] = text_[:TEXT_KEPT] if isinstance(text_, str) else text_
                elif key in TRANSCRIPT_FIELDS:
                    value[key] = r.value(_whole)  # a later duplicate wins, as in json.loads
                elif r.peek() == "[":
                    r.array(_skipped, keep=False)
                else:
                    r.value(_skipped)
                if r.peek() == ",":
                    r.at += 1
                elif r.peek() == "}":
                    r.at += 1
                    break
                else:
                    raise ValueError(f"',' or '}}' was expected at {r.where}")
    if r.peek() != "":
        raise ValueError(f"extra data at {r.where}")
    return value


def _kept(value: Any) -> Any:
    """What parse_transcript keeps of a transcript read whole."""
    if not isinstance(value, dict):
        return value
    kept = {k: v for k, v in value.items() if k in TRANSCRIPT_FIELDS}
    if isinstance(text := value.get("text"), str):
        kept["text"] = text[:TEXT_KEPT]
    elif "text" in value:
        kept["text"] = text
    if isinstance(said := value.get("utterances"), list):
        kept["utterances"] = [s for s in map(utterances.Sayings().said, said) if s is not None]
    return kept


class _Reader:
    """JSON text arriving in pieces, read one value at a time with the
    standard library's decoder. `text[at:]` is what is not read yet."""

    def __init__(self, pieces: Iterable[str]):
        self._pieces = iter(pieces)
        self.text = ""
        self.at = 0
        self.ended = False  # every piece is in `text`
        self._dropped = 0  # characters read and let go

    @property
    def where(self) -> int:
        return self._dropped + self.at

    def _more(self, wanted: int) -> None:
        """Let go of what was read; take pieces until `wanted` characters
        are unread, or none is left."""
        got = [self.text[self.at :]]
        size = len(got[0])
        for piece in self._pieces:
            got.append(piece)
            size += len(piece)
            if size >= wanted:
                break
        else:
            self.ended = True
        self._dropped += self.at
        self.text, self.at = "".join(got), 0

    def fill(self, chars: int) -> None:
        """Hold up to `chars` characters unread (fewer only at the end)."""
        if not self.ended and len(self.text) - self.at < chars:
            self._more(chars)

    def peek(self) -> str:
        """The next character that is not whitespace ("" at the end)."""
        while True:
            self.at = _WHITESPACE.match(self.text, self.at).end()
            if self.at < len(self.text):
                return self.text[self.at]
            if self.ended:
                return ""
            self._more(1)

    def value(self, decoder: json.JSONDecoder) -> Any:
        """The next value. Until every piece has arrived, a value that
        fails, or ends within two characters of the text's end (a number
        can go on: "1.5" then "e+3"), is read again with twice the text,
        so a long one is read again only a few times."""
        self.peek()
        while True:
            try:
                value, end = decoder.scan_once(self.text, self.at)
            except StopIteration as stop:
                if self.ended:
                    raise json.JSONDecodeError("Expecting value", self.text, stop.value) from None
            except json.JSONDecodeError:
                if self.ended:
                    raise
            else:
                if self.ended or end + 2 < len(self.text):
                    self.at = end
                    return value
            self._more(2 * (len(self.text) - self.at) + 1)

    def array(
        self,
        decoder: json.JSONDecoder,
        keep: bool = True,
        each: Callable[[Any], Any] | None = None,
    ) -> list[Any]:
        """The array that starts at the next character, element by element:
        each element as `each` makes it, if given; none if not `keep`."""
        out: list[Any] = []
        self.at += 1
        if self.peek() == "]":
            self.at += 1
            return out
        scan, space = decoder.scan_once, _WHITESPACE.match
        while True:
            # Most elements end well inside the text at hand: read them in
            # this loop, which touches nothing but locals (it runs once per
            # word of the meeting); the others, and any failure, as value()
            # reads them.
            text, at = self.text, self.at
            near_end = len(text) - 2
            while at < near_end:
                if text[at] in _SPACE:
                    at = space(text, at).end()
                try:
                    item, end = scan(text, at)
                except (StopIteration, json.JSONDecodeError):
                    break
                if end < near_end and text[end] in _SPACE:
                    end = space(text, end).end()
                if end >= near_end:
                    break
                if keep:
                    out.append(each(item) if each else item)
                c = text[end]
                if c == ",":
                    at = end + 1
                elif c == "]":
                    self.at = end + 1
                    return out
                else:
                    self.at = end + 1
                    raise ValueError(f"',' or ']' was expected at {self.where - 1}")
            self.at = at
            item = self.value(decoder)
            c = self.peek()
            self.at += 1
            if keep:
                out.append(each(item) if each else item)
            if c == "]":
                return out
            if c != ",":
                raise ValueError(f"',' or ']' was expected at {self.where - 1}")


def read_transcript(cfg: Config, tid: str) -> dict[str, Any]:
    """The transcript as an object (parse_transcript); a failure to read
    it, classified. At most READS_AT_ONCE bodies read at once in this process."""
    try:
        transcript = get_transcript(cfg, tid)
    except ApiError as exc:
        raise exc.failure() from None
    if not isinstance(transcript, dict):
        raise lifecycle.Failure(
            lifecycle.Kind.TRANSIENT, "AssemblyAI's transcript is not an object"
        )
    return transcript


def upload(cfg: Config, stream: IO[bytes], timeout: float = 3000) -> str:
    """Stream bytes to AssemblyAI's private upload storage; return its URL."""
    body = _call(
        cfg,
        "POST",
        f"{cfg.api_base_url}/v2/upload",
        time.monotonic() + timeout,
        read_timeout=300,
        data=stream,
        headers={**_headers(cfg), "Content-Type": "application/octet-stream"},
        attempts=1,  # a consumed stream cannot be sent again
    )
    url = body.get("upload_url") if isinstance(body, dict) else None
    if not isinstance(url, str):
        raise ApiError("AssemblyAI's upload answer has no upload_url", 502)
    return url


def list_models(cfg: Config, timeout: float = 5) -> Any:
    """The LLM Gateway's model list (GET /v1/models), as it answered."""
    return _call(
        cfg,
        "GET",
        f"{cfg.gateway_base_url}/models",
        time.monotonic() + timeout,
        read_timeout=timeout,
        headers=_headers(cfg),
        attempts=1,  # not worth a wait: the configured order is used without it
    )


def chat_completion(
    cfg: Config,
    body: dict[str, Any],
    deadline: float,
    rate_limit_wait: float = 5,
    transcript_id: str | None = None,
) -> dict:
    """One LLM Gateway completion, retried on 429/5xx until `deadline`.

    A request that may have reached the gateway without an answer (read
    timeout) is not resent: a second successful completion is paid twice.
    A 429 whose Retry-After is over `rate_limit_wait` is answered at once
    (0: another model can be asked instead). `transcript_id` goes in a
    header, for tracing only: the body carries it only with the placeholder.
    """
    headers = _headers(cfg)
    if transcript_id:
        headers["X-Transcript-Id"] = transcript_id
    return _call(
        cfg,
        "POST",
        f"{cfg.gateway_base_url}/chat/completions",
        deadline,
        read_timeout=cfg.gateway_timeout,
        json=body,
        headers=headers,
        attempts=4,
        resend_if_maybe_sent=False,
        # A long rate-limit wait is better spent with the claim given back.
        max_wait=rate_limit_wait,
    )


def delete_transcript(cfg: Config, transcript_id: str, timeout: float = 5) -> dict:
    """DELETE /v2/transcript/{id}: its text, words and audio (an upload too) go."""
    return _call(
        cfg,
        "DELETE",
        f"{cfg.api_base_url}/v2/transcript/{requests.utils.quote(transcript_id)}",
        time.monotonic() + timeout,
        read_timeout=timeout,
        headers=_headers(cfg),
        attempts=1,
    )
