"""The floor's webhook half (bench/floor.py) as a function, so bench/load.py
can serve it exactly as it serves ours: the same gunicorn, threads, burst
and stand-in. Only the calls that cannot be avoided: one claim transaction
(a read and a write), one gateway call, one final write."""

from __future__ import annotations

import functools
import os

import flask
import functions_framework
import requests
from google.cloud import firestore


@functools.cache
def _clients() -> tuple[requests.Session, firestore.Client]:
    session = requests.Session()
    session.trust_env = False
    session.headers["Authorization"] = os.environ["ASSEMBLYAI_API_KEY"]
    return session, firestore.Client(project=os.environ["GOOGLE_CLOUD_PROJECT"])


def ask(session: requests.Session, gateway_url: str, tid: str) -> str:
    """The floor's one gateway call: the placeholder prompt, minimal body."""
    answer = session.post(
        f"{gateway_url}/chat/completions",
        json={
            "model": "claude-sonnet-4-6",
            "transcript_id": tid,
            "messages": [{"role": "user", "content": "Action items? {{ transcript }}"}],
        },
        timeout=30,
    )
    answer.raise_for_status()
    return answer.json()["choices"][0]["message"]["content"]


@firestore.transactional
def _claim(transaction: firestore.Transaction, ref: firestore.DocumentReference) -> None:
    ref.get(transaction=transaction)
    transaction.update(ref, {"status": "generating"})


@functions_framework.http
def floor_webhook(request: flask.Request) -> tuple[dict, int]:
    session, db = _clients()
    tid = request.get_json()["transcript_id"]
    ref = db.collection(os.environ.get("FIRESTORE_COLLECTION", "meetings")).document(tid)
    _claim(db.transaction(), ref)
    content = ask(session, os.environ["LLM_GATEWAY_BASE_URL"], tid)
    ref.update({"status": "completed", "action_items_text": content})
    return {"status": "completed"}, 200
