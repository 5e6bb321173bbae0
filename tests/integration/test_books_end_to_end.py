"""The transport with a ledger, trust marks and verification, against a real middleware on anvil.

Budgets refuse before anything is signed; a repeated Idempotency-Key re-sends the same signed payment; a lost
answer leaves the entry unknown until reconcile; receipts are verified on chain, and a lying server is caught,
marked untrusted, and not paid again until the mark is cleared.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from recording import Recording
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from web3 import Web3

from x402pay import (
    OriginUntrusted,
    PaymentRejected,
    PaymentStatus,
    PaymentTransport,
    ReceiptMismatch,
    SpendPolicy,
    TrustStore,
    Wallet,
    payment_of,
)
from x402pay.ledger import Budget, BudgetExceeded, EntryState, Ledger, Web3Chain
from x402pay.server import LocalFacilitator, PaymentMiddleware, Price
from x402pay.server._serving import serve_app
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

PRICE = 10_000


class Liar:
    """Rewrites the settlement's transaction hash (when told to): a receipt for a payment that is not ours."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.fake_tx: str | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def rewrite(message: Message) -> None:
            if message["type"] == "http.response.start" and self.fake_tx is not None:
                message["headers"] = [self._lie(name, value) for name, value in message["headers"]]
            await send(message)

        await self.app(scope, receive, rewrite)

    def _lie(self, name: bytes, value: bytes) -> tuple[bytes, bytes]:
        if name.lower() != b"payment-response":
            return name, value
        settlement = json.loads(base64.b64decode(value))
        settlement["transaction"] = self.fake_tx
        return name, base64.b64encode(json.dumps(settlement).encode())


async def report(request: Request) -> Response:
    return JSONResponse({"report": "paid"})


@pytest.fixture(scope="module")
def server(x402pay_devnet: Devnet) -> Iterator[tuple[str, Liar]]:
    devnet = x402pay_devnet
    app = PaymentMiddleware(
        Starlette(routes=[Route("/report", report)]),
        facilitator=LocalFacilitator(devnet.rpc_url, devnet.facilitator),
        routes={"GET /report": Price.exact(PRICE, asset=devnet.usdc)},
        network=devnet.network,
        pay_to=devnet.payee.address,
    )
    liar = Liar(app)
    with serve_app(liar) as url:
        yield url, liar
    liar.fake_tx = None


@pytest.fixture
def liar(server: tuple[str, Liar]) -> Iterator[Liar]:
    yield server[1]
    server[1].fake_tx = None


def client(devnet: Devnet, ledger: Ledger | None = None, wire: Recording | None = None, **options: Any) -> httpx.Client:
    transport = PaymentTransport(
        wallet=Wallet(devnet.payers[2]), policy=SpendPolicy(max_per_request=50_000), ledger=ledger,
        rpc_url=devnet.rpc_url, inner=wire or Recording(), **options,
    )  # fmt: skip
    return httpx.Client(transport=transport, timeout=60)


def payee_balance(devnet: Devnet) -> int:
    return int(devnet.contract("TestUSDC", devnet.usdc).functions.balanceOf(devnet.payee.address).call())


def test_a_budget_refuses_before_anything_is_signed(
    x402pay_chain: Devnet, server: tuple[str, Liar], tmp_path: Path
) -> None:
    url, _ = server
    ledger = Ledger.sqlite(tmp_path / "spend.db", budgets=[Budget(x402pay_chain.usdc, 2 * PRICE + 5)])
    wire = Recording()
    sent = wire.sent
    with client(x402pay_chain, ledger, wire) as http:
        assert http.get(url + "/report").status_code == 200
        assert http.get(url + "/report").status_code == 200
        assert sent[-1].headers["x-x402-max-amount-wei"] == "50000"  # the cap: no budget is read before a 402
        with pytest.raises(BudgetExceeded, match=f"refuses {PRICE}: only 5 of {2 * PRICE + 5} left"):
            http.get(url + "/report")  # an exact price is not re-asked at the budget's room: it would not change
    assert all("payment-signature" not in request.headers for request in sent[4:])
    assert len(sent) == 5
    assert [entry.state for entry in ledger.entries()] == [EntryState.CLAIMED, EntryState.CLAIMED]


