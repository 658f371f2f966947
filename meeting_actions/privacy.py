"""PII redaction as AssemblyAI offers it, and keeping redacted PII out of
the prompt and the document.

AssemblyAI redacts PII (`redact_pii`, `redact_pii_policies`,
`redact_pii_sub`) in the transcript's `text` property only: `utterances`
and `words` still carry what was said. The gateway's `{{ transcript }}`
substitution inserts `text`, so the placeholder prompt is safe; the
utterance prompt (utterances.py) is built from `utterances`, so with
redaction on they are checked against `text` and used only when they say
the same, or once they are redacted to match: their words are aligned
against text's words, and where text has a redacted token (`####`, or an
entity name such as `[PHONE_NUMBER]`) the utterance takes text's token.
Anything else that differs falls back to the placeholder prompt. With
`person_name` among the policies, speaker identification's names are
dropped too (speakers are shown by their labels), and the document says
so in `privacy`.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

# The spec's enums (openapi.yml: PiiPolicy, SubstitutionPolicy).
PII_POLICIES = frozenset(
    [
        "account_number",
        "banking_information",
        "blood_type",
        "credit_card_cvv",
        "credit_card_expiration",
        "credit_card_number",
        "date",
        "date_interval",
        "date_of_birth",
        "drivers_license",
        "drug",
        "duration",
        "email_address",
        "event",
        "filename",
        "gender_sexuality",
        "healthcare_number",
        "injury",
        "ip_address",
        "language",
        "location",
        "marital_status",
        "medical_condition",
        "medical_process",
        "money_amount",
        "nationality",
        "number_sequence",
        "occupation",
        "organization",
        "passport_number",
        "password",
        "person_age",
        "person_name",
        "phone_number",
        "physical_attribute",
        "political_affiliation",
        "religion",
        "statistics",
        "time",
        "url",
        "us_social_security_number",
        "username",
        "vehicle_id",
        "zodiac_sign",
    ]
)
SUBSTITUTIONS = ("hash", "entity_name")
MAX_POLICIES = len(PII_POLICIES)
# Beyond this many words the alignment is not attempted: the placeholder prompt.
MAX_ALIGNED_WORDS = 200_000

_ENTITY = re.compile(r"\[[A-Z][A-Z_]*\]")
_LABEL = re.compile(r"[A-Z]{1,2}")


class Invalid(ValueError):
    """A redaction setting that cannot be sent; `field` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def check_redaction(redact: Any, policies: Any, sub: Any) -> None:
    """Raise Invalid unless the three settings make a request AssemblyAI accepts."""
    if redact is not None and not isinstance(redact, bool):
        raise Invalid("redact_pii", "redact_pii must be true or false")
    if policies is not None:
        if (
            not isinstance(policies, list | tuple)
            or len(policies) > MAX_POLICIES
            or not all(isinstance(p, str) for p in policies)
        ):
            raise Invalid("redact_pii_policies", "redact_pii_policies must be a list of policies")
        unknown = sorted({p for p in policies if p not in PII_POLICIES})
        if unknown:
            raise Invalid(
                "redact_pii_policies",
                f"redact_pii_policies: unknown polic(ies) {', '.join(unknown)[:200]}; "
                "use AssemblyAI's names, such as phone_number or person_name",
            )
    if sub is not None and sub not in SUBSTITUTIONS:
        raise Invalid("redact_pii_sub", "redact_pii_sub must be hash or entity_name")
    if redact and not policies:
        raise Invalid("redact_pii_policies", "redact_pii needs redact_pii_policies (a list)")
    if not redact and (policies or sub is not None):
        field = "redact_pii_policies" if policies else "redact_pii_sub"
        raise Invalid(field, f"{field} needs redact_pii: true")


def params(redact: bool, policies: tuple[str, ...] | None, sub: str | None) -> dict[str, Any]:
    """The transcript request's redaction parameters."""
    if not redact:
        return {}
    found: dict[str, Any] = {"redact_pii": True, "redact_pii_policies": list(policies or ())}
    if sub:
        found["redact_pii_sub"] = sub
    return found


def is_redacted(token: str) -> bool:
    """A word AssemblyAI redacted: hashes only (and punctuation), or an entity name."""
    if _ENTITY.search(token):
        return True
    return "#" in token and not any(c.isalnum() for c in token)


