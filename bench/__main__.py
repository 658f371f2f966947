"""Benchmarks: what one meeting costs, ours against the polling recipe, and
against a floor script making only the unavoidable calls, how fast each
function starts against a hello-world function, one instance under load,
and the dollars per meeting (see BENCHMARKS.md).

    ./dev bench [--meetings 3] [--meeting-minutes 30] [--gateway-seconds 3] [--growth] ...

Prints tables and writes bench/results/latest.json (growth.json with
--growth). Figures, not assertions: nothing here fails because a number is
high.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from bench import cost, floor, load, polling_recipe, stats  # noqa: E402
from local import stack as local_stack  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE_SECONDS = 1800  # the sample meeting's length, which the stand-in reports


def compare_with_polling(args: argparse.Namespace, meetings: int, polling: bool = True) -> dict:
    """`meetings` meetings through our functions and, beside them, through the
    polling recipe, against one stand-in. Meetings start `--start-interval`
    apart (independent meetings do not arrive at the same instant)."""
    transcription = args.transcription_share * args.meeting_minutes * 60
    ratio = transcription / SAMPLE_SECONDS
    with local_stack.Stack() as stack:
        stack.start_firestore(count=True)  # the functions reach it through the counting proxy
        stack.start_standin(
            None,
            "--transcription-ratio",
            str(ratio),
            "--gateway-latency",
            str(args.gateway_seconds),
            "--gateway-rpm",
            "1000000",
        )
        control = local_stack.StandInControl(stack.standin.url)
        hook_port = local_stack.free_port()
        # Served as deploy.sh serves it: 80 requests at once per instance.
        env = stack.function_env(WEBHOOK_URL=f"http://127.0.0.1:{hook_port}/", THREADS="80")
        stack.start_function("assemblyai_webhook", env, hook_port)
        submit = stack.start_function("submit_transcription", env)
        audio = stack.upload_sample()
        session = requests.Session()
        session.trust_env = False

        def ours(i: int) -> tuple[str, float]:
            time.sleep(i * args.start_interval)
            started = time.monotonic()
            answer = session.post(submit.url, json={"audio_url": audio}, timeout=60)
            return answer.json()["transcript_id"], time.monotonic() - started

        def theirs(i: int) -> dict:
            time.sleep(i * args.start_interval)
            return polling_recipe.run_meeting(
                stack.standin.url,
                f"{stack.standin.url}/v1",
                stack.api_key,
                audio,
                args.poll_seconds,
            )

        before = stack.firestore_stats()
        workers = meetings * (2 if polling else 1)
        with concurrent.futures.ThreadPoolExecutor(min(workers, 2000)) as pool:
            mine = pool.map(ours, range(meetings))
            other = pool.map(theirs, range(meetings)) if polling else iter(())
            submitted = dict(mine)
            # One look at every transcript every second, for the bench's own
            # bookkeeping: the product itself never polls.
            while True:
                views = control.transcripts()
                if all(views[t]["webhook_finished"] for t in submitted):
                    break
                time.sleep(1)
            theirs_rows = list(other)
        after = stack.firestore_stats()
        firestore_ops = {k: (after[k] - before[k]) / meetings for k in after}
        calls: dict[str, list[dict]] = collections.defaultdict(list)
        for r in control.requests():
            if r.get("transcript_id") in submitted:
                calls[r["transcript_id"]].append(r)

    mine_rows = []
    for tid, submit_seconds in submitted.items():
        webhook_seconds = sum(views[tid]["attempt_seconds"])
        mine_rows.append(
            {
                "requests": len(calls[tid]),
                "polls": sum(1 for r in calls[tid] if r["method"] == "GET"),
                "busy_seconds": submit_seconds + webhook_seconds,
                "submit_seconds": submit_seconds,
                "webhook_seconds": webhook_seconds,
                "webhook_attempts": len(views[tid]["attempt_seconds"]),
            }
        )

    def summary(rows: list[dict]) -> dict:
        return {
            k: statistics.mean(r[k] for r in rows) for k in ("requests", "polls", "busy_seconds")
        }

    result = {
        "meetings": meetings,
        "transcription_seconds": transcription,
        "gateway_seconds": args.gateway_seconds,
        "ours": summary(mine_rows),
        "ours_split": {
            k: statistics.mean(r[k] for r in mine_rows)
            for k in ("submit_seconds", "webhook_seconds", "webhook_attempts")
        },
        "ours_webhook_p90_seconds": stats.spread([r["webhook_seconds"] for r in mine_rows])["p90"],
        "firestore_per_meeting": firestore_ops,
    }
    if polling:
        result["polling"] = summary(theirs_rows)
    return result


def print_polling(p: dict) -> None:
    print(
        f"\nPer meeting ({p['meetings']} meetings, transcription {p['transcription_seconds']:.0f} s, "
        f"gateway {p['gateway_seconds']:.1f} s):"
    )
    print(f"{'':28}{'requests to AssemblyAI':>24}{'polls':>8}{'busy (billed) s':>18}")
    for name in ("ours", "polling"):
        if name in p:
            row = p[name]
            print(
                f"{name:28}{row['requests']:>24.2f}{row['polls']:>8.2f}{row['busy_seconds']:>18.2f}"
            )
    split = ", ".join(f"{k} {v:.3f}" for k, v in p["ours_split"].items())
    print(f"ours: {split}; webhook p90 {p['ours_webhook_p90_seconds']:.3f} s")
    print(f"Firestore per meeting (ours): {p['firestore_per_meeting']}")
    if "polling" in p:
        print(
            f"{'polling / ours':28}{p['polling']['requests'] / p['ours']['requests']:>24.1f}{'':>8}"
            f"{p['polling']['busy_seconds'] / p['ours']['busy_seconds']:>18.1f}"
        )


def sweep_seconds(runs: int = 20) -> float:
    """One recovery sweep that finds nothing stuck (what Cloud Scheduler pays
    for every minute): median seconds of `runs`, on a warm instance."""
    with local_stack.Stack() as stack:
        stack.start_firestore()
        stack.start_standin()
        env = stack.function_env(WEBHOOK_URL="http://127.0.0.1:9/")
        recover = stack.start_function("recover_meetings", env)
        session = requests.Session()
        session.trust_env = False
        session.post(recover.url, timeout=30).raise_for_status()  # warm
        times = []
        for _ in range(runs):
            started = time.monotonic()
            session.post(recover.url, timeout=30).raise_for_status()
            times.append(time.monotonic() - started)
    return statistics.median(times)


def cold_starts(args: argparse.Namespace) -> dict:
    """Process start to first answered request: best and median of N starts.

    The best of N is the figure to compare: on a shared 2-core machine the
    noise only ever adds (seen here: the same function from 400 to 650 ms)."""
    hello = Path(__file__).parent / "hello" / "main.py"
    targets = [
        ("hello-world (same client libraries)", "hello", hello, None),
        ("submit_transcription", "submit_transcription", local_stack.ROOT / "main.py", None),
        ("assemblyai_webhook", "assemblyai_webhook", local_stack.ROOT / "main.py", None),
        ("recover_meetings", "recover_meetings", local_stack.ROOT / "main.py", None),
        (
            "transcribe_uploaded_audio",
            "transcribe_uploaded_audio",
            local_stack.ROOT / "main.py",
            "cloudevent",
        ),
    ]
    times: dict[str, list[float]] = {label: [] for label, *_ in targets}
    with local_stack.Stack() as stack:
        env = stack._base_env()
        # Round robin, so a slow spell of the machine falls on every target.
        for _ in range(args.cold_starts):
            for label, target, source, signature in targets:
                started = time.monotonic()
                proc = stack.start_function(target, env, None, signature, source=source)
                requests.get(proc.url, timeout=30)  # the port is open; wait for the answer
                times[label].append(time.monotonic() - started)
                proc.stop()
    return {
        label: {"best": min(values), "median": statistics.median(values), "all": values}
        for label, values in times.items()
    }


def print_cost(p: dict) -> dict:
    split = p["ours_split"]
    ours = cost.per_meeting(
        split["submit_seconds"], split["webhook_seconds"], split["webhook_attempts"]
    )
    figures = {"ours": ours}
    line = (
        f"\nFunctions' cost per meeting (Cloud Run Tier 1 prices, deploy.sh's CPU/memory, "
        f"each request billed alone): ours ${ours['total']:.7f} "
        f"(submit ${ours['submit']:.7f}, webhook ${ours['webhook']:.7f})"
    )
    if "polling" in p:
        # The recipe run as one function with the webhook's CPU and memory.
        theirs = cost.price(p["polling"]["busy_seconds"], "assemblyai_webhook")
        figures["polling"] = theirs
        line += f"; polling recipe ${theirs:.7f} ({theirs / ours['total']:.0f}x)"
    print(line)
    print(
        f"  free tier: about {ours['free_meetings_per_month']:,.0f} meetings a month "
        "before the first vCPU-second is billed"
    )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--meetings", type=int, default=3, help="meetings against polling")
    parser.add_argument("--meeting-minutes", type=float, default=30)
    parser.add_argument(
        "--transcription-share",
        type=float,
        default=0.2,
        help="transcription time as a share of the meeting's length",
    )
    parser.add_argument("--gateway-seconds", type=float, default=3)
    parser.add_argument("--poll-seconds", type=float, default=3)
    parser.add_argument(
        "--start-interval", type=float, default=0.05, help="seconds between meetings' starts"
    )
    parser.add_argument("--floor-meetings", type=int, default=100)
    parser.add_argument("--cold-starts", type=int, default=9, help="0 skips cold starts")
    parser.add_argument(
        "--growth",
        action="store_true",
        help="ours and polling at 10, 100 and 1000 meetings, the floor at the same sizes",
    )
    parser.add_argument(
        "--polling-up-to",
        type=int,
        default=100,
        help="run the polling recipe beside ours only up to this many meetings",
    )
    parser.add_argument("--skip-polling", action="store_true")
    parser.add_argument("--skip-floor", action="store_true")
    parser.add_argument("--skip-load", action="store_true")
    args = parser.parse_args()

    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "at": time.strftime("%Y-%m-%d %H:%M"),
        "args": vars(args),
    }
    sizes = (10, 100, 1000) if args.growth else (args.meetings,)
    if not args.skip_polling:
        results["polling"] = {}
        for n in sizes:
            results["polling"][n] = p = compare_with_polling(args, n, n <= args.polling_up_to)
            print_polling(p)
            p["cost"] = print_cost(p)
    if not args.growth:
        results["sweep_seconds"] = sweep = sweep_seconds()
        month = 60 * 24 * 30
        print(
            f"  recovery sweep every minute: {sweep * 1000:.0f} ms each, "
            f"${cost.price(sweep, 'recover_meetings') * month:.2f} a month before the free tier"
        )
    if not args.skip_floor:
        results["floor"] = floor.run((10, 100, 1000) if args.growth else (args.floor_meetings,))
        floor.report(results["floor"])
    if args.cold_starts:
        results["cold_start_seconds"] = cold_starts(args)
        base = results["cold_start_seconds"]["hello-world (same client libraries)"]
        print(
            f"\nCold start, process start to first answer ({args.cold_starts} starts each): "
            "best, median"
        )
        for label, t in results["cold_start_seconds"].items():
            print(
                f"  {label:40}{t['best'] * 1000:6.0f} ms {t['best'] / base['best']:5.2f}x"
                f"{t['median'] * 1000:8.0f} ms {t['median'] / base['median']:5.2f}x"
            )
    if not args.skip_load:
        results["load"] = load.run()
        load.report(results["load"])
    RESULTS.mkdir(exist_ok=True)
    name = "growth.json" if args.growth else "latest.json"
    (RESULTS / name).write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {RESULTS / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
