"""One lease, used by everything that works on a document: the webhook, the
sweep and the storage trigger.

A caller claims the work with a write only one caller can win (a create of
a missing document, or an update conditioned on the version it read),
holds it until `lease_expires_at`, and ends with `finish` (its result) or
`release` (the work given back, maybe counted as a failed attempt). Both
are conditioned on the holder's own claim, so a holder whose lease ran
out can never overwrite the work of the one that took over. The lease's
bookkeeping lives in one map field of the document (`generation` for a
meeting, `lease` for an upload).

Every claim counts. A claim is `settled: false` until its holder finishes
or gives it back; a claim that expired unsettled (the instance died, or a
crash could not even give it back) is counted as a failed attempt by the
next claim, so no path repeats paid work without counting it. The map is
read without trusting it: a person can edit it in the console.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from . import console, lifecycle, logs, record

# What a claim decides from the document as read: None to claim it, or the
# result to hand back instead (final already, someone else holds it ...).
Decide = Callable[[dict[str, Any] | None, dt.datetime], lifecycle.Result | None]


@dataclasses.dataclass
class Lease:
    collection: str
    doc_id: str
    field: str
    data: dict[str, Any]  # the document as claimed
    version: Any  # update time of our claim write

    @property
    def state(self) -> dict[str, Any]:
        return state_of(self.data, self.field)

    def release(
        self,
        last_error: str,
        count_attempt: bool = False,
        sweep_at: dt.datetime | None = None,
        not_before: dt.datetime | None = None,
        extra: dict[str, Any] | None = None,
    ) -> bool:
        """Give the work back so a later delivery or the sweep can take it.

        `sweep_at`: when the sweep should look again (default: at once).
        `not_before`: no one may take it before then (a rate limit).
        """
        at = record.now()
        state = {**self.state, "lease_expires_at": at, "last_error": last_error[:500]}
        state.update(settled=True)
        state.pop("not_before", None)
        if count_attempt:
            state["attempts"] = state["attempts"] + 1
        if not_before is not None and not_before > at:
            state["not_before"] = not_before
        sweep_at = max(not_before or sweep_at or at, at)
        fields = {self.field: state, "sweep_at": sweep_at, **(extra or {})}
        return self._write(fields, "give back", record.QUICK)

    def mark(self, fields: dict[str, Any]) -> bool:
        """Record progress while holding the claim (it stays ours)."""
        return self._write(dict(fields), "record progress", record.QUICK)

    def finish(self, fields: dict[str, Any]) -> bool:
        """Write the result, if the claim is still ours; False if it is not."""
        state = {**self.state, "lease_expires_at": None, "finished_at": record.now()}
        state.update(settled=True)
        state.pop("not_before", None)
        own = fields.get(self.field) or {}
        fields = {"sweep_at": None, **fields, self.field: {**state, **own}}
        return self._write(fields, "finish", record.PATIENT)

    def _write(self, fields: dict[str, Any], what: str, retry: dict[str, Any]) -> bool:
        """Write over our claim. Someone else's write in between (a person
        editing the document in the console, say) fails the condition: if
        the claim is still ours, write again over that version, for as long
        as the write's own retry budget lasts (a person may type many edits),
        never giving up a claim that is still ours for a count of tries."""
        stamped = {**fields, "updated_at": record.SERVER_TIMESTAMP}
        budget = retry["retry"].timeout if "retry" in retry else record.PATIENT_SECONDS
        until = time.monotonic() + budget
        for _ in range(MAX_REWRITES):
            try:
                self.version = record.store().update(
                    self.collection, self.doc_id, stamped, self.version, **retry
                )
            except record.LostRace:
                if not self._still_ours():
                    logs.warning(f"could not {what}: the claim was taken over", self.doc_id)
                    return False
                if time.monotonic() > until:
                    break
                continue
            self.data = {**self.data, **fields}
            return True
        logs.warning(f"could not {what}: the document kept changing under the claim",
                     self.doc_id)  # fmt: skip
        return False

    def _still_ours(self) -> bool:
        data, version = record.store().get(self.collection, self.doc_id)
        theirs = state_of(data, self.field)
        mine = self.state
        if (
            data is None
            or theirs.get("holder") != mine.get("holder")
            or theirs.get("claimed_at") != mine.get("claimed_at")
            or not isinstance(theirs.get("lease_expires_at"), dt.datetime)
            or theirs["lease_expires_at"] <= record.now()
        ):
            return False
        # Keep what the other writer changed; ours goes over it.
        self.data = {**data, **{k: v for k, v in self.data.items() if k == self.field}}
        self.version = version
        return True


def state_of(data: dict[str, Any] | None, field: str) -> dict[str, Any]:
    """The lease's map as a copy, repaired: not a map reads as empty, the
    attempts as a count, the times as datetimes or absent."""
    state = console.mapping((data or {}).get(field))
    state["attempts"] = console.count(state.get("attempts"))
    for key in ("lease_expires_at", "claimed_at", "not_before"):
        if key in state and not isinstance(state[key], dt.datetime):
            state.pop(key)
    return state


# Writes over our own claim after others' writes, at most (and within the
# write's retry budget): enough for a person typing in the console.
MAX_REWRITES = 50

UNSETTLED = (
    "the previous attempt ended without finishing or giving the claim back (its instance "
    "died, or a crash could not be recorded)"
)


def claim(
    collection: str,
    doc_id: str,
    field: str,
    holder: str,
    seconds: float,
    decide: Decide,
    on_claim: Callable[[dict[str, Any] | None], dict[str, Any]],
    create: Callable[[], dict[str, Any]] | None = None,
    rounds: int = 4,
    fresh: bool = False,
) -> Lease | lifecycle.Result:
    """Win the work on one document, or the result that says why not.

    `decide` sees the document (None if missing) and may refuse; a live
    lease of another holder is refused here, for everyone. `on_claim` gives
    the fields the claim sets besides the lease (a status, say), and under
    `field` any bookkeeping of its own for the lease's map. Without
    `create`, a missing document is the decide function's business; with
    it, the document is created, claimed, from what it returns.
    """
    for _ in range(rounds):
        data, version = record.store().get(collection, doc_id)
        at = record.now()
        refusal = decide(data, at)
        if refusal is not None:
            return refusal
        state = state_of(data, field)
        expires = state.get("lease_expires_at")
        if isinstance(expires, dt.datetime) and expires > at and state.get("holder") != holder:
            return lifecycle.Busy(
                "another caller is working on it",
                max(1.0, min((expires - at).total_seconds(), lifecycle.RETRY_AFTER)),
                transcript_id=doc_id,
                detail={"held": True},
            )
        if fresh:  # a new request (a regeneration): its own attempts, from zero
            state = {"attempts": 0}
        elif state.get("settled") is False:
            state.update(attempts=state["attempts"] + 1, last_error=UNSETTLED)
        expiry = at + dt.timedelta(seconds=seconds)
        state.update(holder=holder, lease_expires_at=expiry, claimed_at=at, settled=False)
        fields = on_claim(data)
        state.update(fields.pop(field, None) or {})
        fields = {**fields, field: state, "sweep_at": expiry}
        stamped = {**fields, "updated_at": record.SERVER_TIMESTAMP}
        try:
            if data is None:
                if create is None:
                    return lifecycle.Refused("no such document", by="unknown")
                body = {**create(), **stamped, "created_at": record.SERVER_TIMESTAMP}
                new_version = record.store().create(collection, doc_id, body)
                data = body
            else:
                new_version = record.store().update(collection, doc_id, stamped, version)
                data = {k: v for k, v in {**data, **fields}.items() if v is not record.DELETE_FIELD}
        except record.LostRace:
            continue
        return Lease(collection, doc_id, field, data, new_version)
    return lifecycle.Busy("another caller is working on it", transcript_id=doc_id)
