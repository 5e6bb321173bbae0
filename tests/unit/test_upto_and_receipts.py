"""upto signing, receipts from every source, and what the transport does with them (MockTransport peers)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from x402pay import (
    PaymentStatus,
    PaymentTransport,
    ReceiptMismatch,
    SettlementFailed,
    SigningError,
    SpendCapExceeded,
    SpendPolicy,
    Wallet,
    payment_of,
)
from x402pay._protocol.addresses import UPTO_PERMIT2_PROXY_ADDRESS
from x402pay._protocol.models import PaymentRequirements
from x402pay._receipts import read_compose_receipt, receipt_from_body, receipt_from_header
from x402pay._schemes import eip712
from x402pay._schemes.upto import sign_upto
from x402pay.errors import NoAcceptableRequirement, SettlementError
from x402pay.ledger import Ledger

WALLET = Wallet.from_key("0x" + "22" * 32)
USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAYEE = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
FACILITATOR = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
NOW = 1_750_000_000
UPTO = {
    "scheme": "upto",
    "network": "eip155:8453",
    "amount": "50000",
    "asset": USDC,
    "payTo": PAYEE,
    "maxTimeoutSeconds": 300,
    "extra": {"assetTransferMethod": "permit2", "facilitatorAddress": FACILITATOR, "compose": {"metering": "x"}},
}


def b64(data: Any, *, urlsafe: bool = False) -> str:
    raw = json.dumps(data).encode()
    return (base64.urlsafe_b64encode(raw).decode().rstrip("=")) if urlsafe else base64.b64encode(raw).decode()


def test_upto_signs_permit2_with_the_facilitator_in_the_witness() -> None:
    requirement = PaymentRequirements.model_validate(UPTO)
    signed = sign_upto(WALLET, requirement, now=NOW, max_lifetime=120)
    authorization = signed.payload["permit2Authorization"]
    assert authorization["spender"] == UPTO_PERMIT2_PROXY_ADDRESS
    assert authorization["permitted"] == {"token": USDC, "amount": "50000"}
    assert authorization["witness"] == {"to": PAYEE, "facilitator": FACILITATOR, "validAfter": str(NOW - 600)}
    assert authorization["deadline"] == str(NOW + 120)  # the policy's lifetime, not the server's 300 s
    assert authorization["nonce"].isdigit()
    typed = eip712.permit_witness_transfer_from(
        chain_id=8453, token=USDC, amount=50000, spender=UPTO_PERMIT2_PROXY_ADDRESS,
        nonce=int(authorization["nonce"]), deadline=NOW + 120,
        witness={"to": PAYEE, "facilitator": FACILITATOR, "validAfter": NOW - 600},
        witness_fields=eip712.UPTO_WITNESS_FIELDS,
    )  # fmt: skip
    recovered = Account.recover_message(encode_typed_data(full_message=typed), signature=signed.payload["signature"])
    assert recovered == WALLET.address == authorization["from"]
    assert (signed.method, signed.amount) == ("permit2", 50000)


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"assetTransferMethod": "permit2"}, "requires facilitatorAddress"),
        ({"facilitatorAddress": "0x1234"}, "not a valid EVM address"),
        ({"facilitatorAddress": FACILITATOR, "assetTransferMethod": "eip3009"}, "Permit2 only"),
    ],
)
def test_upto_refusals(extra: dict[str, Any], reason: str) -> None:
    requirement = PaymentRequirements.model_validate({**UPTO, "extra": extra})
    with pytest.raises(SigningError, match=reason):
        sign_upto(WALLET, requirement, now=NOW, max_lifetime=120)


def test_compose_receipts_read_camel_and_snake_case() -> None:
    camel = read_compose_receipt(
        {"finalAmountWei": "12345", "txHash": "0xab", "network": "eip155:8453", "settledAt": 1700000000000,
         "lineItems": [{"key": "input_tokens", "amountWei": "3"}, "junk"], "userAddress": WALLET.address},
        source="sse",
    )  # fmt: skip
    snake = receipt_from_body(
        {"receipt": {"final_amount_wei": "12345", "tx_hash": "0xab", "settled_at": 1700000000000}}
    )
    assert snake is not None
    assert (camel.amount, camel.transaction, camel.network, camel.payer) == (
        12345,
        "0xab",
        "eip155:8453",
        WALLET.address,
    )
    assert camel.settled_at is not None
    assert camel.settled_at.year == 2023
    assert camel.line_items == ({"key": "input_tokens", "amountWei": "3"},)
    assert (snake.amount, snake.transaction, snake.settled_at) == (12345, "0xab", camel.settled_at)
    assert receipt_from_body({"compose_receipt": {"finalAmountWei": 1}}) is not None
    assert receipt_from_body({"no": "receipt"}) is None


def test_receipt_headers_are_base64url_json() -> None:
    for name in ("X-Receipt", "X-Compose-Receipt"):
        receipt = receipt_from_header(httpx.Headers({name: b64({"finalAmountWei": "7"}, urlsafe=True)}))
        assert receipt is not None
        assert receipt.amount == 7


@pytest.mark.parametrize("bad", [{}, {"finalAmountWei": "-1"}, {"finalAmountWei": "1.5"}, [1], "x"])
def test_malformed_receipts_are_settlement_errors(bad: Any) -> None:
    with pytest.raises(SettlementError):
        read_compose_receipt(bad, source="sse")


class UptoPeer:
    """An upto server in memory: challenges for min(its max, the client's ceiling), answers as configured."""

    def __init__(self, answer: Any, *, maximum: int = 1_000_000, obey_ceiling: bool = True) -> None:
        self.answer = answer
        self.maximum = maximum
        self.obey_ceiling = obey_ceiling
        self.challenge_extra: Any = UPTO["extra"]
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if "PAYMENT-SIGNATURE" in request.headers:
            return self.answer(request)
        ceiling = int(request.headers.get("x-x402-max-amount-wei", self.maximum))
        amount = min(self.maximum, ceiling) if self.obey_ceiling else self.maximum
        challenge = {
            "x402Version": 2,
            "resource": {"url": str(request.url)},
            "accepts": [{**UPTO, "amount": str(amount), "extra": self.challenge_extra}],
        }
        return httpx.Response(402, headers={"PAYMENT-REQUIRED": b64(challenge)})


def sse(*frames: bytes) -> httpx.Response:
    def chunks() -> Iterator[bytes]:
        yield from frames

    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=chunks())


