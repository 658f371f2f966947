"""Run the whole product on this machine, end to end, and show the result.

Starts the Firestore server, the AssemblyAI stand-in and both functions on
loopback ports; uploads a shipped sample meeting to AssemblyAI's upload
endpoint; submits it through submit_transcription exactly as a user would;
waits on a Firestore listener until the meeting's document is final;
prints the action items and the document; stops everything it started.

With ASSEMBLYAI_API_KEY and a public WEBHOOK_URL (a tunnel to the webhook
port) in the environment, the same run uses the real AssemblyAI instead of
the stand-in (Firestore stays local).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import threading
import time
from pathlib import Path

import requests

os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # no gRPC chatter when the emulator stops

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from local import eventarc, notify_receiver  # noqa: E402
from local import stack as local_stack  # noqa: E402

SAMPLES = local_stack.LOCAL / "samples"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    samples = sorted(p.stem for p in SAMPLES.glob("*.wav"))
    parser.add_argument(
        "--sample",
        default="weekly-sync",
        choices=samples or None,
        help="shipped sample meeting to submit",
    )
    parser.add_argument(
        "--audio-url", help="submit this recording URL instead of uploading a sample"
    )
    parser.add_argument(
        "--answer-format",
        default=None,
        help="how the readable list is written (default: bullet points)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait for the meeting (default 60 locally, 900 against AssemblyAI)",
    )
    parser.add_argument(
        "--webhook-port",
        type=int,
        default=None,
        help="port of the webhook function (the one your tunnel forwards to)",
    )
    parser.add_argument(
        "--upload",
        action="store_true",
        help="instead of a URL, upload the sample to a local Cloud Storage bucket and let transcribe_uploaded_audio start the meeting",
    )
    parser.add_argument("--logs", type=Path, default=None, help="directory for the processes' logs")
    return parser.parse_args()


def wait_for_final(doc_ref, timeout: float) -> dict:
    """Block on a Firestore listener (no polling) until the meeting is final."""
    done = threading.Event()
    latest: dict = {}

    def on_snapshot(snapshots, _changes, _read_time) -> None:
        for snap in snapshots:
            if snap.exists:
                data = snap.to_dict()
                if data.get("status") != latest.get("status"):
                    print(f"  status: {data.get('status')}", flush=True)
                latest.clear()
                latest.update(data)
                if data.get("status") in ("completed", "error"):
                    done.set()

    watch = doc_ref.on_snapshot(on_snapshot)
    try:
        if not done.wait(timeout):
            raise SystemExit(
                f"the meeting did not finish within {timeout:.0f} s (last status: {latest.get('status')})"
            )
    finally:
        watch.unsubscribe()
    return dict(latest)


def main() -> int:
    args = parse_args()
    real = bool(os.environ.get("ASSEMBLYAI_API_KEY") and os.environ.get("WEBHOOK_URL"))
    timeout = args.timeout or (900 if real else 60)
    with local_stack.Stack(args.logs) as stack:
        print(f"logs: {stack.log_dir}")
        os.environ.setdefault("GOOGLE_CLOUD_PROJECT", stack.project)
        stack.start_firestore()
        os.environ["FIRESTORE_EMULATOR_HOST"] = f"127.0.0.1:{stack.firestore.port}"
        hook_port = args.webhook_port or local_stack.free_port()
        if real:
            print("using the real AssemblyAI (ASSEMBLYAI_API_KEY and WEBHOOK_URL are set)")
            env = stack._base_env()
            env.update(
                GOOGLE_CLOUD_PROJECT=stack.project,
                FIRESTORE_EMULATOR_HOST=f"127.0.0.1:{stack.firestore.port}",
                ASSEMBLYAI_API_KEY=os.environ["ASSEMBLYAI_API_KEY"],
                WEBHOOK_URL=os.environ["WEBHOOK_URL"],
                WEBHOOK_SECRET=os.environ.get("WEBHOOK_SECRET") or stack.webhook_secret,
            )
            api = env.get("ASSEMBLYAI_BASE_URL") or (
                "https://api.eu.assemblyai.com"
                if env.get("ASSEMBLYAI_REGION") == "eu"
                else "https://api.assemblyai.com"
            )
            api_key = env["ASSEMBLYAI_API_KEY"]
        else:
            stack.start_standin()
            env = stack.function_env(WEBHOOK_URL=f"http://127.0.0.1:{hook_port}/")
            api, api_key = stack.standin.url, stack.api_key
        # The caller's side of the loop: a receiver that verifies the signed
        # notification, and the console's regeneration through a local Eventarc.
        signing_secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        env.update(NOTIFY_SIGNING_SECRET=signing_secret, NOTIFY_ALLOW_LOCAL="true")
        receiver, notify_url, received = notify_receiver.start(signing_secret, quiet=True)
        stack.start_function("assemblyai_webhook", env, hook_port)
        submit = stack.start_function("submit_transcription", env)
        regen = stack.start_function(
            "regenerate_action_items", env, signature_type="cloudevent", name="regenerate"
        )
        print(f"webhook function: http://127.0.0.1:{hook_port}/   submit function: {submit.url}/")
        print(f"notifications to: {notify_url} (signature verified with standardwebhooks)")

        from google.cloud import firestore

        if args.upload:
            tid = upload_to_bucket(stack, env, SAMPLES / f"{args.sample}.wav")
            db = firestore.Client(project=stack.project)
            return show(db, f"{env.get('FIRESTORE_COLLECTION', 'meetings')}/{tid}", timeout)

        audio_url = args.audio_url
        if not audio_url:
            sample = SAMPLES / f"{args.sample}.wav"
            with sample.open("rb") as f:
                answer = requests.post(
                    f"{api}/v2/upload", data=f, headers={"Authorization": api_key}, timeout=120
                )
            answer.raise_for_status()
            audio_url = answer.json()["upload_url"]
            print(f"uploaded sample {sample.name} to AssemblyAI's upload storage")

        body = {
            "audio_url": audio_url,
            "metadata": {"source": "./dev run", "sample": args.sample},
            "notify_url": notify_url,
        }
        speakers = sample_speakers(args.sample) if not args.audio_url else []
        if speakers:
            body["speakers"] = speakers
        if args.answer_format:
            body["answer_format"] = args.answer_format
        db = firestore.Client(project=stack.project)
        collection = env.get("FIRESTORE_COLLECTION", "meetings")
        with eventarc.FirestoreEventBridge(stack.project, collection, regen.url, client=db):
            answer = requests.post(submit.url, json=body, timeout=60)
            print(f"submit_transcription answered {answer.status_code}: {answer.text.strip()}")
            if answer.status_code != 202:
                return 1
            accepted = answer.json()
            code = show(db, accepted["document"], timeout)
            local_stack.wait_until(lambda: received, 30, "the notification")
            print_notification(received[0])
            if real:
                return code
            print("\nIn the Firestore console, a person sets regenerate: true on the document:")
            db.document(accepted["document"]).update({"regenerate": True})
            local_stack.wait_until(lambda: len(received) >= 2, 60, "the second notification")
            print_notification(received[1])
            doc = db.document(accepted["document"]).get().to_dict()
            print(f"  regenerate: {doc.get('regenerate')}, result_version: "
                  f"{doc.get('result_version')}, history: {len(doc.get('history') or [])} "
                  "earlier result(s)")  # fmt: skip
        receiver.shutdown()
        receiver.server_close()
        return code


def sample_speakers(sample: str) -> list[str]:
    """The sample meeting's participants, as a caller would name them."""
    path = SAMPLES / f"{sample}.json"
    names = json.loads(path.read_text()).get("speakers") if path.exists() else None
    return sorted(set(names.values())) if isinstance(names, dict) else []


