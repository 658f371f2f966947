"""Fakes at exactly two boundaries, for the fast in-process tests: the
store under the lease (record.Store) and AssemblyAI's client functions.
Everything between them, the entry points included, is the real code.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from google.api_core import exceptions

from meeting_actions import assemblyai, record

# A fault hook sees (operation, collection, doc_id, fields) and returns an
# exception to raise instead of doing the operation, or None.
Fault = Callable[[str, str, str, dict[str, Any] | None], Exception | None]


class MemoryStore:
    """record.Store in memory, with Firestore's preconditions: create fails
    on an existing document, a conditioned update on a changed one."""

    def __init__(self) -> None:
        self.docs: dict[tuple[str, str], tuple[dict[str, Any], dt.datetime]] = {}
        self.lock = threading.Lock()
        self.faults: list[Fault] = []
        self.writes = 0
        self._tick = itertools.count(1)

    def _version(self) -> dt.datetime:
        # Strictly increasing, as Firestore's commit times are.
        return dt.datetime.now(dt.UTC) + dt.timedelta(microseconds=next(self._tick))

    def _check(self, op: str, collection: str, doc_id: str, fields: dict | None) -> None:
        for fault in self.faults:
            exc = fault(op, collection, doc_id, fields)
            if exc is not None:
                raise exc

    @staticmethod
    def _resolve(fields: dict[str, Any], at: dt.datetime) -> dict[str, Any]:
        return {
            k: (at if v is record.SERVER_TIMESTAMP else copy.deepcopy(v))
            for k, v in fields.items()
            if v is not record.DELETE_FIELD
        }

    def get(self, collection: str, doc_id: str) -> tuple[dict[str, Any] | None, Any]:
        self._check("get", collection, doc_id, None)
        with self.lock:
            if (collection, doc_id) not in self.docs:
                return None, None
            data, version = self.docs[collection, doc_id]
            return copy.deepcopy(data), version

    def create(self, collection: str, doc_id: str, fields: dict[str, Any], **_: Any) -> Any:
        self._check("create", collection, doc_id, fields)
        with self.lock:
            if (collection, doc_id) in self.docs:
                raise exceptions.AlreadyExists("document exists")
            version = self._version()
            self.docs[collection, doc_id] = (self._resolve(fields, version), version)
            self.writes += 1
            return version

    def update(
        self, collection: str, doc_id: str, fields: dict[str, Any], if_version: Any = None, **_: Any
    ) -> Any:
        self._check("update", collection, doc_id, fields)
        with self.lock:
            if (collection, doc_id) not in self.docs:
                raise exceptions.NotFound("no document to update")
            data, current = self.docs[collection, doc_id]
            if if_version is not None and if_version != current:
                raise exceptions.FailedPrecondition("the document changed since it was read")
            version = self._version()
            kept = {k: v for k, v in data.items() if fields.get(k) is not record.DELETE_FIELD}
            self.docs[collection, doc_id] = ({**kept, **self._resolve(fields, version)}, version)
            self.writes += 1
            return version

    def due(
        self, collection: str, field: str, at: dt.datetime, limit: int
    ) -> list[tuple[str, dict[str, Any], Any]]:
        self._check("query", collection, "", None)
        with self.lock:
            found = [
                (doc_id, copy.deepcopy(data), version)
                for (coll, doc_id), (data, version) in self.docs.items()
                if coll == collection
                and isinstance(data.get(field), dt.datetime)
                and data[field] <= at
            ]
        return sorted(found, key=lambda item: item[1][field])[:limit]

    def doc(self, collection: str, doc_id: str) -> dict[str, Any]:
        return copy.deepcopy(self.docs[collection, doc_id][0])

    def set_field(self, collection: str, doc_id: str, **fields: Any) -> None:
        """Change a document behind the product's back (a clock moved on, say)."""
        with self.lock:
            data, _ = self.docs[collection, doc_id]
            self.docs[collection, doc_id] = ({**data, **fields}, self._version())


def answer(content: str, usage: Any = None, model: str = "claude-sonnet-4-6") -> dict[str, Any]:
    """A gateway answer shaped like the real one (model in request.model)."""
    return {
        "request_id": str(uuid.uuid4()),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],  # fmt: skip
        "request": {"model": model},
        "usage": {"input_tokens": 100, "output_tokens": 20, "total_tokens": 120,
                  "prompt_tokens": 100, "completion_tokens": 20} if usage is None else usage,
    }  # fmt: skip


GOOD_CONTENT = (
    '{"action_items": [{"text": "Send the revised budget", "owner": "Priya", "due": "Friday"}],'
    ' "formatted": "- Send the revised budget (Priya, due Friday)"}'
)


class FakeAssemblyAI:
    """AssemblyAI's client functions: transcripts, uploads and the gateway."""

    def __init__(self) -> None:
        self.transcripts: dict[str, dict[str, Any]] = {}
        self.submitted: list[dict[str, Any]] = []
        self.reads: dict[str, int] = defaultdict(int)
        self.gateway_calls: dict[str, int] = defaultdict(int)
        # Set these to change what the next calls do.
        self.get_error: assemblyai.ApiError | None = None
        self.submit_error: assemblyai.ApiError | None = None
        self.gateway: Callable[[dict[str, Any]], dict[str, Any]] = lambda _: answer(GOOD_CONTENT)
        self.lock = threading.Lock()

    def install(self, monkeypatch: Any) -> FakeAssemblyAI:
        monkeypatch.setattr(assemblyai, "submit_transcript", self.submit_transcript)
        monkeypatch.setattr(assemblyai, "get_transcript", self.get_transcript)
        monkeypatch.setattr(assemblyai, "chat_completion", self.chat_completion)
        monkeypatch.setattr(assemblyai, "upload", self.upload)
        return self

    def submit_transcript(self, cfg: Any, params: dict[str, Any], timeout: float = 30) -> dict:
        if self.submit_error:
            raise self.submit_error
        tid = str(uuid.uuid4())
        with self.lock:
            self.submitted.append(params)
            self.transcripts[tid] = {
                "id": tid, "status": "queued", "audio_url": params["audio_url"],
                "speaker_labels": params.get("speaker_labels"), "language_code": "en_us",
                "audio_duration": None, "error": None,
            }  # fmt: skip
        return copy.deepcopy(self.transcripts[tid])

    def finish(self, tid: str, error: str | None = None) -> None:
        """AssemblyAI is done with the transcript (its webhook is not sent here)."""
        t = self.transcripts[tid]
        if error:
            t.update(status="error", error=error)
        else:
            t.update(status="completed", audio_duration=1800, text="Priya will send the budget.")

    def get_transcript(self, cfg: Any, transcript_id: str, timeout: float = 15) -> dict:
        with self.lock:
            self.reads[transcript_id] += 1
        if self.get_error:
            raise self.get_error
        if transcript_id not in self.transcripts:
            raise assemblyai.ApiError("400 Transcript lookup error, transcript id not found", 400)
        return copy.deepcopy(self.transcripts[transcript_id])

    def chat_completion(self, cfg: Any, body: dict[str, Any], deadline: float) -> dict:
        with self.lock:
            self.gateway_calls[body.get("transcript_id")] += 1
        return self.gateway(body)

    def upload(self, cfg: Any, stream: Any, timeout: float = 3000) -> str:
        stream.read()
        return f"https://cdn.example/upload/{uuid.uuid4()}"
