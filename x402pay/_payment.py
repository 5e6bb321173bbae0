"""The Payment record that a paid response carries, and `payment_of` to read it."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from eth_typing import ChecksumAddress

from x402pay._protocol.models import PaymentRequirements, SettleResponse
from x402pay._receipts import Receipt
from x402pay._schemes.exact import SignedPayment

#: Key of the Payment in a response's ``extensions`` (httpx, httpx2).
PAYMENT_EXTENSION: Final = "x402pay._payment"
#: Attribute holding the Payment on a response without ``extensions`` (requests).
PAYMENT_ATTRIBUTE: Final = "x402pay_payment"
#: The Payments of results that have no room for one (MCP tool results, pydantic models), by the result's id while
#: it lives.
_ATTACHED: dict[int, Payment] = {}


class PaymentStatus(StrEnum):
    """Where a payment stands, as far as this client knows."""

    UNSETTLED = "unsettled"  # sent; no receipt (yet): the whole signed amount may still be charged
    SETTLED = "settled"  # the server reported a settlement (a claim until verified on chain)
    FAILED = "failed"  # the server refused the payment or says settlement failed


@dataclass
class Payment:
    """One payment made for one request: what was chosen and signed, and what the server said about it.

    The transport fills the rest from the response: `settlement` (the x402 settlement header, if any), `receipt`
    (from whichever place the server put it, at the end of a stream for streamed responses), `settlement_error`
    when the server's claim could not be read, `mismatch` when it disagrees with what was signed or with the chain,
    `verification` (an `x402pay.verify.Verification`) once checked on chain, and `ledger_entry` with a ledger.
    `prepaid` is true for a payment sent with the first request (pre-payment), before any challenge came.
    `idempotency_key` is the ``Idempotency-Key`` of the logical request it paid (the caller's, or one the transport
    made up), as the payment records in the log name it.
    `booked` is the transport's own note of what it has already recorded.
    """

    origin: str
    x402_version: int
    signed: SignedPayment
    status: PaymentStatus = PaymentStatus.UNSETTLED
    settlement: SettleResponse | None = None
    receipt: Receipt | None = None
    settlement_error: str | None = None
    mismatch: str | None = None
    verification: Any = None
    ledger_entry: str | None = None
    prepaid: bool = False
    idempotency_key: str | None = None
    booked: set[str] = field(default_factory=set, repr=False)

    @property
    def requirement(self) -> PaymentRequirements:
        """The requirement that was chosen and signed."""
        return self.signed.requirement

    @property
    def scheme(self) -> str:
        """The signed scheme: ``exact`` or ``upto``."""
        return self.signed.requirement.scheme

    @property
    def signed_amount(self) -> int:
        """The amount the authorization allows (for upto, the maximum)."""
        return self.signed.amount

    @property
    def payer(self) -> ChecksumAddress:
        """The paying address."""
        return self.signed.payer

    @property
    def settled_amount(self) -> int | None:
        """What the server says it charged, once it has said so."""
        return self.receipt.amount if self.receipt is not None else None

    @property
    def transaction(self) -> str | None:
        """The settlement transaction hash the server reported, if any."""
        return self.receipt.transaction if self.receipt is not None else None


def attach_payment(result: Any, payment: Payment) -> None:
    """Let `payment_of(result)` find `payment` for as long as `result` lives (it must accept weak references)."""
    key = id(result)
    weakref.finalize(result, _ATTACHED.pop, key, None)  # first: a result without weak references leaves no entry
    _ATTACHED[key] = payment


def payment_of(response: Any) -> Payment | None:
    """The `Payment` made for `response` (an httpx, httpx2 or requests Response, or an MCP tool result from
    `x402pay.mcp.PaymentSession`), or None if it was not paid for.

    A response reached through redirects reports the payment made along the way (``response.history``).
    """
    attached = _ATTACHED.get(id(response))
    if attached is not None:
        return attached
    for hop in (response, *reversed(getattr(response, "history", []))):
        payment = (getattr(hop, "extensions", None) or {}).get(PAYMENT_EXTENSION) or getattr(
            hop, PAYMENT_ATTRIBUTE, None
        )
        if isinstance(payment, Payment):
            return payment
    return None
