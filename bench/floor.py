"""Our code against the floor: CPU and wall milliseconds per meeting.

Four sides run in this one process against the same Firestore emulator
(through the proxy that counts their operations, local/firestore_proxy.py)
and the same AssemblyAI stand-in, with no simulated latency (the gateway
answers at once, transcription takes 0.05 s and is waited out between the
two halves, outside the clock), so what is left on the clock is each side's
own work plus the servers' bare handling time, which all pay alike.

- ours: the real entry points of main.py, called with the request a
  deployed function would get (the submit's JSON body; AssemblyAI's webhook
  POST with its query string and secret header). Everything behind them
  runs for real: configuration, validation, the AssemblyAI client, the
  prompt and its parsing, the Firestore record, the claim.
- the floor: only the calls that cannot be avoided, with the same client
  libraries: one submit, one Firestore create; then one claim transaction
  (a read and a write), one gateway call, one final write.
- floor + read: the floor and the one transcript read ours makes.
- same documents: the calls ours makes, with ours' payloads and documents.

CPU is this process's CPU time (time.process_time: every thread, gRPC's
included); wall is time.perf_counter. Run with --growth to repeat at 10,
100 and 1000 meetings on one growing collection.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import json
import os
import statistics
import time
import uuid
from collections.abc import Callable

import requests
from google.cloud import firestore

from bench import floor_function, stats
from local import stack as local_stack
from meeting_actions import config, prompt, record
from meeting_actions.config import WEBHOOK_SECRET_HEADER


def _clients(api_key: str, project: str) -> tuple[requests.Session, firestore.Client]:
    """A floor's own HTTP session and Firestore client, made the cheap way."""
    session = requests.Session()
    session.trust_env = False  # no per-request scan of the environment
    session.headers["Authorization"] = api_key
    return session, firestore.Client(project=project)


def _floor(
    standin_url: str, api_key: str, webhook_url: str, project: str, read_transcript: bool = False
) -> tuple:
    """The floor's two halves, sharing one HTTP session and one Firestore client.
    With `read_transcript`, it also reads the transcript once, as ours does."""
    session, db = _clients(api_key, project)
    collection = db.collection("floor")

    def submit(audio_url: str) -> str:
        answer = session.post(
            f"{standin_url}/v2/transcript",
            json={"audio_url": audio_url, "webhook_url": webhook_url},
            timeout=30,
        )
        answer.raise_for_status()
        tid = answer.json()["id"]
        collection.document(tid).create({"status": "queued"})
        return tid

    @firestore.transactional
    def claim(transaction: firestore.Transaction, ref: firestore.DocumentReference) -> None:
        ref.get(transaction=transaction)
        transaction.update(ref, {"status": "generating"})

    def webhook(tid: str) -> None:
        ref = collection.document(tid)
        claim(db.transaction(), ref)
        facts = {}
        if read_transcript:
            transcript = session.get(f"{standin_url}/v2/transcript/{tid}", timeout=30).json()
            facts = {k: transcript[k] for k in ("audio_duration", "language_code")}
        content = floor_function.ask(session, f"{standin_url}/v1", tid)
        ref.update({"status": "completed", "action_items_text": content, **facts})

    return submit, webhook


def _floor_same_documents(
    standin_url: str, api_key: str, project: str, submit_body: dict, gateway_body: dict, doc: dict
) -> tuple:
    """The calls ours makes, with the payloads ours sends and the documents
    ours writes (taken from one of our meetings), as straight-line code:
    what is left between this and ours is our code's own overhead."""
    session, db = _clients(api_key, project)
    collection = db.collection("floor-same-documents")
    created = {k: doc[k] for k in ("source", "options", "metadata")}
    final = {k: doc[k] for k in ("action_items_text", "llm", "note")}

    def submit(audio_url: str) -> str:
        answer = session.post(
            f"{standin_url}/v2/transcript", json={**submit_body, "audio_url": audio_url}, timeout=30
        )
        answer.raise_for_status()
        tid = answer.json()["id"]
        collection.document(tid).create({**created, "status": "queued", "transcript_id": tid})
        return tid

    @firestore.transactional
    def claim(transaction: firestore.Transaction, ref: firestore.DocumentReference) -> dict:
        ref.get(transaction=transaction)
        now = datetime.datetime.now(datetime.UTC)
        generation = {
            "holder": uuid.uuid4().hex,
            "lease_expires_at": now + datetime.timedelta(seconds=600),
            "claimed_at": now,
            "attempts": 0,
        }
        transaction.update(ref, {"status": "generating", "generation": generation})
        return generation

    def webhook(tid: str) -> None:
        ref = collection.document(tid)
        generation = claim(db.transaction(), ref)
        transcript = session.get(f"{standin_url}/v2/transcript/{tid}", timeout=30).json()
        answer = session.post(
            f"{standin_url}/v1/chat/completions",
            json={**gateway_body, "transcript_id": tid},
            timeout=30,
        )
        answer.raise_for_status()
        content = answer.json()["choices"][0]["message"]["content"]
        now = datetime.datetime.now(datetime.UTC)
        ref.update(
            {
                **final,
                "status": "completed",
                "action_items": json.loads(content)["action_items"],
                "audio_duration": transcript["audio_duration"],
                "language_code": transcript["language_code"],
                "completed_at": firestore.SERVER_TIMESTAMP,
                "generation": {**generation, "lease_expires_at": None, "finished_at": now},
            }
        )

    return submit, webhook


