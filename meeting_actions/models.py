"""Which LLM Gateway model answers a meeting: the configured ones in order
(LLM_MODEL, then LLM_FALLBACK_MODELS), asked one at a time until one answers.

- Which models exist is the gateway's answer (GET /v1/models, `data[].id`),
  read once per instance and again after LLM_MODELS_REFRESH_SECONDS; a
  configured model it does not list is skipped. A list that cannot be read
  blocks nothing: every configured model is tried in order.
- A model that refuses the request (a 4xx other than 429) -> the next one. A
  model that is rate limited -> the next one at once; its "not before" is
  kept per model, in the process and on the meeting's generation state
  (`model_waits`), so the meeting waits only when every model is limited.
- The answer's document says what came of each model considered
  (`llm.tried`), the skipped ones too ("not listed", "still rate limited"),
  so a person sees why the answer came from a fallback.
- Nothing here decides from an error message's words: only statuses and
  the list. What the outcome leads to is outcomes.py's (no_model).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from typing import Any

from . import assemblyai, logs, record
from .config import Config
from .lifecycle import Kind

# A list read that failed is tried again after this long, not per meeting.
RETRY_LIST_SECONDS = 30.0
MAX_WAIT_SECONDS = 300.0
# Every model limited for at most this long: waited out in the call (as
# transport.py does for one 429), not given back.
SHORT_WAIT = 5.0
SETTING = "LLM_MODEL / LLM_FALLBACK_MODELS"
# What came of each model a claim considered (the document's `llm.tried`):
# asked, or skipped without a request.
ANSWERED, REFUSED, RATE_LIMITED, FAILED = "answered", "refused", "rate limited", "failed"
NOT_LISTED, STILL_LIMITED = "not listed", "still rate limited"

_lock = threading.Lock()
_list: dict[str, Any] = {"ids": None, "read_at": None, "ok": False}
_waits: dict[str, dt.datetime] = {}


def configured(cfg: Config) -> tuple[str, ...]:
    """LLM_MODEL, then each fallback, once each, in order."""
    return tuple(dict.fromkeys((cfg.llm_model, *cfg.llm_fallback_models)))


def _ids(body: Any) -> frozenset[str] | None:
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return None
    ids = [m.get("id") for m in data if isinstance(m, dict)]
    return frozenset(i for i in ids if isinstance(i, str) and i)


def listed(cfg: Config, refresh: bool = False) -> frozenset[str] | None:
    """The gateway's model ids, or None when its list cannot be read."""
    now = time.monotonic()
    with _lock:
        read_at = _list["read_at"]
        keep = cfg.llm_models_refresh_seconds if _list["ok"] else RETRY_LIST_SECONDS
        if not refresh and read_at is not None and now - read_at < keep:
            return _list["ids"]
    try:
        ids = _ids(assemblyai.list_models(cfg))
        problem = None if ids else "the list has no model ids"
    except assemblyai.ApiError as exc:
        ids, problem = None, exc.message
    if problem:
        logs.warning("could not read the LLM Gateway's model list; the configured models are "
                     "tried in order", error=problem[:300])  # fmt: skip
        ids = None
    with _lock:
        _list.update(ids=ids, read_at=time.monotonic(), ok=ids is not None)
    return ids


def not_listed(cfg: Config, model: str) -> str | None:
    """Why `model` cannot be asked (the gateway does not list it), or None."""
    ids = listed(cfg)
    if ids is None or model in ids:
        return None
    return f"{model!r} is not on the LLM Gateway's model list (GET /v1/models)"


def all_limited_until(cfg: Config) -> dt.datetime | None:
    """When this process last heard that every configured model is rate
    limited: until the earliest of them frees; or None."""
    at = record.now()
    with _lock:
        until = [_waits.get(m) for m in configured(cfg)]
    if not all(t is not None and t > at for t in until):
        return None
    return min(t for t in until if t is not None)


def forget() -> None:
    """Drop what this process knows (tests)."""
    with _lock:
        _list.update(ids=None, read_at=None, ok=False)
        _waits.clear()


@dataclasses.dataclass
class Asked:
    answer: dict[str, Any] | None = None
    model: str | None = None
    # Every model considered, in order: the skipped first (decided before
    # any request), then each request; {"model": ..., "outcome": ...}.
    tried: list[dict[str, str]] = dataclasses.field(default_factory=list)
    # Not answered: the failure to hand on (transient, or the key), ...
    error: assemblyai.ApiError | None = None
    # ... or every model was skipped, limited or refused:
    unlisted: list[str] = dataclasses.field(default_factory=list)
    limited: dict[str, dt.datetime] = dataclasses.field(default_factory=dict)
    refused: dict[str, str] = dataclasses.field(default_factory=dict)
    listed_known: bool = True
    no_time: bool = False
    waited: float = 0.0
    limit_message: str = ""  # the gateway's words on the last 429

    def note(self, model: str, outcome: str) -> None:
        self.tried.append({"model": model, "outcome": outcome})

    def earliest(self) -> dt.datetime | None:
        return min(self.limited.values()) if self.limited else None


