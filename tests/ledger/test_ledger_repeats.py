"""Requests without a key that ended unanswered, in the ledger: a repeat from any process gets the earlier entry.

Each test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest
from ledger_support import Backend, Clock, authorize, reserve

from x402pay.ledger import EntryState

PRINT = "f" * 64


def test_a_repeat_within_the_window_gets_the_unanswered_entry_back(backend: Backend, clock: Clock) -> None:
    with backend.ledger(clock=clock) as ledger:
        first = reserve(ledger, "x402pay-first", 10, fingerprint=PRINT)
        authorize(ledger, first.id)
        ledger.mark_unknown(first.id, "no answer: ReadError")
        ledger.unanswered(PRINT, first.id, window=60)
        clock.advance(59)
        again = reserve(ledger, "x402pay-second", 10, fingerprint=PRINT)
        assert (again.id, again.key, again.state) == (first.id, "x402pay-first", EntryState.UNKNOWN)
        assert again.payment == {"header": "PAYMENT-SIGNATURE", "value": "eyJ4NDAy"}  # the stored payment, to re-send
        assert ledger.lookup("x402pay-second") is None  # nothing reserved, nothing held twice


def test_after_the_window_or_an_answer_a_request_like_it_is_new(backend: Backend, clock: Clock) -> None:
    with backend.ledger(clock=clock) as ledger:
        first = reserve(ledger, "x402pay-first", 10, fingerprint=PRINT)
        authorize(ledger, first.id)
        ledger.unanswered(PRINT, first.id, window=60)
        clock.advance(61)
        late = reserve(ledger, "x402pay-late", 10, fingerprint=PRINT)
        assert (late.key, late.state) == ("x402pay-late", EntryState.RESERVED)
        authorize(ledger, late.id, nonce="0x" + "22" * 32)
        ledger.unanswered(PRINT, late.id, window=60)
        ledger.answered(PRINT)
        new = reserve(ledger, "x402pay-new", 10, fingerprint=PRINT)
        assert (new.key, new.state) == ("x402pay-new", EntryState.RESERVED)


def test_another_fingerprint_or_none_is_another_request(backend: Backend, clock: Clock) -> None:
    with backend.ledger(clock=clock) as ledger:
        first = reserve(ledger, "x402pay-first", 10, fingerprint=PRINT)
        authorize(ledger, first.id)
        ledger.unanswered(PRINT, first.id, window=60)
        assert reserve(ledger, "x402pay-other", 10, fingerprint="e" * 64).key == "x402pay-other"
        assert reserve(ledger, "x402pay-none", 10).key == "x402pay-none"


def test_an_unsigned_or_released_entry_is_never_handed_out(backend: Backend, clock: Clock) -> None:
    with backend.ledger(clock=clock) as ledger:
        first = reserve(ledger, "x402pay-first", 10, fingerprint=PRINT)
        ledger.unanswered(PRINT, first.id, window=60)  # marked while still only reserved
        assert reserve(ledger, "x402pay-second", 10, fingerprint=PRINT).key == "x402pay-second"
        ledger.release(first.id, "never sent")
        assert reserve(ledger, "x402pay-third", 10, fingerprint=PRINT).key == "x402pay-third"


async def test_the_async_ledger_marks_and_finds_repeats_the_same_way(backend: Backend, clock: Clock) -> None:
    ledger = await backend.aledger(clock=clock)
    try:
        values = {"origin": "https://api.example", "asset": "0x" + "aa" * 20, "network": "eip155:31337",
                  "pay_to": "0x" + "bb" * 20, "amount": 10}  # fmt: skip
        first = await ledger.reserve("x402pay-first", fingerprint=PRINT, **values)
        await ledger.authorize(first.id, payment={"header": ["h", "v"]}, payer="0x1", nonce="0x1", valid_before=9,
                               method="eip3009")  # fmt: skip
        await ledger.unanswered(PRINT, first.id, window=30)
        assert (await ledger.reserve("x402pay-second", fingerprint=PRINT, **values)).id == first.id
        await ledger.answered(PRINT)
        assert (await ledger.reserve("x402pay-third", fingerprint=PRINT, **values)).key == "x402pay-third"
    finally:
        await ledger.aclose()


@pytest.mark.parametrize("window", [0, -1, 2**31])
def test_a_window_must_be_a_positive_number_of_seconds(backend: Backend, window: float) -> None:
    with backend.ledger() as ledger, pytest.raises(ValueError, match="window"):
        ledger.unanswered(PRINT, "any", window=window)