def _ours(webhook_secret: str) -> tuple:
    """Our two entry points, called the way functions-framework calls them.

    Each returns the call to time and a check to run after it, off the
    clock: building the request (functions-framework's work, done before our
    code runs) and reading the answer back (the caller's) are not ours."""
    import flask

    import main

    app = flask.Flask("bench")

    def submit(audio_url: str) -> tuple:
        ctx = app.test_request_context("/", method="POST", json={"audio_url": audio_url})

        def call() -> flask.Response:
            with ctx:
                return main.submit_transcription(flask.request)

        def check(answer: flask.Response) -> str:
            assert answer.status_code == 202, answer.get_data(as_text=True)
            return answer.get_json()["transcript_id"]

        return call, check

    def webhook(tid: str, webhook_url: str) -> tuple:
        ctx = app.test_request_context(
            webhook_url[webhook_url.index("/", len("http://")) :],
            method="POST",
            json={"transcript_id": tid, "status": "completed"},
            headers={WEBHOOK_SECRET_HEADER: webhook_secret},
        )

        def call() -> flask.Response:
            with ctx:
                return main.assemblyai_webhook(flask.request)

        def check(answer: flask.Response) -> None:
            assert answer.status_code == 200, answer.get_data(as_text=True)
            assert answer.get_json()["status"] == "completed", answer.get_json()

        return call, check

    return submit, webhook


def _plain(submit: Callable, webhook: Callable) -> tuple:
    """A floor's halves in the same shape: the whole call is timed."""
    return (
        lambda audio: ((lambda: submit(audio)), lambda tid: tid),
        lambda tid, urls: ((lambda: webhook(tid)), lambda _: None),
    )


