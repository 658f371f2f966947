"""The signed notification: URL checks, the address check at send time,
Standard Webhooks signatures a real receiver verifies, and which failures
are worth another attempt.

Traffic only ever goes to loopback receivers in this process: refused
addresses are checked by resolution (literal IPs, or a patched
getaddrinfo) with the exchange replaced by one that fails the test.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import ipaddress
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from local import notify_receiver
from local.stack import free_port
from meeting_actions import notify, notify_address, notify_http

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
TID = "tr_0123456789"


class Receiver(http.server.ThreadingHTTPServer):
    """Answers each POST with the next scripted status (then 200) and keeps
    what it got: headers, raw body, and whether the signature verified."""

    def __init__(self, statuses: tuple[int, ...] = (), ssl_context: ssl.SSLContext | None = None):
        self.statuses = list(statuses)
        self.got: list[dict[str, Any]] = []
        self.release = threading.Event()  # a "hang" status waits on this
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = dict(self.headers.items())
                try:
                    verified = Webhook(SECRET).verify(body, headers)
                except Exception as exc:  # noqa: BLE001 - recorded for the assertion
                    verified = exc
                receiver.got.append(
                    {"path": self.path, "headers": headers, "body": body, "verified": verified}
                )
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 0:  # hang until the test ends
                    receiver.release.wait(30)
                    return
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/redirected")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.daemon_threads = True
        if ssl_context is not None:
            self.socket = ssl_context.wrap_socket(self.socket, server_side=True)
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def close(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def make_receiver() -> Iterator:
    made: list[Receiver] = []

    def make(*statuses: int, ssl_context: ssl.SSLContext | None = None) -> Receiver:
        made.append(Receiver(statuses, ssl_context))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def no_traffic(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to send fails the test."""

    def forbidden(*_args: object) -> None:
        pytest.fail("a refused notification sent traffic")

    monkeypatch.setattr(notify_http, "exchange", forbidden)


