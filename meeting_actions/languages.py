"""The meeting's language: the codes AssemblyAI documents, their names in
words for the prompt, and the language detection options a submission
may carry.

NAMES is the spec's `TranscriptLanguageCode` enum with its labels
(`openapi.yml`, `x-aai-enum`), so a code is checked against what
AssemblyAI accepts, and the prompt asks for "Spanish", never "es".
"""

from __future__ import annotations

from typing import Any

# code -> name, in the spec's order.
NAMES = {
    "en": "English (global)",
    "en_au": "English (Australian)",
    "en_uk": "English (British)",
    "en_us": "English (US)",
    "es": "Spanish",
    "fr": "French",
    "de": "German",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "af": "Afrikaans",
    "sq": "Albanian",
    "am": "Amharic",
    "ar": "Arabic",
    "hy": "Armenian",
    "as": "Assamese",
    "az": "Azerbaijani",
    "ba": "Bashkir",
    "eu": "Basque",
    "be": "Belarusian",
    "bn": "Bengali",
    "bs": "Bosnian",
    "br": "Breton",
    "bg": "Bulgarian",
    "my": "Burmese",
    "ca": "Catalan",
    "zh": "Chinese",
    "hr": "Croatian",
    "cs": "Czech",
    "da": "Danish",
    "et": "Estonian",
    "fo": "Faroese",
    "fi": "Finnish",
    "gl": "Galician",
    "ka": "Georgian",
    "el": "Greek",
    "gu": "Gujarati",
    "ht": "Haitian",
    "ha": "Hausa",
    "haw": "Hawaiian",
    "he": "Hebrew",
    "hi": "Hindi",
    "hu": "Hungarian",
    "is": "Icelandic",
    "id": "Indonesian",
    "ja": "Japanese",
    "jw": "Javanese",
    "kn": "Kannada",
    "kk": "Kazakh",
    "km": "Khmer",
    "ko": "Korean",
    "lo": "Lao",
    "la": "Latin",
    "lv": "Latvian",
    "ln": "Lingala",
    "lt": "Lithuanian",
    "lb": "Luxembourgish",
    "mk": "Macedonian",
    "mg": "Malagasy",
    "ms": "Malay",
    "ml": "Malayalam",
    "mt": "Maltese",
    "mi": "Maori",
    "mr": "Marathi",
    "mn": "Mongolian",
    "ne": "Nepali",
    "no": "Norwegian",
    "nn": "Norwegian Nynorsk",
    "oc": "Occitan",
    "pa": "Panjabi",
    "ps": "Pashto",
    "fa": "Persian",
    "pl": "Polish",
    "ro": "Romanian",
    "ru": "Russian",
    "sa": "Sanskrit",
    "sr": "Serbian",
    "sn": "Shona",
    "sd": "Sindhi",
    "si": "Sinhala",
    "sk": "Slovak",
    "sl": "Slovenian",
    "so": "Somali",
    "su": "Sundanese",
    "sw": "Swahili",
    "sv": "Swedish",
    "tl": "Tagalog",
    "tg": "Tajik",
    "ta": "Tamil",
    "tt": "Tatar",
    "te": "Telugu",
    "th": "Thai",
    "bo": "Tibetan",
    "tr": "Turkish",
    "tk": "Turkmen",
    "uk": "Ukrainian",
    "ur": "Urdu",
    "uz": "Uzbek",
    "vi": "Vietnamese",
    "cy": "Welsh",
    "yi": "Yiddish",
    "yo": "Yoruba",
}
# What a submission (body, upload metadata) may say of the language.
FIELDS = ("language_code", "expected_languages", "language_confidence_threshold", "items_language")
# What a meeting's document records of the language asked for (options.*).
OPTIONS = ("language_code", "language_detection", "expected_languages",
           "language_confidence_threshold")  # fmt: skip
# A code a caller may also put in expected_languages: AssemblyAI's default.
ALL = "all"
MAX_EXPECTED = len(NAMES)


def is_code(value: Any) -> bool:
    return isinstance(value, str) and value in NAMES


def name(code: Any) -> str | None:
    """The language in words for a prompt: "Spanish"; "English" for every
    English variant (the prompt need not say which). None if unknown."""
    if not is_code(code):
        return None
    return "English" if code.startswith("en") else NAMES[code]


def is_english(code: Any) -> bool:
    return isinstance(code, str) and code.startswith("en")


def codes_list(value: Any) -> tuple[str, ...] | None:
    """expected_languages: a list of documented codes (or ["all"]); None if not."""
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= MAX_EXPECTED
        or not all(is_code(v) or v == ALL for v in value)
        or (ALL in value and len(value) > 1)
    ):
        return None
    return tuple(dict.fromkeys(value))


def threshold(value: Any) -> float | None:
    """language_confidence_threshold: a number from 0 to 1; None if not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 <= value <= 1 else None


class Refused(ValueError):
    """A language field that is not as the spec documents it; names the field."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


def code(value: Any, field: str) -> str | None:
    """A documented language code, or None if absent; raises Refused."""
    if value is None:
        return None
    if not is_code(value):
        raise Refused(
            f"{field} must be a language code AssemblyAI documents, such as en_us, es or ja",
            field,
        )
    return value


