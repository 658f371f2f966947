"""The prompt and the parsing of the model's answer, on their own."""

import json

from meeting_actions import action_items, prompt


def test_request_uses_the_exact_placeholder_once_and_asks_for_the_schema():
    body = prompt.request_body("tid-1", "claude-sonnet-4-6", "a numbered list", 2000)
    assert body["transcript_id"] == "tid-1"
    contents = [m["content"] for m in body["messages"]]
    assert sum(c.count("{{ transcript }}") for c in contents) == 1
    assert "{{ transcript }}" not in contents[0], "the system message must not hold it"
    assert "a numbered list" in contents[1]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == prompt.SCHEMA


def test_answer_format_cannot_smuggle_a_second_placeholder():
    body = prompt.request_body("t", "m", "{{ transcript }} twice", 100)
    assert sum(m["content"].count("{{ transcript }}") for m in body["messages"]) == 1


def test_structured_answer():
    content = json.dumps(
        {
            "action_items": [
                {"text": "Send the budget", "owner": "Priya", "due": "Friday"},
                {"text": " Book the room ", "owner": None, "due": "unknown"},
                {"text": "", "owner": "x", "due": None},
            ],
            "formatted": "- Send the budget (Priya, Friday)\n- Book the room",
        }
    )
    result = action_items.parse(content, "stop")
    assert result.parsed_as == "json"
    assert result.items == [
        {"text": "Send the budget", "owner": "Priya", "due": "Friday"},
        {"text": "Book the room"},
    ]
    assert result.text.startswith("- Send the budget")
    assert result.note is None


def test_answer_in_a_code_fence_without_formatted_text():
    content = '```json\n{"action_items": [{"text": "Ship it", "owner": "Sam", "due": null}]}\n```'
    result = action_items.parse(content, "stop")
    assert result.items == [{"text": "Ship it", "owner": "Sam"}]
    assert result.text == "- Ship it (Sam)"


def test_answer_cut_at_max_tokens_keeps_the_complete_items():
    full = json.dumps(
        {
            "action_items": [
                {"text": "First task", "owner": "Ann", "due": None},
                {"text": "Second task", "owner": None, "due": "Monday"},
                {"text": "Third task that was cut", "owner": "Bo", "due": None},
            ],
            "formatted": "...",
        }
    )
    cut = full[: full.index("Third") + 5]
    result = action_items.parse(cut, "length")
    assert result.parsed_as == "salvaged"
    assert [i["text"] for i in result.items] == ["First task", "Second task"]
    assert "max_tokens" in result.note
    assert result.text == "- First task (Ann)\n- Second task (due Monday)"


def test_plain_text_answer_is_split_into_items():
    content = "Here are the action items:\n\n1. Send the deck to Lee\n- Fix the build\n* Call the vendor\n"
    result = action_items.parse(content, "stop")
    assert result.parsed_as == "plain_text"
    assert [i["text"] for i in result.items] == [
        "Send the deck to Lee",
        "Fix the build",
        "Call the vendor",
    ]
    assert result.text == content.strip()
    assert "plain text" in result.note


def test_no_action_items():
    result = action_items.parse('{"action_items": [], "formatted": ""}', "stop")
    assert result.items == [] and result.text == "No action items."
    assert action_items.parse("", None).items == []
