"""A burst at the rate limit: N meetings (default 1,000) complete
transcription at the same moment; the LLM Gateway allows 30 requests a
minute; AssemblyAI delivers each with its policy (10 attempts, 10 s
apart); Cloud Scheduler calls the sweep every minute.

Time is compressed by --factor (default 20): the gateway's minute is
60/F s, AssemblyAI's gap 10/F s, the scheduler's period 60/F s, and the
product's own waits (STALE_QUEUED_SECONDS, RECHECK_SECONDS, CLAIM_SECONDS,
FUNCTION_TIMEOUT_SECONDS, LLM_TIMEOUT_SECONDS) likewise. Nothing in the
product depends on the scale: every wait comes from Retry-After, the
lease and those settings.

    .venv/bin/python bench/burst.py [--meetings 1000] [--factor 20] [--models 2]
                                    [--gateway-seconds 0]

--models N: LLM_MODEL and N-1 fallbacks (LLM_FALLBACK_MODELS), each with
its own 30 a minute, so the limit the drain is measured against is N x 30.
--gateway-seconds S: every answer takes S (scaled) seconds, as a real
model's do; by default the stand-in answers at once.

Prints meetings, lost, doubled paid calls, paid calls, and the drain rate
against the limit, with a trace per (scaled) minute: answers and 429s by
model, how many answers the sweep made, and each sweep run that started in
it. Every answer and sweep run is kept in burst-raw.json in the run's log
folder (printed as `logs`). A figure, not an assertion.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from local import stack as local_stack  # noqa: E402

RATE_PER_MINUTE = 30


MODELS = ("claude-sonnet-4-6", "gpt-5.5", "gemini-3.5-flash", "claude-opus-4-6")


def run(
    meetings: int, factor: float, timeout: float, models: int = 1, gateway_seconds: float = 0
) -> dict:
    minute = 60 / factor
    rate = RATE_PER_MINUTE * models
    with local_stack.Stack(Path(tempfile.mkdtemp(prefix="burst-"))) as stack:
        stack.start_firestore()
        stack.start_standin(
            None,
            "--gateway-rpm", str(RATE_PER_MINUTE),
            "--gateway-window", str(minute),
            "--webhook-interval", str(10 / factor),
            "--webhook-attempts", "10",
            "--transcription-seconds", "0.01",
            "--hold", "1",
        )  # fmt: skip
        control = local_stack.StandInControl(stack.standin.url)
        if gateway_seconds:
            control.fault(target="gateway", kind="delay", seconds=gateway_seconds, times=-1)
        hook_port = local_stack.free_port()
        env = stack.function_env(
            WEBHOOK_URL=f"http://127.0.0.1:{hook_port}/",
            THREADS="80",  # as deploy.sh serves the webhook
            STALE_QUEUED_SECONDS=str(900 / factor),
            RECHECK_SECONDS=str(60 / factor),
            CLAIM_SECONDS=str(600 / factor),
            FUNCTION_TIMEOUT_SECONDS=str(540 / factor),
            LLM_TIMEOUT_SECONDS=str(240 / factor),
            LLM_MODEL=MODELS[0],
            LLM_FALLBACK_MODELS=",".join(MODELS[1:models]),
        )
        stack.start_function("assemblyai_webhook", env, hook_port)
        submit = stack.start_function("submit_transcription", env)
        recover = stack.start_function("recover_meetings", env)
        audio = stack.upload_sample()

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(
                pool.map(
                    lambda _: requests.post(submit.url, json={"audio_url": audio}, timeout=60),
                    range(meetings),
                )
            )
        assert all(a.status_code == 202 for a in answers), "every submit accepted"
        tids = [a.json()["transcript_id"] for a in answers]

        # Every transcript completes now.
        released = time.time()
        requests.post(f"{control.url}/release", timeout=10).raise_for_status()
        stop = threading.Event()
        sweeps: list[dict] = []

        def scheduler() -> None:
            """Cloud Scheduler: a call every (scaled) minute, whatever the last one does."""
            while not stop.wait(minute):
                threading.Thread(
                    target=lambda: sweeps.append(_sweep(recover.url, released))
                ).start()

        threading.Thread(target=scheduler, daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            success = control.stats()["gateway_success"]
            if sum(1 for t in tids if success.get(t)) >= meetings:
                break
            time.sleep(minute / 4)  # the bench's own pace of looking, not a wait in the product
        stop.set()

        calls = control.requests()
        ok = sorted(
            r["at"] for r in calls if r["path"] == "/v1/chat/completions" and r["status"] == 200
        )
        limited = sum(
            1 for r in calls if r["path"] == "/v1/chat/completions" and r["status"] == 429
        )
        success = control.stats()["gateway_success"]
        # Every gateway answer and sweep run, for a closer look than the trace.
        raw = {"released": released, "minute": minute, "sweeps": sweeps,
               "calls": [r for r in calls if r["path"] == "/v1/chat/completions"]}  # fmt: skip
        (stack.log_dir / "burst-raw.json").write_text(json.dumps(raw))
        from google.cloud import firestore

        os.environ["FIRESTORE_EMULATOR_HOST"] = f"127.0.0.1:{stack.firestore.port}"
        db = firestore.Client(project=stack.project)
        statuses: dict[str, int] = {}
        for snap in db.collection("meetings").stream():
            status = snap.to_dict().get("status")
            statuses[status] = statuses.get(status, 0) + 1
        drained = ok[-1] - released if ok else float("inf")
        # The limit lets 30 per model through at once, then 30 per minute:
        # the best a client can do is (N - rate) / rate after the first window opens.
        ideal = max(0.0, (len(ok) - rate) / rate) * minute
        per_minute = (len(ok) - rate) / max(drained, 1e-9) * minute
        by_model: dict[str, int] = {}
        for r in calls:
            if r["path"] == "/v1/chat/completions" and r["status"] == 200:
                by_model[r.get("model", "?")] = by_model.get(r.get("model", "?"), 0) + 1
        transcript_reads = sum(1 for r in calls if r["path"].startswith("/v2/transcript/"))
        return {
            "meetings": meetings,
            "factor": factor,
            "completed": statuses.get("completed", 0),
            "statuses": statuses,
            "lost": meetings - statuses.get("completed", 0) - statuses.get("error", 0),
            "paid_calls": sum(success.values()),
            "doubled_paid_calls": sum(max(0, n - 1) for n in success.values()),
            "rate_limited_calls": limited,
            "transcript_reads": transcript_reads,
            "drain_seconds_scaled": round(drained, 1),
            "drain_minutes_real": round(drained / minute, 1),
            "ideal_minutes_real": round(ideal / minute, 1),
            "drain_per_minute": round(per_minute, 1),
            "share_of_limit": round(per_minute / rate, 3),
            "models": models,
            "gateway_seconds": gateway_seconds,
            "limit_per_minute": rate,
            "paid_calls_by_model": by_model,
            "sweep_runs": len(sweeps),
            # Successful calls in each (scaled) minute after the release.
            "per_minute_windows": [
                sum(1 for t in ok if i * minute <= t - released < (i + 1) * minute)
                for i in range(math.ceil(drained / minute) if ok else 0)
            ],
            "trace": _trace(calls, sweeps, released, minute),
            "logs": str(stack.log_dir),
            "webhook_attempts": sum(
                len(control.transcript(t)["attempts"]) for t in tids[: min(50, len(tids))]
            )
            / min(50, len(tids)),
        }


def _sweep(url: str, released: float) -> dict:
    started = time.time() - released
    try:
        answer = requests.post(url, timeout=120)
        found = {"status": answer.status_code, **(answer.json() if answer.content else {})}
    except requests.RequestException as exc:
        found = {"error": type(exc).__name__}
    return {**found, "started": started, "ended": time.time() - released}


def _trace(calls: list[dict], sweeps: list[dict], released: float, minute: float) -> list[dict]:
    """Per scaled minute after the release: the gateway's answers by model
    (200s and 429s), how many of the 200s the sweep made, and the sweep
    runs that started in it (what each picked, how each ended): where a
    drain's dip comes from."""
    by_sweep = {t for s in sweeps for t, r in (s.get("results") or {}).items() if r == "completed"}
    chat = [r for r in calls if r["path"] == "/v1/chat/completions" and r["at"] >= released]
    end = max((r["at"] - released for r in chat), default=0.0)
    rows = []
    for i in range(math.ceil(end / minute)):
        inside = [r for r in chat if i * minute <= r["at"] - released < (i + 1) * minute]
        row: dict = {"minute": i, "ok": {}, "429": {}, "ok_by_sweep": 0}
        for r in inside:
            key = "ok" if r["status"] == 200 else str(r["status"])
            row.setdefault(key, {})
            row[key][r.get("model", "?")] = row[key].get(r.get("model", "?"), 0) + 1
            if r["status"] == 200 and r.get("transcript_id") in by_sweep:
                row["ok_by_sweep"] += 1
        runs = []
        for s in sweeps:
            if i * minute <= s["started"] < (i + 1) * minute:
                counts: dict[str, int] = {}
                for r in (s.get("results") or {}).values():
                    counts[r] = counts.get(r, 0) + 1
                runs.append({"s": round(s["ended"] - s["started"], 1), "due": s.get("due"),
                             "stopped": s.get("stopped"), **counts})  # fmt: skip
        row["sweeps"] = runs
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meetings", type=int, default=1000)
    parser.add_argument("--factor", type=float, default=20)
    parser.add_argument("--models", type=int, default=1, choices=range(1, len(MODELS) + 1),
                        help="LLM_MODEL and fallbacks, each rate limited on its own")  # fmt: skip
    parser.add_argument("--gateway-seconds", type=float, default=0,
                        help="each answer takes this long (scaled seconds)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=0, help="seconds; default: 3x ideal")
    args = parser.parse_args()
    minute = 60 / args.factor
    rate = RATE_PER_MINUTE * args.models
    timeout = args.timeout or 3 * math.ceil(args.meetings / rate) * minute + 60
    result = run(args.meetings, args.factor, timeout, args.models, args.gateway_seconds)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
