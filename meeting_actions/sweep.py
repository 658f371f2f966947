"""What the scheduled sweep does: every minute, move on each meeting whose
`sweep_at` has passed (see lifecycle.py): ask AssemblyAI about a queued
meeting whose deliveries never came, take over a generating meeting whose
claim expired or was given back, and retry a due notification.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import threading
import time
import traceback
from typing import Any

from . import assemblyai, console, lifecycle, logs, notify, record, retention, transcript_ready
from .config import Config
from .hints import Hints
from .lifecycle import Busy, Done, Failure, Kind, Result


@lifecycle.firestore_guard
def check_queued(
    cfg: Config, transcript_id: str, data: dict[str, Any], version: Any, deadline: float
) -> Result:
    """A queued meeting whose deliveries never came (its document and
    version as the sweep's query read them): ask AssemblyAI once."""
    tid = transcript_id
    try:
        transcript = assemblyai.read_transcript(cfg, tid)
    except Failure as failure:
        if failure.kind is Kind.PERMANENT:
            transcript = {"id": tid, "status": "error", "error": f"AssemblyAI: {failure.message}"}
        else:
            reschedule(cfg, tid, {"sweep_at": record.later(cfg.recheck_seconds)}, version)
            return lifecycle.busy_for(failure, tid, "could not read the transcript from AssemblyAI")
    if transcript.get("status") in ("completed", "error"):
        logs.warning("AssemblyAI's deliveries were lost; the sweep takes the meeting on", tid,
                     transcript_status=transcript.get("status"))  # fmt: skip
        return transcript_ready.complete(cfg, tid, Hints(), deadline, transcript)
    checks = console.count(data.get("queued_checks")) + 1
    created = data.get("created_at")
    base = created if isinstance(created, dt.datetime) else record.now()
    later = max(
        lifecycle.queued_check_at(base, checks, cfg.stale_queued_seconds),
        record.later(cfg.recheck_seconds),
    )
    reschedule(cfg, tid, {"sweep_at": later, "queued_checks": checks}, version)
    return Busy("AssemblyAI is still transcribing", (later - record.now()).total_seconds(),
                transcript_id=tid)  # fmt: skip


def reschedule(cfg: Config, tid: str, fields: dict[str, Any], version: Any) -> None:
    # On a lost race someone moved it on meanwhile: nothing to reschedule.
    with contextlib.suppress(*record.LostRace):
        record.update(cfg, tid, fields, if_unchanged_since=version)


# Meetings a run works on at the same time. One at a time, a run's calls
# are as slow as its meetings' work laid end to end (claim, transcript,
# answer, write): with answers of 0.3 s (scaled) bench/burst.py drained at
# 64% of two models' limit, the sweep alone at 33 of 60 a minute; and each
# model's next minute opened late by its 30 calls' time, since the gateway
# counts Retry-After (whole seconds) from the last of them. The rate limit,
# not this, bounds the calls. Each meeting in flight holds its transcript:
# four ten-hour ones need 131 + 64 + 4 x 6.9 = 223 MiB, and deploy.sh gives
# the sweep 512 MiB (BENCHMARKS.md, "The budget per meeting in flight"): more
# workers need more memory.
WORKERS = 4


@dataclasses.dataclass
class _Run:
    """What a run's workers share: the due meetings left (oldest first),
    their results, and why the run stopped."""

    queue: list[tuple[str, dict[str, Any], Any]]
    deadline: float
    needed: float  # a gateway call and its write
    batch: int
    recheck: float
    results: dict[str, str] = dataclasses.field(default_factory=dict)
    counted: int = 0  # meetings begun, less those rate limited: at most `batch`
    stopped: str | None = None
    resume_at: float = 0.0  # every model is rate limited until then (monotonic)
    waited: float = 0.0
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def take(self) -> tuple[str, dict[str, Any], Any] | None:
        """The next due meeting, or None once the run is over."""
        while True:
            with self.lock:
                if self.stopped or not self.queue:
                    return None
                pause = self.resume_at - time.monotonic()
                if pause <= 0:
                    if self.counted >= self.batch:
                        self.stopped = "batch"
                    elif time.monotonic() + self.needed > self.deadline:
                        self.stopped = "deadline"
                    else:
                        self.counted += 1
                        return self.queue.pop(0)
                    return None
            time.sleep(pause)  # the gateway said when; the meetings' not_before agree

    def done(self, item: tuple[str, dict[str, Any], Any], result: Result | None) -> None:
        """Record a meeting's result; a rate limit pauses every worker."""
        with self.lock:
            self.results[item[0]] = _name(result) if result is not None else "nothing to do"
            if isinstance(result, Busy) and result.rate_limited:
                self.counted -= 1  # no answer paid for: it does not count
                self.queue.insert(0, item)  # the same meeting again: it is the oldest
                now = time.monotonic()
                if result.retry_after > self.recheck or (
                    now + result.retry_after + self.needed > self.deadline
                ):
                    self.stopped = self.stopped or "rate_limited"
                    return
                until = now + result.retry_after
                self.waited += max(0.0, until - max(self.resume_at, now))
                self.resume_at = max(self.resume_at, until)
            elif isinstance(result, Busy) and result.kind is Kind.OPERATOR:
                self.stopped = self.stopped or "operator"  # every meeting would fail the same way


def _work(cfg: Config, run: _Run) -> None:
    while (item := run.take()) is not None:
        run.done(item, _sweep_one(cfg, *item, run.deadline))


@lifecycle.firestore_guard
def sweep(cfg: Config, deadline: float | None = None) -> Result:
    """Move on every meeting whose `sweep_at` has passed (see lifecycle.py).

    Called every minute by Cloud Scheduler. Makes at most RECOVERY_BATCH
    gateway calls, oldest deadline first, WORKERS meetings at a time, each
    on its own (one bad meeting cannot stop the rest), and starts no
    gateway call that cannot finish before the run's deadline. A short rate
    limit is waited out, so the sweep uses the whole limit; a long one ends
    the run.
    """
    deadline = deadline or lifecycle.deadline_of(cfg)
    at = record.now()
    due = record.due(cfg, at, limit=cfg.recovery_batch * 2)
    needed = min(cfg.gateway_timeout, 30) + lifecycle.write_budget(cfg)
    run = _Run(list(due), deadline, needed, cfg.recovery_batch, cfg.recheck_seconds)
    workers = min(WORKERS, len(due))
    if workers:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for future in [pool.submit(_work, cfg, run) for _ in range(workers)]:
                future.result()  # nothing is lost in a thread
    counts: dict[str, int] = {}
    for name in run.results.values():
        counts[name] = counts.get(name, 0) + 1
    stopped = run.stopped
    # Every run, nothing due included: the backlog metric and its alerts read this line.
    logs.info("sweep", event="sweep", due=len(due), handled=len(run.results), stopped=stopped,
              waited_s=round(run.waited, 1), **_backlog(due, at, counts, stopped, len(run.queue)),
              **counts)  # fmt: skip
    return Done("swept", detail={"due": len(due), "tried": len(run.results), "stopped": stopped,
                                 "results": run.results})  # fmt: skip


def _sweep_one(
    cfg: Config, tid: str, data: dict[str, Any], version: Any, deadline: float
) -> Result | None:
    """One due meeting; a crash is logged and kept to this meeting."""
    status = data.get("status")
    try:
        if status == lifecycle.QUEUED:
            return check_queued(cfg, tid, data, version, deadline)
        if status == lifecycle.GENERATING:
            return transcript_ready.complete(cfg, tid, Hints(), deadline)
        if retention.pending(cfg, data):
            # A transcript deletion AssemblyAI failed, or one never started.
            forgot = retention.forget(cfg, tid)
            if forgot == "held":
                reschedule(cfg, tid, {"sweep_at": record.later(cfg.recheck_seconds)}, version)
            if not notify.is_due(data):
                return Done(f"transcript_{forgot}", tid)
        if notify.is_due(data):
            return Done(f"notification_{notify.deliver(cfg, tid)}", tid)
        if console.notification(data).get("status") not in ("pending", "sending"):
            reschedule(cfg, tid, {"sweep_at": None}, version)  # final, nothing pending
        return None
    except Exception:  # noqa: BLE001 - one bad meeting must not stop the run
        logs.error("the sweep could not handle a meeting", tid,
                   traceback=traceback.format_exc(limit=20))  # fmt: skip
        return Busy("crashed", transcript_id=tid, detail={"crashed": True})


def _name(result: Result) -> str:
    if isinstance(result, Busy) and result.detail.get("crashed"):
        return "crashed"
    if isinstance(result, Done):
        return result.status
    if isinstance(result, Busy):
        return "rate_limited" if result.rate_limited else f"busy_{result.kind}"
    return "refused"


def _backlog(
    due: list[tuple[str, dict[str, Any], Any]],
    at: dt.datetime,
    counts: dict[str, int],
    stopped: str | None,
    left: int,
) -> dict[str, Any]:
    """The backlog as the sweep's summary line reports it (README, Operate):
    the due meetings by state, how many wait for an operator (an operator
    failure this run, and the ones left untried when it stopped the run),
    and how long the oldest has been past its deadline (`sweep_at`)."""
    by_state = dict.fromkeys(
        (lifecycle.QUEUED, lifecycle.GENERATING, lifecycle.COMPLETED, lifecycle.ERROR), 0
    )
    for _tid, data, _version in due:
        state = str(data.get("status"))
        by_state[state] = by_state.get(state, 0) + 1
    deadlines = [d["sweep_at"] for _t, d, _v in due if isinstance(d.get("sweep_at"), dt.datetime)]
    oldest = max(0.0, (at - min(deadlines)).total_seconds()) if deadlines else 0.0
    waiting = counts.get(f"busy_{Kind.OPERATOR}", 0) + (left if stopped == "operator" else 0)
    return {"due_by_state": by_state, "waiting_operator": waiting,
            "oldest_waiting_s": round(oldest)}  # fmt: skip
