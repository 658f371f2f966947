"""Peak memory of one webhook instance under a burst of long meetings.

The webhook served as deploy.sh serves it (functions-framework's gunicorn,
THREADS=80, one instance), warm, the gateway answering in 3 s; N meetings
of H hours each (the stand-in's --meeting-hours: the sample said again and
again at 150 words a minute, with top-level `words` and `utterances[].words`
as AssemblyAI returns them) delivered at the same instant.

    .venv/bin/python bench/memory.py [--cases 80x1,5x10] [--gateway-seconds 3]

For each case: the instance's resident memory when warm and idle, its
peak during the burst (VmHWM of gunicorn's master and worker, and the
largest sum of their VmRSS sampled every 20 ms, with when it came), the
share of the budget (deploy.sh's 512 MiB), what each meeting in flight
added, every delivery's answer, the paid gateway calls per meeting (the
stand-in's count) and the documents' statuses. Figures, not assertions.
Writes bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from bench import load, stats  # noqa: E402
from local import stack as local_stack  # noqa: E402
from meeting_actions.config import WEBHOOK_SECRET_HEADER  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BUDGET_MIB = 512  # deploy.sh: --memory=512Mi for the webhook


def rss_mib(pid: int) -> float:
    """Resident memory now (VmRSS) of a process and its children."""
    total = 0
    for p in load._family(pid):
        try:
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
        except FileNotFoundError:
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))
    return total / 1024


class Sampler(threading.Thread):
    """VmRSS every `period` seconds: the largest seen, and when."""

    def __init__(self, pid: int, period: float = 0.02):
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.max_mib, self.max_at = 0.0, 0.0
        self.timeline: list[tuple[float, float]] = []  # (seconds, MiB)

    def run(self) -> None:
        while not self.stop.wait(self.period):
            now, at = rss_mib(self.pid), time.monotonic() - self.started
            self.timeline.append((round(at, 2), round(now, 1)))
            if now > self.max_mib:
                self.max_mib, self.max_at = now, at


def _statuses(stack: local_stack.Stack, tids: list[str]) -> dict[str, int]:
    from google.cloud import firestore

    os.environ["FIRESTORE_EMULATOR_HOST"] = f"127.0.0.1:{stack.firestore.port}"
    db = firestore.Client(project=stack.project)
    counts: dict[str, int] = {}
    for tid in tids:
        snap = db.collection("meetings").document(tid).get()
        status = (snap.to_dict() or {}).get("status") if snap.exists else "missing"
        counts[str(status)] = counts.get(str(status), 0) + 1
    return counts


def run(meetings: int, hours: float, gateway_seconds: float = 3.0, threads: int = 80) -> dict:
    with local_stack.Stack() as stack:
        stack.start_firestore()
        stack.start_standin(
            None,
            "--transcription-seconds", "0.1",
            "--webhook-attempts", "1",
            "--gateway-rpm", "1000000",
            "--gateway-latency", str(gateway_seconds),
        )  # fmt: skip
        control = local_stack.StandInControl(stack.standin.url)
        hook_port = local_stack.free_port()
        env = stack.function_env(
            WEBHOOK_URL=f"http://127.0.0.1:{hook_port}/",
            THREADS=str(threads),
            **{k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        )
        submit = stack.start_function("submit_transcription", env)
        audio = stack.upload_sample()

        def submit_one(_: int) -> str:
            answer = requests.post(submit.url, json={"audio_url": audio}, timeout=60)
            return answer.json()["transcript_id"]

        def finished(tids: list[str]) -> dict[str, dict]:
            def done() -> dict[str, dict] | None:
                views = control.transcripts()
                return views if all(views[t]["webhook_finished"] for t in tids) else None

            return local_stack.wait_until(
                done, timeout=300, what="every transcript's (failed) first delivery"
            )

        # Submitted while the webhook is down: their first delivery fails
        # and AssemblyAI (one attempt here) gives up, so the bench delivers
        # them when it chooses. The warm-up meeting is the sample as it is.
        warm = submit_one(0)
        finished([warm])
        control.configure(meeting_hours=hours)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            tids = list(pool.map(submit_one, range(meetings)))
        views = finished(tids)
        webhook = stack.start_function("assemblyai_webhook", env, hook_port)
        control.deliver(warm)  # a warm instance: clients made, modules loaded
        pid = webhook.proc.pid
        idle = rss_mib(pid)
        idle_peak = load.peak_rss_mib(pid)
        urls = {t: views[t]["webhook_url"] for t in tids}
        size = len(
            requests.get(
                f"{stack.standin.url}/v2/transcript/{tids[0]}",
                headers={"Authorization": stack.api_key},
                timeout=60,
            ).content
        )

        barrier = threading.Barrier(meetings)
        local = threading.local()

        def post(tid: str) -> tuple[int, float]:
            if not hasattr(local, "session"):
                local.session = requests.Session()
                local.session.trust_env = False
            barrier.wait()
            started = time.monotonic()
            answer = local.session.post(
                urls[tid],
                json={"transcript_id": tid, "status": "completed"},
                headers={WEBHOOK_SECRET_HEADER: stack.webhook_secret},
                timeout=600,
            )
            return answer.status_code, time.monotonic() - started

        sampler = Sampler(pid)
        sampler.start()
        cpu_before = load.cpu_seconds(pid)
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(meetings) as pool:
            answers = list(pool.map(post, tids))
        elapsed = time.monotonic() - started
        sampler.stop.set()
        sampler.join()
        cpu = load.cpu_seconds(pid) - cpu_before
        peak = load.peak_rss_mib(pid)
        paid = control.stats()["gateway_success"]
        timings = load.phase_timings(webhook.logs())
        return {
            "meetings": meetings,
            "hours": hours,
            "threads": threads,
            "gateway_seconds": gateway_seconds,
            "transcript_json_mb": size / 1e6,
            "idle_rss_mib": idle,
            "idle_peak_rss_mib": idle_peak,
            "peak_rss_mib": peak,
            "sampled_max_rss_mib": sampler.max_mib,
            "sampled_max_at_s": sampler.max_at - (started - sampler.started),
            "per_meeting_mib": (peak - idle) / meetings,
            "answers": {
                str(c): sum(1 for a, _ in answers if a == c) for c in {a for a, _ in answers}
            },
            "seconds": elapsed,
            "cpu_seconds": cpu,
            "delivery_ms": stats.spread([s for _, s in answers], 1000),
            "paid_calls": {
                "meetings_paid_once": sum(1 for t in tids if paid.get(t) == 1),
                "meetings_paid_more": sum(1 for t in tids if paid.get(t, 0) > 1),
                "meetings_unpaid": sum(1 for t in tids if not paid.get(t)),
                "total": sum(paid.get(t, 0) for t in tids),
            },
            "statuses": _statuses(stack, tids),
            "phases_ms": load.summarize([timings[t] for t in tids if t in timings]),
            "rss_timeline": [
                (round(t - (started - sampler.started), 2), m) for t, m in sampler.timeline
            ],
        }


def report(r: dict) -> None:
    print(
        f"\n{r['meetings']} meetings of {r['hours']:g} h at once ({r['transcript_json_mb']:.1f} MB "
        f"of transcript JSON each), THREADS={r['threads']}, gateway {r['gateway_seconds']:g} s:"
    )
    print(
        f"  peak RSS {r['peak_rss_mib']:.0f} MiB ({r['peak_rss_mib'] / BUDGET_MIB:.0%} of "
        f"{BUDGET_MIB} MiB); sampled max {r['sampled_max_rss_mib']:.0f} MiB at "
        f"{r['sampled_max_at_s']:.1f} s; warm idle {r['idle_rss_mib']:.0f} MiB; "
        f"{r['per_meeting_mib']:.2f} MiB per meeting in flight"
    )
    paid = r["paid_calls"]
    d = r["delivery_ms"]
    phases = ", ".join(f"{k} {v['median']:.0f}/{v['p90']:.0f}" for k, v in r["phases_ms"].items())
    print(
        f"  answers {r['answers']} in {r['seconds']:.1f} s (CPU {r['cpu_seconds']:.1f} s); "
        f"paid gateway calls {paid['total']}: once {paid['meetings_paid_once']}, "
        f"more than once {paid['meetings_paid_more']}, none {paid['meetings_unpaid']}; "
        f"documents {r['statuses']}"
    )
    print(
        f"  delivery median/p90 {d['median']:.0f}/{d['p90']:.0f} ms; "
        f"inside the webhook, median/p90 ms: {phases}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases", default="80x1,5x10", help="MEETINGSxHOURS, comma-separated (default 80x1,5x10)"
    )
    parser.add_argument("--gateway-seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=80, help="as deploy.sh's THREADS")
    args = parser.parse_args()
    results = []
    for case in args.cases.split(","):
        meetings, hours = case.lower().split("x")
        r = run(int(meetings), float(hours), args.gateway_seconds, args.threads)
        report(r)
        results.append(r)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "memory.json").write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {RESULTS / 'memory.json'}")


if __name__ == "__main__":
    main()