def _doc_waits(state: dict[str, Any], at: dt.datetime) -> dict[str, dt.datetime]:
    waits = state.get("model_waits")
    found: dict[str, dt.datetime] = {}
    for entry in waits if isinstance(waits, list) else []:
        if not isinstance(entry, dict):
            continue
        model, until = entry.get("model"), entry.get("not_before")
        if isinstance(model, str) and isinstance(until, dt.datetime) and until > at:
            found[model] = until
    return found


def keep_waits(data: dict[str, Any], limited: dict[str, dt.datetime]) -> None:
    """Put the models' "not before" on the generation state (`data` is the
    claimed document's) that the claim writes back when it is given back."""
    state = data.get("generation")
    if not isinstance(state, dict):
        state = data["generation"] = {}
    at = record.now()
    merged = {**_doc_waits(state, at), **{m: t for m, t in limited.items() if t > at}}
    state["model_waits"] = [{"model": m, "not_before": t} for m, t in sorted(merged.items())]


def _short_wait(
    cfg: Config, asked: Asked, usable: list[str], waited: float, deadline: float
) -> bool:
    """Every model is rate limited, the earliest for at most SHORT_WAIT
    seconds in all: wait for it (as the gateway said), and ask it again."""
    earliest = asked.earliest()
    if earliest is None or asked.refused:
        return False
    wait = max((earliest - record.now()).total_seconds(), 0.0)
    if (
        waited + wait > SHORT_WAIT
        or time.monotonic() + wait + min(cfg.gateway_timeout, 30) > deadline
    ):
        return False
    time.sleep(wait)  # the gateway's Retry-After: no condition to wait on here
    asked.waited = waited + wait
    freed = [m for m, t in asked.limited.items() if t <= earliest]
    for model in freed:
        del asked.limited[model]
    usable.extend(freed)
    return True


def ask(
    cfg: Config,
    state: dict[str, Any],
    body: dict[str, Any],
    tid: str,
    deadline: float,
    models: tuple[str, ...] | None = None,
) -> Asked:
    """Ask the models in order; at most one answer is ever paid for."""
    models = models or configured(cfg)
    ids = listed(cfg)
    asked = Asked(listed_known=ids is not None)
    at = record.now()
    with _lock:
        waits = {m: t for m, t in _waits.items() if t > at}
    waits.update({m: t for m, t in _doc_waits(state, at).items() if t > waits.get(m, at)})
    usable = []
    for model in models:
        if ids is not None and model not in ids:
            asked.unlisted.append(model)
            asked.note(model, NOT_LISTED)
        elif model in waits:
            asked.limited[model] = waits[model]
            asked.note(model, STILL_LIMITED)
        else:
            usable.append(model)
    while usable or _short_wait(cfg, asked, usable, asked.waited, deadline):
        if not usable:
            continue
        model = usable.pop(0)
        if time.monotonic() + min(cfg.gateway_timeout, 30) > deadline:
            asked.no_time = True
            return asked
        try:
            answer = assemblyai.chat_completion(
                cfg, {**body, "model": model}, deadline, rate_limit_wait=0, transcript_id=tid
            )
        except assemblyai.ApiError as exc:
            failure = exc.failure()
            if failure.rate_limited:
                wait = min(max(failure.retry_after or 1, 1), MAX_WAIT_SECONDS)
                until = record.now() + dt.timedelta(seconds=wait)
                asked.limited[model] = until
                asked.limit_message = failure.message
                asked.note(model, RATE_LIMITED)
                with _lock:
                    _waits[model] = max(until, _waits.get(model, until))
                logs.info("the LLM Gateway is rate limiting a model; asking the next", tid,
                          model=model, wait=round(wait, 1))  # fmt: skip
                continue
            if failure.kind is Kind.PERMANENT:
                asked.refused[model] = failure.message
                asked.note(model, REFUSED)
                logs.warning("the LLM Gateway refused the request with a model; asking the "
                             "next", tid, model=model, error=failure.message[:300])  # fmt: skip
                continue
            asked.error = exc  # the key, or trouble worth a retry: no other model helps now
            asked.note(model, FAILED)
            return asked
        asked.answer, asked.model = answer, model
        asked.note(model, ANSWERED)
        if asked.refused:
            logs.warning("a configured model refused a request another model answered: check "
                         f"{SETTING}", tid, refused=sorted(asked.refused), model=model)  # fmt: skip
        return asked
    if asked.refused and ids is None:
        # Refused with the list unknown: read it again before anything is decided.
        ids = listed(cfg, refresh=True)
        asked.listed_known = ids is not None
        for model in [m for m in asked.refused if ids is not None and m not in ids]:
            asked.unlisted.append(model)
            del asked.refused[model]
    return asked
