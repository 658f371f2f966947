"""A counting gRPC proxy in front of Google's Firestore emulator, for the
benchmarks and the tests that count Firestore operations (the emulator keeps
no counts of its own). Never deployed.

    python -m local.firestore_proxy --port PORT --upstream 127.0.0.1:EMULATOR_PORT

Every call is forwarded to the emulator as it came, bytes for bytes: the
request and response messages are never re-encoded, and metadata, deadlines,
status codes, details and trailers go through. A copy of each message is
parsed with google.cloud.firestore_v1's types, only to count:

- writes: the writes sent in Commit, BatchWrite and Write-stream requests
  (one each for CreateDocument, UpdateDocument, DeleteDocument), whether
  or not they applied; writes_failed: those of the calls that failed (a
  failed Commit fails all of its writes) or that BatchWrite reports failed.
- reads: documents looked up by key (BatchGetDocuments' found and missing
  answers, GetDocument); reads_missing: those that did not exist.
- queries: RunQuery and RunAggregationQuery calls; query_documents: the
  documents RunQuery returned.
- commits, transactions (BeginTransaction, or a read that begins one),
  rollbacks.
- listens: Listen streams opened; listen_documents: document changes sent
  on them.

A count is made before the answer it depends on is passed on, so a caller
that has its answer sees it counted. `stats(address)` asks a running proxy
for its counts (a method of the proxy's own, `/local.FirestoreProxy/Stats`).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.cloud.firestore_v1.types import firestore

STATS_METHOD = "/local.FirestoreProxy/Stats"
KEYS = (
    "writes",
    "writes_failed",
    "reads",
    "reads_missing",
    "queries",
    "query_documents",
    "commits",
    "transactions",
    "rollbacks",
    "listens",
    "listen_documents",
)
_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
# Headers gRPC sets itself on each hop.
_HOP_HEADERS = ("user-agent", "content-type", "te", "host")


def _pb(message_type: Any) -> Callable[[bytes], Any]:
    """A parser of the raw protobuf behind a proto-plus type."""
    return message_type.pb().FromString


_COMMIT = _pb(firestore.CommitRequest)
_BATCH_WRITE = _pb(firestore.BatchWriteRequest)
_BATCH_WRITE_RESPONSE = _pb(firestore.BatchWriteResponse)
_WRITE = _pb(firestore.WriteRequest)
_BATCH_GET = _pb(firestore.BatchGetDocumentsRequest)
_BATCH_GET_RESPONSE = _pb(firestore.BatchGetDocumentsResponse)
_RUN_QUERY = _pb(firestore.RunQueryRequest)
_RUN_QUERY_RESPONSE = _pb(firestore.RunQueryResponse)
_RUN_AGGREGATION = _pb(firestore.RunAggregationQueryRequest)
_LISTEN_RESPONSE = _pb(firestore.ListenResponse)


class Counts:
    """Operation counts, safe to bump from the server's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()

    def add(self, key: str, n: int = 1) -> None:
        if n:
            with self._lock:
                self._counts[key] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {key: self._counts[key] for key in KEYS}


class _Call:
    """What one method counts: from its request(s), each response, and a failure."""

    def __init__(self, counts: Counts):
        self.counts = counts
        self.writes = 0  # the writes this call carries, failed together if it fails

    def request(self, data: bytes) -> None:
        pass

    def response(self, data: bytes) -> None:
        pass

    def failed(self, code: grpc.StatusCode) -> None:
        self.counts.add("writes_failed", self.writes)


class _Commit(_Call):
    def request(self, data: bytes) -> None:
        self.writes = len(_COMMIT(data).writes)
        self.counts.add("commits")
        self.counts.add("writes", self.writes)


class _OneWrite(_Call):
    """CreateDocument, UpdateDocument, DeleteDocument."""

    def request(self, data: bytes) -> None:
        self.writes = 1
        self.counts.add("writes")


class _BatchWrite(_Call):
    def request(self, data: bytes) -> None:
        self.writes = len(_BATCH_WRITE(data).writes)
        self.counts.add("writes", self.writes)

    def response(self, data: bytes) -> None:
        failed = sum(1 for s in _BATCH_WRITE_RESPONSE(data).status if s.code)
        self.counts.add("writes_failed", failed)


class _WriteStream(_Call):
    def request(self, data: bytes) -> None:
        self.counts.add("writes", len(_WRITE(data).writes))

    def failed(self, code: grpc.StatusCode) -> None:
        pass  # which of a stream's writes applied is in its responses, not counted here