def print_notification(entry: dict) -> None:
    body = entry["payload"]
    print(f"\nnotification received and verified: webhook-id {entry['id']}, "
          f"{body['type']}, version {body['version']}, {len(body['action_items'])} item(s), "
          f"document {body['document']}")  # fmt: skip


def show(db, path: str, timeout: float) -> int:
    """Wait for the meeting, then print its action items and document."""
    started = time.monotonic()
    document = wait_for_final(db.document(path), timeout)
    print(f"finished in {time.monotonic() - started:.1f} s\n")
    if document.get("status") == "completed":
        print("Action items:")
        print(document.get("action_items_text", ""))
    else:
        print(f"The meeting failed at {document.get('error_stage')}: {document.get('error')}")
    print(f"\nFirestore document {path}:")
    print(json.dumps(document, indent=2, default=str, ensure_ascii=False))
    return 0 if document.get("status") == "completed" else 1


def upload_to_bucket(stack: local_stack.Stack, env: dict, sample: Path) -> str:
    """The storage path: a bucket in gcp-storage-emulator, a real CloudEvent."""
    from cloudevents.conversion import to_structured
    from cloudevents.http import CloudEvent
    from google.cloud import firestore, storage

    port = local_stack.free_port()
    gcs_bin = str(local_stack.VENV_BIN / "gcp-storage-emulator")
    stack._spawn(
        "gcs",
        [gcs_bin, "start", "--host=127.0.0.1", f"--port={port}", "--in-memory"],
        stack._base_env(),
        port,
    )
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    key_file = stack.log_dir / "signing-key.json"
    key_file.write_text(json.dumps(local_stack.service_account_key(stack.project)))
    fn_env = dict(
        env,
        STORAGE_EMULATOR_HOST=os.environ["STORAGE_EMULATOR_HOST"],
        GOOGLE_APPLICATION_CREDENTIALS=str(key_file),
    )
    fn = stack.start_function("transcribe_uploaded_audio", fn_env, signature_type="cloudevent")

    bucket = storage.Client(project=stack.project).create_bucket("local-meeting-recordings")
    blob = bucket.blob(f"recordings/{sample.name}")
    blob.upload_from_filename(str(sample), content_type="audio/wav")
    blob.reload()
    print(
        f"uploaded {sample.name} to gs://{bucket.name}/{blob.name} (generation {blob.generation})"
    )
    data = {
        "bucket": bucket.name,
        "name": blob.name,
        "generation": str(blob.generation),
        "size": str(blob.size),
        "contentType": blob.content_type,
    }
    event = CloudEvent(
        {
            "type": "google.cloud.storage.object.v1.finalized",
            "source": f"//storage.googleapis.com/projects/_/buckets/{bucket.name}",
        },
        data,
    )
    headers, body = to_structured(event)
    answer = requests.post(fn.url, data=body, headers=headers, timeout=60)
    print(f"transcribe_uploaded_audio answered {answer.status_code}")
    answer.raise_for_status()
    db = firestore.Client(project=stack.project)
    uploads = db.collection(f"{env.get('FIRESTORE_COLLECTION', 'meetings')}-uploads")
    claims = [
        s.to_dict()
        for s in uploads.stream()
        if s.to_dict().get("uri") == f"gs://{bucket.name}/{blob.name}"
    ]
    return claims[0]["transcript_id"]


if __name__ == "__main__":
    sys.exit(main())
