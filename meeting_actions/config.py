"""Settings, read once from the environment.

Every function reads the same variables; each checks only the ones it needs,
so a missing variable is named in the error instead of surfacing later as a
confusing failure upstream.
"""

from __future__ import annotations

import dataclasses
import functools
import os

US_API = "https://api.assemblyai.com"
EU_API = "https://api.eu.assemblyai.com"
US_GATEWAY = "https://llm-gateway.assemblyai.com/v1"
EU_GATEWAY = "https://llm-gateway.eu.assemblyai.com/v1"

# A current model on the gateway's list with no retirement notice (the
# original recipe's claude-sonnet-4-5-20250929 is retired on 2026-11-30).
DEFAULT_LLM_MODEL = "claude-sonnet-4-6"

# The header AssemblyAI sends back to the webhook, carrying WEBHOOK_SECRET.
WEBHOOK_SECRET_HEADER = "X-Webhook-Secret"


class ConfigError(RuntimeError):
    """A required setting is missing or malformed."""


@dataclasses.dataclass(frozen=True)
class Config:
    api_key: str
    webhook_url: str
    webhook_secret: str
    # The secret before the last rotation, accepted on deliveries while
    # meetings submitted before the rotation can still be delivered.
    webhook_secret_previous: str
    collection: str
    llm_model: str
    # Tried in order after llm_model when it is not on the gateway's list,
    # refuses the request, or is rate limited (models.py).
    llm_fallback_models: tuple[str, ...]
    # How long the gateway's model list (GET /v1/models) is kept per instance.
    llm_models_refresh_seconds: float
    llm_max_tokens: int
    speech_models: tuple[str, ...]
    api_base_url: str
    gateway_base_url: str
    region: str
    # How long one caller may hold a meeting's generation before another may
    # take over. Longer than the longest the webhook can run (its function
    # timeout), so a live holder is never overtaken.
    claim_seconds: float
    # Transient gateway failures (5xx, timeouts) tolerated before a meeting
    # ends in error; 429s never count, they only delay.
    max_generation_attempts: int
    gateway_timeout: float
    max_body_bytes: int
    # Meetings the scheduled sweep takes per run, at most: the gateway's 30
    # requests per minute per model (LLM_MODEL and each fallback). The sweep
    # stops when every model is rate limited, so it shares the limit with
    # live deliveries instead of fighting them.
    recovery_batch: int
    # The storage trigger: which objects are meetings, and how AssemblyAI
    # gets their audio ("signed_url", or "upload" to stream it through).
    audio_prefix: str
    max_audio_bytes: int
    audio_delivery: str
    signed_url_seconds: int
    max_event_age: int
    # The function's own timeout (deploy.sh sets it): every deadline the
    # code keeps is derived from it, so no work is cut off by the platform.
    function_timeout: float
    # A meeting still `queued` this long after submit had its deliveries
    # lost: the sweep asks AssemblyAI once, then backs off.
    stale_queued_seconds: float
    # How soon the sweep looks again at a meeting it could not move because
    # AssemblyAI, or the key, was failing (the scheduler's period).
    recheck_seconds: float
    # Paid gateway answers that could not be parsed or stored before the
    # meeting ends in error: a parse failure repeats, so one by default.
    max_poison_calls: int
    # Signed "done" notifications (notify.py): the deploy-time default URL for
    # uploads, the whsec_ signing secret, and whether loopback URLs are
    # allowed (local runs only; production refuses every private address).
    notify_url: str
    notify_signing_secret: str
    notify_allow_local: bool
    # Privacy (privacy.py): days a document is kept (its expire_at, a
    # Firestore TTL policy deletes it; 0: kept), whether the transcript is
    # deleted at AssemblyAI once the result is written, and the default PII
    # redaction asked of AssemblyAI (a submission may set its own).
    retention_days: int = 0
    delete_transcripts: bool = False
    redact_pii: bool = False
    redact_pii_policies: tuple[str, ...] = ()
    redact_pii_sub: str | None = None
    # The meeting's language (languages.py), for a submission that says
    # nothing of it: detection's expected languages and confidence
    # threshold, and the language items are written in (None: the meeting's).
    expected_languages: tuple[str, ...] | None = None
    language_confidence_threshold: float | None = None
    items_language: str | None = None

    def require(self, *names: str) -> None:
        """Raise ConfigError naming every listed setting that is empty."""
        missing = [ENV_NAMES[n] for n in names if not getattr(self, n)]
        if missing:
            raise ConfigError("missing environment variable(s): " + ", ".join(missing))


ENV_NAMES = {
    "api_key": "ASSEMBLYAI_API_KEY",
    "webhook_url": "WEBHOOK_URL",
    "webhook_secret": "WEBHOOK_SECRET",
    "collection": "FIRESTORE_COLLECTION",
    "llm_model": "LLM_MODEL",
}


