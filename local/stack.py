"""Start and stop the local stack: the Firestore server, the AssemblyAI
stand-in and the functions, each a real process on a loopback port.

Used by the tests, the run command and the benchmarks, so all three run
the product the same way. Every process started here is stopped by
Stack.close() (also on errors and Ctrl-C), and its output goes to a log
file under the stack's directory for post-mortems.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / "local"
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    """Return once something accepts connections on the port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.005)
    raise TimeoutError(f"nothing listened on port {port} within {timeout} s")


def wait_until(
    predicate: Callable[[], object], timeout: float = 30, what: str = "condition"
) -> object:
    """Poll a cheap local condition (never an upstream API) until true; its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


class Process:
    """One child process with its log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path, port: int):
        self.name = name
        self.args = args
        self.env = env
        self.port = port
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> Process:
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a signal to the group reaches workers too
        )
        log.close()
        try:
            wait_for_port(self.port, self.proc, timeout)
        except Exception:
            self.stop()
            raise
        return self

    # gunicorn (functions-framework, the stand-in) waits for open keep-alive
    # connections on SIGTERM; SIGQUIT is its quick shutdown. Tests need the
    # process gone, not a graceful drain (kill() is the crash).
    quick_stop = signal.SIGTERM

    def stop(self, sig: int | None = None) -> None:
        sig = sig or self.quick_stop
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def kill(self) -> None:
        """Die at once, mid-request, as a crashed instance does."""
        self.stop(signal.SIGKILL)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Stack:
    """The emulator, the stand-in and any number of function processes."""

    # Every stack made in this process, so a test session can check that
    # none of their secrets ever reached a log.
    instances: list[Stack] = []

    def __init__(self, log_dir: Path | None = None, project: str = "demo-meeting-actions"):
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="meeting-actions-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.project = project
        self.processes: list[Process] = []
        self.firestore: Process | None = None
        self.standin: Process | None = None
        self.api_key = "local-test-key-" + os.urandom(8).hex()
        self.webhook_secret = "local-webhook-secret-" + os.urandom(8).hex()
        Stack.instances.append(self)

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ASSEMBLYAI_", "WEBHOOK_"))}
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _spawn(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        port: int,
        timeout: float = 30,
        quick_stop: int = signal.SIGTERM,
    ) -> Process:
        proc = Process(name, args, env, self.log_dir, port)
        proc.quick_stop = quick_stop
        self.processes.append(proc)
        return proc.start(timeout)

    def start_firestore(self, port: int | None = None) -> Process:
        port = port or free_port()
        env = dict(
            self._base_env(), FIRESTORE_STATS_FILE=str(self.log_dir / "firestore-stats.json")
        )
        self.firestore = self._spawn(
            "firestore", ["node", str(LOCAL / "firestore" / "server.mjs"), str(port)], env, port
        )
        return self.firestore

    def firestore_stats(self) -> dict:
        """Documents written, read by key, and queries run so far."""
        path = self.log_dir / "firestore-stats.json"
        path.unlink(missing_ok=True)
        os.kill(self.firestore.proc.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 5
        while not path.exists() or not path.read_text():
            if time.monotonic() > deadline:
                raise TimeoutError("the Firestore server wrote no stats")
            time.sleep(0.02)
        return json.loads(path.read_text())

    def start_standin(self, port: int | None = None, *options: str) -> Process:
        port = port or free_port()
        env = self._base_env()
        env["PYTHONPATH"] = str(LOCAL)
        args = [
            sys.executable,
            "-m",
            "assemblyai_standin",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--api-key",
            self.api_key,
            *options,
        ]
        self.standin = self._spawn("assemblyai-standin", args, env, port, quick_stop=signal.SIGQUIT)
        return self.standin

    def upload_sample(self, name: str = "weekly-sync") -> str:
        """Upload a shipped sample to the stand-in's /v2/upload; its upload_url."""
        with (LOCAL / "samples" / f"{name}.wav").open("rb") as f:
            answer = requests.post(
                f"{self.standin.url}/v2/upload",
                data=f,
                headers={"Authorization": self.api_key},
                timeout=30,
            )
        answer.raise_for_status()
        return answer.json()["upload_url"]

    def function_env(self, **overrides: str) -> dict[str, str]:
        """The environment a deployed function would get, pointed at the stand-ins."""
        assert self.firestore and self.standin, "start the emulator and the stand-in first"
        env = self._base_env()
        env.update(
            GOOGLE_CLOUD_PROJECT=self.project,
            FIRESTORE_EMULATOR_HOST=f"127.0.0.1:{self.firestore.port}",
            ASSEMBLYAI_API_KEY=self.api_key,
            WEBHOOK_SECRET=self.webhook_secret,
            ASSEMBLYAI_BASE_URL=self.standin.url,
            LLM_GATEWAY_BASE_URL=f"{self.standin.url}/v1",
        )
        env.update(overrides)
        return env

    def start_function(
        self,
        target: str,
        env: dict[str, str],
        port: int | None = None,
        signature_type: str | None = None,
        name: str | None = None,
        source: Path = ROOT / "main.py",
    ) -> Process:
        port = port or free_port()
        args = [
            str(VENV_BIN / "functions-framework"),
            "--target",
            target,
            "--source",
            str(source),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        if signature_type:
            args += ["--signature-type", signature_type]
        return self._spawn(name or target, args, env, port, quick_stop=signal.SIGQUIT)

    def restart(self, proc: Process) -> Process:
        proc.stop()
        return proc.start()

    def close(self) -> None:
        """Stop every process, all at once: each is told, then each is waited for."""
        with concurrent.futures.ThreadPoolExecutor(max(1, len(self.processes))) as pool:
            list(pool.map(lambda p: p.stop(), reversed(self.processes)))
        self.processes.clear()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def pipeline_stack(
    log_dir: Path | None = None, standin_options: tuple[str, ...] = (), **env: str
) -> Iterator[tuple[Stack, Process, Process]]:
    """Emulator, stand-in, webhook and submit function, wired together."""
    with Stack(log_dir) as stack:
        stack.start_firestore()
        stack.start_standin(None, *standin_options)
        hook_port = free_port()
        fn_env = stack.function_env(WEBHOOK_URL=f"http://127.0.0.1:{hook_port}/", **env)
        webhook = stack.start_function("assemblyai_webhook", fn_env, hook_port)
        submit = stack.start_function("submit_transcription", fn_env)
        yield stack, submit, webhook


def get_json(url: str, timeout: float = 10) -> dict:
    response = requests.get(url, timeout=timeout)
    response.raise_for_status()
    return response.json()


class StandInControl:
    """The AssemblyAI stand-in's control API (not part of AssemblyAI's)."""

    def __init__(self, url: str):
        self.url = url.rstrip("/") + "/_standin"

    def _post(self, path: str, body: dict | None = None) -> dict:
        response = requests.post(self.url + path, json=body or {}, timeout=30)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self._post("/reset")

    def configure(self, **settings: float) -> None:
        self._post("/config", settings)

    def fault(self, **rule: object) -> None:
        self._post("/faults", {"rules": [rule]})

    def clear_faults(self) -> None:
        requests.delete(self.url + "/faults", timeout=10).raise_for_status()

    def transcript(self, transcript_id: str) -> dict:
        return get_json(f"{self.url}/transcripts/{transcript_id}")

    def transcripts(self) -> dict[str, dict]:
        """Status, webhook_url, webhook_finished and attempt_seconds of every transcript."""
        return get_json(f"{self.url}/transcripts", timeout=60)

    def deliver(self, transcript_id: str, copies: int = 1, body: dict | None = None) -> dict:
        payload: dict = {"copies": copies}
        if body is not None:
            payload["body"] = body
        return self._post(f"/transcripts/{transcript_id}/deliver", payload)

    def requests(self) -> list[dict]:
        return get_json(self.url + "/requests")["requests"]

    def stats(self) -> dict:
        return get_json(self.url + "/stats")


def service_account_key(project: str) -> dict:
    """A service account key made on the spot, so URLs are signed for real
    (with no network, it can sign but never fetch a token)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return {
        "type": "service_account",
        "project_id": project,
        "private_key_id": "local",
        "private_key": pem.decode(),
        "client_email": f"meeting-actions@{project}.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "http://127.0.0.1:9/token",
    }