def for_prompt(transcript: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The transcript as the prompt and the document may use it, and what
    the document says of its redaction (None when redaction is off)."""
    if transcript.get("redact_pii") is not True:
        return transcript, None
    policies = transcript.get("redact_pii_policies")
    policies = [p for p in policies if isinstance(p, str)] if isinstance(policies, list) else []
    names = "person_name" in policies
    shown: dict[str, Any] = {
        "redact_pii": True,
        "redact_pii_policies": policies[:MAX_POLICIES],
        "redact_pii_sub": transcript.get("redact_pii_sub")
        if transcript.get("redact_pii_sub") in SUBSTITUTIONS
        else None,
        "names_redacted": names,
    }
    # `words` are never redacted by AssemblyAI, and nothing here needs them.
    view = {**transcript, "words": None}
    utterances = transcript.get("utterances")
    text = transcript.get("text")
    if isinstance(utterances, list) and utterances:
        aligned = _aligned(utterances, text) if isinstance(text, str) else None
        if aligned is None:
            view["utterances"] = None
            shown["utterances"] = "not used: they do not match the redacted text"
        else:
            view["utterances"] = aligned
            shown["utterances"] = "redacted to match the text"
    if names:
        view["utterances"] = _unnamed(view.get("utterances"), transcript)
        view.pop("speech_understanding", None)
        shown["note"] = (
            "person_name is redacted: speakers are shown by their labels, and owners as "
            "the redacted transcript says them"
        )
    return view, shown


def _aligned(utterances: list[Any], text: str) -> list[dict[str, Any]] | None:
    """The utterances with text's redactions, or None when they differ
    from text in anything but redactions, or cannot be compared: the
    webhook's transcript read keeps only the start of `text` and each
    utterance as a utterances.Said (assemblyai.parse_transcript), so there
    the placeholder prompt is used."""
    tokens: list[str] = []
    owner: list[int] = []
    for i, u in enumerate(utterances):
        if not isinstance(u, dict) or not isinstance(u.get("text"), str):
            return None
        pieces = u["text"].split()
        tokens += pieces
        owner += [i] * len(pieces)
    target = text.split()
    if not tokens or max(len(tokens), len(target)) > MAX_ALIGNED_WORDS:
        return None
    new: list[list[str]] = [[] for _ in utterances]
    if tokens != target:
        matcher = difflib.SequenceMatcher(None, tokens, target, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                for k in range(i1, i2):
                    new[owner[k]].append(tokens[k])
                continue
            replaced = target[j1:j2]
            if not replaced or not any(is_redacted(t) for t in replaced):
                return None  # a difference that is not a redaction
            if any(not is_redacted(t) and t not in tokens[i1:i2] for t in replaced):
                return None
            new[owner[i1] if i1 < len(owner) else owner[-1]].extend(replaced)
    else:
        for k, piece in enumerate(tokens):
            new[owner[k]].append(piece)
    out = []
    for u, pieces in zip(utterances, new, strict=True):
        said = " ".join(pieces)
        words = u.get("words")
        same_words = (
            isinstance(words, list)
            and " ".join(str(w.get("text")) for w in words if isinstance(w, dict)) == said
        )
        # Words that say anything else (unredacted): the text is spread over the utterance.
        out.append({**u, "text": said, "words": words if same_words else None})
    return out


def _unnamed(utterances: Any, transcript: dict[str, Any]) -> Any:
    """Utterances with speaker identification's names back to their labels."""
    if not isinstance(utterances, list):
        return utterances
    mapping = (
        ((transcript.get("speech_understanding") or {}).get("response") or {}).get(
            "speaker_identification"
        )
        or {}
    ).get("mapping")
    back = (
        {v: k for k, v in mapping.items() if isinstance(v, str)}
        if isinstance(mapping, dict)
        else {}
    )
    out = []
    for u in utterances:
        speaker = u.get("speaker") if isinstance(u, dict) else None
        if isinstance(speaker, str) and not _LABEL.fullmatch(speaker):
            speaker = back.get(speaker)
        words = u.get("words") if isinstance(u, dict) else None
        if isinstance(words, list):
            words = [{**w, "speaker": speaker} if isinstance(w, dict) else w for w in words]
        out.append({**u, "speaker": speaker, "words": words})
    return out
