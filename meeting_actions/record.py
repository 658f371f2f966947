"""The Firestore document of one meeting, at <collection>/<transcript_id>.

The document is what a person reads in the Firestore console, and it is
also the lock on the meeting's work: a caller claims the generation of the
action items with a write that only one caller can win (a create of a
missing document, or an update conditioned on the version it read), and
its final write is conditioned on its own claim, so a caller that lost its
claim can never overwrite the result of the one that took over.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from typing import Any

from google.api_core import exceptions
from google.api_core.retry import Retry, if_transient_error
from google.cloud import firestore

from .config import Config

QUEUED, GENERATING, COMPLETED, ERROR = "queued", "generating", "completed", "error"
FINAL = (COMPLETED, ERROR)

# Short retries on the request path: the webhook has 10 seconds to answer,
# and a 5xx while Firestore is away is what makes AssemblyAI come back.
QUICK = {
    "retry": Retry(initial=0.2, maximum=1.0, timeout=6, predicate=if_transient_error),
    "timeout": 5,
}
# The final write after a paid LLM answer tries harder: losing it means
# paying for the answer again.
PATIENT = {
    "retry": Retry(initial=0.5, maximum=5.0, timeout=90, predicate=if_transient_error),
    "timeout": 10,
}

LostRace = (exceptions.FailedPrecondition, exceptions.AlreadyExists, exceptions.NotFound)
Unavailable = (exceptions.GoogleAPICallError, exceptions.RetryError)


@functools.cache
def client() -> firestore.Client:
    """The process's Firestore client, created on first use.

    FIRESTORE_EMULATOR_HOST, when set, points it at a local emulator.
    """
    return firestore.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT") or None)


def ref(cfg: Config, transcript_id: str) -> firestore.DocumentReference:
    return client().collection(cfg.collection).document(transcript_id)


def path(cfg: Config, transcript_id: str) -> str:
    return f"{cfg.collection}/{transcript_id}"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def read(cfg: Config, transcript_id: str) -> firestore.DocumentSnapshot:
    return ref(cfg, transcript_id).get(**QUICK)


def create(cfg: Config, transcript_id: str, fields: dict[str, Any], **retry: Any) -> Any:
    """Create the document; raises AlreadyExists if it is there already."""
    stamped = {
        **fields,
        "created_at": firestore.SERVER_TIMESTAMP,
        "updated_at": firestore.SERVER_TIMESTAMP,
    }
    return ref(cfg, transcript_id).create(stamped, **(retry or QUICK)).update_time


def update(
    cfg: Config,
    transcript_id: str,
    fields: dict[str, Any],
    if_unchanged_since: dt.datetime | None = None,
    **retry: Any,
) -> Any:
    """Update fields; with `if_unchanged_since`, only if nobody wrote since.

    Raises one of LostRace when the condition fails. Returns the write's
    update time, which is the version a later conditional write names.
    """
    option = (
        client().write_option(last_update_time=if_unchanged_since)
        if if_unchanged_since is not None
        else None
    )
    stamped = {**fields, "updated_at": firestore.SERVER_TIMESTAMP}
    return ref(cfg, transcript_id).update(stamped, option=option, **(retry or QUICK)).update_time


def stuck_generating(cfg: Config, limit: int) -> list[firestore.DocumentSnapshot]:
    """Meetings whose generation is not finished, for the recovery sweep.

    One equality filter, so it needs no composite index; the lease is
    checked by the caller.
    """
    query = (
        client()
        .collection(cfg.collection)
        .where(filter=firestore.FieldFilter("status", "==", GENERATING))
    )
    return list(query.limit(limit).stream(**QUICK))


def lease_is_live(data: dict[str, Any], at: dt.datetime) -> bool:
    """Whether another caller holds a claim that has not expired."""
    expires = (data.get("generation") or {}).get("lease_expires_at")
    return isinstance(expires, dt.datetime) and expires > at


def source_of_url(audio_url: str) -> dict[str, Any]:
    return {"kind": "url", "audio_url": audio_url}