def fake_dns(monkeypatch: pytest.MonkeyPatch, table: dict[str, list[str]]) -> list[str]:
    """Resolve names from `table` (IP literals as usual); the names looked up."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            ipaddress.ip_address(host)
        except ValueError:
            asked.append(host)
            if host not in table:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
            return [
                (
                    socket.AF_INET6 if ":" in ip else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (ip, port, 0, 0) if ":" in ip else (ip, port),
                )
                for ip in table[host]
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def body(version: int = 1, status: str = "completed") -> dict[str, Any]:
    return notify.payload(
        TID,
        status,
        document=f"meetings/{TID}",
        version=version,
        action_items=[{"task": "Send the deck", "owner": "Ana", "due": None}],
        action_items_text="- Send the deck (Ana)",
        error=None if status == "completed" else "the LLM Gateway failed",
        timestamp=dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC),
    )


# --- submit-time URL check ---------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/meeting-done",
        "https://hooks.example.com:8443/a/b?token=x",
        "https://93.184.216.34/hook",
    ],
)
def test_public_https_urls_are_accepted(url: str) -> None:
    assert notify_address.check_notify_url(url, allow_local=False) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8099/",
        "http://127.0.0.1:8099/x",
        "http://[::1]:8099/",
        "https://localhost/",
    ],
)
def test_local_urls_only_when_allowed(url: str) -> None:
    assert notify_address.check_notify_url(url, allow_local=True) == url
    with pytest.raises(ValueError, match="this machine"):
        notify_address.check_notify_url(url, allow_local=False)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://hooks.example.com/", "must use https"),
        ("ftp://hooks.example.com/", "https URL"),
        ("https://user:pw@hooks.example.com/", "user name or password"),
        ("https://hooks.example.com/a b", "whitespace"),
        ("https://hooks.example.com/\n", "whitespace"),
        ("https://hooks.example.com:99999/", "not a valid URL"),
        ("https:///path", "no host"),
        ("https://hooks.example.com/" + "a" * 2100, "longer than 2048"),
        ("", "non-empty"),
        ("https://10.0.0.1/", "private"),
        ("https://169.254.169.254/computeMetadata/v1/", "metadata server"),
        ("https://[fd00:ec2::254]/", "metadata server"),
        ("https://metadata.google.internal/", "metadata server"),
        ("https://0.0.0.0/", "unspecified"),
        ("https://[::ffff:192.168.1.1]/", "private"),
    ],
)
def test_bad_urls_are_refused_with_a_readable_message(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        notify_address.check_notify_url(url, allow_local=True)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://2130706433/", "127.0.0.1, a loopback address written another way"),
        ("https://0x7f.1/", "127.0.0.1, a loopback address"),
        ("https://127.1/", "127.0.0.1, a loopback address"),
        ("https://0177.0.0.1/", "127.0.0.1, a loopback address"),
        ("https://10.1/", "10.0.0.1, a private address"),
        ("https://1572395042/", "93.184.216.34 written another way"),  # public: still refused
        ("https://1.2.3.4.5/", "ends in a number but is not an IPv4 address"),
        ("https://hooks.example.999999999999/", "ends in a number"),
    ],
)
def test_numeric_host_forms_are_refused_at_submit(url: str, message: str) -> None:
    """Resolvers read these as IPv4 addresses (inet_aton), so the submit
    check judges them as addresses, not names, and asks for the plain form."""
    with pytest.raises(ValueError, match=message):
        notify_address.check_notify_url(url, allow_local=False)


@pytest.mark.parametrize(
    "url", ["https://93.184.216.34/", "https://hooks.example.com/", "https://a.b.123abc/"]
)
def test_plain_addresses_and_names_ending_in_letters_pass(url: str) -> None:
    assert notify_address.check_notify_url(url, allow_local=False) == url


def test_http_to_a_non_local_host_is_refused_even_locally() -> None:
    with pytest.raises(ValueError, match="https, or http to localhost"):
        notify_address.check_notify_url("http://192.0.2.10/", allow_local=True)


# --- send-time address check -------------------------------------------------


@pytest.mark.parametrize(
    ("addresses", "reason"),
    [
        (["10.0.0.1"], "private"),
        (["93.184.216.34", "192.168.0.7"], "private"),  # any address, not just the first
        (["169.254.169.254"], "metadata server"),
        (["fd00:ec2::254"], "metadata server"),
        (["169.254.10.1"], "link-local"),
        (["fe80::1"], "link-local"),
        (["127.0.0.1"], "loopback"),
        (["::1"], "loopback"),
        (["::ffff:127.0.0.1"], "loopback"),
        (["64:ff9b::a00:1"], "private"),  # NAT64 of 10.0.0.1
        (["100.64.0.1"], "non-public"),
        (["224.0.0.1"], "multicast"),
        (["240.0.0.1"], "reserved"),
        (["0.0.0.0"], "unspecified"),
    ],
)
def test_names_resolving_to_non_public_addresses_are_refused(
    monkeypatch: pytest.MonkeyPatch, addresses: list[str], reason: str
) -> None:
    fake_dns(monkeypatch, {"hooks.example.com": addresses})
    with pytest.raises(notify_address.RefusedURL, match=reason):
        notify_address.resolve_allowed("https://hooks.example.com/done", allow_local=False)


def test_public_addresses_are_returned_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {"hooks.example.com": ["2606:2800:220:1::1", "93.184.216.34"]})
    got = notify_address.resolve_allowed("https://hooks.example.com/done", allow_local=False)
    assert got == ["2606:2800:220:1::1", "93.184.216.34"]


def test_local_runs_may_reach_loopback_and_nothing_else_private(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_dns(monkeypatch, {"localhost": ["127.0.0.1", "::1"], "hooks.test": ["10.1.2.3"]})
    assert notify_address.resolve_allowed("http://localhost:9/", allow_local=True) == [
        "127.0.0.1",
        "::1",
    ]
    with pytest.raises(notify_address.RefusedURL, match="private"):
        notify_address.resolve_allowed("https://hooks.test/", allow_local=True)
    with pytest.raises(notify_address.RefusedURL, match="metadata"):
        notify_address.resolve_allowed("https://169.254.169.254/", allow_local=True)


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.1/hook",
        "https://169.254.169.254/computeMetadata/v1/",
        "https://127.0.0.1/hook",
        "http://127.0.0.1:9/hook",
        "https://hooks.example.com/hook?token=abc",  # resolves to 10.0.0.1 below
    ],
)
def test_refused_addresses_send_nothing_and_are_permanent(
    monkeypatch: pytest.MonkeyPatch, no_traffic: None, url: str
) -> None:
    fake_dns(monkeypatch, {"hooks.example.com": ["10.0.0.1"]})
    result = notify.send(url, body(), notify.message_id(TID, 1), SECRET, allow_local=False)
    assert result == notify.Delivery(False, None, result.error, retryable=False)
    assert "refused" in result.error or "may not point" in result.error
    assert "token=abc" not in result.error


# --- real deliveries to a loopback receiver ----------------------------------


def test_the_receiver_verifies_the_signature(receiver: Receiver) -> None:
    msg_id = notify.message_id(TID, 1)
    result = notify.send(
        f"http://127.0.0.1:{receiver.port}/done", body(), msg_id, SECRET, allow_local=True
    )
    assert result == notify.Delivery(True, 200, None, False)
    (got,) = receiver.got
    assert got["verified"] == body()
    assert got["headers"]["webhook-id"] == msg_id
    assert got["headers"]["webhook-signature"].startswith("v1,")
    assert got["headers"]["Content-Type"] == "application/json"
    assert got["headers"]["Host"] == f"127.0.0.1:{receiver.port}"
    # A verifier with any other secret refuses it.
    other = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    with pytest.raises(Exception, match="signature"):
        Webhook(other).verify(got["body"], got["headers"])


def test_localhost_tries_each_address_until_one_answers(
    monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    # ::1 first: nothing listens there (the receiver is on 127.0.0.1 only).
    fake_dns(monkeypatch, {"localhost": ["::1", "127.0.0.1"]})
    url = f"http://localhost:{receiver.port}/done"
    result = notify.send(url, body(), notify.message_id(TID, 1), SECRET, allow_local=True)
    assert result.delivered, result
    assert receiver.got[0]["headers"]["Host"] == f"localhost:{receiver.port}"


def test_500_then_200_is_retryable_with_one_stable_id(make_receiver) -> None:
    r = make_receiver(500, 503)
    url = f"http://127.0.0.1:{r.port}/done?token=abc"
    msg_id = notify.message_id(TID, 1)
    results = [notify.send(url, body(), msg_id, SECRET, allow_local=True) for _ in range(3)]
    assert [(x.delivered, x.status, x.retryable) for x in results] == [
        (False, 500, True),
        (False, 503, True),
        (True, 200, False),
    ]
    assert results[0].error == f"http://127.0.0.1:{r.port}/done: the receiver answered 500"
    assert {g["headers"]["webhook-id"] for g in r.got} == {msg_id}
    assert all(g["verified"] == body() for g in r.got)
    # A regenerated result is a new message.
    assert notify.message_id(TID, 2) != msg_id


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(408, True), (429, True), (404, True), (401, True), (302, True), (410, False)],
)
def test_other_answers(make_receiver, status: int, retryable: bool) -> None:
    r = make_receiver(status)
    result = notify.send(
        f"http://127.0.0.1:{r.port}/done", body(), "msg_x", SECRET, allow_local=True
    )
    assert (result.delivered, result.status, result.retryable) == (False, status, retryable)
    assert len(r.got) == 1  # a redirect is not followed
    if status == 302:
        assert "redirects are not followed" in result.error


def test_a_receiver_that_does_not_answer_in_time_is_retryable(make_receiver) -> None:
    r = make_receiver(0)
    result = notify.send(
        f"http://127.0.0.1:{r.port}/done", body(), "msg_x", SECRET, allow_local=True, timeout=0.3
    )
    assert (result.delivered, result.status, result.retryable) == (False, None, True)
    assert "no answer within 0.3 s" in result.error


def test_a_trickling_receiver_holds_an_attempt_no_longer_than_its_timeout() -> None:
    """One deadline per attempt, not per read: a receiver that answers one
    byte every 0.3 s (its whole answer would take about 30 s) is given up
    on at the timeout. (Before: every byte came within the 1 s read
    timeout, and the attempt lasted the whole trickle.)"""
    server, url, received = notify_receiver.start(SECRET, quiet=True, trickle=0.3)
    try:
        started = time.monotonic()
        result = notify.send(url, body(), "msg_slow", SECRET, allow_local=True, timeout=1.0)
        elapsed = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    assert elapsed < 1.5, f"one attempt took {elapsed:.1f} s with a 1 s timeout"
    assert (result.delivered, result.status, result.retryable) == (False, None, True)
    assert "no answer within 1 s" in result.error
    assert len(received) == 1, "the receiver had the notification; its answer was too slow"


def test_a_slow_name_lookup_counts_against_the_attempts_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = socket.getaddrinfo

    def slow(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host == "slow.example.com":
            time.sleep(3)  # a resolver that takes its time
            return real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    started = time.monotonic()
    result = notify.send("https://slow.example.com/x", body(), "msg_x", SECRET, timeout=0.5)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"the lookup held the attempt {elapsed:.1f} s with a 0.5 s timeout"
    assert (result.delivered, result.retryable) == (False, True)
    assert "did not resolve within 0.5 s" in result.error


def test_a_receiver_that_is_down_is_retryable() -> None:
    url = f"http://127.0.0.1:{free_port()}/done"
    result = notify.send(url, body(), "msg_x", SECRET, allow_local=True)
    assert (result.delivered, result.status, result.retryable) == (False, None, True)
    assert "refused or failed" in result.error


def test_a_name_that_does_not_resolve_is_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {})
    result = notify.send("https://gone.example.com/x", body(), "msg_x", SECRET)
    assert (result.delivered, result.retryable) == (False, True)
    assert "did not resolve" in result.error


@pytest.mark.parametrize("secret", ["", "not-a-whsec-secret", "whsec_"])
def test_a_bad_secret_is_reported_without_quoting_it(
    receiver: Receiver, capsys: pytest.CaptureFixture[str], secret: str
) -> None:
    result = notify.send(
        f"http://127.0.0.1:{receiver.port}/", body(), "msg_x", secret, allow_local=True
    )
    assert not result.delivered and result.retryable
    assert "NOTIFY_SIGNING_SECRET" in result.error
    assert receiver.got == []
    if secret.removeprefix("whsec_"):
        assert secret not in result.error
        assert secret not in capsys.readouterr().out


def test_the_secret_never_appears_in_errors_or_logs(
    make_receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    r = make_receiver(500, 0)
    base = f"http://127.0.0.1:{r.port}/done?sig={SECRET}"
    results = [
        notify.send(base, body(), "msg_x", SECRET, allow_local=True, timeout=0.3),
        notify.send(base, body(), "msg_x", SECRET, allow_local=True, timeout=0.3),
        notify.send(base, body(), "msg_x", SECRET, allow_local=False),
    ]
    assert [x.retryable for x in results] == [True, True, False]
    out = capsys.readouterr().out
    secret_key = SECRET.removeprefix("whsec_")
    for text in [out, *(x.error for x in results)]:
        assert secret_key not in text
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["message"] for line in lines] == ["notification not delivered"] * 3
    assert all("sig=" not in line["url"] for line in lines)


# --- https: the checked address is the one dialled ---------------------------


def _tls_context(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, Path]:
    """A server context with a self-signed certificate for `name`, and the
    certificate's path for the client to trust."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = tmp_path / f"{name}.pem"
    key_path = tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path


