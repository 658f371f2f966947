"""Random and malformed requests (hypothesis) against the real servers:
never a 5xx, never an unhandled exception, always a JSON answer, and never
a Firestore write without the webhook secret."""

from __future__ import annotations

import json

import pytest
import requests
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
submit_like = st.fixed_dictionaries(
    {},
    optional={
        "audio_url": st.one_of(
            st.text(max_size=60),
            st.sampled_from(
                [
                    "https://",
                    "ftp://x/y",
                    "http://[::1",
                    "javascript:alert(1)",
                    "https://example.invalid/a.mp3",
                ]
            ),
            json_values,
        ),
        "speech_models": json_values,
        "language_code": json_values,
        "speaker_labels": json_values,
        "answer_format": json_values,
        "metadata": json_values,
        "extra": json_values,
    },
)
hook_like = st.fixed_dictionaries(
    {},
    optional={
        "transcript_id": st.one_of(st.text(max_size=40), json_values),
        "status": st.one_of(
            st.sampled_from(["completed", "error", "redacted_audio_ready", "queued"]), json_values
        ),
        "redacted_audio_url": json_values,
    },
)
bodies = st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()))
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
headers = st.dictionaries(
    st.sampled_from(
        ["Content-Type", "X-Webhook-Secret", "Content-Encoding", "Accept", "X-Forwarded-For"]
    ),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40),
    max_size=3,
)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def fuzz_functions(make_functions):
    return make_functions(FIRESTORE_COLLECTION="fuzz")


def _documents(db) -> int:
    return len(list(db.collection("fuzz").stream()))


def _check(answer: requests.Response, stack) -> None:
    assert answer.status_code < 500, (answer.status_code, answer.text)
    if answer.status_code != 204:
        assert isinstance(answer.json(), dict)
    assert stack.api_key not in answer.text and stack.webhook_secret not in answer.text


@FUZZ
@given(
    method=methods,
    body=st.one_of(bodies, submit_like.map(lambda d: json.dumps(d).encode())),
    extra=headers,
)
def test_submit_never_fails_on_bad_input(stack, fuzz_functions, method, body, extra):
    answer = requests.request(
        method, fuzz_functions.submit.url, data=body, headers=extra, timeout=30
    )
    _check(answer, stack)


@FUZZ
@given(
    method=methods,
    body=st.one_of(bodies, hook_like.map(lambda d: json.dumps(d).encode())),
    extra=headers,
)
def test_webhook_without_the_secret_writes_nothing(stack, fuzz_functions, db, method, body, extra):
    before = _documents(db)
    answer = requests.request(
        method, fuzz_functions.webhook.url, data=body, headers=extra, timeout=30
    )
    _check(answer, stack)
    assert answer.status_code in (401, 405), answer.text
    assert _documents(db) == before


@FUZZ
@given(body=st.one_of(bodies, hook_like.map(lambda d: json.dumps(d).encode())))
def test_webhook_with_the_secret_never_fails_on_bad_input(stack, fuzz_functions, body):
    answer = requests.post(
        fuzz_functions.webhook.url,
        data=body,
        headers={"X-Webhook-Secret": stack.webhook_secret},
        timeout=30,
    )
    _check(answer, stack)


def test_oversized_bodies_are_refused_before_being_read(stack, fuzz_functions):
    """A 50 MB body announced in Content-Length is refused at once, and a
    chunked one is cut off at the limit, not read whole."""
    big = b"x" * (50 * 1024 * 1024)
    for url, extra in (
        (fuzz_functions.submit.url, {}),
        (fuzz_functions.webhook.url, {"X-Webhook-Secret": stack.webhook_secret}),
    ):
        answer = requests.post(url, data=big, headers=extra, timeout=60)
        assert answer.status_code == 413

        def chunks():
            for _ in range(100):
                yield b"y" * 1024 * 1024

        try:
            answer = requests.post(url, data=chunks(), headers=extra, timeout=60)
            assert answer.status_code in (400, 413)
        except requests.ConnectionError:
            pass  # the server hung up on the rest of the stream: also refused


storage_data = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "bucket": st.one_of(st.just("team-recordings"), json_values),
            "name": st.one_of(
                st.sampled_from(["recordings/", "recordings/a.mp3", "x/y.wav", ""]), json_values
            ),
            "generation": st.one_of(st.integers(), st.text(max_size=20), json_values),
            "size": st.one_of(st.integers(), st.text(max_size=10), json_values),
            "contentType": st.one_of(
                st.sampled_from(["audio/mpeg", "text/plain", "", "video/mp4"]), json_values
            ),
            "metadata": json_values,
            "timeCreated": st.one_of(st.text(max_size=30), json_values),
        },
    ),
)


@FUZZ
@given(
    data=storage_data,
    binary=st.booleans(),
    type_=st.sampled_from(
        ["google.cloud.storage.object.v1.finalized", "google.cloud.storage.object.v1.deleted", "x"]
    ),
)
def test_random_cloudevents_are_acknowledged(
    stack, storage_events_fn, standin, data, binary, type_
):
    event = CloudEvent(
        {"type": type_, "source": "//storage.googleapis.com/projects/_/buckets/x"}, data
    )
    head, body = (to_binary if binary else to_structured)(event)
    answer = requests.post(storage_events_fn.url, data=body, headers=head, timeout=30)
    assert answer.status_code == 200, answer.text
