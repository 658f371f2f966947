"""A recording uploaded to a bucket starts the same pipeline: real
CloudEvents to the function served by functions-framework, the object held
by gcp-storage-emulator, fetched by the stand-in through a V4 signed URL."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import requests
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from conftest import SAMPLES, wait_for_document, wait_until

from local import stack as local_stack

BUCKET = "team-recordings"
FINALIZED = "google.cloud.storage.object.v1.finalized"


@pytest.fixture(scope="session")
def signing_key(stack, tmp_path_factory) -> str:
    """A service account key made here, so URLs are signed for real."""
    path = tmp_path_factory.mktemp("key") / "sa.json"
    path.write_text(json.dumps(local_stack.service_account_key(stack.project)))
    return str(path)


@pytest.fixture(scope="session")
def gcs(stack):
    port = local_stack.free_port()
    args = [
        str(local_stack.VENV_BIN / "gcp-storage-emulator"),
        "start",
        "--host=127.0.0.1",
        f"--port={port}",
        "--in-memory",
    ]
    stack._spawn("gcs", args, stack._base_env(), port)
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    from google.cloud import storage

    client = storage.Client(project=stack.project)
    client.create_bucket(BUCKET)
    return client.bucket(BUCKET)


@pytest.fixture(scope="session")
def storage_fn(stack, make_functions, gcs, signing_key):
    functions = make_functions()
    env = dict(
        functions.env,
        STORAGE_EMULATOR_HOST=os.environ["STORAGE_EMULATOR_HOST"],
        GOOGLE_APPLICATION_CREDENTIALS=signing_key,
        AUDIO_PREFIX="recordings/",
    )
    return stack.start_function("transcribe_uploaded_audio", env, signature_type="cloudevent")


def upload(gcs, name: str, data: bytes, content_type: str | None = "audio/wav", metadata=None):
    blob = gcs.blob(name)
    blob.metadata = metadata
    blob.upload_from_string(data, content_type=content_type)
    blob.reload()
    return blob


def event_data(blob) -> dict:
    return {
        "bucket": blob.bucket.name,
        "name": blob.name,
        "generation": str(blob.generation),
        "size": str(blob.size),
        "contentType": blob.content_type,
        "metageneration": "1",
        "timeCreated": blob.time_created.isoformat() if blob.time_created else None,
        "metadata": blob.metadata or {},
    }


def send(fn, data, mode: str = "structured", type_: str = FINALIZED) -> requests.Response:
    event = CloudEvent(
        {
            "type": type_,
            "source": f"//storage.googleapis.com/projects/_/buckets/{BUCKET}",
            "subject": "objects/x",
        },
        data,
    )
    headers, body = (to_structured if mode == "structured" else to_binary)(event)
    return requests.post(fn.url, data=body, headers=headers, timeout=60)


def submissions_for(standin, name: str) -> list[dict]:
    return [
        r
        for r in standin.requests()
        if r["path"] == "/v2/transcript"
        and r["method"] == "POST"
        and name in (r.get("body") or {}).get("audio_url", "")
    ]


def meeting_of(db, blob) -> dict:
    from google.cloud.firestore import FieldFilter

    query = db.collection("meetings-uploads").where(
        filter=FieldFilter("uri", "==", f"gs://{BUCKET}/{blob.name}")
    )
    claims = [
        s.to_dict() for s in query.stream() if s.to_dict()["generation"] == str(blob.generation)
    ]
    assert len(claims) == 1
    return claims[0]


def test_upload_is_transcribed_once_with_its_exact_bytes(stack, standin, db, gcs, storage_fn):
    audio = (SAMPLES / "weekly-sync.wav").read_bytes()
    blob = upload(
        gcs,
        "recordings/2026-11-24 sync.wav",
        audio,
        metadata={"speaker_labels": "true", "team": "web"},
    )
    data = event_data(blob)
    for mode in ("structured", "binary", "binary"):  # at-least-once delivery
        answer = send(storage_fn, data, mode)
        assert answer.status_code == 200, answer.text
    assert len(submissions_for(standin, "sync.wav")) == 1

    claim = meeting_of(db, blob)
    tid = claim["transcript_id"]
    assert claim["status"] == "submitted"
    wait_until(lambda: standin.transcript(tid)["audio_sha256"], 30, "AssemblyAI to fetch the audio")
    assert standin.transcript(tid)["audio_sha256"] == hashlib.sha256(audio).hexdigest()
    assert standin.transcript(tid)["audio_size"] == len(audio)

    doc = wait_for_document(db, f"meetings/{tid}")
    assert doc["status"] == "completed" and doc["action_items"]
    assert doc["source"] == {
        "kind": "gcs",
        "uri": f"gs://{BUCKET}/recordings/2026-11-24 sync.wav",
        "bucket": BUCKET,
        "name": "recordings/2026-11-24 sync.wav",
        "generation": str(blob.generation),
        "size": len(audio),
        "content_type": "audio/wav",
    }
    assert doc["options"]["speaker_labels"] is True
    assert doc["metadata"] == {"team": "web"}
    assert "Signature" not in json.dumps(doc, default=str), "a signed URL is a credential"

    # A re-upload is a new meeting.
    again = upload(gcs, blob.name, audio)
    assert send(storage_fn, event_data(again)).status_code == 200
    assert len(submissions_for(standin, "sync.wav")) == 2


def test_objects_that_are_not_meetings_are_skipped(stack, standin, gcs, storage_fn):
    before = len([r for r in standin.requests() if r["path"] == "/v2/transcript"])
    cases = [
        upload(gcs, "recordings/notes.txt", b"minutes", "text/plain"),
        upload(gcs, "recordings/empty.wav", b"", "audio/wav"),
        upload(gcs, "recordings/folder/", b"", "application/x-directory"),
        upload(gcs, "elsewhere/call.wav", b"RIFF....", "audio/wav"),
        upload(
            gcs,
            "recordings/mine.wav",
            b"RIFF....",
            "audio/wav",
            metadata={"meeting-actions": "skip"},
        ),
    ]
    for blob in cases:
        assert send(storage_fn, event_data(blob)).status_code == 200
    assert len([r for r in standin.requests() if r["path"] == "/v2/transcript"]) == before


def test_generic_content_type_with_an_audio_extension_is_transcribed(standin, gcs, storage_fn):
    blob = upload(
        gcs,
        "recordings/phone.m4a",
        (SAMPLES / "launch-review.wav").read_bytes(),
        "application/octet-stream",
    )
    assert send(storage_fn, event_data(blob)).status_code == 200
    assert len(submissions_for(standin, "phone.m4a")) == 1


@pytest.mark.parametrize(
    "data",
    [
        # Google's own sample event: size 0 and a made-up content type.
        {
            "bucket": "sample-bucket",
            "contentType": "text/plain",
            "generation": "1587627537231057",
            "name": "folder/Test.cs",
            "size": "0",
            "metageneration": "1",
        },
        {"bucket": BUCKET, "name": "recordings/a.wav"},
        {"bucket": BUCKET, "name": "recordings/a.wav", "generation": "x1", "size": "many"},
        {"name": 5, "bucket": None},
        [],
        "not an object",
        None,
    ],
)
def test_odd_events_are_acknowledged(standin, storage_fn, data):
    assert send(storage_fn, data).status_code == 200


def test_foreign_event_type_is_acknowledged(storage_fn, gcs):
    blob = upload(gcs, "recordings/deleted.wav", b"RIFF....")
    assert (
        send(
            storage_fn, event_data(blob), type_="google.cloud.storage.object.v1.deleted"
        ).status_code
        == 200
    )


def test_assemblyai_5xx_raises_and_the_retried_event_succeeds_once(standin, gcs, storage_fn):
    blob = upload(gcs, "recordings/retry.wav", (SAMPLES / "weekly-sync.wav").read_bytes())
    standin.fault(target="transcript_create", kind="status", status=503, times=-1)
    answer = send(storage_fn, event_data(blob))
    assert answer.status_code == 500, "raising is how Eventarc is told to retry"
    standin.clear_faults()
    for _ in range(2):
        assert send(storage_fn, event_data(blob)).status_code == 200
    accepted = [r for r in submissions_for(standin, "retry.wav") if r["status"] == 200]
    assert len(accepted) == 1


def test_upload_mode_streams_the_object_to_assemblyai(
    stack, make_functions, standin, db, gcs, signing_key
):
    """AUDIO_DELIVERY=upload: no signed URL; the object goes to /v2/upload."""
    env = dict(
        make_functions().env,
        STORAGE_EMULATOR_HOST=os.environ["STORAGE_EMULATOR_HOST"],
        GOOGLE_APPLICATION_CREDENTIALS=signing_key,
        AUDIO_DELIVERY="upload",
    )
    fn = stack.start_function(
        "transcribe_uploaded_audio", env, signature_type="cloudevent", name="storage-upload-mode"
    )
    audio = (SAMPLES / "launch-review.wav").read_bytes()
    blob = upload(gcs, "recordings/streamed.wav", audio)
    answer = send(fn, event_data(blob))
    assert answer.status_code == 200, answer.text
    uploads = [
        r
        for r in standin.requests()
        if r["path"] == "/v2/upload" and r.get("sha256") == hashlib.sha256(audio).hexdigest()
    ]
    assert uploads, "the object's exact bytes reached /v2/upload"
    tid = meeting_of(db, blob)["transcript_id"]
    doc = wait_for_document(db, f"meetings/{tid}")
    assert (
        doc["status"] == "completed"
        and doc["source"]["uri"] == f"gs://{BUCKET}/recordings/streamed.wav"
    )
    assert standin.transcript(tid)["audio_sha256"] == hashlib.sha256(audio).hexdigest()
