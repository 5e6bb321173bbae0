"""Books: one signature per logical request, with or without a ledger (SQLite, in memory: no chain needed)."""

from __future__ import annotations

import pytest

from x402pay import AlreadyPaid, Wallet
from x402pay.bookkeeping import Books, has_news
from x402pay.ledger import EntryState, Ledger
from x402pay.payment import Payment, PaymentStatus
from x402pay.protocol.models import PaymentRequirements
from x402pay.receipts import Receipt
from x402pay.schemes.exact import sign_exact
from x402pay.trust import TrustStore

WALLET = Wallet.from_key("0x" + "33" * 32)
REQUIREMENT = PaymentRequirements.model_validate(
    {
        "scheme": "exact", "network": "eip155:8453", "amount": "10000",
        "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
        "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "maxTimeoutSeconds": 60,
    }
)  # fmt: skip
ORIGIN = "https://paid.example"


def signed_payment(origin: str = ORIGIN) -> Payment:
    return Payment(
        origin=origin, x402_version=2, signed=sign_exact(WALLET, REQUIREMENT, now=1_750_000_000, max_lifetime=60)
    )


def books(ledger: Ledger | None = None) -> Books:
    return Books(ledger, TrustStore(), None, None, None)


@pytest.mark.parametrize("with_ledger", [False, True])
def test_a_paid_key_is_re_sent_at_its_origin_and_refused_elsewhere(with_ledger: bool) -> None:
    book = books(Ledger.sqlite(":memory:") if with_ledger else None)
    entry, replay = book.reserve("k1", ORIGIN, REQUIREMENT)
    assert replay is None
    payment = signed_payment()
    book.authorize(entry, "k1", payment, ("PAYMENT-SIGNATURE", "abc"))

    again = book.replay("k1", ORIGIN)
    assert again is not None
    assert again[1] == ("PAYMENT-SIGNATURE", "abc")
    assert book.replay("k1", "https://elsewhere.example") is None
    assert book.reserve("k1", ORIGIN, REQUIREMENT)[1] is not None
    with pytest.raises(AlreadyPaid, match=r"already paid at https://paid\.example"):
        book.reserve("k1", "https://elsewhere.example", REQUIREMENT)


def test_a_released_entry_may_be_signed_afresh() -> None:
    ledger = Ledger.sqlite(":memory:")
    book = books(ledger)
    entry, _ = book.reserve("k2", ORIGIN, REQUIREMENT)
    ledger.release(entry.id, "refused before sending")
    fresh, replay = book.reserve("k2", ORIGIN, REQUIREMENT)
    assert replay is None
    assert fresh.id != entry.id
    assert fresh.state is EntryState.RESERVED


def test_a_receipt_is_booked_once() -> None:
    ledger = Ledger.sqlite(":memory:")
    book = books(ledger)
    entry, _ = book.reserve("k3", ORIGIN, REQUIREMENT)
    payment = signed_payment()
    book.authorize(entry, "k3", payment, ("PAYMENT-SIGNATURE", "abc"))
    payment.receipt = Receipt(amount=10_000, source="PAYMENT-RESPONSE", transaction="0x01")
    payment.status = PaymentStatus.SETTLED
    assert has_news(payment)
    book.record(payment)
    book.record(payment)
    assert not has_news(payment)
    assert ledger.get(entry.id).state is EntryState.SETTLED
