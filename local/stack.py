"""Start and stop the local stack: Google's Firestore emulator, the AssemblyAI
stand-in and the functions, each a real process on a loopback port.

Used by the tests, the run command and the benchmarks, so all three run
the product the same way. Every process started here is stopped by
Stack.close() (also on errors and Ctrl-C), and its output goes to a log
file under the stack's directory for post-mortems.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import re
import shutil
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


class EmulatorMissing(RuntimeError):
    """Google's Firestore emulator, or the Java it runs on, is not installed."""


# The Firestore emulator's own launcher (what `gcloud emulators firestore
# start` runs, without gcloud's own start-up), under the Cloud SDK's root.
EMULATOR_LAUNCHER = Path("platform", "cloud-firestore-emulator", "cloud_firestore_emulator")
SDK_ROOTS = (
    "/usr/lib/google-cloud-sdk",  # Debian and Ubuntu packages
    "/usr/share/google-cloud-sdk",  # RPM packages
    "/snap/google-cloud-cli/current",
    "/opt/google-cloud-sdk",
    "~/google-cloud-sdk",  # the interactive installer
)
MIN_JAVA = 11


def _sdk_roots() -> Iterator[Path]:
    """Where the Cloud SDK may be, cheapest guesses first."""
    gcloud = shutil.which("gcloud")
    if gcloud:
        yield Path(gcloud).resolve().parent.parent  # <root>/bin/gcloud
    for root in SDK_ROOTS:
        yield Path(root).expanduser()
    if gcloud:  # a few seconds: only when the usual places have no emulator
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            answer = subprocess.run(
                [gcloud, "info", "--format=value(installation.sdk_root)"],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            if answer.stdout.strip():
                yield Path(answer.stdout.strip())


def _sudo() -> str:
    return "" if os.geteuid() == 0 else "sudo "


def _java_version(java: str) -> int | None:
    """The major version of `java` (8 for 1.8), or None if it does not run."""
    try:
        answer = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r'version "(?:1\.)?(\d+)', answer.stderr + answer.stdout)
    return int(found.group(1)) if found else None


@functools.cache
def firestore_emulator() -> Path:
    """The Firestore emulator's launcher, once it and Java 11+ are found;
    else EmulatorMissing, saying the one command that installs what is missing."""
    launcher = next(
        (r / EMULATOR_LAUNCHER for r in _sdk_roots() if (r / EMULATOR_LAUNCHER).is_file()), None
    )
    if launcher is None:
        gcloud = shutil.which("gcloud")
        packaged = not gcloud or Path(gcloud).resolve().is_relative_to("/usr")
        command = (
            f"{_sudo()}apt-get install google-cloud-cli-firestore-emulator"
            if packaged
            else "gcloud components install cloud-firestore-emulator"
        )
        raise EmulatorMissing(
            "Google's Firestore emulator is not installed. Install it with:\n"
            f"  {command}\n"
            f"(it runs on Java {MIN_JAVA}+: {_sudo()}apt-get install openjdk-17-jre-headless)"
        )
    java = os.environ.get("JAVA", "java")  # the launcher runs $JAVA, else java
    version = _java_version(java)
    if version is None or version < MIN_JAVA:
        found = f"found Java {version}" if version else f"no working {java}"
        raise EmulatorMissing(
            f"Google's Firestore emulator needs Java {MIN_JAVA}+ ({found}). Install it with:\n"
            f"  {_sudo()}apt-get install openjdk-17-jre-headless"
        )
    return launcher


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


