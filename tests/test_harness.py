"""The tests' own waits must not disturb what they watch.

Google's Firestore emulator fails a commit with CANCELLED ("call already
cancelled") when a listener on the same document closes while that commit
notifies it: a write the product made, refused because a test stopped
watching. Seen in full runs as a notification left to the sweep (its
claim's write failed), and a test waiting 90 s for it.
"""

from __future__ import annotations

import threading

from conftest import wait_for_document
from google.api_core import exceptions
from google.cloud import firestore


def test_waiting_for_a_document_never_fails_a_write_to_it(stack, db) -> None:
    ref = db.document("harness/busy")
    ref.set({"status": "completed", "n": 0})
    writer_db = firestore.Client(project=stack.project)
    stop = threading.Event()
    failures: list[str] = []
    writes = 0

    def write() -> None:
        nonlocal writes
        doc = writer_db.document("harness/busy")
        while not stop.is_set():
            try:
                doc.update({"n": writes})
                writes += 1
            except exceptions.GoogleAPICallError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(60):
            assert (
                wait_for_document(db, "harness/busy", ("completed",), 10)["status"] == "completed"
            )
    finally:
        stop.set()
        writer.join()
    assert writes > 0
    assert failures == [], f"{len(failures)} of {writes + len(failures)} writes failed"
