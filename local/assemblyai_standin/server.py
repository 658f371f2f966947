"""The stand-in's HTTP server: AssemblyAI's API on one loopback port.

    /v2/upload, /v2/transcript, /v2/transcript/<id>   the transcript API (GET, and DELETE)
    /v2/transcript/<id>/sentences, .../paragraphs     the same words, regrouped
    /v1/chat/completions, /v1/models                  the LLM Gateway
    /_standin/...                                     control API for tests

Webhooks are delivered with AssemblyAI's documented policy (a 2xx within
the timeout, else retry after the interval, up to the attempt count; a 4xx
stops), with timings configurable so tests stay fast.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import threading
import time
import uuid
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import requests
from werkzeug.wrappers import Request, Response

from . import rules, spec, transcripts

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
# id: (creator, context length, max completion tokens, USD per million input
# and output tokens, retirement date as a Unix timestamp or 0). Prices are
# the providers' list prices as of 2026, for GET /v1/models to carry; they
# are the stand-in's figures, not a quote of AssemblyAI's.
MODEL_FACTS = {
    "claude-opus-4-7": ("anthropic", 200_000, 128_000, 5.0, 25.0, 0),
    "claude-opus-4-6": ("anthropic", 200_000, 128_000, 5.0, 25.0, 0),
    "claude-opus-4-5-20251101": ("anthropic", 200_000, 64_000, 5.0, 25.0, 0),
    "claude-sonnet-4-6": ("anthropic", 200_000, 64_000, 3.0, 15.0, 0),
    "claude-sonnet-4-5-20250929": ("anthropic", 200_000, 64_000, 3.0, 15.0, 1795996800),  # 2026-11-30
    "claude-haiku-4-5-20251001": ("anthropic", 200_000, 64_000, 1.0, 5.0, 0),
    "claude-sonnet-5": ("anthropic", 200_000, 64_000, 3.0, 15.0, 0),
    "gpt-4.1": ("openai", 1_047_576, 32_768, 2.0, 8.0, 0),
    "gpt-5": ("openai", 400_000, 128_000, 1.25, 10.0, 0),
    "gpt-5.1": ("openai", 400_000, 128_000, 1.25, 10.0, 0),
    "gpt-5.2": ("openai", 400_000, 128_000, 1.75, 14.0, 0),
    "gpt-5.5": ("openai", 400_000, 128_000, 1.75, 14.0, 0),
    "gemini-2.5-flash": ("google", 1_048_576, 65_536, 0.30, 2.50, 0),
    "gemini-2.5-pro": ("google", 1_048_576, 65_536, 1.25, 10.0, 0),
    "gemini-2.5-flash-lite": ("google", 1_048_576, 65_536, 0.10, 0.40, 0),
    "gemini-3-pro-preview": ("google", 1_048_576, 65_536, 2.0, 12.0, 0),
    "gemini-3-flash-preview": ("google", 1_048_576, 65_536, 0.50, 3.0, 0),
    "gemini-3.5-flash": ("google", 1_048_576, 65_536, 0.50, 3.0, 0),
}  # fmt: skip
MODELS = tuple(MODEL_FACTS)
PROVIDERS = {"anthropic": "Anthropic", "openai": "OpenAI", "google": "Google"}
AUTH_ERROR = "Authentication error, API token missing/invalid"


@dataclasses.dataclass
class Settings:
    transcription_seconds: float = 1.0
    transcription_ratio: float = 0.0  # > 0: that fraction of the meeting's length
    webhook_timeout: float = 10.0
    webhook_interval: float = 10.0
    webhook_attempts: float = 10
    gateway_latency: float = 0.0
    gateway_rpm: float = 30
    gateway_window: float = 60.0
    # > 0: transcriptions wait for POST /_standin/release, so a burst of
    # meetings completes at one moment.
    hold: float = 0.0
    # > 0: every transcript is a meeting this many hours long, its sample
    # said again and again at 150 words a minute (transcripts.lengthened),
    # with words at the top level and in every utterance, as AssemblyAI
    # returns them. Transcripts of the same sample and names share their
    # words in the stand-in's memory.
    meeting_hours: float = 0.0


def _json(body: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(body), status, headers=headers, mimetype="application/json")


def load_samples() -> dict[str, dict]:
    samples = {}
    for path in sorted(SAMPLES.glob("*.json")):
        meeting = json.loads(path.read_text())
        audio = path.with_suffix(".wav")
        meeting["name"] = path.stem
        meeting["sha256"] = (
            hashlib.sha256(audio.read_bytes()).hexdigest() if audio.exists() else None
        )
        meeting["text"] = " ".join(u["text"] for u in meeting["utterances"])
        samples[path.stem] = meeting
    return samples


def estimate_tokens(text: str) -> int:
    """A deterministic token count: one per four characters, rounded up."""
    return math.ceil(len(text) / 4)


def speaker_identification(body: dict) -> dict | None:
    """The request's speech_understanding.request.speaker_identification, if any."""
    request = (body.get("speech_understanding") or {}).get("request") or {}
    found = request.get("speaker_identification")
    return found if isinstance(found, dict) else None


