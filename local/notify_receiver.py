"""A notification receiver for local runs: what a caller of the product
would write. It verifies each POST's Standard Webhooks signature with the
`standardwebhooks` package, answers 401 to a bad one, and prints one line
per notification. Receivers deduplicate on `webhook-id`, since delivery is
at least once; a repeated id is answered 200 and marked as a duplicate.
With `--trickle SECONDS` it is a slow receiver: it sends its answer one
byte at a time, SECONDS apart (for MAX_TRICKLE seconds at most), as a
receiver behind a struggling proxy may.

    NOTIFY_SIGNING_SECRET=whsec_... python local/notify_receiver.py --port 8099
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import sys
import threading
import time
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

MAX_BODY = 1_000_000
MAX_TRICKLE = 60.0


def start(
    secret: str, port: int = 0, host: str = "127.0.0.1", quiet: bool = False, trickle: float = 0.0
) -> tuple[http.server.ThreadingHTTPServer, str, list[dict[str, Any]]]:
    """Serve in a daemon thread; the server (call shutdown() and
    server_close()), its URL, and the list each verified notification is
    appended to: {"id", "timestamp", "payload", "duplicate"}. `trickle`:
    seconds between the bytes of each answer (0: all at once)."""
    verifier = Webhook(secret)
    received: list[dict[str, Any]] = []
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._answer(413, {"error": "body too large"})
                return
            body = self.rfile.read(length)
            try:
                payload = verifier.verify(body, dict(self.headers.items()))
            except (WebhookVerificationError, ValueError) as exc:
                if not quiet:
                    _print(f"rejected a notification: {exc}")
                self._answer(401, {"error": "signature not verified"})
                return
            msg_id = self.headers["webhook-id"]
            with lock:
                duplicate = any(r["id"] == msg_id for r in received)
                received.append(
                    {
                        "id": msg_id,
                        "timestamp": self.headers["webhook-timestamp"],
                        "payload": payload,
                        "duplicate": duplicate,
                    }
                )
            if not quiet:
                _print(_describe(msg_id, payload, duplicate))
            self._answer(200, {"ok": True})

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            if trickle > 0:
                self._trickle(status, data)
                return
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _trickle(self, status: int, data: bytes) -> None:
            raw = (
                f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode() + data
            self.close_connection = True
            started = time.monotonic()
            try:
                for i in range(len(raw)):
                    self.wfile.write(raw[i : i + 1])
                    self.wfile.flush()
                    if time.monotonic() - started > MAX_TRICKLE:
                        return
                    time.sleep(trickle)  # the slow receiver this simulates
            except OSError:
                return  # the sender gave up: what a slow receiver sees

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(
        target=server.serve_forever, args=(0.1,), name="notify-receiver", daemon=True
    ).start()
    shown = f"[{host}]" if ":" in host else host
    return server, f"http://{shown}:{server.server_address[1]}/", received


def _describe(msg_id: str, payload: Any, duplicate: bool) -> str:
    if not isinstance(payload, dict):
        return f"notification {msg_id}: unexpected body"
    items = payload.get("action_items")
    count = len(items) if isinstance(items, list) else 0
    line = (
        f"notification {msg_id}{' (duplicate)' if duplicate else ''}: "
        f"{payload.get('type')} {payload.get('transcript_id')} status={payload.get('status')} "
        f"items={count}"
    )
    if payload.get("error"):
        line += f" error={payload['error']!r}"
    return line


def _print(line: str) -> None:
    print(f"[notify-receiver] {line}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="default: any free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--trickle", type=float, default=0.0,
                        help="seconds between the bytes of each answer (a slow receiver)")  # fmt: skip
    args = parser.parse_args(argv)
    secret = os.environ.get("NOTIFY_SIGNING_SECRET", "")
    if not secret.startswith("whsec_"):
        print("set NOTIFY_SIGNING_SECRET to the whsec_... signing secret", file=sys.stderr)
        return 2
    server, url, _received = start(secret, args.port, args.host, trickle=args.trickle)
    _print(f"listening on {url}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
