"""Scripted peers for the payment program: HTTP answers in order, a ledger, a chain, a verdict; no I/O at all."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx

from x402pay import SpendPolicy, Wallet
from x402pay._attempt import Call
from x402pay._books import Books
from x402pay._effects import Answer, Book, Close, Delivery, Effect, ReadBody, ReadChain, Send, Sign, Verify, drive
from x402pay._program import PaymentProgram
from x402pay._repeats import Repeats
from x402pay._trust import TrustStore

WALLET = Wallet.from_key("0x" + "22" * 32)
USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAYEE = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
ORIGIN = "https://paid.example"
NOW = 1_750_000_000
EXACT = {
    "scheme": "exact", "network": "eip155:8453", "amount": "10000", "asset": USDC, "payTo": PAYEE,
    "maxTimeoutSeconds": 60, "extra": {"name": "USD Coin", "version": "2"},
}  # fmt: skip
PERMIT2 = {**EXACT, "extra": {**EXACT["extra"], "assetTransferMethod": "permit2"}}  # type: ignore[dict-item]
UPTO = {**EXACT, "scheme": "upto", "amount": "50000", "extra": {**EXACT["extra"], "facilitatorAddress": PAYEE}}  # type: ignore[dict-item]
TX = "0x" + "ab" * 32


def b64(data: Any) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


@dataclass
class Raw:
    """The driver's response object, as far as the program can tell: a body, and whether it was closed."""

    body: bytes = b""
    closed: bool = False


def answer(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> Answer:
    return Answer(status, httpx.Headers(headers or {}), Raw(body))


def challenge(*options: dict[str, Any]) -> Answer:
    required = {"x402Version": 2, "accepts": list(options or [EXACT]), "resource": {"url": ORIGIN + "/data"}}
    return answer(402, {"PAYMENT-REQUIRED": b64(required)})


def settled(amount: int = 10_000) -> Answer:
    settlement = {"success": True, "transaction": TX, "network": "eip155:8453", "amount": str(amount)}
    return answer(200, {"PAYMENT-RESPONSE": b64(settlement), "content-type": "text/plain"}, b"paid")


def refused(reason: str = "insufficient_funds") -> Answer:
    settlement = {"success": False, "transaction": "", "network": "eip155:8453", "errorReason": reason}
    return answer(402, {"PAYMENT-RESPONSE": b64(settlement), "content-type": "application/json"}, b'{"x": 1}')


@dataclass
class Peer:
    """Answers the program's effects from a script: HTTP answers in order, a ledger, a chain, a verdict."""

    answers: list[Answer | BaseException]
    ledger: bool = False
    failing: dict[str, BaseException] = field(default_factory=dict)  # effect name -> what it raises
    allowance: int = 2**255
    verdict: str = "verified"
    log: list[str] = field(default_factory=list)
    sent: list[Answer] = field(default_factory=list)
    payments: list[tuple[str, str]] = field(default_factory=list)  # the payment header of each paid send

    def __call__(self, effect: Effect) -> Any:
        name = _name(effect)
        self.log.append(name)
        if name in self.failing:
            raise self.failing[name]
        match effect:
            case Send(payment=payment):
                if payment is not None:
                    self.payments.append(payment)
                reply = self.answers.pop(0)
                if isinstance(reply, BaseException):
                    raise reply
                self.sent.append(reply)
                return reply
            case ReadBody(answer=got, limit=limit):
                return got.raw.body[: limit + 1]
            case Close(answer=got):
                got.raw.closed = True
                return None
            case Book(operation="find"):
                return {}
            case Book(operation="reserve", args=(key,)):
                return SimpleNamespace(id="entry-1", key=key, payment=None, origin=ORIGIN)
            case ReadChain(what="allowance"):
                return self.allowance
            case ReadChain(what="nonce"):
                return 0
            case Sign(work=work):
                return work()
            case Verify():
                return SimpleNamespace(
                    verdict=self.verdict,
                    check="amount",
                    reason="chain moved 1",
                    claim=None,
                    tx_hash=None,
                    transferred=1,
                )
        return None


def _name(effect: Effect) -> str:
    match effect:
        case Send(payment=None):
            return "send"
        case Send():
            return "send paid"
        case Book(operation=operation):
            return f"book {operation}"
        case ReadChain(what=what):
            return f"chain {what}"
    return type(effect).__name__.lower()


def program(peer: Peer, repeats: Repeats | None = None, **options: Any) -> PaymentProgram:
    books = Books(ledger=peer.ledger, trust=TrustStore(), verify=options.pop("verify", "off"), on_receipt=None,
                  on_verified=None)  # fmt: skip
    return PaymentProgram(
        wallet=WALLET, policy=SpendPolicy(max_per_request=50_000), books=books, prepayments=None,
        repeats=repeats or Repeats(60.0, lambda: NOW), clock=lambda: NOW, announce_ceiling=True,
        keep_receipt_frames=False, reads_chain=options.pop("reads_chain", False),
    )  # fmt: skip


def run(peer: Peer, headers: dict[str, str] | None = None, **options: Any) -> Delivery:
    call = Call("GET", ORIGIN, "/data", httpx.Headers(headers or {}))
    return drive(program(peer, **options).run(call), peer)
