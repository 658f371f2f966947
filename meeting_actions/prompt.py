"""The action-item prompts and their JSON schemas: the gateway request for
one meeting.

Two prompts. With utterances (speaker labels on, the default) the webhook
writes the meeting into the prompt itself, a legend of the speakers'
letters and a `12|A ...|B ...` line per minute (utterances.py), and
asks for each item's quote, time and speaker, which moments.py then
checks against the transcript. Without them, the LLM Gateway puts the
transcript's plain text where the exact placeholder `{{ transcript }}`
stands (transcript_id is sent only then), and items have no moments.
Parsing the answer is action_items.py's.
"""

from __future__ import annotations

from typing import Any

PLACEHOLDER = "{{ transcript }}"

DEFAULT_ANSWER_FORMAT = "bullet points"

SYSTEM_PROMPT = (
    "You read meeting transcripts and list the action items agreed in them. "
    "An action item is a concrete task someone committed to or was asked to "
    "do. Only list tasks that were actually said in the meeting; never invent "
    "tasks, owners or dates. Write each task succinctly, starting with a verb."
)

USER_PROMPT = """Here is the transcript of a meeting:

<transcript>
{placeholder}
</transcript>

List the meeting's action items.
- Each item must trace back to something said in the transcript.
- "owner": the person responsible, by name as said in the meeting, or null if no one was named.
- "due": when it is due, in the meeting's own words (for example "Friday"), or null if no time was said.
- "formatted": the same items as readable text, written as {answer_format}.
If there are no action items, return an empty list and say so in "formatted".{language}"""


def _answer_schema(item: dict[str, Any], formatted: bool) -> dict[str, Any]:
    """A strict answer schema: a list of items with exactly these properties,
    and with `formatted`, the readable list too."""
    properties: dict[str, Any] = {
        "action_items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": item,
                "required": list(item),
                "additionalProperties": False,
            },
        },
    }
    if formatted:
        properties["formatted"] = {"type": "string"}
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


_TEXT = {"type": "string"}
_OPTIONAL_TEXT = {"type": ["string", "null"]}
SCHEMA = _answer_schema({"text": _TEXT, "owner": _OPTIONAL_TEXT, "due": _OPTIONAL_TEXT}, True)


# The utterance prompt. Its lines (utterances.py) are a legend, `A = Priya`
# (or `A = not identified`) per speaker, then `12|A ...|B ...` per minute:
# `12` the minute the line's first turn starts in, each turn a bar, its
# speaker's letter and what they said. The function writes the readable
# list itself from the checked items, so the model is not asked for a
# "formatted" copy (half the output tokens).
MOMENTS_USER_PROMPT = """Here is a meeting: first each speaker's letter = name, then one line per minute holding the turns that start in it: the minute (12 is minute 12 from the start), then each turn as |, the speaker's letter and what they said.{labels}

<transcript>
{lines}
</transcript>

List the meeting's action items. For each:
- "quote": the sentence it comes from, copied exactly from one turn.
- "said_at": that turn's minute in seconds (12 is 720); "said_by": its speaker's letter.
- "text": the task, starting with a verb.
- "owner": who is responsible, by name, or null. "owner_source": "spoken" if their name is said for it, "speaker" if the speaker took it on, "inferred" if you worked it out otherwise.
- "due": when it is due, in the meeting's own words, or null.
If there are no action items, return an empty list.{language}"""

# Said when some speakers are not identified (no names were given to identify them).
LABELS_NOTE = (
    " Give a speaker who is not identified by letter, or by the name the meeting makes"
    ' clear, marked "inferred".'
)

# The items' language, by name ("Spanish"): the meeting's, or the one asked for.
LANGUAGE_NOTE = "\nWrite every item's text{due} in {language}."
MOMENTS_LANGUAGE_NOTE = (
    '\nWrite "text" and "due" in {language}; "quote" stays exactly as said, in the meeting\'s'
    " own language."
)

OWNER_SOURCES = ("spoken", "speaker", "inferred")

# The evidence first: the model grounds each item in a line.
MOMENTS_SCHEMA = _answer_schema(
    {
        "quote": _TEXT,
        "said_at": {"type": ["integer", "null"]},
        "said_by": _OPTIONAL_TEXT,
        "text": _TEXT,
        "owner": _OPTIONAL_TEXT,
        "owner_source": {"type": ["string", "null"], "enum": [*OWNER_SOURCES, None]},
        "due": _OPTIONAL_TEXT,
    },
    formatted=False,
)


def request_body(
    transcript_id: str,
    model: str,
    answer_format: str,
    max_tokens: int,
    transcript_lines: str | None = None,
    labels: bool = False,
    language: str | None = None,
) -> dict[str, Any]:
    """The chat-completions body asking for one meeting's action items.

    With `transcript_lines` (a Meeting's `lines`, utterances.py) the
    meeting is in the prompt and the items carry their moments; without,
    the gateway substitutes the transcript's text for the placeholder.
    `labels`: some speakers are not identified by name. The transcript id
    goes only with the placeholder, the one thing the gateway uses it for.
    `language`: the items' language in words ("Spanish").
    """
    if transcript_lines is not None:
        user = MOMENTS_USER_PROMPT.format(
            labels=LABELS_NOTE if labels else "",
            lines=transcript_lines,
            language=MOMENTS_LANGUAGE_NOTE.format(language=language) if language else "",
        )
        schema = MOMENTS_SCHEMA
    else:
        # Strip braces so a caller's answer_format cannot add a second placeholder.
        answer_format = answer_format.replace("{", "").replace("}", "")
        note = LANGUAGE_NOTE.format(due=', its "due" and "formatted"', language=language)
        user = USER_PROMPT.format(
            placeholder=PLACEHOLDER, answer_format=answer_format, language=note if language else ""
        )
        schema = SCHEMA
    return {
        "model": model,
        **({"transcript_id": transcript_id} if transcript_lines is None else {}),
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user},
        ],
        "max_tokens": max_tokens,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "action_items", "schema": schema, "strict": True},
        },
    }
