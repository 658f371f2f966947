"""The outgoing HTTP session reads proxy settings from the environment once,
at creation: a team behind an egress proxy must still get through it, and
NO_PROXY exceptions must still be honoured."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator

import pytest

from meeting_actions import transport


class _Recorder(http.server.ThreadingHTTPServer):
    """Answers every request with 200 and remembers its request line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.peers: set[int] = set()  # client ports: one per connection
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                recorder.lines.append(self.requestline)
                recorder.headers.append(dict(self.headers.items()))
                recorder.peers.add(self.client_address[1])
                body = json.dumps({"ok": True}).encode()
                self.send_response(200 if self.path != "/moved" else 302)
                if self.path == "/moved":
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        Handler.protocol_version = "HTTP/1.1"  # keep-alive, as AssemblyAI's API
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[_Recorder, _Recorder]]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    proxy, direct = _Recorder(), _Recorder()
    transport.session.cache_clear()
    yield proxy, direct
    transport.session.cache_clear()
    proxy.shutdown()
    direct.shutdown()
    proxy.server_close()
    direct.server_close()


def _get(url: str) -> int:
    return transport.request("GET", url, deadline=time.monotonic() + 10, read_timeout=5).status_code


def test_requests_go_through_the_configured_proxy(servers, monkeypatch) -> None:
    proxy, _ = servers
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    assert _get("http://assemblyai.invalid/v2/transcript/abc") == 200
    assert proxy.lines == ["GET http://assemblyai.invalid/v2/transcript/abc HTTP/1.1"]


def _proxy_except_loopback(monkeypatch, proxy: _Recorder) -> None:
    """A proxy with an exception: the session keeps requests' own lookup (trust_env)."""
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


def test_no_proxy_exceptions_are_honoured(servers, monkeypatch) -> None:
    proxy, direct = servers
    _proxy_except_loopback(monkeypatch, proxy)
    assert _get(f"{direct.url}/v2/transcript/abc") == 200
    assert direct.lines == ["GET /v2/transcript/abc HTTP/1.1"]
    assert proxy.lines == []


def test_without_a_proxy_requests_go_direct(servers) -> None:
    proxy, direct = servers
    assert _get(f"{direct.url}/v1/models") == 200
    assert direct.lines == ["GET /v1/models HTTP/1.1"]
    assert proxy.lines == []


def test_no_sleep_after_the_last_attempt(monkeypatch):
    """A failed request raises as soon as its last attempt fails: a backoff
    after it would only eat the caller's 10-second delivery budget."""
    from local.stack import free_port

    slept: list[float] = []
    monkeypatch.setattr(transport.time, "sleep", slept.append)
    url = f"http://127.0.0.1:{free_port()}/nothing-listens-here"
    with pytest.raises(transport.TransportError):
        transport.request("GET", url, deadline=time.monotonic() + 60, read_timeout=1, attempts=3)
    assert len(slept) == 2, f"slept {len(slept)} times for 3 attempts"


def test_each_request_carries_the_sessions_headers_and_its_own(servers) -> None:
    """The exchange skips Session.request (for CPU), not what it sends: the
    session's headers (gzip accepted) with the call's own, on one pooled
    connection; and None removes a header, as requests' merge does."""
    _, direct = servers
    for _ in range(2):
        answer = transport.request("GET", f"{direct.url}/v2/transcript/abc",
                                   deadline=time.monotonic() + 10, read_timeout=5,
                                   headers={"Authorization": "key", "Accept": None})  # fmt: skip
        assert answer.json() == {"ok": True}
    sent = direct.headers[-1]
    assert sent["Authorization"] == "key"
    assert "gzip" in sent["Accept-Encoding"]
    assert sent["User-Agent"].startswith("python-requests/")
    assert "Accept" not in sent
    assert len(direct.peers) == 1, "each answer is read and its connection reused"


@pytest.mark.parametrize("path", ["adapter", "requests' own"])
def test_a_redirect_is_returned_not_followed(servers, monkeypatch, path: str) -> None:
    """AssemblyAI's API never redirects: a 3xx goes back to the caller as
    it came, and the key is never sent to another address, on the fast
    path and on requests' own (a proxy with NO_PROXY) alike."""
    proxy, direct = servers
    if path == "requests' own":
        _proxy_except_loopback(monkeypatch, proxy)
    assert _get(f"{direct.url}/moved") == 302
    assert direct.lines == ["GET /moved HTTP/1.1"]
