"""The lifecycle of a meeting and of an upload, the four kinds of failure,
and the results the flow hands back to the entry points.

Every non-final state has someone who moves it forward, a time by which
that should have happened (the document's top-level `sweep_at`), and what
the scheduled sweep does once that time has passed. Nothing is left in a
state no one looks at again.

Meeting (<collection>/<transcript_id>):

    state       moved forward by                 by (sweep_at)                the sweep then
    ---------   ------------------------------   --------------------------   ------------------------------------
    queued      AssemblyAI's webhook delivery     STALE_QUEUED_SECONDS after   GET the transcript once: completed ->
                                                  submit, then backing off     generate; error -> record it; still
                                                  (x2 per check, up to 6 h)    processing -> check again later
    generating  the holder of the lease           the lease's expiry, or at    claim it and generate, as a delivery
                (a delivery, or the sweep)        once when given back, or     would
                                                  the gateway's Retry-After
    completed   final (a notification may still be pending: sweep_at is its next try)
    error       final (the same)

Where each transition is decided (one module per actor):

    (none)     -> queued       submit.py            AssemblyAI accepted the job
    queued     -> generating   transcript_ready.py  a delivery (or the sweep) claims it; the
                                                    document is built from AssemblyAI's record
                                                    when submit could not write it
    completed  -> generating   regenerate.py        a person set `regenerate: true`
    generating -> completed    generate.py          the paid answer is parsed and written
    generating -> error        outcomes.py          transcription failed, every listed model
                                                    refused the request, attempts or poison
                                                    calls ran out
    generating -> completed    outcomes.py          a regeneration that cannot make a result
                  (or error)                        keeps the one it had (keep_previous)
    generating -> generating   outcomes.py          given back: rate limit, transient, operator,
                                                    crash (the lease's release); a claim that
                                                    expired unsettled counts at the next claim
                  (which model) models.py            the configured models in order, less those
                                                    the gateway does not list; a refusal or a
                                                    rate limit asks the next in the same claim;
                                                    every model limited -> not_before (the
                                                    earliest); none usable -> operator
    queued     -> queued       sweep.py             still transcribing: checked again later
    (due)      -> (moved on)   sweep.py             every state above past its sweep_at
    completed  -> (same)       retention.py         the transcript deleted at AssemblyAI after
    / error                                         the result (DELETE_TRANSCRIPT_AFTER_ITEMS),
                                                    claimed once; a failure sets sweep_at and
                                                    sweep.py retries it
    (created)  expire_at       retention.py         RETENTION_DAYS: stamped at every create;
                                                    Firestore's TTL policy deletes it

Upload (<collection>-uploads/<hash of bucket, name, generation>):

    submitting  the storage trigger holding it    its lease (the function's    a redelivered event takes it over;
                                                  timeout and a margin)        once AssemblyAI accepted, never
    submitted   final: the transcript id is recorded; the meeting goes on above
    error       final: AssemblyAI refused the object

    All decided in uploads.py; the meeting's own webhook records a transcript id the
    trigger could not (generate.py).

Failures, each classified once, where it happens:
    transient        retry: 503 to AssemblyAI, raise to Eventarc, the sweep comes back
    operator         a rejected key, a permission, a missing database, no configured model
                     the gateway lists (fix llm_models): the meeting waits, retryable, and
                     an ERROR log says what to fix; never ends it
    permanent        AssemblyAI failed the transcription, or every listed model refused the
                     request itself (4xx but 429): the meeting ends `error`
    poison           a paid answer that cannot be parsed or stored: ends `error` after
                     MAX_POISON_CALLS paid calls
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import time
from collections.abc import Callable
from typing import Any

from google.api_core import exceptions

from . import logs, record
from .config import Config

QUEUED, GENERATING, COMPLETED, ERROR = "queued", "generating", "completed", "error"
FINAL = (COMPLETED, ERROR)
SUBMITTING, SUBMITTED = "submitting", "submitted"

# A queued meeting is checked again after 2x, 4x ... STALE_QUEUED_SECONDS,
# at most this far apart: a long transcription is not read every minute.
MAX_QUEUED_BACKOFF = 6 * 3600
# AssemblyAI retries a failed delivery 10 seconds later.
RETRY_AFTER = 10


class Kind(enum.StrEnum):
    TRANSIENT = "transient"
    OPERATOR = "operator"
    PERMANENT = "permanent"
    POISON = "poison"


class Failure(Exception):
    """A classified failure: what happened, in words a person can act on."""

    def __init__(
        self,
        kind: Kind,
        message: str,
        retry_after: float | None = None,
        rate_limited: bool = False,
        fix: str | None = None,
    ):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after
        # A transient failure that only says "not so fast": it waits, it never counts.
        self.rate_limited = rate_limited
        # An operator failure's short name for what to fix (the logs' `fix`,
        # a label of the alert): see README, Operate.
        self.fix = fix


# --- results handed to the entry points --------------------------------------


@dataclasses.dataclass
class Done:
    """Finished, or nothing to do: the caller stops."""

    status: str
    transcript_id: str | None = None
    document: str | None = None
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Busy:
    """Not now: the caller comes back after `retry_after` seconds."""

    reason: str
    retry_after: float = RETRY_AFTER
    kind: Kind = Kind.TRANSIENT
    transcript_id: str | None = None
    rate_limited: bool = False  # the gateway said so: the sweep stops its run
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Refused:
    """Never: retrying cannot help. `by` says who refused."""

    reason: str
    by: str  # "assemblyai" (it refused the job), "unknown" (no such transcript)


Result = Done | Busy | Refused


# --- deadlines -----------------------------------------------------------------


def queued_check_at(submitted: dt.datetime, checks: int, stale_seconds: float) -> dt.datetime:
    """When the sweep should next look at a queued meeting after `checks` looks."""
    wait = min(stale_seconds * 2**checks, max(MAX_QUEUED_BACKOFF, stale_seconds))
    return submitted + dt.timedelta(seconds=wait)


def write_budget(cfg: Config) -> float:
    """Seconds kept back at the end of a run for the final write."""
    return min(record.PATIENT_SECONDS, max(2.0, cfg.function_timeout / 10))


def deadline_of(cfg: Config, started: float | None = None) -> float:
    """The monotonic time this invocation must be done by: its timeout, less a margin."""
    started = time.monotonic() if started is None else started
    return started + cfg.function_timeout - min(5.0, cfg.function_timeout / 20)


# --- classification ----------------------------------------------------------------

# Statuses of AssemblyAI's APIs that say "not now" rather than "never".
TRANSIENT_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
# The key is wrong, revoked or out of credit: an operator fixes it in minutes.
OPERATOR_STATUSES = frozenset({401, 402, 403})


def from_api_status(status: int | None, message: str, retry_after: float | None = None) -> Failure:
    """An AssemblyAI or gateway failure, classified."""
    if status is None or status in TRANSIENT_STATUSES or status >= 500:
        return Failure(Kind.TRANSIENT, message, retry_after, rate_limited=status == 429)
    if status in OPERATOR_STATUSES:
        return Failure(
            Kind.OPERATOR,
            f"{message} (AssemblyAI rejected the API key: check ASSEMBLYAI_API_KEY and the "
            "account's balance; the meeting waits and is retried)",
            fix="assemblyai_api_key",
        )
    return Failure(Kind.PERMANENT, message)


_FIRESTORE_OPERATOR = (
    exceptions.PermissionDenied,
    exceptions.Unauthenticated,
    exceptions.InvalidArgument,
    exceptions.FailedPrecondition,
    exceptions.NotFound,
)


def from_firestore(exc: Exception) -> Failure:
    """A Firestore failure outside a lost race, classified."""
    name = type(exc).__name__
    detail = str(getattr(exc, "message", "") or exc)[:300]
    if isinstance(exc, exceptions.PermissionDenied | exceptions.Unauthenticated):
        fix = "grant the function's service account roles/datastore.user"
        code = "firestore_permission"
    elif isinstance(exc, exceptions.NotFound):
        fix = "create the Firestore database (deploy.sh does) or fix GOOGLE_CLOUD_PROJECT"
        code = "firestore_database"
    elif isinstance(exc, _FIRESTORE_OPERATOR):
        fix = "check the Firestore database's mode and the collection name"
        code = "firestore_settings"
    else:
        return Failure(Kind.TRANSIENT, f"Firestore is unavailable ({name})")
    message = f"Firestore refused the request ({name}: {detail}): {fix}"
    return Failure(Kind.OPERATOR, message, fix=code)


# --- failures handed back as results ----------------------------------------------


def firestore_guard(func: Callable[..., Result]) -> Callable[..., Result]:
    """A Firestore failure that escapes the flow is classified and handed
    back as Busy: transient ones are retried, operator ones say what to fix."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Result:
        try:
            return func(*args, **kwargs)
        except record.Unavailable as exc:
            failure = from_firestore(exc)
            tid = kwargs.get("transcript_id") or next(
                (a for a in args[1:] if isinstance(a, str)), None
            )
            logs.error(failure.message, tid, kind=str(failure.kind), fix=failure.fix)
            return Busy(
                "the meeting store (Firestore) is unavailable, try again later"
                if failure.kind is Kind.TRANSIENT
                else failure.message,
                60 if failure.kind is Kind.OPERATOR else RETRY_AFTER,
                kind=failure.kind,
                transcript_id=tid,
            )

    return wrapper


def busy_for(failure: Failure, tid: str | None, what: str) -> Busy:
    """The Busy a transient or operator failure becomes, logged once."""
    if failure.kind is Kind.OPERATOR:
        logs.error(f"{what}: {failure.message}", tid, kind=str(failure.kind), fix=failure.fix)
        return Busy(f"{what}: {failure.message}", 60, Kind.OPERATOR, tid)
    logs.warning(f"{what}: {failure.message}", tid, kind=str(failure.kind))
    wait = min(max(failure.retry_after or RETRY_AFTER, 1), 300)
    return Busy(f"{what}: {failure.message}", wait, Kind.TRANSIENT, tid)