@pytest.fixture
def trust(monkeypatch: pytest.MonkeyPatch) -> Iterator:
    def use(cert_path: Path) -> None:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert_path))
        notify_http._tls_context.cache_clear()

    yield use
    notify_http._tls_context.cache_clear()


def test_https_dials_the_checked_address_and_verifies_the_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, make_receiver, trust
) -> None:
    context, cert_path = _tls_context(tmp_path, "hooks.test")
    seen_sni: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: seen_sni.append(name)
    r = make_receiver(ssl_context=context)
    trust(cert_path)
    asked = fake_dns(monkeypatch, {"hooks.test": ["127.0.0.1"]})

    url = f"https://hooks.test:{r.port}/done"
    result = notify.send(url, body(), "msg_tls", SECRET, allow_local=True)

    assert result.delivered, result
    assert asked == ["hooks.test"]  # resolved once, by the check: no second lookup to rebind
    assert seen_sni == ["hooks.test"]
    assert r.got[0]["headers"]["Host"] == f"hooks.test:{r.port}"
    assert r.got[0]["verified"] == body()


def test_https_with_a_certificate_for_another_name_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, make_receiver, trust
) -> None:
    context, cert_path = _tls_context(tmp_path, "other.test")
    r = make_receiver(ssl_context=context)
    trust(cert_path)
    fake_dns(monkeypatch, {"hooks.test": ["127.0.0.1"]})
    result = notify.send(
        f"https://hooks.test:{r.port}/done", body(), "msg_tls", SECRET, allow_local=True
    )
    assert (result.delivered, result.retryable) == (False, True)
    assert "TLS failed" in result.error
    assert r.got == []


