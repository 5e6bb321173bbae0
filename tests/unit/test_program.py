"""The payment program alone: scripted peers answer its effects, no socket, database or RPC is touched.

Each row of the table is a peer (honest, asking twice, malformed, refusing, lying, dropping the connection, ...)
and the effects the program must ask for, in order, with how it ends. The same program runs behind every driver;
the integration tests run it on anvil through each of them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from program_peers import ORIGIN, PERMIT2, UPTO, USDC, Peer, answer, challenge, program, refused, run, settled

from x402pay import (
    BudgetExceeded,
    ChainUnavailable,
    ChallengeError,
    LedgerError,
    PaymentRejected,
    PaymentStatus,
    Permit2AllowanceRequired,
    ReceiptMismatch,
    SigningError,
)
from x402pay._attempt import Call
from x402pay._effects import Book, Effect, Send, drive
from x402pay.ledger import Budget

PAID = ["chose", "signed", "stored", "sent"]


@dataclass(frozen=True)
class Row:
    peer: Callable[[], Peer]
    effects: list[str]
    raises: type[BaseException] | None = None
    options: dict[str, Any] = field(default_factory=dict)


ROWS = {
    "unpaid": Row(lambda: Peer([answer(200)]), ["send"]),
    "honest": Row(lambda: Peer([challenge(), settled()]), ["send", "close", "sign", "send paid"]),
    "honest, with a ledger": Row(
        lambda: Peer([challenge(), settled()], ledger=True),
        ["send", "close", "book reserve", "sign", "book authorize", "send paid", "book claim"],
    ),
    "a caller's key is looked up once": Row(
        lambda: Peer([answer(200)], ledger=True), ["book find", "send"], options={"headers": {"Idempotency-Key": "k"}}
    ),
    "not x402": Row(lambda: Peer([answer(402, {"content-type": "text/plain"}, b"no")]), ["send"]),
    "malformed challenge": Row(
        lambda: Peer([answer(402, {"PAYMENT-REQUIRED": "%%%"})]), ["send", "close"], ChallengeError
    ),
    "402 twice": Row(
        lambda: Peer([challenge(), refused()], ledger=True),
        [
            "send",
            "close",
            "book reserve",
            "sign",
            "book authorize",
            "send paid",
            "readbody",
            "close",
            "book mark_unknown",
        ],
        PaymentRejected,
    ),
    "lying about the amount": Row(
        lambda: Peer([challenge(), settled(9_999)], ledger=True),
        ["send", "close", "book reserve", "sign", "book authorize", "send paid", "book mark_mismatch", "close"],
        ReceiptMismatch,
    ),
    "lying, caught on chain": Row(
        lambda: Peer([challenge(), settled()], ledger=True, verdict="mismatch"),
        [
            "send",
            "close",
            "book reserve",
            "sign",
            "book authorize",
            "send paid",
            "book claim",
            "verify",
            "book mark_mismatch",
            "close",
        ],
        ReceiptMismatch,
        {"verify": "inline"},
    ),
    "dropping the connection": Row(
        lambda: Peer([challenge(), ConnectionError("reset")], ledger=True),
        ["send", "close", "book reserve", "sign", "book authorize", "send paid", "book mark_unknown"],
        ConnectionError,
    ),
    "the ledger fails on the receipt": Row(
        lambda: Peer([challenge(), settled()], ledger=True, failing={"book claim": LedgerError("disk full")}),
        ["send", "close", "book reserve", "sign", "book authorize", "send paid", "book claim", "close"],
        LedgerError,
    ),
    "the budget refuses": Row(
        lambda: Peer([challenge()], ledger=True, failing={"book reserve": BudgetExceeded(Budget(USDC, 5), 10_000, 5)}),
        ["send", "close", "book reserve"],
        BudgetExceeded,
    ),
    "the allowance read fails": Row(
        lambda: Peer([challenge(PERMIT2)], ledger=True, failing={"chain allowance": ChainUnavailable("down")}),
        ["send", "close", "book reserve", "chain allowance", "book release"],
        ChainUnavailable,
        {"reads_chain": True},
    ),
    "the allowance is too low": Row(
        lambda: Peer([challenge(PERMIT2)], ledger=True, allowance=0),
        ["send", "close", "book reserve", "chain allowance", "book release"],
        Permit2AllowanceRequired,
        {"reads_chain": True},
    ),
    "signing fails": Row(
        lambda: Peer([challenge()], ledger=True, failing={"sign": SigningError("no key")}),
        ["send", "close", "book reserve", "sign", "book release"],
        SigningError,
    ),
    "the process is told to stop while signing": Row(
        lambda: Peer([challenge()], ledger=True, failing={"sign": KeyboardInterrupt()}),
        ["send", "close", "book reserve", "sign", "book release"],
        KeyboardInterrupt,
    ),
    "storing the payment fails": Row(
        lambda: Peer([challenge()], ledger=True, failing={"book authorize": LedgerError("locked")}),
        ["send", "close", "book reserve", "sign", "book authorize", "book release"],
        LedgerError,
    ),
}


@pytest.mark.parametrize("case", ROWS, ids=list(ROWS))
def test_each_peer_gets_exactly_these_effects_in_order(case: str) -> None:
    row = ROWS[case]
    peer = row.peer()
    options = dict(row.options)
    headers = options.pop("headers", None)
    if row.raises is None:
        delivery = run(peer, headers, **options)
        assert delivery.answer is peer.sent[-1]
        assert not delivery.answer.raw.closed  # handed to the caller open, still streaming
    else:
        with pytest.raises(row.raises):
            run(peer, headers, **options)
        assert all(sent.raw.closed for sent in peer.sent if sent.status == 402 or sent.raw.body == b"paid")
    assert peer.log == row.effects


#: The INFO records (`x402pay._events`) each peer's request leaves, in order: one per decision that moves or holds
#: money, none for a request that was not paid.
EVENTS = {
    "unpaid": [],
    "honest": ["chose", "signed", "sent", "claimed"],
    "honest, with a ledger": [*PAID, "claimed"],
    "a caller's key is looked up once": [],
    "not x402": [],
    "malformed challenge": [],
    "402 twice": [*PAID, "unsettled", "refused"],
    "lying about the amount": [*PAID, "untrusted"],
    "lying, caught on chain": [*PAID, "claimed", "verified", "untrusted"],
    "dropping the connection": [*PAID, "unsettled"],
    "the ledger fails on the receipt": [*PAID, "claimed"],
    "the budget refuses": ["chose", "refused"],
    "the allowance read fails": ["chose", "released"],
    "the allowance is too low": ["chose", "released", "refused"],
    "signing fails": ["chose", "released"],
    "the process is told to stop while signing": ["chose", "released"],
    "storing the payment fails": ["chose", "signed", "released"],
}


@pytest.mark.parametrize("case", ROWS, ids=list(ROWS))
def test_each_peer_leaves_exactly_these_info_records(case: str, caplog: pytest.LogCaptureFixture) -> None:
    row = ROWS[case]
    options = dict(row.options)
    headers = options.pop("headers", None)
    caplog.set_level(logging.DEBUG, logger="x402pay")
    with contextlib.suppress(BaseException):
        run(row.peer(), headers, **options)
    records = [record for record in caplog.records if record.levelno >= logging.INFO]
    assert [getattr(record, "x402pay_event", None) for record in records] == EVENTS[case]
    for record in records:
        message = record.getMessage()
        assert record.levelno == logging.INFO
        assert message.startswith(f"{record.x402pay_event}: ")
        assert "\n" not in message
        assert record.origin == ORIGIN
        assert record.key.startswith("x402pay-")


def test_an_upto_ask_over_the_budget_is_asked_again_once_with_the_room_as_ceiling() -> None:
    room = 30_000
    refusal = BudgetExceeded(Budget(USDC, 100_000), 50_000, room)
    reserves: list[int] = []

    class Budgeted(Peer):
        def __call__(self, effect: Effect) -> Any:
            if isinstance(effect, Book) and effect.operation == "reserve":
                reserves.append(effect.kwargs["amount"])
                if effect.kwargs["amount"] > room:
                    self.log.append("book reserve")
                    raise refusal
            if isinstance(effect, Send):
                ceilings.append(effect.headers["x-x402-max-amount-wei"])
            return super().__call__(effect)

    ceilings: list[str] = []
    peer = Budgeted([challenge(UPTO), challenge({**UPTO, "amount": str(room)}), settled(12_000)], ledger=True)
    delivery = run(peer)
    assert ceilings == ["50000", str(room), str(room)]  # the paid retry repeats the ceiling its challenge followed
    assert reserves == [50_000, room]
    assert delivery.payment is not None
    assert (delivery.payment.signed_amount, delivery.payment.status) == (room, PaymentStatus.SETTLED)
    assert peer.log.count("send") == 2
    assert peer.log.count("sign") == 1


def test_an_exact_price_over_the_budget_is_not_asked_again() -> None:
    refusal = BudgetExceeded(Budget(USDC, 100_000), 10_000, 5)
    peer = Peer([challenge()], ledger=True, failing={"book reserve": refusal})
    with pytest.raises(BudgetExceeded):
        run(peer)
    assert peer.log == ["send", "close", "book reserve"]


def test_a_replayed_key_is_re_sent_without_signing(caplog: pytest.LogCaptureFixture) -> None:
    peer = Peer([challenge(), settled(), settled()])
    paying = program(peer)
    key = {"Idempotency-Key": "order-1"}
    first = drive(paying.run(Call("GET", ORIGIN, "/data", httpx.Headers(key))), peer)
    peer.log.clear()
    caplog.clear()
    caplog.set_level(logging.INFO, logger="x402pay")
    again = drive(paying.run(Call("GET", ORIGIN, "/data", httpx.Headers(key))), peer)
    assert peer.log == ["send paid"]
    assert [(record.x402pay_event, record.resent, record.key) for record in caplog.records] == [
        ("sent", True, "order-1")
    ]
    assert first.payment is not None
    assert again.payment is first.payment