def _number(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


def _choice(env: dict[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip().lower() or choices[0]
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _languages(env: dict[str, str]) -> dict:
    from . import languages

    raw = env.get("EXPECTED_LANGUAGES", "").strip()
    expected = [c.strip() for c in raw.split(",") if c.strip()]
    if expected and languages.codes_list(expected) is None:
        raise ConfigError(
            f"EXPECTED_LANGUAGES must be comma-separated language codes AssemblyAI documents "
            f"(such as en,es), got {raw!r}"
        )
    limit_raw = env.get("LANGUAGE_CONFIDENCE_THRESHOLD", "").strip()
    try:
        limit = languages.threshold(float(limit_raw)) if limit_raw else None
    except ValueError:
        limit = None
    if limit_raw and limit is None:
        raise ConfigError(f"LANGUAGE_CONFIDENCE_THRESHOLD must be from 0 to 1, got {limit_raw!r}")
    items = env.get("ITEMS_LANGUAGE", "").strip() or None
    if items and not languages.is_code(items):
        raise ConfigError(f"ITEMS_LANGUAGE must be a language code such as en or es, got {items!r}")
    return {
        "expected_languages": languages.codes_list(expected) if expected else None,
        "language_confidence_threshold": limit,
        "items_language": items,
    }


def from_env(env: dict[str, str]) -> Config:
    """Build a Config from a mapping of environment variables."""
    region = env.get("ASSEMBLYAI_REGION", "us").strip().lower() or "us"
    if region not in ("us", "eu"):
        raise ConfigError(f"ASSEMBLYAI_REGION must be 'us' or 'eu', got {region!r}")
    eu = region == "eu"
    models = env.get("SPEECH_MODELS", "")
    timeout = _number(env, "FUNCTION_TIMEOUT_SECONDS", 540)
    fallbacks = tuple(m.strip() for m in env.get("LLM_FALLBACK_MODELS", "").split(",") if m.strip())
    model = env.get("LLM_MODEL", "").strip() or DEFAULT_LLM_MODEL
    return Config(
        api_key=env.get("ASSEMBLYAI_API_KEY", "").strip(),
        webhook_url=env.get("WEBHOOK_URL", "").strip(),
        webhook_secret=env.get("WEBHOOK_SECRET", "").strip(),
        webhook_secret_previous=env.get("WEBHOOK_SECRET_PREVIOUS", "").strip(),
        collection=env.get("FIRESTORE_COLLECTION", "").strip() or "meetings",
        llm_model=model,
        llm_fallback_models=fallbacks,
        llm_models_refresh_seconds=_number(env, "LLM_MODELS_REFRESH_SECONDS", 300),
        llm_max_tokens=int(_number(env, "LLM_MAX_TOKENS", 4000)),
        speech_models=tuple(m.strip() for m in models.split(",") if m.strip()),
        api_base_url=(
            env.get("ASSEMBLYAI_BASE_URL", "").strip() or (EU_API if eu else US_API)
        ).rstrip("/"),
        gateway_base_url=(
            env.get("LLM_GATEWAY_BASE_URL", "").strip() or (EU_GATEWAY if eu else US_GATEWAY)
        ).rstrip("/"),
        region=region,
        # Longer than the function may run, so a live holder is never overtaken.
        claim_seconds=_number(env, "CLAIM_SECONDS", timeout + 60),
        max_generation_attempts=int(_number(env, "MAX_GENERATION_ATTEMPTS", 5)),
        gateway_timeout=_number(env, "LLM_TIMEOUT_SECONDS", 240),
        max_body_bytes=int(_number(env, "MAX_BODY_BYTES", 64 * 1024)),
        recovery_batch=int(_number(env, "RECOVERY_BATCH", 30 * len({model, *fallbacks}))),
        audio_prefix=env.get("AUDIO_PREFIX", ""),
        max_audio_bytes=int(_number(env, "MAX_AUDIO_BYTES", 5 * 1000**3)),
        audio_delivery=_choice(env, "AUDIO_DELIVERY", ("signed_url", "upload")),
        signed_url_seconds=int(_number(env, "SIGNED_URL_SECONDS", 24 * 3600)),
        max_event_age=int(_number(env, "MAX_EVENT_AGE_SECONDS", 3 * 24 * 3600)),
        function_timeout=timeout,
        stale_queued_seconds=_number(env, "STALE_QUEUED_SECONDS", 900),
        recheck_seconds=_number(env, "RECHECK_SECONDS", 60),
        max_poison_calls=int(_number(env, "MAX_POISON_CALLS", 1)),
        notify_url=env.get("NOTIFY_URL", "").strip(),
        notify_signing_secret=env.get("NOTIFY_SIGNING_SECRET", "").strip(),
        notify_allow_local=env.get("NOTIFY_ALLOW_LOCAL", "").strip().lower() in ("1", "true"),
        **_privacy(env),
        **_languages(env),
    )


def _flag(env: dict[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw not in ("", "0", "1", "true", "false"):
        raise ConfigError(f"{name} must be true or false, got {raw!r}")
    return raw in ("1", "true")


def _privacy(env: dict[str, str]) -> dict:
    from . import privacy

    days = int(_number(env, "RETENTION_DAYS", 0)) if env.get("RETENTION_DAYS", "").strip() else 0
    policies = tuple(p.strip() for p in env.get("REDACT_PII_POLICIES", "").split(",") if p.strip())
    sub = env.get("REDACT_PII_SUB", "").strip() or None
    redact = _flag(env, "REDACT_PII")
    try:
        privacy.check_redaction(redact, policies, sub)
    except ValueError as exc:
        raise ConfigError(f"REDACT_PII settings: {exc}") from None
    return {
        "retention_days": days,
        "delete_transcripts": _flag(env, "DELETE_TRANSCRIPT_AFTER_ITEMS"),
        "redact_pii": redact,
        "redact_pii_policies": policies,
        "redact_pii_sub": sub,
    }


@functools.cache
def get() -> Config:
    """The process's settings, read on first use and then kept."""
    return from_env(dict(os.environ))
