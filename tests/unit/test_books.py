"""Books: one signature per logical request, with or without a ledger (SQLite, in memory: no chain needed).

The books are programs; these drive them against a real ledger, the way a transport's engine does."""

from __future__ import annotations

from typing import Any, TypeVar

import pytest

from x402pay import AlreadyPaid, Wallet
from x402pay._books import Books, Hold, New, PaidElsewhere, Replay, Start, has_news
from x402pay._effects import Book, Effect, Program, drive
from x402pay._payment import Payment, PaymentStatus
from x402pay._protocol.models import PaymentRequirements
from x402pay._receipts import Receipt
from x402pay._schemes.exact import sign_exact
from x402pay._trust import TrustStore
from x402pay.ledger import EntryState, Ledger

WALLET = Wallet.from_key("0x" + "33" * 32)
REQUIREMENT = PaymentRequirements.model_validate(
    {
        "scheme": "exact", "network": "eip155:8453", "amount": "10000",
        "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
        "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "maxTimeoutSeconds": 60,
    }
)  # fmt: skip
ORIGIN = "https://paid.example"
T = TypeVar("T")


def signed_payment(origin: str = ORIGIN) -> Payment:
    return Payment(
        origin=origin, x402_version=2, signed=sign_exact(WALLET, REQUIREMENT, now=1_750_000_000, max_lifetime=60)
    )


def books(ledger: Ledger | None = None) -> Books:
    return Books(ledger=ledger is not None, trust=TrustStore(), verify="off", on_receipt=None, on_verified=None)


def run(program: Program[T], ledger: Ledger | None) -> T:
    def perform(effect: Effect) -> Any:
        assert isinstance(effect, Book)
        assert ledger is not None
        return getattr(ledger, effect.operation)(*effect.args, **effect.kwargs)

    return drive(program, perform)


@pytest.mark.parametrize("with_ledger", [False, True])
def test_a_paid_key_is_re_sent_at_its_origin_and_refused_elsewhere(with_ledger: bool) -> None:
    ledger = Ledger.sqlite(":memory:") if with_ledger else None
    book = books(ledger)
    held = run(book.reserve("k1", ORIGIN, REQUIREMENT), ledger)
    assert isinstance(held, Hold)
    payment = signed_payment()
    run(book.authorize(held, payment, ("PAYMENT-SIGNATURE", "abc"), {"x-x402-max-amount-wei": "50000"}), ledger)

    again: Start = run(book.begin(["k1"], ORIGIN), ledger)
    assert isinstance(again, Replay)
    assert again.header == ("PAYMENT-SIGNATURE", "abc")
    assert again.headers == {"x-x402-max-amount-wei": "50000"}  # what it was sent with, to send again
    assert isinstance(run(book.begin(["k1"], "https://elsewhere.example"), ledger), PaidElsewhere)
    assert isinstance(run(book.reserve("k1", ORIGIN, REQUIREMENT), ledger), Replay)
    with pytest.raises(AlreadyPaid, match=r"already paid at https://paid\.example"):
        run(book.reserve("k1", "https://elsewhere.example", REQUIREMENT), ledger)


def test_a_released_entry_may_be_signed_afresh() -> None:
    ledger = Ledger.sqlite(":memory:")
    book = books(ledger)
    held = run(book.reserve("k2", ORIGIN, REQUIREMENT), ledger)
    assert isinstance(held, Hold)
    assert held.entry_id is not None
    run(book.release(held, "refused before sending"), ledger)
    assert isinstance(run(book.begin(["k2"], ORIGIN), ledger), New)
    fresh = run(book.reserve("k2", ORIGIN, REQUIREMENT), ledger)
    assert isinstance(fresh, Hold)
    assert fresh.entry_id not in (None, held.entry_id)
    assert ledger.get(str(fresh.entry_id)).state is EntryState.RESERVED


def test_a_receipt_is_booked_once() -> None:
    ledger = Ledger.sqlite(":memory:")
    book = books(ledger)
    held = run(book.reserve("k3", ORIGIN, REQUIREMENT), ledger)
    assert isinstance(held, Hold)
    payment = signed_payment()
    run(book.authorize(held, payment, ("PAYMENT-SIGNATURE", "abc"), {"x-x402-max-amount-wei": "50000"}), ledger)
    payment.receipt = Receipt(amount=10_000, source="PAYMENT-RESPONSE", transaction="0x01")
    payment.status = PaymentStatus.SETTLED
    assert has_news(payment)
    run(book.record(payment), ledger)
    run(book.record(payment), ledger)
    assert not has_news(payment)
    entry = ledger.get(str(held.entry_id))
    assert (entry.state, entry.claimed_amount, entry.claimed_tx) == (EntryState.CLAIMED, 10_000, "0x01")
    assert entry.held == 10_000  # a claim: held at the signed maximum until the chain shows what moved
