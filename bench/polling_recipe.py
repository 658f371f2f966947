"""The recipe this product replaces, as a baseline: one process submits the
recording, polls GET /v2/transcript every 3 seconds until it is done, then
asks the LLM Gateway for the action items, waiting the whole time."""

from __future__ import annotations

import time

import requests

PROMPT = "List the action items of this meeting as bullet points.\n\n{{ transcript }}"


def run_meeting(
    api: str, gateway: str, key: str, audio_url: str, poll_seconds: float = 3.0
) -> dict:
    headers = {"Authorization": key}
    started = time.monotonic()
    session = requests.Session()
    calls = 1
    transcript = session.post(
        f"{api}/v2/transcript", json={"audio_url": audio_url}, headers=headers, timeout=30
    ).json()
    polls = 0
    while transcript["status"] not in ("completed", "error"):
        time.sleep(poll_seconds)
        transcript = session.get(
            f"{api}/v2/transcript/{transcript['id']}", headers=headers, timeout=30
        ).json()
        polls += 1
    calls += polls
    if transcript["status"] == "completed":
        body = {
            "model": "claude-sonnet-4-6",
            "transcript_id": transcript["id"],
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": 1000,
        }
        session.post(
            f"{gateway}/chat/completions", json=body, headers=headers, timeout=300
        ).raise_for_status()
        calls += 1
    return {
        "requests": calls,
        "polls": polls,
        "busy_seconds": time.monotonic() - started,
        "status": transcript["status"],
    }