def _timed(call: Callable[[], object], check: Callable[[object], object]) -> tuple:
    """(CPU seconds, wall seconds) of call(), and check() of its result."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = call()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu, wall, check(result)


def run(sizes: tuple[int, ...] = (100,), warmup: int = 5) -> dict:
    results: dict = {}
    with local_stack.Stack() as stack, contextlib.ExitStack() as cleanup:
        stack.start_firestore(count=True)  # every side reaches it through the counting proxy
        stack.start_standin(
            None,
            "--transcription-seconds",
            "0.05",
            "--webhook-attempts",
            "1",
            "--gateway-rpm",
            "1000000",
        )
        control = local_stack.StandInControl(stack.standin.url)
        nowhere = f"http://127.0.0.1:{local_stack.free_port()}/"  # deliveries are ours to make
        os.environ.update(stack.function_env(WEBHOOK_URL=nowhere))
        audio = stack.upload_sample()
        floor_submit, floor_webhook = _floor(
            stack.standin.url, stack.api_key, nowhere, stack.project
        )
        ours_submit, ours_webhook = _ours(stack.webhook_secret)
        # Our JSON log lines go where Cloud Logging would read them: a file.
        log_file = cleanup.enter_context((stack.log_dir / "bench-function.log").open("w"))
        cleanup.enter_context(contextlib.redirect_stdout(log_file))

        def wait_transcribed(tids: list[str]) -> dict[str, str]:
            """Each transcript's webhook URL, once all are transcribed (off the clock)."""
            while not all((views := control.transcripts())[t]["webhook_finished"] for t in tids):
                time.sleep(0.02)
            return {t: views[t]["webhook_url"] for t in tids}

        # Warm both sides up: clients made, modules imported, connections open.
        for _ in range(warmup):
            t, f = _timed(*ours_submit(audio))[2], floor_submit(audio)
            urls = wait_transcribed([t, f])
            _timed(*ours_webhook(t, urls[t]))
            floor_webhook(f)

        # The "same documents" floor copies what ours sends and writes.
        cfg = config.get()
        ours_doc = record.read(cfg, t)[0]
        same_submit, same_webhook = _floor_same_documents(
            stack.standin.url,
            stack.api_key,
            stack.project,
            {
                "webhook_url": nowhere,
                "webhook_auth_header_name": WEBHOOK_SECRET_HEADER,
                "webhook_auth_header_value": stack.webhook_secret,
            },
            prompt.request_body(
                "", cfg.llm_model, prompt.DEFAULT_ANSWER_FORMAT, cfg.llm_max_tokens
            ),
            ours_doc,
        )
        read_submit, read_webhook = _floor(
            stack.standin.url, stack.api_key, nowhere, stack.project, read_transcript=True
        )
        for _ in range(warmup):
            f, g = same_submit(audio), read_submit(audio)
            wait_transcribed([f, g])
            same_webhook(f)
            read_webhook(g)

        sides = {
            "ours": (ours_submit, lambda tid, urls: ours_webhook(tid, urls[tid])),
            "floor": _plain(floor_submit, floor_webhook),
            "floor + read": _plain(read_submit, read_webhook),
            "same documents": _plain(same_submit, same_webhook),
        }

        def chunk(side: str, k: int, into: dict) -> None:
            """k meetings of one side: submits, transcription (off the clock), webhooks."""
            submit, webhook = sides[side]
            fs_before, api_before = stack.firestore_stats(), control.stats()["requests_by_path"]
            first = [_timed(*submit(audio)) for _ in range(k)]
            tids = [r[2] for r in first]
            urls = wait_transcribed(tids)
            second = [_timed(*webhook(t, urls)) for t in tids]
            fs_after, api_after = stack.firestore_stats(), control.stats()["requests_by_path"]
            into["first"] += first
            into["second"] += second
            for key, value in fs_after.items():
                into["firestore"][key] += value - fs_before[key]
            for path, count in api_after.items():
                if not path.startswith(("/_standin", "/v2/upload")):
                    into["assemblyai"][path] += count - api_before.get(path, 0)

        for n in sizes:
            acc = {
                side: {
                    "first": [],
                    "second": [],
                    "firestore": collections.Counter(),
                    "assemblyai": collections.Counter(),
                }
                for side in sides
            }
            # All sides in turns of 10 meetings, so a slow spell of the
            # machine falls on each alike.
            for turn, start in enumerate(range(0, n, 10)):
                order = list(sides) if turn % 2 == 0 else list(reversed(sides))
                for side in order:
                    chunk(side, min(10, n - start), acc[side])
            row: dict = {}
            for side, a in acc.items():
                first, second = a["first"], a["second"]
                row[side] = {
                    "cpu_ms": stats.spread(
                        [x[0] + y[0] for x, y in zip(first, second, strict=True)], 1000
                    ),
                    "wall_ms": stats.spread(
                        [x[1] + y[1] for x, y in zip(first, second, strict=True)], 1000
                    ),
                    "submit_cpu_ms": statistics.mean(r[0] for r in first) * 1000,
                    "webhook_cpu_ms": statistics.mean(r[0] for r in second) * 1000,
                    "submit_wall_ms": statistics.mean(r[1] for r in first) * 1000,
                    "webhook_wall_ms": statistics.mean(r[1] for r in second) * 1000,
                    "firestore_per_meeting": {k: v / n for k, v in a["firestore"].items()},
                    "assemblyai_requests_per_meeting": {
                        k: v / n for k, v in a["assemblyai"].items() if v
                    },
                }
            row["ratio"] = {
                k: row["ours"][k]["mean"] / row["floor"][k]["mean"] for k in ("cpu_ms", "wall_ms")
            }
            row["ratio_same_documents"] = {
                k: row["ours"][k]["mean"] / row["same documents"][k]["mean"]
                for k in ("cpu_ms", "wall_ms")
            }
            results[n] = row
    return results


def report(results: dict) -> None:
    print("\nOur code against the floor, per meeting (in one process, no simulated latency):")
    print(
        f"{'meetings':>9} {'':15}{'CPU ms':>8} {'submit+webhook':<16}{'wall ms':>8} "
        f"{'submit+webhook':<16}{'Firestore':>21}{'AssemblyAI':>12}"
    )
    for n, row in results.items():
        for side in ("ours", "floor", "floor + read", "same documents"):
            r = row[side]
            fs = r["firestore_per_meeting"]
            calls = sum(r["assemblyai_requests_per_meeting"].values())
            print(
                f"{n:>9} {side:15}{r['cpu_ms']['mean']:>8.2f} "
                f"{r['submit_cpu_ms']:.2f}+{r['webhook_cpu_ms']:<6.2f}"
                f"{r['wall_ms']['mean']:>8.2f} {r['submit_wall_ms']:.2f}+{r['webhook_wall_ms']:<6.2f}"
                f"{fs['writes']:>5.1f} w {fs['reads']:.1f} r {fs['queries']:.1f} q"
                f"{calls:>10.1f}"
            )
        for label, key in (("ours/floor", "ratio"), ("ours/same docs", "ratio_same_documents")):
            print(
                f"{'':>9} {label:15}{row[key]['cpu_ms']:>7.2f}x {'':16}{row[key]['wall_ms']:>7.2f}x"
            )