def of_body(body: dict[str, Any]) -> dict[str, Any]:
    """The language fields of a submission, checked; raises Refused."""
    expected = body.get("expected_languages")
    if expected is not None and codes_list(expected) is None:
        raise Refused(
            "expected_languages must be a list of language codes AssemblyAI documents "
            '(such as ["en", "es"]), or ["all"]',
            "expected_languages",
        )
    limit = body.get("language_confidence_threshold")
    if limit is not None and threshold(limit) is None:
        raise Refused(
            "language_confidence_threshold must be a number from 0 to 1",
            "language_confidence_threshold",
        )
    return {
        "language_code": code(body.get("language_code"), "language_code"),
        "expected_languages": codes_list(expected) if expected is not None else None,
        "language_confidence_threshold": threshold(limit) if limit is not None else None,
        "items_language": code(body.get("items_language"), "items_language"),
    }


def of_metadata(meta: dict[str, str]) -> dict[str, Any]:
    """The language fields an upload's custom metadata (all strings) holds,
    as a submit body has them: `expected_languages` comma-separated, the
    threshold a number. Checked by of_body like any body."""
    body: dict[str, Any] = {}
    if meta.get("expected_languages", "").strip():
        body["expected_languages"] = [
            c.strip() for c in meta["expected_languages"].split(",") if c.strip()
        ]
    raw = meta.get("language_confidence_threshold", "").strip()
    if raw:
        try:
            body["language_confidence_threshold"] = float(raw)
        except ValueError:
            body["language_confidence_threshold"] = raw  # refused, named, by of_body
    if meta.get("items_language", "").strip():
        body["items_language"] = meta["items_language"].strip()
    return body


def detection_params(
    language_code: str | None,
    expected: tuple[str, ...] | None,
    confidence_threshold: float | None,
) -> dict[str, Any]:
    """What the transcript request says of the language: the caller's
    code if given (it wins: no detection), else detection, with the
    expected languages and the confidence threshold when set."""
    if language_code:
        return {"language_code": language_code}
    params: dict[str, Any] = {"language_detection": True}
    if expected:
        params["language_detection_options"] = {"expected_languages": list(expected)}
    if confidence_threshold is not None:
        params["language_confidence_threshold"] = confidence_threshold
    return params


def asked(transcript: dict[str, Any]) -> dict[str, Any]:
    """The language options (OPTIONS) as AssemblyAI's record of the request
    shows them, written as submit writes them: for a document the webhook
    builds. With detection, the record's language_code is the detected one,
    not one that was asked for."""
    detect = transcript.get("language_detection") is True
    given = transcript.get("language_code")
    options = transcript.get("language_detection_options")
    expected = codes_list(options.get("expected_languages")) if isinstance(options, dict) else None
    return {
        "language_code": None if detect or not is_code(given) else given,
        "language_detection": detect,
        "expected_languages": list(expected or ()) if detect else None,
        "language_confidence_threshold": threshold(transcript.get("language_confidence_threshold"))
        if detect
        else None,
    }


def facts(transcript: dict[str, Any]) -> dict[str, Any]:
    """What the document records of the meeting's language: the code
    AssemblyAI transcribed in (the caller's, or detected) and, when
    detected, its confidence (0 to 1)."""
    found = transcript.get("language_code")
    confidence = threshold(transcript.get("language_confidence"))
    return {
        "language_code": found[:16] if isinstance(found, str) else None,
        "language_confidence": confidence,
    }


def items_language(doc: Any, carried: str | None, transcript: dict[str, Any]) -> str | None:
    """The code the items are written in: items_language as submitted (on
    the document's options, or carried on the webhook URL), else the
    meeting's own (AssemblyAI's language_code). None if neither is known."""
    options = doc.get("options") if isinstance(doc, dict) else None
    asked = options.get("items_language") if isinstance(options, dict) else None
    for value in (asked, carried, transcript.get("language_code")):
        if is_code(value):
            return value
    return None


# A few words the readable list writes around an item (action_items.render),
# in the items' language where known; English otherwise.
_WORDS = {
    "en": {"due": "due {}", "inferred": "inferred", "none": "No action items."},
    "es": {"due": "para {}", "inferred": "deducido", "none": "No hay tareas."},
    "fr": {"due": "pour {}", "inferred": "déduit", "none": "Aucune action."},
    "de": {"due": "bis {}", "inferred": "abgeleitet", "none": "Keine Aufgaben."},
    "it": {"due": "entro {}", "inferred": "dedotto", "none": "Nessuna azione."},
    "pt": {"due": "até {}", "inferred": "deduzido", "none": "Nenhuma tarefa."},
    "nl": {"due": "voor {}", "inferred": "afgeleid", "none": "Geen actiepunten."},
    "ja": {"due": "期限: {}", "inferred": "推定", "none": "アクションアイテムはありません。"},
    "zh": {"due": "截止: {}", "inferred": "推断", "none": "没有待办事项。"},
    "ko": {"due": "기한: {}", "inferred": "추정", "none": "실행 항목이 없습니다."},
}


# Another language than these: no English word where a sign does.
_NEUTRAL = {"due": "→ {}", "inferred": "?", "none": "—"}


def words(code: Any) -> dict[str, str]:
    """The readable list's words for a language code (English if none)."""
    if not is_code(code):
        return _WORDS["en"]
    return _WORDS.get(code.split("_")[0], _NEUTRAL)
