"""One webhook instance under load, served the way Cloud Functions serves
it: gunicorn with the THREADS that deploy.sh sets (80), the gateway
answering in 2 s, 80 deliveries in flight: first all 80 at the same instant
(a burst), then 480 more with 80 always in flight (sustained)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import queue
import threading
import time
from pathlib import Path

import requests

from bench import stats
from local import stack as local_stack
from meeting_actions.config import WEBHOOK_SECRET_HEADER


def _family(pid: int) -> list[int]:
    """A process and its direct children (gunicorn's master and worker)."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    return pids


def cpu_seconds(pid: int, children: bool = True) -> float:
    """User + system CPU time used so far by a process (and its children)."""
    ticks = 0
    for p in _family(pid) if children else [pid]:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process and its children."""
    total = 0
    for p in _family(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total / 1024


def phase_timings(log: str) -> dict[str, dict[str, int]]:
    """Each meeting's webhook phases, from its "action items written" line."""
    timings = {}
    for line in log.splitlines():
        if line.startswith("{") and '"action items written"' in line:
            entry = json.loads(line)
            timings[entry["transcript_id"]] = entry["ms"]
    return timings


def summarize(rows: list[dict[str, int]]) -> dict[str, dict[str, float]]:
    """Mean, median and 90th percentile of each phase, in ms."""
    return {phase: stats.spread([r[phase] for r in rows]) for phase in rows[0]} if rows else {}


def run(
    in_flight: int = 80,
    sustained: int = 480,
    gateway_seconds: float = 2.0,
    threads: int = 80,
    floor: bool = False,
) -> dict:
    """Two measurements on one warm instance: a burst of `in_flight`
    deliveries arriving at the same instant, then `sustained` deliveries
    with `in_flight` of them always in flight (at least 4 x `in_flight`,
    so that the rate is measured over a few gateway times). With `floor`,
    the instance serves the floor's webhook (bench/floor_function.py)
    instead of ours: what any webhook making the unavoidable calls gets."""
    with local_stack.Stack() as stack:
        stack.start_firestore()
        stack.start_standin(
            None,
            "--transcription-seconds",
            "0.1",
            "--webhook-attempts",
            "1",
            "--gateway-rpm",
            "1000000",
            "--gateway-latency",
            str(gateway_seconds),
        )
        control = local_stack.StandInControl(stack.standin.url)
        hook_port = local_stack.free_port()
        env = stack.function_env(WEBHOOK_URL=f"http://127.0.0.1:{hook_port}/", THREADS=str(threads))
        submit = stack.start_function("submit_transcription", env)
        audio = stack.upload_sample()
        # Submitted while the webhook is down: their first delivery fails and
        # AssemblyAI (one attempt here) gives up, so the bench can deliver
        # them again when it chooses.
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            tids = list(
                pool.map(
                    lambda _: requests.post(
                        submit.url, json={"audio_url": audio}, timeout=30
                    ).json()["transcript_id"],
                    range(1 + in_flight + sustained),
                )
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            views = control.transcripts()
            if all(views[t]["webhook_finished"] for t in tids):
                break
            time.sleep(0.2)
        webhook = (
            stack.start_function(
                "floor_webhook",
                env,
                hook_port,
                source=Path(__file__).with_name("floor_function.py"),
            )
            if floor
            else stack.start_function("assemblyai_webhook", env, hook_port)
        )
        control.deliver(tids[0])  # a warm instance: clients made, modules loaded

        procs = {
            "webhook": webhook.proc.pid,
            "AssemblyAI stand-in": stack.standin.proc.pid,
            "Firestore server": stack.firestore.proc.pid,
            "this driver": os.getpid(),
        }

        def cpu_now() -> dict[str, float]:
            # The driver's children are the servers, counted on their own.
            return {name: cpu_seconds(pid, name != "this driver") for name, pid in procs.items()}

        # This driver plays AssemblyAI's delivery system: the same POST, to
        # the same URL, with the same secret header, from 80 connections.
        urls = {t: views[t]["webhook_url"] for t in tids}
        local = threading.local()

        def post(tid: str) -> tuple[int, float]:
            if not hasattr(local, "session"):
                local.session = requests.Session()
                local.session.trust_env = False
            started = time.monotonic()
            answer = local.session.post(
                urls[tid],
                json={"transcript_id": tid, "status": "completed"},
                headers={WEBHOOK_SECRET_HEADER: stack.webhook_secret},
                timeout=60,
            )
            return answer.status_code, time.monotonic() - started

        def deliver(batch: list[str], stagger: bool) -> dict:
            """`in_flight` workers, each posting one delivery after another.

            A burst starts them all at once. A sustained run staggers their
            first posts over one gateway time, so arrivals are spread as
            they would be with independent meetings, and counts the meetings
            finished per second once all workers are busy, until the first
            worker runs out of work.
            """
            todo: queue.SimpleQueue[str] = queue.SimpleQueue()
            for tid in batch:
                todo.put(tid)
            done: list[tuple[float, int, float]] = []  # finished at, status, seconds
            drained: list[float] = []
            cpu_before = cpu_now()
            started = time.monotonic()
            spacing = gateway_seconds / in_flight if stagger else 0.0

            def worker(i: int) -> None:
                time.sleep(i * spacing)
                while True:
                    try:
                        tid = todo.get_nowait()
                    except queue.Empty:
                        drained.append(time.monotonic())
                        return
                    code, seconds = post(tid)
                    done.append((time.monotonic(), code, seconds))

            workers = [threading.Thread(target=worker, args=(i,)) for i in range(in_flight)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            elapsed = time.monotonic() - started
            codes = [code for _, code, _ in done]
            if stagger:
                window = (started + 2 * gateway_seconds, min(drained))
                if window[1] - window[0] < gateway_seconds:
                    raise ValueError("too few deliveries to measure a sustained rate")
                finished = sum(1 for at, _, _ in done if window[0] < at <= window[1])
                rate = finished / (window[1] - window[0])
            else:
                rate = len(batch) / elapsed
            return {
                "meetings": len(batch),
                "ok": sum(1 for c in codes if c == 200),
                "other_answers": [c for c in codes if c != 200],
                "seconds": elapsed,
                "meetings_per_second": rate,
                "cpu_seconds": {k: v - cpu_before[k] for k, v in cpu_now().items()},
                "delivery_ms": stats.spread([seconds for _, _, seconds in done], 1000),
            }

        burst = deliver(tids[1 : 1 + in_flight], stagger=False)
        steady = deliver(tids[1 + in_flight :], stagger=True)
        rss = peak_rss_mib(webhook.proc.pid)
        timings = phase_timings(webhook.logs())
        for result, batch in ((burst, tids[1 : 1 + in_flight]), (steady, tids[1 + in_flight :])):
            result["phases_ms"] = summarize([timings[t] for t in batch if t in timings])
    return {
        "webhook": "the floor's" if floor else "ours",
        "in_flight": in_flight,
        "threads": threads,
        "gateway_seconds": gateway_seconds,
        "ideal_per_second": in_flight / gateway_seconds,
        "burst": burst,
        "sustained": steady,
        "peak_rss_mib": rss,
    }


def report(r: dict) -> None:
    print(
        f"\nOne webhook instance ({r['webhook']}), THREADS={r['threads']}, "
        f"gateway {r['gateway_seconds']} s, "
        f"{r['in_flight']} deliveries in flight (ideal {r['ideal_per_second']:.0f} meetings/s):"
    )
    for name in ("burst", "sustained"):
        b = r[name]
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in b["cpu_seconds"].items())
        print(
            f"  {name:10}{b['ok']}/{b['meetings']} answered 200 in {b['seconds']:.2f} s: "
            f"{b['meetings_per_second']:.1f} meetings/s "
            f"({b['meetings_per_second'] / r['ideal_per_second']:.0%}); CPU s: {cpu}"
        )
        phases = ", ".join(
            f"{k} {v['median']:.0f}/{v['p90']:.0f}" for k, v in b["phases_ms"].items()
        )
        d = b["delivery_ms"]
        print(
            f"{'':12}delivery as AssemblyAI sees it, median/p90 ms: {d['median']:.0f}/{d['p90']:.0f}; "
            f"inside the webhook: {phases}"
        )
    print(f"  peak RSS (gunicorn master + worker): {r['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    import sys

    report(run(floor="--floor" in sys.argv[1:]))