def test_without_a_ceiling_the_ledger_itself_refuses(
    x402pay_chain: Devnet, server: tuple[str, Liar], tmp_path: Path
) -> None:
    url, _ = server
    ledger = Ledger.sqlite(tmp_path / "spend.db", budgets=[Budget(x402pay_chain.usdc, PRICE + 5)])
    with client(x402pay_chain, ledger, announce_ceiling=False) as http:
        assert http.get(url + "/report").status_code == 200
        with pytest.raises(BudgetExceeded, match="only 5 of 10005 left"):
            http.get(url + "/report")
    assert len(ledger.entries()) == 1


def test_the_same_idempotency_key_never_signs_twice(
    x402pay_chain: Devnet, server: tuple[str, Liar], tmp_path: Path
) -> None:
    url, _ = server
    ledger = Ledger.sqlite(tmp_path / "spend.db")
    before = payee_balance(x402pay_chain)
    wire = Recording()
    sent = wire.sent
    with client(x402pay_chain, ledger, wire) as http:
        first = http.get(url + "/report", headers={"Idempotency-Key": "order-42"})
        with pytest.raises(PaymentRejected):  # the same authorization again: the server refuses the replay
            http.get(url + "/report", headers={"Idempotency-Key": "order-42"})
    assert first.status_code == 200
    assert sent[-1].headers["payment-signature"] == sent[1].headers["payment-signature"]
    assert len(sent) == 3  # challenge, paid retry, then straight to the stored payment: no second challenge
    assert payee_balance(x402pay_chain) == before + PRICE
    assert len(ledger.entries()) == 1


