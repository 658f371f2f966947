"""One webhook instance under load, served the way Cloud Functions serves
it: gunicorn with the THREADS that deploy.sh sets (80), the gateway
answering in 2 s, 80 deliveries in flight at once."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import requests

from local import stack as local_stack


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process and its children."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total / 1024


def run(deliveries: int = 80, gateway_seconds: float = 2.0, threads: int = 80) -> dict:
    with local_stack.Stack() as stack:
        stack.start_firestore()
        stack.start_standin(
            None,
            "--transcription-seconds",
            "0.1",
            "--webhook-attempts",
            "1",
            "--gateway-rpm",
            "100000",
            "--gateway-latency",
            str(gateway_seconds),
        )
        control = local_stack.StandInControl(stack.standin.url)
        hook_port = local_stack.free_port()
        env = stack.function_env(WEBHOOK_URL=f"http://127.0.0.1:{hook_port}/", THREADS=str(threads))
        submit = stack.start_function("submit_transcription", env)
        audio = stack.upload_sample()
        # Submitted while the webhook is down: their first delivery fails and
        # AssemblyAI (one attempt here) gives up, so all of them can be
        # delivered again at the same moment below.
        tids = [
            requests.post(submit.url, json={"audio_url": audio}, timeout=30).json()["transcript_id"]
            for _ in range(deliveries + 1)
        ]
        deadline = time.monotonic() + 60
        while (
            not all(control.transcript(t)["webhook_finished"] for t in tids)
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)
        webhook = stack.start_function("assemblyai_webhook", env, hook_port)
        warm, tids = tids[0], tids[1:]
        control.deliver(warm)  # a warm instance: clients made, modules loaded
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(deliveries) as pool:
            codes = list(pool.map(lambda t: control.deliver(t)["status_codes"][0], tids))
        elapsed = time.monotonic() - started
        rss = peak_rss_mib(webhook.proc.pid)
    return {
        "deliveries": deliveries,
        "threads": threads,
        "gateway_seconds": gateway_seconds,
        "answered": len(codes),
        "ok": sum(1 for c in codes if c == 200),
        "other_answers": [c for c in codes if c != 200],
        "seconds": elapsed,
        "meetings_per_second": deliveries / elapsed,
        "ideal_per_second": deliveries / gateway_seconds,
        "peak_rss_mib": rss,
    }


if __name__ == "__main__":
    print(run())