# --- ids, backoff, payload ---------------------------------------------------


def test_message_ids_are_stable_per_meeting_and_version() -> None:
    first = notify.message_id(TID, 3)
    assert first == notify.message_id(TID, 3)
    assert first.startswith("msg_") and len(first) == 36
    assert len({first, notify.message_id(TID, 4), notify.message_id("tr_other", 3)}) == 3


def test_backoff_schedule_is_bounded() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    gaps = [notify.next_attempt_at(n, now) - now for n in range(0, notify.MAX_ATTEMPTS + 3)]
    minutes = [g.total_seconds() / 60 for g in gaps]
    assert minutes[:8] == [0, 0.5, 2, 10, 30, 60, 120, 240]
    assert minutes[8:] == [240, 240, 240]
    assert notify.MAX_ATTEMPTS == 8
    # From the first failure to the last attempt: under eight hours.
    assert sum(minutes[1 : notify.MAX_ATTEMPTS]) == 462.5


def test_payload_shape() -> None:
    when = dt.datetime(2026, 3, 1, 13, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    done = notify.payload(TID, "completed", document="meetings/x", version=2, timestamp=when)
    assert done == {
        "type": "meeting.completed",
        "transcript_id": TID,
        "status": "completed",
        "action_items": [],
        "action_items_text": None,
        "error": None,
        "document": "meetings/x",
        "version": 2,
        "timestamp": "2026-03-01T12:00:00Z",
    }
    failed = body(status="error")
    assert (failed["type"], failed["error"]) == ("meeting.error", "the LLM Gateway failed")
    with pytest.raises(ValueError, match="completed or error"):
        notify.payload(TID, "generating", document="meetings/x", version=1)


def test_datetimes_in_items_are_sent_as_iso_strings(receiver: Receiver) -> None:
    data = body()
    data["action_items"][0]["due"] = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    result = notify.send(
        f"http://127.0.0.1:{receiver.port}/", data, "msg_x", SECRET, allow_local=True
    )
    assert result.delivered
    assert receiver.got[0]["verified"]["action_items"][0]["due"] == "2026-03-02T00:00:00+00:00"


# --- the local receiver (local/notify_receiver.py) ---------------------------


def test_local_receiver_verifies_prints_and_rejects(capsys: pytest.CaptureFixture[str]) -> None:
    server, url, received = notify_receiver.start(SECRET)
    try:
        msg_id = notify.message_id(TID, 1)
        assert notify.send(url, body(), msg_id, SECRET, allow_local=True).delivered
        assert notify.send(url, body(), msg_id, SECRET, allow_local=True).delivered
        other = "whsec_" + base64.b64encode(os.urandom(24)).decode()
        refused = notify.send(url, body(), "msg_forged", other, allow_local=True)
        assert (refused.status, refused.retryable) == (401, True)
    finally:
        server.shutdown()
        server.server_close()
    assert [(r["id"], r["duplicate"]) for r in received] == [(msg_id, False), (msg_id, True)]
    assert received[0]["payload"] == body()
    out = capsys.readouterr().out
    assert f"notification {msg_id}: meeting.completed {TID} status=completed items=1" in out
    assert "rejected a notification" in out


def test_send_never_raises(monkeypatch: pytest.MonkeyPatch, no_traffic: None) -> None:
    data = body()
    data["action_items"] = [object()]
    result = notify.send("https://93.184.216.34/x", data, "msg_x", SECRET)
    assert (result.delivered, result.retryable) == (False, False)
    assert "not JSON" in result.error

    def broken(*_args: object) -> None:
        raise RuntimeError("https://hooks.example.com/x?token=abc exploded")

    monkeypatch.setattr(notify_address, "resolve_allowed", broken)
    result = notify.send("https://hooks.example.com/x?token=abc", body(), "msg_x", SECRET)
    assert result == notify.Delivery(
        False, None, "https://hooks.example.com/x: unexpected RuntimeError", True
    )