class DropsTheAnswer(httpx.BaseTransport):
    """Delivers the paid request, lets the server settle, then loses the answer (once)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.dropped = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if "payment-signature" in request.headers and not self.dropped:
            response.read()
            self.dropped = True
            raise httpx.ReadError("connection reset after the server answered")
        return response


def test_a_lost_answer_stays_held_and_reconcile_finds_the_transfer(
    x402pay_chain: Devnet, server: tuple[str, Liar], tmp_path: Path
) -> None:
    url, _ = server
    ledger = Ledger.sqlite(tmp_path / "spend.db", budgets=[Budget(x402pay_chain.usdc, 10**6)])
    transport = PaymentTransport(
        wallet=Wallet(x402pay_chain.payers[2]), policy=SpendPolicy(max_per_request=50_000), ledger=ledger,
        inner=DropsTheAnswer(),
    )  # fmt: skip
    with httpx.Client(transport=transport) as http, pytest.raises(httpx.ReadError):
        http.get(url + "/report", headers={"Idempotency-Key": "lost-1"})
    (entry,) = ledger.entries()
    assert entry.state is EntryState.UNKNOWN
    assert entry.held == PRICE

    report_ = ledger.reconcile(Web3Chain(Web3(Web3.HTTPProvider(x402pay_chain.rpc_url))))

    assert [settled.id for settled in report_.settled] == [entry.id]
    settled = ledger.get(entry.id)
    assert (settled.state, settled.settled_amount) == (EntryState.SETTLED, PRICE)
    assert settled.tx_hash is not None


def test_receipts_are_verified_inline_and_booked(
    x402pay_chain: Devnet, server: tuple[str, Liar], tmp_path: Path
) -> None:
    url, _ = server
    ledger = Ledger.sqlite(tmp_path / "spend.db")
    with client(x402pay_chain, ledger, verify="inline") as http:
        response = http.get(url + "/report")
    payment = payment_of(response)
    assert payment is not None
    assert payment.verification is not None
    assert payment.verification.verified
    (entry,) = ledger.entries()
    assert (entry.state, entry.held, entry.settled_amount) == (EntryState.SETTLED, PRICE, PRICE)  # the chain's word
    assert (entry.claimed_amount, entry.tx_hash) == (PRICE, payment.transaction)


def info_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name.startswith("x402pay") and record.levelno >= logging.INFO]


def test_a_paid_request_logs_each_decision_once_at_info_with_its_fields(
    x402pay_chain: Devnet, server: tuple[str, Liar], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = server
    ledger = Ledger.sqlite(tmp_path / "spend.db")
    wire = Recording()
    caplog.set_level(logging.DEBUG, logger="x402pay")
    with client(x402pay_chain, ledger, wire, verify="inline") as http:
        response = http.get(url + "/report", headers={"Idempotency-Key": "report-of-the-day"})
    payment = payment_of(response)
    assert payment is not None
    (entry,) = ledger.entries()
    terms = {"origin": url, "key": "report-of-the-day", "amount": PRICE}
    signed = terms | {"nonce": payment.signed.nonce}
    stored = signed | {"entry": entry.id}
    expected = [
        (
            "chose",
            terms | {"option": 0, "scheme": "exact", "asset": x402pay_chain.usdc, "network": x402pay_chain.network},
        ),
        ("signed", signed | {"scheme": "exact", "asset": x402pay_chain.usdc, "network": x402pay_chain.network}),
        ("stored", stored),
        ("sent", stored | {"resent": False}),
        ("claimed", stored | {"tx": payment.transaction}),
        ("verified", stored | {"tx": payment.transaction, "verdict": "verified"}),
    ]
    records = info_records(caplog)
    assert [record.x402pay_event for record in records] == [event for event, _ in expected]
    for record, (event, fields) in zip(records, expected, strict=True):
        assert (record.name, record.levelno) == ("x402pay.payments", logging.INFO)
        assert {name: getattr(record, name) for name in fields} == fields, event
        message = record.getMessage()
        assert message.startswith(f"{event}: ")
        assert "\n" not in message
        assert "report-of-the-day" in message

    header = wire.sent[-1].headers["payment-signature"]
    signature = json.loads(base64.b64decode(header))["payload"]["signature"]
    key = bytes(x402pay_chain.payers[2].key).hex()
    for record in caplog.records:
        text = " ".join([record.getMessage(), str(record.args), *map(str, vars(record).values())])
        assert header not in text
        assert signature.removeprefix("0x") not in text
        assert key not in text


def test_an_unpaid_request_logs_nothing_at_info(
    x402pay_chain: Devnet, server: tuple[str, Liar], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = server
    caplog.set_level(logging.DEBUG, logger="x402pay")
    with client(x402pay_chain, Ledger.sqlite(tmp_path / "spend.db"), verify="inline") as http:
        assert http.get(url + "/not-for-sale").status_code == 404
    assert info_records(caplog) == []


def test_a_lying_receipt_is_fraud_and_the_origin_is_not_paid_again(
    x402pay_chain: Devnet, server: tuple[str, Liar], liar: Liar, tmp_path: Path
) -> None:
    url, _ = server
    ledger = Ledger.sqlite(tmp_path / "spend.db")
    trust = TrustStore(tmp_path / "untrusted.json")
    with client(x402pay_chain, ledger, verify="inline", trust=trust) as http:
        honest = payment_of(http.get(url + "/report"))
        assert honest is not None
        liar.fake_tx = honest.transaction  # the next receipt claims the earlier payment's transaction
        with pytest.raises(ReceiptMismatch, match="authorization") as caught:
            http.get(url + "/report")
        with pytest.raises(OriginUntrusted, match="trust reset"):
            http.get(url + "/report")
        liar.fake_tx = None
        assert url in ledger.untrusted()  # the mark is in the ledger: every bot sharing it stops paying the liar
        assert trust.reset(url)
        assert ledger.clear_untrusted(url)
        assert http.get(url + "/report").status_code == 200
    cheated = caught.value.payment
    assert cheated is not None
    assert cheated.mismatch is not None
    states = sorted(entry.state for entry in ledger.entries())
    assert states.count(EntryState.MISMATCH) == 1
    assert url in TrustStore(tmp_path / "untrusted.json").marks() or not trust.marks()


def test_background_verification_reports_through_the_callback(x402pay_chain: Devnet, server: tuple[str, Liar]) -> None:
    url, _ = server
    verified: list[Any] = []
    transport = PaymentTransport(
        wallet=Wallet(x402pay_chain.payers[2]), policy=SpendPolicy(max_per_request=50_000),
        rpc_url=x402pay_chain.rpc_url, verify="background", on_verified=verified.append,
    )  # fmt: skip
    with httpx.Client(transport=transport) as http:
        response = http.get(url + "/report")
    # closing the client waited for the background worker
    payment = payment_of(response)
    assert verified == [payment]
    assert payment is not None
    assert payment.status is PaymentStatus.SETTLED
    assert payment.verification.verified
