"""The local stack for the tests: one Firestore server and one AssemblyAI
stand-in for the session, and function processes per configuration, all
real servers on loopback ports, all stopped at the end.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from local import stack as local_stack

SAMPLES = local_stack.LOCAL / "samples"

# AssemblyAI's delivery policy with shorter gaps, so retries fit in a test.
STANDIN_OPTIONS = (
    "--transcription-seconds", "0.2",
    "--webhook-timeout", "10",
    "--webhook-interval", "0.5",
    "--webhook-attempts", "10",
    # The gateway's real limit (30 a minute) is switched on by the tests
    # about it; the rest of the suite would trip it by volume alone.
    "--gateway-rpm", "100000",
)  # fmt: skip


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_stack.Stack]:
    with local_stack.Stack(tmp_path_factory.mktemp("stack-logs")) as s:
        s.start_firestore()
        s.start_standin(None, *STANDIN_OPTIONS)
        os.environ["FIRESTORE_EMULATOR_HOST"] = f"127.0.0.1:{s.firestore.port}"
        os.environ["GOOGLE_CLOUD_PROJECT"] = s.project
        yield s


class Functions:
    """A submit and a webhook function sharing one configuration."""

    def __init__(self, stack: local_stack.Stack, env: dict[str, str]):
        hook_port = local_stack.free_port()
        self.env = stack.function_env(WEBHOOK_URL=f"http://127.0.0.1:{hook_port}/", **env)
        self.collection = self.env.get("FIRESTORE_COLLECTION", "meetings")
        # Log names say which settings, not their values (a value may be a secret).
        digest = hashlib.sha256(repr(sorted(env.items())).encode()).hexdigest()[:6]
        name = "-".join(sorted(env)) + f"-{digest}" if env else "default"
        self.webhook = stack.start_function(
            "assemblyai_webhook", self.env, hook_port, name=f"webhook-{name}"
        )
        self.submit = stack.start_function("submit_transcription", self.env, name=f"submit-{name}")
        self.recover = stack.start_function("recover_meetings", self.env, name=f"recover-{name}")
        self.stack = stack

    def submit_json(self, body: dict, **kw) -> requests.Response:
        return requests.post(self.submit.url, json=body, timeout=30, **kw)

    def call_webhook(self, body, secret: str | None, **kw) -> requests.Response:
        headers = kw.pop("headers", {})
        if secret is not None:
            headers["X-Webhook-Secret"] = secret
        data = body if isinstance(body, (bytes, str)) else None
        return requests.post(
            self.webhook.url,
            json=None if data is not None else body,
            data=data,
            headers=headers,
            timeout=30,
            **kw,
        )


@pytest.fixture(scope="session")
def make_functions(stack: local_stack.Stack) -> Callable[..., Functions]:
    """Function processes per configuration, started once and reused."""
    started: dict[tuple, Functions] = {}

    def make(**env: str) -> Functions:
        key = tuple(sorted(env.items()))
        if key not in started:
            started[key] = Functions(stack, env)
        return started[key]

    return make


@pytest.fixture
def functions(make_functions) -> Functions:
    return make_functions()


@pytest.fixture
def standin(stack: local_stack.Stack) -> Iterator[local_stack.StandInControl]:
    control = local_stack.StandInControl(stack.standin.url)
    control.clear_faults()
    yield control
    control.clear_faults()


@pytest.fixture(scope="session")
def db(stack):
    from google.cloud import firestore

    return firestore.Client(project=stack.project)


def upload_sample(stack: local_stack.Stack, name: str = "weekly-sync") -> str:
    """Upload a shipped sample to the stand-in, as the run command does."""
    return stack.upload_sample(name)


def wait_for_document(db, path: str, statuses=("completed", "error"), timeout: float = 60) -> dict:
    """Wait until the document reaches a status, reading it every 50 ms.

    Not with a listener: Google's emulator fails a commit with CANCELLED
    when a listener on its document closes while the commit notifies it
    (tests/test_harness.py), so a test that stopped watching made the
    product's next write fail. A read disturbs nothing.
    """
    ref = db.document(path)
    latest: dict = {}

    def reached() -> dict | None:
        latest.clear()
        latest.update(ref.get().to_dict() or {})
        return dict(latest) if latest.get("status") in statuses else None

    try:
        return wait_until(reached, timeout, f"{path} to reach {statuses}")
    except TimeoutError:
        raise AssertionError(f"{path} stayed {latest.get('status')!r} for {timeout} s") from None


wait_until = local_stack.wait_until


def process_logs(stack: local_stack.Stack) -> str:
    return "\n".join(
        Path(p.log_path).read_text(errors="replace")
        for p in stack.processes
        if Path(p.log_path).exists()
    )


@pytest.fixture(scope="session")
def storage_events_fn(stack, make_functions, tmp_path_factory):
    """transcribe_uploaded_audio with no storage emulator: for events whose
    objects need not exist."""
    import json as _json

    key = tmp_path_factory.mktemp("fuzz-key") / "sa.json"
    key.write_text(_json.dumps(local_stack.service_account_key(stack.project)))
    env = dict(
        make_functions().env,
        GOOGLE_APPLICATION_CREDENTIALS=str(key),
        FIRESTORE_COLLECTION="fuzz-events",
    )
    return stack.start_function(
        "transcribe_uploaded_audio", env, signature_type="cloudevent", name="storage-fuzz"
    )


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log():
    """After the whole session: no process log holds a key or a secret."""
    yield
    for s in local_stack.Stack.instances:
        secrets = (s.api_key, s.webhook_secret)
        for log in s.log_dir.glob("*.log"):
            text = log.read_text(errors="replace")
            leaked = [
                n for n, v in zip(("API key", "webhook secret"), secrets, strict=True) if v in text
            ]
            assert not leaked, f"{log.name} contains the {', '.join(leaked)}"
