"""Benchmarks: what one meeting costs, ours against the polling recipe, and
how fast each function starts against a hello-world floor.

    ./dev bench [--meetings 3] [--meeting-minutes 30] [--gateway-seconds 3] [--cold-starts 5]

Prints a table and writes bench/results/latest.json. Figures, not
assertions: nothing here fails because a number is high.
"""

from __future__ import annotations

import argparse
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

from bench import load, polling_recipe  # noqa: E402
from local import stack as local_stack  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE_SECONDS = 1800  # the sample meeting's length, which the stand-in reports


def compare_with_polling(args: argparse.Namespace) -> dict:
    transcription = args.transcription_share * args.meeting_minutes * 60
    ratio = transcription / SAMPLE_SECONDS
    with local_stack.Stack() as stack:
        stack.start_firestore()
        stack.start_standin(
            None,
            "--transcription-ratio",
            str(ratio),
            "--gateway-latency",
            str(args.gateway_seconds),
            "--gateway-rpm",
            "100000",
        )
        control = local_stack.StandInControl(stack.standin.url)
        hook_port = local_stack.free_port()
        env = stack.function_env(WEBHOOK_URL=f"http://127.0.0.1:{hook_port}/")
        stack.start_function("assemblyai_webhook", env, hook_port)
        submit = stack.start_function("submit_transcription", env)
        audio = stack.upload_sample()

        def ours(_: int) -> dict:
            started = time.monotonic()
            answer = requests.post(submit.url, json={"audio_url": audio}, timeout=60)
            submit_seconds = time.monotonic() - started
            tid = answer.json()["transcript_id"]
            while not control.transcript(tid)["webhook_finished"]:
                time.sleep(0.5)  # the benchmark's own bookkeeping, not the product's
            attempts = control.transcript(tid)["attempts"]
            calls = [r for r in control.requests() if r.get("transcript_id") == tid]
            return {
                "requests": len(calls),
                "polls": sum(1 for r in calls if r["method"] == "GET"),
                "busy_seconds": submit_seconds + sum(a["seconds"] for a in attempts),
                "submit_seconds": submit_seconds,
                "webhook_seconds": sum(a["seconds"] for a in attempts),
            }

        def polling(_: int) -> dict:
            return polling_recipe.run_meeting(
                stack.standin.url,
                f"{stack.standin.url}/v1",
                stack.api_key,
                audio,
                args.poll_seconds,
            )

        before = stack.firestore_stats()
        with concurrent.futures.ThreadPoolExecutor(args.meetings * 2) as pool:
            mine = pool.map(ours, range(args.meetings))
            theirs = pool.map(polling, range(args.meetings))
            mine, theirs = list(mine), list(theirs)
        after = stack.firestore_stats()
        firestore_ops = {k: (after[k] - before[k]) / args.meetings for k in after}

    def summary(rows: list[dict]) -> dict:
        return {
            k: statistics.mean(r[k] for r in rows) for k in ("requests", "polls", "busy_seconds")
        }

    return {
        "transcription_seconds": transcription,
        "gateway_seconds": args.gateway_seconds,
        "ours": summary(mine),
        "ours_split": {
            k: statistics.mean(r[k] for r in mine) for k in ("submit_seconds", "webhook_seconds")
        },
        "polling": summary(theirs),
        "firestore_per_meeting": firestore_ops,
    }


def cold_starts(args: argparse.Namespace) -> dict:
    """Process start to first answered request, median of N starts."""
    targets = [
        (
            "hello-world (same client libraries)",
            "hello",
            str(Path(__file__).parent / "hello" / "main.py"),
            None,
        ),
        ("submit_transcription", "submit_transcription", str(local_stack.ROOT / "main.py"), None),
        ("assemblyai_webhook", "assemblyai_webhook", str(local_stack.ROOT / "main.py"), None),
        ("recover_meetings", "recover_meetings", str(local_stack.ROOT / "main.py"), None),
        (
            "transcribe_uploaded_audio",
            "transcribe_uploaded_audio",
            str(local_stack.ROOT / "main.py"),
            "cloudevent",
        ),
    ]
    results = {}
    with local_stack.Stack() as stack:
        env = stack._base_env()
        for label, target, source, signature in targets:
            times = []
            for _ in range(args.cold_starts):
                port = local_stack.free_port()
                cmd = [
                    str(local_stack.VENV_BIN / "functions-framework"),
                    "--target",
                    target,
                    "--source",
                    source,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ]
                if signature:
                    cmd += ["--signature-type", signature]
                proc = local_stack.Process(target, cmd, env, stack.log_dir, port)
                started = time.monotonic()
                proc.start()
                while True:
                    try:
                        requests.get(proc.url, timeout=5)
                        break
                    except requests.ConnectionError:
                        time.sleep(0.01)
                times.append(time.monotonic() - started)
                proc.stop()
            results[label] = statistics.median(times)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--meetings", type=int, default=3)
    parser.add_argument("--meeting-minutes", type=float, default=30)
    parser.add_argument(
        "--transcription-share",
        type=float,
        default=0.2,
        help="transcription time as a share of the meeting's length",
    )
    parser.add_argument("--gateway-seconds", type=float, default=3)
    parser.add_argument("--poll-seconds", type=float, default=3)
    parser.add_argument("--cold-starts", type=int, default=5)
    parser.add_argument("--skip-polling", action="store_true")
    parser.add_argument("--skip-load", action="store_true")
    args = parser.parse_args()

    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "at": time.strftime("%Y-%m-%d %H:%M"),
    }
    if not args.skip_polling:
        results["polling"] = compare_with_polling(args)
        p = results["polling"]
        print(
            f"\nPer meeting ({args.meetings} meetings, transcription {p['transcription_seconds']:.0f} s, gateway {p['gateway_seconds']:.1f} s):"
        )
        print(f"{'':28}{'requests to AssemblyAI':>24}{'polls':>8}{'busy (billed) s':>18}")
        for name in ("ours", "polling"):
            row = p[name]
            print(
                f"{name:28}{row['requests']:>24.1f}{row['polls']:>8.1f}{row['busy_seconds']:>18.2f}"
            )
        print(
            f"Firestore per meeting (ours): {p['firestore_per_meeting']}; busy split: {p['ours_split']}"
        )
        print(
            f"{'polling / ours':28}{p['polling']['requests'] / p['ours']['requests']:>24.1f}{'':>8}{p['polling']['busy_seconds'] / p['ours']['busy_seconds']:>18.1f}"
        )
    results["cold_start_seconds"] = cold_starts(args)
    floor = results["cold_start_seconds"]["hello-world (same client libraries)"]
    print(f"\nCold start, process start to first answer (median of {args.cold_starts}):")
    for label, seconds in results["cold_start_seconds"].items():
        print(f"  {label:40}{seconds * 1000:8.0f} ms  {seconds / floor:5.2f}x")
    if not args.skip_load:
        results["load"] = r = load.run()
        print(
            f"\nOne webhook instance, THREADS={r['threads']}, gateway {r['gateway_seconds']} s, {r['deliveries']} deliveries in flight:"
        )
        print(
            f"  {r['ok']}/{r['deliveries']} answered 200 in {r['seconds']:.2f} s: {r['meetings_per_second']:.1f} meetings/s ({r['meetings_per_second'] / r['ideal_per_second']:.0%} of {r['ideal_per_second']:.0f}/s); peak RSS {r['peak_rss_mib']:.0f} MiB"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