def client(peer: UptoPeer, cap: int = 50_000, **options: Any) -> httpx.Client:
    transport = PaymentTransport(
        wallet=WALLET,
        policy=SpendPolicy(max_per_request=cap),
        inner=httpx.MockTransport(peer),
        clock=lambda: NOW,
        **options,
    )
    return httpx.Client(transport=transport)


def receipt_frame(amount: int, **fields: Any) -> bytes:
    return b"event: compose.receipt\ndata: " + json.dumps({"finalAmountWei": str(amount), **fields}).encode() + b"\n\n"


def test_a_streamed_receipt_settles_the_payment_and_leaves_the_stream_clean() -> None:
    seen: list[Any] = []
    peer = UptoPeer(lambda request: sse(b"data: 1\n\n", receipt_frame(1234, txHash="0x01"), b"data: [DONE]\n\n"))
    with client(peer, on_receipt=seen.append) as http, http.stream("POST", "https://m.example/v1/chat") as response:
        body = b"".join(response.iter_bytes())
    payment = payment_of(response)
    assert body == b"data: 1\n\ndata: [DONE]\n\n"
    assert payment is not None
    assert (payment.status, payment.settled_amount, payment.transaction) == (PaymentStatus.SETTLED, 1234, "0x01")
    assert seen == [payment]
    assert peer.requests[0].headers["x-x402-max-amount-wei"] == peer.requests[1].headers["x-x402-max-amount-wei"]


def test_a_stream_without_a_receipt_stays_unsettled() -> None:
    peer = UptoPeer(lambda request: sse(b"data: 1\n\n", b"data: [DONE]\n\n"))
    with client(peer) as http:
        response = http.post("https://m.example/v1/chat")
    payment = payment_of(response)
    assert payment is not None
    assert payment.status is PaymentStatus.UNSETTLED
    assert payment.settled_amount is None