def understanding_problem(body: dict) -> str | None:
    """What AssemblyAI documents beyond the schema: speaker identification
    needs speaker_labels, and each known value is 35 characters or less."""
    request = speaker_identification(body)
    if request is None:
        return None
    if body.get("speaker_labels") is not True:
        return "Speaker identification requires speaker_labels to be enabled"
    for value in request.get("known_values") or []:
        if len(value) > 35:
            return f"speech_understanding.request.speaker_identification.known_values: {value!r} is longer than 35 characters"
    return None


def model_entry(model: str) -> dict:
    """One model of GET /v1/models, with every field the SDK's LLMGatewayModel requires."""
    creator, context, max_out, usd_in, usd_out, retires = MODEL_FACTS[model]
    provider = {"id": creator, "name": PROVIDERS[creator]}
    price = {"prompt": usd_in / 1e6, "completions": usd_out / 1e6}
    return {
        "id": model,
        "object": "model",
        "name": model,
        "description": f"{PROVIDERS[creator]} {model} (AssemblyAI stand-in: answers with deterministic rules)",
        "creator": creator,
        "context_length": context,
        "top_provider": {
            "is_moderated": False,
            "context_length": context,
            "max_completion_tokens": max_out,
        },
        "default_parameters": {"temperature": None, "top_p": None, "frequency_penalty": None},
        "supported_parameters": [
            "max_tokens",
            "temperature",
            "response_format",
            "tools",
            "tool_choice",
        ],
        "pricing": {"global": price, "us": price, "eu": price, "regional_increase_percent": 0},
        "retirement_date": retires,
        "available_regions": ["us", "eu"],
        "providers": [provider],
        "default_provider": provider,
    }


