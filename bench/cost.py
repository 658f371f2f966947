"""Dollars per meeting, the functions' share, from the measured billed
seconds and the CPU and memory deploy.sh gives each function.

Prices: Cloud Run functions (what `gcloud functions deploy --gen2` makes) are
Cloud Run services and are billed at Cloud Run's prices, here request-based
billing (CPU only allocated during request processing) in a Tier 1 region,
as published at https://cloud.google.com/run/pricing (read 2026-11-26):
$0.000024 per vCPU-second, $0.0000025 per GiB-second, $0.40 per million
requests, billable time rounded up to the nearest 100 ms; free each month:
180,000 vCPU-seconds, 360,000 GiB-seconds, 2 million requests.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

VCPU_SECOND = 0.000024
GIB_SECOND = 0.0000025
PER_REQUEST = 0.40 / 1_000_000
GRANULARITY = 0.1  # seconds
FREE_VCPU_SECONDS = 180_000

DEPLOY = Path(__file__).resolve().parent.parent / "deploy.sh"


@functools.cache
def resources() -> dict[str, tuple[float, float]]:
    """(vCPU, GiB) of each entry point, read from deploy.sh's deploy lines."""
    text = DEPLOY.read_text().replace("\\\n", " ")
    found = {}
    for line in text.splitlines():
        m = re.match(r'\s*deploy_function "\$\w+" (\w+) (.*)', line)
        if not m:
            continue
        memory = re.search(r"--memory=(\d+)(Mi|Gi)", m[2])
        cpu = re.search(r"--cpu=([\d.]+)", m[2])
        assert memory and cpu, f"deploy.sh sets no --memory/--cpu for {m[1]}"
        gib = int(memory[1]) / (1024 if memory[2] == "Mi" else 1)
        found[m[1]] = (float(cpu[1]), gib)
    return found


def price(seconds: float, function: str, requests: int = 1) -> float:
    """What `requests` requests of `function` busy for `seconds` in all cost."""
    vcpu, gib = resources()[function]
    seconds = math.ceil(seconds / GRANULARITY - 1e-9) * GRANULARITY
    return seconds * (vcpu * VCPU_SECOND + gib * GIB_SECOND) + requests * PER_REQUEST


def per_meeting(submit_seconds: float, webhook_seconds: float, webhook_attempts: float) -> dict:
    """Our cost per meeting with no instance shared (each request billed on
    its own: an upper bound), and how many meetings the free tier covers."""
    submit = price(submit_seconds, "submit_transcription")
    webhook = price(webhook_seconds, "assemblyai_webhook", round(webhook_attempts))
    vcpu, _ = resources()["assemblyai_webhook"]
    return {
        "submit": submit,
        "webhook": webhook,
        "total": submit + webhook,
        "free_meetings_per_month": FREE_VCPU_SECONDS / (vcpu * (submit_seconds + webhook_seconds)),
    }