def test_a_pending_receipt_frame_is_a_pending_settlement_with_the_maximum_held() -> None:
    pending_tx = "0x" + "ef" * 32
    frame = receipt_frame(1234, txHash=pending_tx, settlementStatus="pending", network="eip155:8453")
    peer = UptoPeer(lambda request: sse(b"data: 1\n\n", frame, b"data: [DONE]\n\n"))
    seen: list[Any] = []
    with Ledger.sqlite(":memory:") as ledger, client(peer, ledger=ledger, on_receipt=seen.append) as http:
        with http.stream("POST", "https://m.example/v1/chat") as response:
            assert b"".join(response.iter_bytes()) == b"data: 1\n\ndata: [DONE]\n\n"
        (entry,) = ledger.entries()
    payment = payment_of(response)
    assert payment is not None
    assert (payment.status, payment.receipt, seen) == (PaymentStatus.UNSETTLED, None, [])  # not a charge, yet
    assert payment.settlement is not None
    assert (payment.settlement.error_reason, payment.settlement.transaction) == ("settlement_pending", pending_tx)
    assert (entry.state, entry.held) == ("unknown", 50_000)  # the signed maximum, until the chain decides
    assert entry.detail == f"settlement pending in {pending_tx}"


def test_an_error_frame_raises_after_the_content_arrived() -> None:
    error = b'event: compose.error\ndata: {"code":"upstream_error","message":"settlement failed"}\n\n'
    peer = UptoPeer(lambda request: sse(b"data: content\n\n", error, b"data: [DONE]\n\n"))
    received: list[bytes] = []

    def read_all(response: httpx.Response) -> None:
        received.extend(response.iter_bytes())

    with (
        client(peer) as http,
        http.stream("POST", "https://m.example/v1/chat") as response,
        pytest.raises(SettlementFailed, match="settlement failed") as caught,
    ):
        read_all(response)
    assert b"".join(received) == b"data: content\n\n"
    assert caught.value.code == "upstream_error"
    payment = payment_of(response)
    assert payment is not None
    assert payment.status is PaymentStatus.FAILED


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (receipt_frame(50_001), "above the signed maximum"),
        (receipt_frame(10, network="eip155:1"), "network"),
        (receipt_frame(10, userAddress=PAYEE), "payer"),
    ],
)
def test_a_receipt_that_contradicts_the_payment_is_a_mismatch(frame: bytes, problem: str) -> None:
    peer = UptoPeer(lambda request: sse(b"data: 1\n\n", frame, b"data: [DONE]\n\n"))
    with client(peer) as http, pytest.raises(ReceiptMismatch, match=problem) as caught:
        http.post("https://m.example/v1/chat")
    assert caught.value.payment is not None


def test_a_json_body_receipt_and_an_x_receipt_header() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        body = json.dumps({"choices": [], "receipt": {"final_amount_wei": "77", "tx_hash": "0x02"}}).encode()
        return httpx.Response(200, headers={"content-type": "application/json"}, content=iter([body[:10], body[10:]]))

    with client(UptoPeer(answer)) as http:
        response = http.post("https://m.example/v1/chat")
    payment = payment_of(response)
    assert response.json()["choices"] == []
    assert payment is not None
    assert (payment.settled_amount, payment.receipt.source if payment.receipt else None) == (77, "body")

    def header(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"X-Receipt": b64({"finalAmountWei": "88"}, urlsafe=True)}, json={})

    with client(UptoPeer(header)) as http:
        payment = payment_of(http.post("https://m.example/v1/chat"))
    assert payment is not None
    assert payment.settled_amount == 88


def test_a_server_asking_above_the_announced_ceiling_is_refused_unsigned() -> None:
    peer = UptoPeer(lambda request: httpx.Response(200), obey_ceiling=False)
    with client(peer, cap=50_000) as http, pytest.raises(SpendCapExceeded, match="1000000 > max_per_request 50000"):
        http.post("https://m.example/v1/chat")
    assert len(peer.requests) == 1


def test_the_callers_own_lower_ceiling_wins() -> None:
    peer = UptoPeer(lambda request: sse(receipt_frame(5), b"data: [DONE]\n\n"))
    with client(peer, cap=50_000) as http:
        response = http.post("https://m.example/v1/chat", headers={"x-x402-max-amount-wei": "20000"})
    payment = payment_of(response)
    assert payment is not None
    assert payment.signed_amount == 20_000
    assert {request.headers["x-x402-max-amount-wei"] for request in peer.requests} == {"20000"}


def test_an_upto_option_without_a_facilitator_is_refused_unsigned() -> None:
    peer = UptoPeer(lambda request: httpx.Response(200))
    peer.challenge_extra = {"assetTransferMethod": "permit2"}
    with client(peer) as http, pytest.raises(NoAcceptableRequirement, match="facilitatorAddress"):
        http.post("https://m.example/v1/chat")
    assert len(peer.requests) == 1