def _children(pid: int) -> list[int]:
    """A process's direct children (none if it is gone)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Process:
    """One child process with its log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path, port: int):
        self.name = name
        self.args = args
        self.env = env
        self.port = port
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.start_timeout: float = 30

    def start(self, timeout: float | None = None) -> Process:
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
            wait_for_port(self.port, self.proc, timeout or self.start_timeout)
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            tail = "\n".join(self.logs().splitlines()[-10:])
            raise type(exc)(f"{self.name}: {exc}; the end of {self.log_path}:\n{tail}") from None
        except Exception:
            self.stop()
            raise
        return self

    # gunicorn (functions-framework, the stand-in) waits for open keep-alive
    # connections on SIGTERM; SIGQUIT is its quick shutdown. Tests need the
    # process gone, not a graceful drain (kill() is the crash).
    quick_stop = signal.SIGTERM
    # A launcher script that waits on its child (the emulator's, on its JVM)
    # is stopped through that child: the script then reaps it and exits. Were
    # the script signalled too, it would die first and leave the JVM an
    # orphan, still running (or a zombie) after stop() returned.
    stop_through_children = False

    def stop(self, sig: int | None = None) -> None:
        sig = sig or self.quick_stop
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        children = _children(proc.pid) if self.stop_through_children else []
        with contextlib.suppress(ProcessLookupError):
            if children:
                for child in children:
                    os.kill(child, sig)
            else:
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
        self.firestore_proxy: Process | None = None
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
        stop_through_children: bool = False,
    ) -> Process:
        proc = Process(name, args, env, self.log_dir, port)
        proc.quick_stop = quick_stop
        proc.stop_through_children = stop_through_children
        proc.start_timeout = timeout
        self.processes.append(proc)
        return proc.start()

    def start_firestore(self, port: int | None = None, count: bool = False) -> Process:
        """Google's Firestore emulator, empty (it keeps nothing on disk). With
        `count`, the functions reach it through a counting proxy
        (local/firestore_proxy.py): see firestore_stats()."""
        launcher = firestore_emulator()
        port = port or free_port()
        env = self._base_env()
        # C1 only: the JVM answers in about half the time, and runs the suite's
        # short bursts of calls faster too (JDK_JAVA_OPTIONS: the java launcher's own).
        options = env.get("JDK_JAVA_OPTIONS", "")
        env["JDK_JAVA_OPTIONS"] = f"{options} -XX:TieredStopAtLevel=1".strip()
        args = [str(launcher), "start", "--host=127.0.0.1", f"--port={port}"]
        # On SIGTERM the JVM drains its gRPC server first (about 0.4 s); it
        # keeps nothing to save, so its stop is a kill: an outage in a test
        # starts when stop() is called, as it did with the npm server.
        self.firestore = self._spawn(
            "firestore",
            args,
            env,
            port,
            timeout=60,
            quick_stop=signal.SIGKILL,
            stop_through_children=True,
        )
        if count:
            proxy_port = free_port()
            args = [sys.executable, "-m", "local.firestore_proxy", "--port", str(proxy_port)]
            self.firestore_proxy = self._spawn(
                "firestore-proxy",
                [*args, "--upstream", f"127.0.0.1:{port}"],
                self._base_env(),
                proxy_port,
            )
        return self.firestore

    @property
    def firestore_host(self) -> str:
        """FIRESTORE_EMULATOR_HOST for the functions: the proxy when counting."""
        front = self.firestore_proxy or self.firestore
        return f"127.0.0.1:{front.port}"

    def firestore_stats(self) -> dict[str, int]:
        """Operations through the counting proxy so far: documents written
        and read by key, queries run, ... (local/firestore_proxy.py says which)."""
        if self.firestore_proxy is None:
            raise RuntimeError("only start_firestore(count=True) counts Firestore operations")
        from local import firestore_proxy

        return firestore_proxy.stats(self.firestore_host)

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
            FIRESTORE_EMULATOR_HOST=self.firestore_host,
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

    def models(self, listed: list[str] | None = None, retired: list[str] | None = None) -> dict:
        """Which models GET /v1/models lists (None: all) and which are retired
        (unlisted, and a completion with one answers 404)."""
        return self._post("/models", {"listed": listed, "retired": retired or []})

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
