"""The loop closed end to end, on the real local stack: a signed
notification reaches a receiver that verifies it; a person sets
`regenerate: true`; the local Eventarc bridge turns that change (and every
other write) into real Firestore CloudEvents for `regenerate_action_items`;
a second notification arrives; a duplicated event pays for nothing."""

from __future__ import annotations

import base64
import os

import requests
from conftest import upload_sample, wait_until

from local import eventarc, notify_receiver
from meeting_actions import regenerate

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


def test_notification_then_regeneration_from_the_console(stack, make_functions, standin, db):
    fns = make_functions(
        FIRESTORE_COLLECTION="loop", NOTIFY_SIGNING_SECRET=SECRET, NOTIFY_ALLOW_LOCAL="true"
    )
    regen = stack.start_function(
        "regenerate_action_items", fns.env, signature_type="cloudevent", name="regenerate-loop"
    )
    server, url, received = notify_receiver.start(SECRET, quiet=True)
    bridge = eventarc.FirestoreEventBridge(stack.project, "loop", regen.url, client=db).start()
    try:
        answer = fns.submit_json({"audio_url": upload_sample(stack), "notify_url": url})
        assert answer.status_code == 202, answer.text
        tid = answer.json()["transcript_id"]
        wait_until(lambda: len(received) == 1, 30, "the first notification")
        first = received[0]
        assert first["payload"]["status"] == "completed" and first["payload"]["version"] == 1

        # What a person does in the Firestore console.
        db.document(f"loop/{tid}").update(
            {"regenerate": True, "options.answer_format": "a numbered list"}
        )
        wait_until(lambda: len(received) == 2, 30, "the notification of the regenerated result")
        second = received[1]
        assert second["payload"]["version"] == 2 and second["id"] != first["id"]
        # The receiver's 200 comes before the function records it: wait for the record.
        doc = wait_until(
            lambda: (
                (d := db.document(f"loop/{tid}").get().to_dict())["notification"]["status"]
                != "sending"
                and d
            ),
            10,
            "the delivery to be recorded",
        )
        assert "regenerate" not in doc and len(doc["history"]) == 1
        assert doc["notification"]["status"] == "delivered"

        # Eventarc delivers the request's event again: nothing is paid twice.
        events = bridge.events_for(tid)
        (request,) = [d for d in events if regenerate.requested(d.body)]
        again = requests.post(regen.url, headers=request.headers, data=request.body, timeout=30)
        assert again.status_code == 200
        bridge.wait_idle()
        assert standin.stats()["gateway_success"][tid] == 2
        assert not [r for r in received if r["duplicate"]]
        # Every event, the function's own writes included, was acknowledged
        # and none of them started a generation.
        events = bridge.events_for(tid)
        assert len(events) >= 5 and all(e.delivered for e in events)
    finally:
        bridge.stop()
        server.shutdown()
        server.server_close()