def _begins_transaction(request: Any) -> bool:
    return request.HasField("new_transaction")


class _GetDocument(_Call):
    def request(self, data: bytes) -> None:
        self.counts.add("reads")

    def failed(self, code: grpc.StatusCode) -> None:
        if code == grpc.StatusCode.NOT_FOUND:
            self.counts.add("reads_missing")


class _BatchGet(_Call):
    def request(self, data: bytes) -> None:
        if _begins_transaction(_BATCH_GET(data)):
            self.counts.add("transactions")

    def response(self, data: bytes) -> None:
        answer = _BATCH_GET_RESPONSE(data)
        kind = answer.WhichOneof("result")
        if kind:
            self.counts.add("reads")
            if kind == "missing":
                self.counts.add("reads_missing")


class _RunQuery(_Call):
    def request(self, data: bytes) -> None:
        self.counts.add("queries")
        if _begins_transaction(_RUN_QUERY(data)):
            self.counts.add("transactions")

    def response(self, data: bytes) -> None:
        if _RUN_QUERY_RESPONSE(data).HasField("document"):
            self.counts.add("query_documents")


class _RunAggregation(_Call):
    def request(self, data: bytes) -> None:
        self.counts.add("queries")
        if _begins_transaction(_RUN_AGGREGATION(data)):
            self.counts.add("transactions")


class _Named(_Call):
    """A call counted once by its name (BeginTransaction, Rollback, Listen)."""

    key = ""

    def __init__(self, counts: Counts):
        super().__init__(counts)
        counts.add(self.key)


class _BeginTransaction(_Named):
    key = "transactions"


class _Rollback(_Named):
    key = "rollbacks"


class _Listen(_Named):
    key = "listens"

    def response(self, data: bytes) -> None:
        if _LISTEN_RESPONSE(data).HasField("document_change"):
            self.counts.add("listen_documents")


UNARY_UNARY, UNARY_STREAM, STREAM_STREAM = "unary_unary", "unary_stream", "stream_stream"
_SERVICE = "/google.firestore.v1.Firestore/"
# Each Firestore method: its shape, and what it counts.
METHODS: dict[str, tuple[str, type[_Call]]] = {
    _SERVICE + "GetDocument": (UNARY_UNARY, _GetDocument),
    _SERVICE + "ListDocuments": (UNARY_UNARY, _Call),
    _SERVICE + "CreateDocument": (UNARY_UNARY, _OneWrite),
    _SERVICE + "UpdateDocument": (UNARY_UNARY, _OneWrite),
    _SERVICE + "DeleteDocument": (UNARY_UNARY, _OneWrite),
    _SERVICE + "BatchGetDocuments": (UNARY_STREAM, _BatchGet),
    _SERVICE + "BeginTransaction": (UNARY_UNARY, _BeginTransaction),
    _SERVICE + "Commit": (UNARY_UNARY, _Commit),
    _SERVICE + "Rollback": (UNARY_UNARY, _Rollback),
    _SERVICE + "RunQuery": (UNARY_STREAM, _RunQuery),
    _SERVICE + "ExecutePipeline": (UNARY_STREAM, _Call),
    _SERVICE + "RunAggregationQuery": (UNARY_STREAM, _RunAggregation),
    _SERVICE + "PartitionQuery": (UNARY_UNARY, _Call),
    _SERVICE + "Write": (STREAM_STREAM, _WriteStream),
    _SERVICE + "Listen": (STREAM_STREAM, _Listen),
    _SERVICE + "ListCollectionIds": (UNARY_UNARY, _Call),
    _SERVICE + "BatchWrite": (UNARY_UNARY, _BatchWrite),
}


def _timeout(context: grpc.ServicerContext) -> float | None:
    """The caller's deadline, for the next hop (None when it set none)."""
    remaining = context.time_remaining()
    return remaining if remaining < 1e9 else None


def _forwarded(metadata: Any) -> list[tuple[str, Any]]:
    """The caller's metadata, less what gRPC sets itself on the next hop."""
    return [
        (key, value)
        for key, value in metadata or ()
        if not key.startswith((":", "grpc-")) and key not in _HOP_HEADERS
    ]


