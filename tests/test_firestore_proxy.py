"""The counting proxy in front of Google's Firestore emulator (what the
benchmarks count Firestore operations with): each client operation moves
the counts by exactly what it sent and got, and the answers that come
through are the emulator's own, bytes for bytes."""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.api_core import exceptions
from google.cloud import firestore
from google.cloud.firestore_v1.types import firestore as firestore_types

from local import firestore_proxy
from local import stack as local_stack


@contextlib.contextmanager
def _emulator_host(host: str) -> Iterator[None]:
    """The client reads FIRESTORE_EMULATOR_HOST when it is made; the rest
    of this worker's tests use the session's emulator."""
    saved = os.environ.get("FIRESTORE_EMULATOR_HOST")
    os.environ["FIRESTORE_EMULATOR_HOST"] = host
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("FIRESTORE_EMULATOR_HOST")
        else:
            os.environ["FIRESTORE_EMULATOR_HOST"] = saved


@pytest.fixture(scope="module")
def counted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_stack.Stack]:
    with local_stack.Stack(tmp_path_factory.mktemp("proxy-logs")) as stack:
        stack.start_firestore(count=True)
        yield stack


@pytest.fixture(scope="module")
def db(counted: local_stack.Stack) -> firestore.Client:
    """A client that goes through the proxy."""
    with _emulator_host(counted.firestore_host):
        return firestore.Client(project=counted.project)


def test_each_operation_is_counted_exactly(counted, db) -> None:
    collection = db.collection(f"proxy-{uuid.uuid4().hex[:8]}")
    ref = collection.document("m1")
    seen: dict = {}

    def delta(action) -> dict[str, int]:
        """What `action` changed in the counts (keys that did not move left out)."""
        before = counted.firestore_stats()
        action()
        after = counted.firestore_stats()
        assert set(after) == set(firestore_proxy.KEYS)
        return {k: after[k] - before[k] for k in after if after[k] != before[k]}

    def get() -> None:
        seen["snap"] = ref.get()

    def update_stale() -> None:
        with pytest.raises(exceptions.FailedPrecondition):
            ref.update({"n": 3}, option=db.write_option(last_update_time=seen["snap"].update_time))

    def batch() -> None:
        writes = db.batch()
        for i in range(3):
            writes.set(collection.document(f"b{i}"), {"i": i})
        writes.commit()

    def transaction() -> None:
        @firestore.transactional
        def claim(tx: firestore.Transaction) -> None:
            tx.update(ref, {"n": ref.get(transaction=tx).get("n") + 1})

        claim(db.transaction())

    def rolled_back() -> None:
        @firestore.transactional
        def fail(tx: firestore.Transaction) -> None:
            ref.get(transaction=tx)
            raise ValueError("given up")

        with pytest.raises(ValueError, match="given up"):
            fail(db.transaction())

    def listen() -> None:
        got = threading.Event()
        watch = ref.on_snapshot(lambda *_: got.set())
        try:
            assert got.wait(30)
        finally:
            watch.unsubscribe()

    query = collection.where(filter=firestore.FieldFilter("nested.flag", "==", True))
    steps = [
        (lambda: ref.set({"n": 1, "nested": {"flag": True}}), {"commits": 1, "writes": 1}),
        (get, {"reads": 1}),
        (lambda: collection.document("none").get(), {"reads": 1, "reads_missing": 1}),
        (lambda: list(query.stream()), {"queries": 1, "query_documents": 1}),
        (
            lambda: ref.update(
                {"n": 2}, option=db.write_option(last_update_time=seen["snap"].update_time)
            ),
            {"commits": 1, "writes": 1},
        ),
        (update_stale, {"commits": 1, "writes": 1, "writes_failed": 1}),
        (batch, {"commits": 1, "writes": 3}),
        (lambda: list(collection.stream()), {"queries": 1, "query_documents": 4}),
        (transaction, {"transactions": 1, "reads": 1, "commits": 1, "writes": 1}),
        (rolled_back, {"transactions": 1, "reads": 1, "rollbacks": 1}),
        (lambda: collection.count().get(), {"queries": 1}),
        (listen, {"listens": 1, "listen_documents": 1}),
        (lambda: list(db.collections()), {}),  # forwarded, counted as nothing
        (lambda: ref.delete(), {"commits": 1, "writes": 1}),
    ]
    for i, (action, expected) in enumerate(steps):
        assert delta(action) == expected, f"step {i}"
    assert ref.get().exists is False


def test_answers_are_the_emulators_own(counted) -> None:
    """The same request, straight to the emulator and through the proxy:
    the same response bytes, and the same error code and details."""
    name = f"projects/{counted.project}/databases/(default)/documents/raw/{uuid.uuid4().hex}"
    with _emulator_host(f"127.0.0.1:{counted.firestore.port}"):
        direct = firestore.Client(project=counted.project)
    direct.document(name.split("/documents/")[1]).set({"a": [1, "two", {"b": None}]})
    metadata = [("authorization", "Bearer owner")]

    def call(host: str, doc: str) -> bytes | tuple:
        request = firestore_types.GetDocumentRequest(name=doc)
        with grpc.insecure_channel(host) as channel:
            method = channel.unary_unary("/google.firestore.v1.Firestore/GetDocument")
            try:
                return method(
                    firestore_types.GetDocumentRequest.serialize(request), metadata=metadata
                )
            except grpc.RpcError as err:
                return err.code(), err.details()

    emulator = f"127.0.0.1:{counted.firestore.port}"
    found = call(emulator, name)
    assert isinstance(found, bytes) and b"two" in found
    assert call(counted.firestore_host, name) == found
    missing = call(emulator, name + "-gone")
    assert missing[0] == grpc.StatusCode.NOT_FOUND
    assert call(counted.firestore_host, name + "-gone") == missing


def test_close_leaves_no_emulator_or_proxy_running(tmp_path) -> None:
    """The launcher runs the JVM as its child: stopping the stack stops the
    JVM itself (the launcher then exits), and the proxy."""
    stack = local_stack.Stack(tmp_path / "logs")
    try:
        stack.start_firestore(count=True)
        launcher, proxy = stack.firestore.proc.pid, stack.firestore_proxy.proc.pid
        (jvm,) = local_stack._children(launcher)
        assert b"java" in Path(f"/proc/{jvm}/cmdline").read_bytes()
    finally:
        stack.close()
    for pid in (jvm, launcher, proxy):
        assert not os.path.exists(f"/proc/{pid}"), f"{pid} still exists"


def test_only_a_counting_stack_has_counts(tmp_path) -> None:
    with pytest.raises(RuntimeError, match="count=True"):
        local_stack.Stack(tmp_path).firestore_stats()


def test_a_missing_emulator_says_how_to_install_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(local_stack, "SDK_ROOTS", ())
    monkeypatch.setenv("PATH", str(tmp_path))  # no gcloud
    local_stack.firestore_emulator.cache_clear()
    try:
        with pytest.raises(local_stack.EmulatorMissing) as missing:
            local_stack.Stack(tmp_path / "logs").start_firestore()
    finally:
        local_stack.firestore_emulator.cache_clear()
    assert "apt-get install google-cloud-cli-firestore-emulator" in str(missing.value)
    assert "Java 11+" in str(missing.value)
