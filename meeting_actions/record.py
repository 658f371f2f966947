"""The Firestore documents the product keeps: one per meeting, at
<collection>/<transcript_id>, and one per uploaded object version, in
<collection>-uploads.

A document is what a person reads in the Firestore console, and it is also
the lock on its work (see lease.py). Every write that must not overwrite
someone else's is conditioned on the `update_time` the writer read, which
both real Firestore and the local server enforce.

All access goes through a small Store, so the in-process tests can put an
in-memory one in its place at exactly this boundary.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
from typing import Any, Protocol

from google.api_core import exceptions
from google.api_core.retry import Retry, if_transient_error
from google.cloud import firestore
from google.cloud.firestore_v1 import _helpers
from google.cloud.firestore_v1.types import Document

from . import firestore_writes
from .config import Config

# Short retries on the request path: the webhook has 10 seconds to answer,
# and a 5xx while Firestore is away is what makes AssemblyAI come back.
QUICK = {
    "retry": Retry(initial=0.2, maximum=1.0, timeout=6, predicate=if_transient_error),
    "timeout": 5,
}
# The final write after a paid LLM answer tries harder, within the time the
# caller keeps for it (PATIENT_SECONDS): losing it means paying again.
PATIENT_SECONDS = 30
PATIENT = {
    "retry": Retry(
        initial=0.5, maximum=5.0, timeout=PATIENT_SECONDS - 5, predicate=if_transient_error
    ),
    "timeout": 5,
}

LostRace = (exceptions.FailedPrecondition, exceptions.AlreadyExists, exceptions.NotFound)
Unavailable = (exceptions.GoogleAPICallError, exceptions.RetryError)
SERVER_TIMESTAMP = firestore.SERVER_TIMESTAMP
# A field set to this in an update is removed from the document.
DELETE_FIELD = firestore.DELETE_FIELD


class Store(Protocol):
    """What the product asks of Firestore; FirestoreStore is the real one."""

    def get(self, collection: str, doc_id: str) -> tuple[dict[str, Any] | None, Any]: ...

    def create(self, collection: str, doc_id: str, fields: dict[str, Any], **retry: Any) -> Any: ...

    def update(
        self,
        collection: str,
        doc_id: str,
        fields: dict[str, Any],
        if_version: Any = None,
        **retry: Any,
    ) -> Any: ...

    def due(
        self, collection: str, field: str, at: dt.datetime, limit: int
    ) -> list[tuple[str, dict[str, Any], Any]]: ...


class FirestoreStore:
    """Store on google-cloud-firestore; FIRESTORE_EMULATOR_HOST points it at a local server."""

    @functools.cached_property
    def client(self) -> firestore.Client:
        return firestore.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT") or None)

    def get(self, collection: str, doc_id: str) -> tuple[dict[str, Any] | None, Any]:
        # One unary GetDocument, the call the client library itself makes
        # below DocumentReference.get, which streams (BatchGetDocuments):
        # gRPC starts a thread for each streaming call on an idle channel,
        # about 0.3 ms of CPU per read (BENCHMARKS.md, "Where the CPU goes").
        client = self.client
        name = client.collection(collection).document(doc_id)._document_path
        try:
            doc = client._firestore_api.get_document(
                request={"name": name}, metadata=client._rpc_metadata, **QUICK
            )
        except exceptions.NotFound:
            return None, None
        # Decoded from the protobuf itself, not its proto-plus wrapper: half the CPU.
        return _helpers.decode_dict(Document.pb(doc).fields, client), doc.update_time

    def create(self, collection: str, doc_id: str, fields: dict[str, Any], **retry: Any) -> Any:
        name = self.client.collection(collection).document(doc_id)._document_path
        return self._commit(firestore_writes.create(name, fields), retry)

    def update(
        self,
        collection: str,
        doc_id: str,
        fields: dict[str, Any],
        if_version: Any = None,
        **retry: Any,
    ) -> Any:
        name = self.client.collection(collection).document(doc_id)._document_path
        return self._commit(firestore_writes.update(name, fields, if_version), retry)

    def _commit(self, write: Any, retry: dict[str, Any]) -> Any:
        """One write, committed as WriteBatch.commit does; its update time."""
        client = self.client
        answer = client._firestore_api.commit(
            request=firestore_writes.commit_request(client._database_string, write),
            metadata=client._rpc_metadata,
            **(retry or QUICK),
        )
        return answer.write_results[0].update_time

    def due(
        self, collection: str, field: str, at: dt.datetime, limit: int
    ) -> list[tuple[str, dict[str, Any], Any]]:
        # A range and an order on one single field: served by Firestore's
        # automatic single-field index, so no composite index is needed.
        query = (
            self.client.collection(collection)
            .where(filter=firestore.FieldFilter(field, "<=", at))
            .order_by(field)
            .limit(limit)
        )
        return [(snap.id, snap.to_dict(), snap.update_time) for snap in query.stream(**QUICK)]


_store: Store | None = None


def store() -> Store:
    """The process's store, created on first use."""
    global _store
    if _store is None:
        _store = FirestoreStore()
    return _store


def use(replacement: Store | None) -> None:
    """Put another store in place (the in-process tests), or None to reset."""
    global _store
    _store = replacement


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def later(seconds: float) -> dt.datetime:
    """`seconds` from now, in the store's clock."""
    return now() + dt.timedelta(seconds=seconds)


def uploads_collection(cfg: Config) -> str:
    return f"{cfg.collection}-uploads"


def upload_key(bucket: str, name: str, generation: str) -> str:
    """The upload document's id for one object version."""
    return hashlib.sha256(f"{bucket}/{name}#{generation}".encode()).hexdigest()[:40]


def path(cfg: Config, transcript_id: str) -> str:
    return f"{cfg.collection}/{transcript_id}"


def read(cfg: Config, transcript_id: str) -> tuple[dict[str, Any] | None, Any]:
    """The meeting's document and its version (update time)."""
    return store().get(cfg.collection, transcript_id)


def create(cfg: Config, transcript_id: str, fields: dict[str, Any], **retry: Any) -> Any:
    """Create the meeting's document; raises AlreadyExists if it is there."""
    stamped = {**fields, "created_at": SERVER_TIMESTAMP, "updated_at": SERVER_TIMESTAMP}
    return store().create(cfg.collection, transcript_id, stamped, **retry)


def update(
    cfg: Config,
    transcript_id: str,
    fields: dict[str, Any],
    if_unchanged_since: Any = None,
    **retry: Any,
) -> Any:
    """Update fields; with `if_unchanged_since`, only if nobody wrote since.

    Raises one of LostRace when the condition fails. Returns the write's
    update time, which is the version a later conditional write names.
    """
    stamped = {**fields, "updated_at": SERVER_TIMESTAMP}
    return store().update(cfg.collection, transcript_id, stamped, if_unchanged_since, **retry)


def due(cfg: Config, at: dt.datetime, limit: int) -> list[tuple[str, dict[str, Any], Any]]:
    """Meetings whose `sweep_at` has passed, oldest first, with their versions
    (see lifecycle.py)."""
    return store().due(cfg.collection, "sweep_at", at, limit)


def source_of_url(audio_url: str) -> dict[str, Any]:
    return {"kind": "url", "audio_url": audio_url}
