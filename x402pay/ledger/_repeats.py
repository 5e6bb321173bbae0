# ruff: noqa: S608  -- the table name is a constant; every value is a bound parameter
"""Requests without a key that ended unanswered, shared by every process of the ledger (see `x402pay._repeats`).

When a request without an ``Idempotency-Key`` signed a payment and got no answer its caller could use, the
transport records its fingerprint (method, URL, body digest) beside its entry for a short window. A repeat of that
request in another process (a task queue handing the job to another worker, a restarted bot) then reserves under
the fingerprint and gets the earlier entry back, to re-send its payment rather than sign another. An answered
repeat clears the mark.
"""

from __future__ import annotations

from x402pay.ledger._model import Entry, EntryState
from x402pay.ledger._sql import REPEATS, Program, Query, get


def earlier_entry(fingerprint: str, now: int) -> Program[Entry | None]:
    """The entry of the unanswered request with `fingerprint` whose window is still open, if it holds a payment."""
    rows = yield Query(f"SELECT entry_id FROM {REPEATS} WHERE fingerprint = ? AND until >= ?", (fingerprint, now))
    if not rows:
        return None
    entry = yield from get(str(rows[0][0]))
    if entry.payment is None or entry.state in (EntryState.RESERVED, EntryState.RELEASED):
        return None
    return entry


def note_unanswered(fingerprint: str, entry_id: str, until: int) -> Program[None]:
    """Mark `fingerprint` as the unanswered request of `entry_id`, until `until` (ledger seconds)."""
    yield Query(
        f"INSERT INTO {REPEATS} (fingerprint, entry_id, until) VALUES (?, ?, ?) ON CONFLICT (fingerprint) "
        "DO UPDATE SET entry_id = excluded.entry_id, until = excluded.until",
        (fingerprint, entry_id, until),
    )


def note_answered(fingerprint: str, now: int) -> Program[None]:
    """Clear the mark of `fingerprint`, and every mark whose window closed."""
    yield Query(f"DELETE FROM {REPEATS} WHERE fingerprint = ? OR until < ?", (fingerprint, now))
