"""Models fail over (models.py), in process: the gateway's list decides
which configured models are asked; a refusal or a rate limit moves to the
next model; a meeting waits only when every model is rate limited, and
never ends `error` because one model refused.
"""

from __future__ import annotations

import datetime as dt

from fakes import GOOD_CONTENT, answer
from test_lifecycle import logs_of, product  # noqa: F401 - the fixture

from meeting_actions import assemblyai, models, record

TWO = {"LLM_MODEL": "claude-sonnet-4-6", "LLM_FALLBACK_MODELS": "gpt-5.5, gemini-3.5-flash"}


def gateway_by_model(product, refuse=(), limit=()):  # noqa: F811
    asked: list[str] = []

    def gateway(body):
        asked.append(body["model"])
        if body["model"] in refuse:
            raise assemblyai.ApiError(f"404 Model {body['model']} has been retired", 404)
        if body["model"] in limit:
            raise assemblyai.ApiError("429 Rate limit exceeded", 429, retry_after=600)
        return answer(GOOD_CONTENT, model=body["model"])

    product.aai.gateway = gateway
    return asked


def test_a_refusing_model_fails_over_to_the_next_in_the_same_delivery(product):  # noqa: F811
    product.configure(**TWO)
    asked = gateway_by_model(product, refuse=("claude-sonnet-4-6",))
    tid = product.queued_meeting()
    assert product.deliver(tid).status_code == 200
    doc = product.doc(tid)
    assert doc["status"] == "completed", doc.get("error")
    assert doc["llm"]["model"] == "gpt-5.5"
    assert asked == ["claude-sonnet-4-6", "gpt-5.5"]
    assert doc["llm"]["tried"] == [
        {"model": "claude-sonnet-4-6", "outcome": "refused"},
        {"model": "gpt-5.5", "outcome": "answered"},
    ]


def test_a_model_not_on_the_gateways_list_is_never_asked(product):  # noqa: F811
    product.configure(**TWO)
    product.aai.models = ["gpt-5.5", "gemini-3.5-flash"]
    asked = gateway_by_model(product)
    tid = product.queued_meeting()
    assert product.deliver(tid).status_code == 200
    assert product.doc(tid)["llm"]["model"] == "gpt-5.5"
    assert asked == ["gpt-5.5"]


def test_the_document_records_a_model_skipped_because_it_is_not_listed(product):  # noqa: F811
    """Which models were tried includes the skipped: a person reading the
    document sees why the answer came from a fallback without a request
    to the preferred model. The third model, never reached, is not named."""
    product.configure(**TWO)
    product.aai.models = ["gpt-5.5", "gemini-3.5-flash"]
    gateway_by_model(product)
    tid = product.queued_meeting()
    assert product.deliver(tid).status_code == 200
    assert product.doc(tid)["llm"]["tried"] == [
        {"model": "claude-sonnet-4-6", "outcome": "not listed"},
        {"model": "gpt-5.5", "outcome": "answered"},
    ]


def test_a_list_that_cannot_be_read_blocks_nothing(product):  # noqa: F811
    product.configure(**TWO)
    product.aai.models = None
    asked = gateway_by_model(product)
    tid = product.queued_meeting()
    assert product.deliver(tid).status_code == 200
    assert product.doc(tid)["status"] == "completed" and asked == ["claude-sonnet-4-6"]


def test_a_rate_limited_model_fails_over_and_is_remembered(product):  # noqa: F811
    product.configure(**TWO)
    asked = gateway_by_model(product, limit=("claude-sonnet-4-6",))
    first, second = product.queued_meeting(), product.queued_meeting()
    assert product.deliver(first).status_code == 200
    assert product.deliver(second).status_code == 200
    assert [product.doc(t)["llm"]["model"] for t in (first, second)] == ["gpt-5.5"] * 2
    # The second meeting knew the first model's "not before": it was not asked again.
    assert asked == ["claude-sonnet-4-6", "gpt-5.5", "gpt-5.5"]
    assert [product.doc(t)["llm"]["tried"] for t in (first, second)] == [
        [{"model": "claude-sonnet-4-6", "outcome": "rate limited"},
         {"model": "gpt-5.5", "outcome": "answered"}],
        [{"model": "claude-sonnet-4-6", "outcome": "still rate limited"},
         {"model": "gpt-5.5", "outcome": "answered"}],
    ]  # fmt: skip


def test_a_meeting_waits_only_when_every_model_is_rate_limited(product):  # noqa: F811
    product.configure(LLM_MODEL="claude-sonnet-4-6", LLM_FALLBACK_MODELS="gpt-5.5")
    gateway_by_model(product, limit=("claude-sonnet-4-6", "gpt-5.5"))
    tid = product.queued_meeting()
    answer_ = product.deliver(tid)
    assert answer_.status_code == 503
    generation = product.doc(tid)["generation"]
    waits = {w["model"]: w["not_before"] for w in generation["model_waits"]}
    assert set(waits) == {"claude-sonnet-4-6", "gpt-5.5"}
    assert generation["not_before"] == min(waits.values()) > record.now()
    assert product.doc(tid)["status"] == "generating"
    # One model's wait is over (another instance, say): the meeting goes on.
    models.forget()
    soon = record.now() - dt.timedelta(seconds=1)
    product.store.set_field("meetings", tid, generation={
        **generation, "not_before": None,
        "model_waits": [{"model": "gpt-5.5", "not_before": soon},
                        {"model": "claude-sonnet-4-6", "not_before": waits["claude-sonnet-4-6"]}],
    })  # fmt: skip
    gateway_by_model(product)
    assert product.deliver(tid).status_code == 200
    assert product.doc(tid)["llm"]["model"] == "gpt-5.5"


def test_no_configured_model_on_the_list_waits_for_the_operator(product, capsys):  # noqa: F811
    product.configure(LLM_MODEL="claude-sonnet-4-5-20250929")
    product.aai.models = ["claude-sonnet-4-6"]
    asked = gateway_by_model(product)
    tid = product.queued_meeting()
    answer_ = product.deliver(tid)
    assert answer_.status_code == 503 and answer_.get_json()["kind"] == "operator"
    assert product.doc(tid)["status"] == "generating" and asked == []
    (line,) = [e for e in logs_of(capsys) if e.get("fix") == "llm_models"]
    assert line["severity"] == "ERROR" and "claude-sonnet-4-5-20250929" in line["message"]
    assert "LLM_MODEL" in line["message"] and "LLM_FALLBACK_MODELS" in line["message"]
    # The setting is fixed (a new instance): the waiting meeting completes on its own.
    product.configure(LLM_MODEL="claude-sonnet-4-6")
    models.forget()
    product.make_stale(tid)
    product.sweep()
    assert product.doc(tid)["status"] == "completed" and asked == ["claude-sonnet-4-6"]


def test_a_request_every_listed_model_refuses_ends_in_error(product):  # noqa: F811
    product.configure(**TWO)
    asked = gateway_by_model(product, refuse=("claude-sonnet-4-6", "gpt-5.5", "gemini-3.5-flash"))
    tid = product.queued_meeting()
    assert product.deliver(tid).status_code == 200
    doc = product.doc(tid)
    assert doc["status"] == "error" and "every listed model refused" in doc["error"]
    assert "has been retired" in doc["error"] and len(asked) == 3