class CountingProxy(grpc.GenericRpcHandler):
    """Forwards every method to `upstream` (host:port) and counts operations."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.counts = Counts()
        self._channel = grpc.insecure_channel(upstream, options=_OPTIONS)
        self._server: grpc.Server | None = None

    # --- serving ---------------------------------------------------------

    def start(self, port: int, host: str = "127.0.0.1", workers: int = 200) -> CountingProxy:
        """Serve on host:port (port 0: any free one; `self.port` says which)."""
        self._server = grpc.server(
            concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="proxy"),
            handlers=[self],
            options=_OPTIONS,
        )
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        self._server.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop(0).wait()
        self._channel.close()

    def wait(self) -> None:
        if self._server is not None:
            self._server.wait_for_termination()

    # --- grpc.GenericRpcHandler -----------------------------------------

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method
        if method == STATS_METHOD:
            return grpc.unary_unary_rpc_method_handler(
                lambda _request, _context: json.dumps(self.counts.snapshot()).encode()
            )
        # Unknown methods go through too: a stream both ways carries any shape.
        shape, counter = METHODS.get(method, (STREAM_STREAM, _Call))
        if shape == UNARY_UNARY:
            return grpc.unary_unary_rpc_method_handler(self._unary(method, counter))
        if shape == UNARY_STREAM:
            return grpc.unary_stream_rpc_method_handler(self._server_stream(method, counter))
        return grpc.stream_stream_rpc_method_handler(self._bidi(method, counter))

    def _unary(self, method: str, counter: type[_Call]) -> Callable:
        upstream = self._channel.unary_unary(method)

        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            call = counter(self.counts)
            call.request(request)
            future = upstream.future(
                request,
                timeout=_timeout(context),
                metadata=_forwarded(context.invocation_metadata()),
            )
            context.add_callback(future.cancel)
            try:
                response = future.result()
            except grpc.RpcError as err:
                self._fail(context, call, err)
                return b""  # the caller went away
            self._pass_metadata(context, future)
            call.response(response)
            return response

        return handle

    def _server_stream(self, method: str, counter: type[_Call]) -> Callable:
        upstream = self._channel.unary_stream(method)

        def handle(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            call = counter(self.counts)
            call.request(request)
            responses = upstream(
                request,
                timeout=_timeout(context),
                metadata=_forwarded(context.invocation_metadata()),
            )
            yield from self._relay(context, call, responses)

        return handle

    def _bidi(self, method: str, counter: type[_Call]) -> Callable:
        upstream = self._channel.stream_stream(method)

        def handle(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
            call = counter(self.counts)

            def counted() -> Iterator[bytes]:
                for request in requests:
                    call.request(request)
                    yield request

            responses = upstream(
                counted(),
                timeout=_timeout(context),
                metadata=_forwarded(context.invocation_metadata()),
            )
            yield from self._relay(context, call, responses)

        return handle

    def _relay(self, context: grpc.ServicerContext, call: _Call, responses: Any) -> Iterator[bytes]:
        context.add_callback(responses.cancel)
        try:
            context.send_initial_metadata(_forwarded(responses.initial_metadata()))
            for response in responses:
                call.response(response)
                yield response
        except grpc.RpcError as err:
            self._fail(context, call, err)
            return  # the caller went away
        context.set_trailing_metadata(_forwarded(responses.trailing_metadata()))

    @staticmethod
    def _pass_metadata(context: grpc.ServicerContext, call: Any) -> None:
        context.send_initial_metadata(_forwarded(call.initial_metadata()))
        context.set_trailing_metadata(_forwarded(call.trailing_metadata()))

    @staticmethod
    def _fail(context: grpc.ServicerContext, call: _Call, err: Any) -> None:
        """Answer with the emulator's status, details and trailers (this
        raises), unless the caller is gone (then it returns)."""
        code = err.code()
        call.failed(code)
        if not context.is_active():
            return
        trailers = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
        context.set_trailing_metadata(_forwarded(trailers))
        context.abort(code, err.details() or "")


def stats(address: str, timeout: float = 10) -> dict[str, int]:
    """The counts of the proxy at host:port."""
    with grpc.insecure_channel(address) as channel:
        answer = channel.unary_unary(STATS_METHOD)(b"", timeout=timeout)
    return json.loads(answer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--upstream", required=True, help="the emulator's host:port")
    args = parser.parse_args()
    proxy = CountingProxy(args.upstream).start(args.port, args.host)
    signal.signal(signal.SIGTERM, lambda *_: proxy.stop())
    print(f"firestore proxy on {args.host}:{proxy.port}, forwarding to {args.upstream}", flush=True)
    proxy.wait()


if __name__ == "__main__":
    main()