class StandIn:
    def __init__(self, api_key: str, settings: Settings | None = None):
        self.api_key = api_key
        self.settings = settings or Settings()
        self.samples = load_samples()
        # Parse the spec files now, not inside the first request they would slow down.
        spec.transcript_params()
        spec.gateway_request()
        self.lock = threading.Lock()
        self.making = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.transcripts: dict[str, dict] = {}
            self.uploads: dict[str, bytes] = {}
            self.log: list[dict] = []
            self.faults: list[dict] = []
            self.gateway_success: dict[str, int] = defaultdict(int)
            self.windows: dict[str, deque] = defaultdict(deque)
            self.released = threading.Event()
            # POST /_standin/models: the models GET /v1/models lists
            # (default: all), and those retired (unlisted, and chat answers 404).
            self.listed: list[str] = list(MODELS)
            self.retired: set[str] = set()
            # (sample, hours, labels, mapping) -> (the long sample, its segments,
            # its transcript fields), for meeting_hours.
            self.long: dict[tuple, tuple[dict, list[dict], dict]] = {}

    # --- plumbing ---------------------------------------------------------

    def base(self, request: Request) -> str:
        return request.host_url.rstrip("/")

    def fault(self, target: str, **match: Any) -> dict | None:
        """The first matching fault rule, consumed once."""
        with self.lock:
            for rule in self.faults:
                want = rule.get("match") or {}
                if rule["target"] != target or rule.get("times", 1) == 0:
                    continue
                if "transcript_id" in want and want["transcript_id"] != match.get("transcript_id"):
                    continue
                if "model" in want and want["model"] != match.get("model"):
                    continue
                if "audio_url_contains" in want and want["audio_url_contains"] not in (
                    match.get("audio_url") or ""
                ):
                    continue
                if rule.get("times", 1) > 0:
                    rule["times"] = rule.get("times", 1) - 1
                return dict(rule)
        return None

    def record(self, request: Request, status: int, **extra: Any) -> None:
        with self.lock:
            self.log.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "status": status,
                    "at": time.time(),
                    **extra,
                }
            )

    def __call__(self, environ, start_response):
        request = Request(environ)
        try:
            response = self.route(request)
        except Exception as exc:  # noqa: BLE001 - a stand-in bug must still answer JSON
            response = _json({"error": f"stand-in error: {exc!r}"}, 500)
        return response(environ, start_response)

    def route(self, request: Request) -> Response:
        path, method = request.path.rstrip("/") or "/", request.method
        if path.startswith("/_standin"):
            return self.control(request, path[len("/_standin") :])
        routes = {
            "/v2/upload": ("POST", self.upload),
            "/v2/transcript": ("POST", self.create_transcript),
            "/v1/chat/completions": ("POST", self.chat),
            "/v1/models": ("GET", self.models),
        }
        if path in routes:
            allowed, handler = routes[path]
            if method != allowed:
                return _json({"error": f"Method {method} not allowed"}, 405)
            return handler(request)
        if path.startswith("/v2/transcript/") and method == "DELETE":
            parts = path[len("/v2/transcript/") :].split("/")
            if len(parts) == 1:
                return self.delete_transcript(request, parts[0])
        if path.startswith("/v2/transcript/") and method == "GET":
            parts = path[len("/v2/transcript/") :].split("/")
            if len(parts) == 1:
                return self.get_transcript(request, parts[0])
            if len(parts) == 2 and parts[1] in ("sentences", "paragraphs"):
                return self.get_segments(request, parts[0], parts[1])
        if path.startswith("/cdn/upload/") and method == "GET":
            data = self.uploads.get(path.rsplit("/", 1)[1])
            return Response(data, 200) if data is not None else _json({"error": "Not found"}, 404)
        return _json({"error": "Not found"}, 404)

    # --- transcript API -----------------------------------------------------

    def authorized(self, request: Request) -> bool:
        return request.headers.get("Authorization") == self.api_key

    def upload(self, request: Request) -> Response:
        if not self.authorized(request):
            self.record(request, 401)
            return _json({"error": AUTH_ERROR}, 401)
        rule = self.fault("upload")
        if rule and rule["kind"] == "status":
            self.record(request, rule["status"])
            return _json({"error": rule.get("message", "Internal server error")}, rule["status"])
        data = request.stream.read()
        key = str(uuid.uuid4())
        with self.lock:
            self.uploads[key] = data
        self.record(request, 200, size=len(data), sha256=hashlib.sha256(data).hexdigest())
        return _json({"upload_url": f"{self.base(request)}/cdn/upload/{key}"})

    def create_transcript(self, request: Request) -> Response:
        if not self.authorized(request):
            self.record(request, 401)
            return _json({"error": AUTH_ERROR}, 401)
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            self.record(request, 400, valid=False, validation_error="not a JSON object")
            return _json({"error": "Request body must be a JSON object"}, 400)
        problem = spec.problem(spec.transcript_params(), body) or understanding_problem(body)
        redacted = {k: ("***" if k == "webhook_auth_header_value" else v) for k, v in body.items()}
        if problem:
            self.record(request, 400, valid=False, validation_error=problem, body=redacted)
            return _json({"error": problem}, 400)
        rule = self.fault("transcript_create", audio_url=body.get("audio_url"))
        if rule and rule["kind"] == "status":
            self.record(request, rule["status"], valid=True, body=redacted)
            return _json({"error": rule.get("message", "Service unavailable")}, rule["status"])
        tid = str(uuid.uuid4())
        transcript = {
            "id": tid,
            "status": "queued",
            "audio_url": body["audio_url"],
            "text": None,
            "words": None,
            "utterances": None,
            "audio_duration": None,
            "confidence": None,
            # No "error" until the transcript fails: the spec types it a string.
            # Without a code or detection AssemblyAI transcribes as en_us.
            "language_code": None
            if body.get("language_detection")
            else body.get("language_code", "en_us"),
            "language_detection": bool(body.get("language_detection")),
            "language_confidence": None,
            "language_confidence_threshold": body.get("language_confidence_threshold"),
            "speech_models": body.get("speech_models"),
            "speech_model": None,
            "language_model": "assemblyai_default",
            "acoustic_model": "assemblyai_default",
            "speaker_labels": body.get("speaker_labels", False),
            "speakers_expected": body.get("speakers_expected"),
            "auto_highlights": False,
            "redact_pii": bool(body.get("redact_pii")),
            "summarization": False,
            "webhook_url": body.get("webhook_url"),
            "webhook_auth": bool(body.get("webhook_auth_header_name")),
            "webhook_auth_header_name": body.get("webhook_auth_header_name"),
            "webhook_status_code": None,
        }
        if body.get("redact_pii"):
            transcript["redact_pii_policies"] = body.get("redact_pii_policies")
            transcript["redact_pii_sub"] = body.get("redact_pii_sub") or "hash"
        if body.get("speech_understanding"):
            transcript["speech_understanding"] = {
                "request": body["speech_understanding"]["request"]
            }
        internal = {
            "transcript": transcript,
            "auth_value": body.get("webhook_auth_header_value"),
            "fail": rule.get(
                "message", "Transcoding failed. File does not appear to contain audio."
            )
            if rule and rule["kind"] == "fail_transcript"
            else None,
            "attempts": [],
            "webhook_finished": False,
            "audio_sha256": None,
            "audio_size": None,
            "segments": None,  # the words by utterance, for /sentences and /paragraphs
            "detection": body.get("language_detection_options") or {},
        }
        with self.lock:
            self.transcripts[tid] = internal
        self.record(request, 200, valid=True, body=redacted, transcript_id=tid)
        answer = _json(transcript)  # "queued": serialised before the work starts
        threading.Thread(
            target=self.transcribe, args=(tid, self.base(request)), daemon=True
        ).start()
        return answer

    def get_transcript(self, request: Request, tid: str) -> Response:
        if not self.authorized(request):
            self.record(request, 401)
            return _json({"error": AUTH_ERROR}, 401)
        rule = self.fault("transcript_get", transcript_id=tid)
        if rule and rule["kind"] == "status":
            self.record(request, rule["status"], transcript_id=tid)
            return _json({"error": rule.get("message", "Service unavailable")}, rule["status"])
        internal = self.transcripts.get(tid)
        if internal is None:
            self.record(request, 400, transcript_id=tid)
            return _json({"error": "Transcript lookup error, transcript id not found"}, 400)
        self.record(request, 200, transcript_id=tid)
        return _json(internal["transcript"])

    def delete_transcript(self, request: Request, tid: str) -> Response:
        """DELETE /v2/transcript/{id}: the data removed, the transcript kept
        in the spec's deleted shape (its DeleteTranscriptResponse example):
        text "Deleted by user.", no words or utterances, the URLs
        replaced; an upload it came from is deleted with it. Every later GET
        answers that shape. A transcript still in progress is refused with
        a 400 (the SDK waits for completion before deleting)."""
        if not self.authorized(request):
            self.record(request, 401)
            return _json({"error": AUTH_ERROR}, 401)
        rule = self.fault("transcript_delete", transcript_id=tid)
        if rule and rule["kind"] == "status":
            self.record(request, rule["status"], transcript_id=tid)
            return _json({"error": rule.get("message", "Service unavailable")}, rule["status"])
        with self.lock:
            internal = self.transcripts.get(tid)
            if internal is None:
                status = 400
                body: dict = {"error": "Transcript lookup error, transcript id not found"}
            elif internal["transcript"]["status"] not in ("completed", "error"):
                status = 400
                body = {"error": "Transcript is still being processed and cannot be deleted yet"}
            else:
                t = internal["transcript"]
                upload = t["audio_url"] or ""
                if "/cdn/upload/" in upload:
                    self.uploads.pop(upload.rsplit("/", 1)[1], None)
                t.pop("speech_understanding", None)
                t.pop("speech_model_used", None)
                t.update(
                    audio_url="http://deleted_by_user",
                    webhook_url="http://deleted_by_user",
                    text="Deleted by user.",
                    words=None,
                    utterances=None,
                    confidence=None,
                    # The example says language_code: null, which the
                    # spec's own schema refuses: the code is kept.
                    language_confidence=None,
                    speaker_labels=None,
                    speakers_expected=None,
                    webhook_auth=False,
                    webhook_auth_header_name=None,
                )
                internal["segments"] = None
                internal["deleted"] = True
                status, body = 200, dict(t)
        self.record(request, status, transcript_id=tid)
        return _json(body, status)

    def get_segments(self, request: Request, tid: str, kind: str) -> Response:
        """GET /v2/transcript/{id}/sentences or /paragraphs: SentencesResponse
        or ParagraphsResponse. Both carry every word (the spec requires
        `words` in each sentence and paragraph); no parameter leaves them out.
        Fault targets: "transcript_sentences", "transcript_paragraphs"."""
        if not self.authorized(request):
            self.record(request, 401)
            return _json({"error": AUTH_ERROR}, 401)
        rule = self.fault(f"transcript_{kind}", transcript_id=tid)
        if rule and rule["kind"] == "status":
            self.record(request, rule["status"], transcript_id=tid)
            return _json({"error": rule.get("message", "Service unavailable")}, rule["status"])
        internal = self.transcripts.get(tid)
        if internal is None:
            self.record(request, 400, transcript_id=tid)
            return _json({"error": "Transcript lookup error, transcript id not found"}, 400)
        t = internal["transcript"]
        if t["status"] != "completed" or internal["segments"] is None:
            self.record(request, 400, transcript_id=tid)
            return _json(
                {"error": f"Transcript is not completed, its status is {t['status']}"}, 400
            )
        self.record(request, 200, transcript_id=tid)
        group = transcripts.sentences if kind == "sentences" else transcripts.paragraphs
        return _json(
            {
                "id": tid,
                "confidence": t["confidence"],
                "audio_duration": t["audio_duration"],
                kind: group(internal["segments"]),
            }
        )

    def fetch_audio(self, url: str, base: str) -> bytes:
        marker = "/cdn/upload/"
        if url.startswith(base + marker):
            data = self.uploads.get(url.rsplit("/", 1)[1])
            if data is None:
                raise ValueError(f"Download error, unable to download {url}")
            return data
        try:
            response = requests.get(url, timeout=30)
        except requests.RequestException:
            raise ValueError(
                f"Download error, unable to download {url}. Please make sure the file exists and is accessible from the internet."
            ) from None
        if response.status_code >= 400:
            raise ValueError(
                f"Download error, unable to download {url}. Got status {response.status_code}."
            )
        return response.content

    def transcribe(self, tid: str, base: str) -> None:
        internal = self.transcripts[tid]
        t = internal["transcript"]
        t["status"] = "processing"
        sample = None
        try:
            data = self.fetch_audio(t["audio_url"], base)
            internal["audio_sha256"] = hashlib.sha256(data).hexdigest()
            internal["audio_size"] = len(data)
            stem = t["audio_url"].split("?")[0].rsplit("/", 1)[-1].rsplit(".", 1)[0]
            sample = next(
                (s for s in self.samples.values() if s["sha256"] == internal["audio_sha256"]), None
            )
            sample = sample or self.samples.get(stem)
            if sample is None:
                raise ValueError(
                    "Transcoding failed. File does not appear to contain audio. File type is application/octet-stream (data)."
                )
            if internal["fail"]:
                raise ValueError(internal["fail"])
            s = self.settings
            time.sleep(
                s.transcription_ratio * sample["audio_duration"]
                if s.transcription_ratio > 0
                else s.transcription_seconds
            )
            if s.hold:
                self.released.wait()
            labels = bool(t["speaker_labels"])
            asked = (t.get("speech_understanding") or {}).get("request") or {}
            identification = asked.get("speaker_identification")
            mapping = transcripts.identify(sample, identification) if identification else {}
            sample, segments, fields = self.transcribed(sample, labels, mapping)
            internal["segments"] = segments
            if identification:
                t["speech_understanding"]["response"] = {
                    "speaker_identification": {"mapping": mapping, "status": "success"}
                }
            t.update(
                status="completed",
                **fields,
                audio_duration=sample["audio_duration"],
                **transcripts.language(t, internal["detection"], sample),
                speech_model_used=(t["speech_models"] or ["universal-3-pro"])[0],
            )
            if t["redact_pii"]:
                # As AssemblyAI does: only `text` is redacted, never the
                # utterances or words.
                t["text"] = transcripts.redact(
                    t["text"], t.get("redact_pii_policies") or [], t.get("redact_pii_sub") or "hash"
                )
        except ValueError as exc:
            time.sleep(
                self.settings.transcription_seconds
                if not self.settings.transcription_ratio
                else 0.1
            )
            t.update(status="error", error=str(exc))
        if t["webhook_url"]:
            self.deliver_with_policy(tid)

    def transcribed(
        self, sample: dict, labels: bool, mapping: dict[str, str]
    ) -> tuple[dict, list[dict], dict]:
        """The sample as transcribed (lengthened to meeting_hours, if set):
        the sample, its segments and the transcript's text, words,
        utterances and confidence. Long ones are made once and shared
        (nothing changes them once made)."""
        hours = self.settings.meeting_hours
        if hours <= 0:
            segments = transcripts.segments(sample, labels, mapping)
            return sample, segments, transcripts.transcript_fields(segments, labels)
        key = (sample["name"], hours, labels, tuple(sorted(mapping.items())))
        with self.making:  # once, however many transcriptions finish together
            if key not in self.long:
                long = transcripts.lengthened(sample, hours * 3600)
                segments = transcripts.segments(long, labels, mapping)
                self.long[key] = (long, segments, transcripts.transcript_fields(segments, labels))
            return self.long[key]

    # --- webhook delivery ---------------------------------------------------

    def post_webhook(self, tid: str, body: dict | None = None) -> int | str:
        internal = self.transcripts[tid]
        t = internal["transcript"]
        headers = {}
        if t["webhook_auth_header_name"]:
            headers[t["webhook_auth_header_name"]] = internal["auth_value"] or ""
        payload = body if body is not None else {"transcript_id": tid, "status": t["status"]}
        started = time.monotonic()
        try:
            response = requests.post(
                t["webhook_url"],
                json=payload,
                headers=headers,
                timeout=self.settings.webhook_timeout,
            )
            code: int | str = response.status_code
        except requests.Timeout:
            code = "timeout"
        except requests.RequestException:
            code = "connection error"
        with self.lock:
            internal["attempts"].append(
                {"at": time.time(), "result": code, "seconds": time.monotonic() - started}
            )
            if isinstance(code, int):
                t["webhook_status_code"] = code
        return code

    def concurrently(self, tid: str, copies: int, body: dict | None = None) -> list:
        barrier = threading.Barrier(copies)
        results: list = [None] * copies

        def one(i: int) -> None:
            barrier.wait()
            results[i] = self.post_webhook(tid, body)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(copies)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return results

    def deliver_with_policy(self, tid: str) -> None:
        internal = self.transcripts[tid]
        rule = self.fault("webhook", transcript_id=tid)
        copies = int(rule.get("copies", 2)) if rule and rule["kind"] == "duplicate" else 1
        for attempt in range(int(self.settings.webhook_attempts)):
            codes = self.concurrently(tid, copies) if copies > 1 else [self.post_webhook(tid)]
            copies = 1
            ints = [c for c in codes if isinstance(c, int)]
            if any(200 <= c < 300 for c in ints) or any(400 <= c < 500 for c in ints):
                break
            if attempt + 1 < self.settings.webhook_attempts:
                time.sleep(self.settings.webhook_interval)
        internal["webhook_finished"] = True

    # --- LLM Gateway --------------------------------------------------------

    def chat(self, request: Request) -> Response:
        started = time.monotonic_ns()
        request_id = str(uuid.uuid4())
        if not self.authorized(request):
            self.record(request, 401)
            return _json({"error": AUTH_ERROR, "status": "error", "request_id": request_id}, 401)
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            self.record(request, 400, valid=False, validation_error="not a JSON object")
            return _json(
                {
                    "error": {
                        "code": 400,
                        "message": "Request body must be a JSON object",
                        "metadata": {},
                    }
                },
                400,
            )
        problem = spec.problem(spec.gateway_request(), body)
        # Whose meeting, for the stand-in's counts: the body's id (the
        # placeholder's), or the caller's tracing header.
        tid = body.get("transcript_id") or request.headers.get("X-Transcript-Id")
        substitute = body.get("transcript_id")
        if problem:
            self.record(request, 400, valid=False, validation_error=problem, transcript_id=tid)
            return _json({"error": {"code": 400, "message": problem, "metadata": {}}}, 400)
        model = body["model"]
        if model in self.retired:
            self.record(request, 404, valid=True, transcript_id=tid, model=model)
            return _json(
                {"error": {"code": 404, "message": f"Model {model} has been retired",
                           "metadata": {}}},
                404,
            )  # fmt: skip
        if model not in MODELS:
            self.record(request, 400, valid=True, transcript_id=tid)
            return _json(
                {
                    "error": {
                        "code": 400,
                        "message": f"Model {model} is not supported",
                        "metadata": {},
                    }
                },
                400,
            )
        limited = self.rate_limit(model)
        if limited:
            self.record(request, 429, valid=True, transcript_id=tid, model=model)
            return limited
        rule = self.fault("gateway", transcript_id=tid, model=model)
        if rule and rule["kind"] == "delay":
            time.sleep(float(rule.get("seconds", 1)))
        if rule and rule["kind"] == "status":
            status = int(rule["status"])
            headers = {"Retry-After": str(rule["retry_after"])} if "retry_after" in rule else {}
            message = rule.get(
                "message", "Rate limit exceeded" if status == 429 else "Upstream provider error"
            )
            if rule.get("envelope", "flat" if status == 429 else "spec") == "flat":
                payload = {
                    "message": message,
                    "code": status,
                    "request_id": request_id,
                    "metadata": {},
                }
            else:
                payload = {"error": {"code": status, "message": message, "metadata": {}}}
            self.record(request, status, valid=True, transcript_id=tid, model=model)
            return _json(payload, status, headers)
        messages = body.get("messages") or [{"role": "user", "content": body.get("prompt", "")}]
        substituted, text = False, ""
        if substitute is not None:
            internal = self.transcripts.get(tid)
            if internal is None:
                self.record(request, 404, valid=True, transcript_id=tid)
                return _json(
                    {
                        "error": {
                            "code": 404,
                            "message": f"Transcript {tid} not found",
                            "metadata": {},
                        }
                    },
                    404,
                )
            if internal["transcript"]["status"] != "completed":
                self.record(request, 400, valid=True, transcript_id=tid)
                return _json(
                    {
                        "error": {
                            "code": 400,
                            "message": "Transcript is not completed",
                            "metadata": {},
                        }
                    },
                    400,
                )
            text = internal["transcript"]["text"]
            for message in messages:
                content = message.get("content")
                if isinstance(content, str) and "{{ transcript }}" in content:
                    message["content"] = content.replace("{{ transcript }}", text, 1)
                    substituted = True
                    break
        time.sleep(self.settings.gateway_latency)
        # The "model" reads the transcript from where the prompt put it: the
        # substituted text, or utterance lines (rules.transcript_lines) that
        # the caller wrote inside <transcript>...</transcript> itself.
        source = text if substituted else ""
        lines = rules.transcript_lines(messages)
        kind = rule["kind"] if rule else None
        if kind == "plain_text":
            content = "Here are the action items:\n\n" + rules.answer(source, None, lines)
        else:
            content = rules.answer(source, body.get("response_format"), lines)
        if kind == "invalid_json":
            content = content[: max(1, len(content) * 2 // 3)]
        if kind == "answer":  # a test's own answer: a "poison" one, say
            content = rule.get("content", content)
        finish = "stop"
        max_tokens = int(body.get("max_tokens") or 1000)
        if estimate_tokens(content) > max_tokens and kind != "answer":
            cut = content[: max_tokens * 4]
            content = cut[: cut.rfind(" ")] if " " in cut else cut
            finish = "length"
        usage_in = estimate_tokens("".join(rules.message_text(m) for m in messages))
        usage_out = estimate_tokens(content)
        with self.lock:
            if tid:
                self.gateway_success[tid] += 1
        self.record(
            request,
            200,
            valid=True,
            transcript_id=tid,
            model=model,
            carried_transcript_id=substitute is not None,
            substituted=substituted,
            transcript_lines=len(lines),
            # What the model read (after the substitution) and answered.
            prompt_text="\n".join(rules.message_text(m) for m in messages),
            answer_text=content,
            instructions=rules.instructions(messages),
            input_tokens=usage_in,
            output_tokens=usage_out,
        )
        # Schema Response of llm-gateway.yml: no top-level model; the model
        # that answered is in `request`, a copy of the request without its
        # prompt and messages. The usage carries both spellings of the
        # counts (the SDK requires prompt_tokens and completion_tokens).
        echo = {k: v for k, v in body.items() if k not in ("prompt", "messages")}
        return _json(
            {
                "request_id": request_id,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": finish,
                    }
                ],
                "request": {**echo, "model": model},
                "usage": rule["usage"]
                if kind == "answer" and "usage" in rule
                else {
                    "input_tokens": usage_in,
                    "output_tokens": usage_out,
                    "total_tokens": usage_in + usage_out,
                    "prompt_tokens": usage_in,
                    "completion_tokens": usage_out,
                },
                "http_status_code": 200,
                "response_time": time.monotonic_ns() - started,
                "llm_status_code": 200,
            },
            headers={"X-AssemblyAI-StandIn": "deterministic-rules"},
        )

    def rate_limit(self, model: str) -> Response | None:
        """A sliding window of gateway_rpm requests per gateway_window seconds."""
        now = time.monotonic()
        s = self.settings
        with self.lock:
            window = self.windows[model]
            while window and window[0] <= now - s.gateway_window:
                window.popleft()
            if len(window) < s.gateway_rpm:
                window.append(now)
                return None
            wait = max(1, math.ceil(window[0] + s.gateway_window - now))
        headers = {
            "Retry-After": str(wait),
            "X-RateLimit-Limit": str(int(s.gateway_rpm)),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(wait),
        }
        body = {
            "message": "Rate limit exceeded",
            "code": 429,
            "request_id": str(uuid.uuid4()),
            "metadata": {"limit": int(s.gateway_rpm)},
        }
        return _json(body, 429, headers)

    def models(self, request: Request) -> Response:
        if not self.authorized(request):
            return _json({"error": AUTH_ERROR, "status": "error"}, 401)
        shown = [m for m in self.listed if m in MODEL_FACTS and m not in self.retired]
        return _json({"object": "list", "data": [model_entry(m) for m in shown]})

    # --- control API --------------------------------------------------------

    def control(self, request: Request, path: str) -> Response:
        body = request.get_json(silent=True) or {}
        if path == "/reset" and request.method == "POST":
            self.reset()
            return _json({"ok": True})
        if path == "/config" and request.method == "POST":
            for key, value in body.items():
                if hasattr(self.settings, key):
                    setattr(self.settings, key, float(value))
            return _json(dataclasses.asdict(self.settings))
        if path == "/models" and request.method == "POST":
            with self.lock:
                self.listed = list(body.get("listed") or MODELS)
                self.retired = set(body.get("retired") or ())
                return _json({"listed": self.listed, "retired": sorted(self.retired)})
        if path == "/release" and request.method == "POST":
            self.released.set()
            return _json({"released": True})
        if path == "/faults":
            with self.lock:
                if request.method == "DELETE":
                    self.faults.clear()
                elif request.method == "POST":
                    self.faults.extend(dict(r) for r in body.get("rules", []))
                return _json({"rules": self.faults})
        if path == "/requests":
            with self.lock:
                return _json({"requests": list(self.log)})
        if path == "/stats":
            with self.lock:
                by_path: dict[str, int] = defaultdict(int)
                for entry in self.log:
                    parts = entry["path"].split("/")
                    if entry["path"].startswith("/v2/transcript/"):
                        parts[3] = "{id}"  # /v2/transcript/{id}[/sentences|/paragraphs]
                    by_path["/".join(parts)] += 1
                return _json(
                    {
                        "gateway_success": dict(self.gateway_success),
                        "gateway_total": by_path.get("/v1/chat/completions", 0),
                        "requests_by_path": by_path,
                    }
                )
        if path == "/transcripts":
            # One line per transcript: enough to wait for many at once.
            with self.lock:
                return _json(
                    {
                        tid: {
                            "status": internal["transcript"]["status"],
                            "webhook_url": internal["transcript"]["webhook_url"],
                            "webhook_finished": internal["webhook_finished"],
                            "attempt_seconds": [a["seconds"] for a in internal["attempts"]],
                        }
                        for tid, internal in self.transcripts.items()
                    }
                )
        if path.startswith("/transcripts/"):
            parts = path.split("/")
            internal = self.transcripts.get(parts[2])
            if internal is None:
                return _json({"error": "unknown transcript"}, 404)
            if len(parts) == 4 and parts[3] == "deliver":
                codes = self.concurrently(parts[2], int(body.get("copies", 1)), body.get("body"))
                return _json({"status_codes": codes})
            view = {k: v for k, v in internal.items() if k != "auth_value"}
            return _json(
                {
                    **view,
                    "text": internal["transcript"]["text"],
                    "status": internal["transcript"]["status"],
                }
            )
        return _json({"error": "unknown control path"}, 404)


def serve(host: str, port: int, api_key: str, settings: Settings) -> None:
    """Serve on gunicorn (one process: the state is in memory; many threads),
    which keeps HTTP/1.1 connections alive as AssemblyAI's API does, so a
    client's pooled connection is reused instead of opened for every call.
    (Werkzeug's server closes every connection after one answer.)"""
    from gunicorn.app.base import BaseApplication

    app = StandIn(api_key, settings)

    class Server(BaseApplication):
        def load_config(self) -> None:
            options = {
                "bind": f"{host}:{port}",
                "workers": 1,
                "worker_class": "gthread",
                "threads": 400,  # slow gateway answers hold a thread each
                "worker_connections": 5000,
                "keepalive": 75,
                "timeout": 0,  # no worker timeout: gateway latencies are simulated
                "graceful_timeout": 1,
                "loglevel": "warning",
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            return app

    print(
        json.dumps({"severity": "INFO", "message": f"AssemblyAI stand-in on http://{host}:{port}"}),
        flush=True,
    )
    Server().run()
