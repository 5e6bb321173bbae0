"""The Payment record that a paid response carries, and `payment_of` to read it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from eth_typing import ChecksumAddress

from x402pay.protocol.models import PaymentRequirements, SettleResponse
from x402pay.schemes.exact import SignedPayment

#: Key of the Payment in a response's ``extensions``.
PAYMENT_EXTENSION: Final = "x402pay.payment"


class PaymentStatus(StrEnum):
    """Where a payment stands, as far as this client knows."""

    SIGNED = "signed"  # sent; the server said nothing about settlement (yet)
    SETTLED = "settled"  # the server says it settled (a claim until verified on chain)
    FAILED = "failed"  # the server says settlement failed; nothing should have moved


@dataclass
class Payment:
    """One payment made for one request: what was chosen and signed, and what the server said about it.

    The transport fills `settlement` and `status` from the response (or `settlement_error` when the server's
    settlement header could not be read); nothing else changes it.
    """

    origin: str
    x402_version: int
    signed: SignedPayment
    status: PaymentStatus = PaymentStatus.SIGNED
    settlement: SettleResponse | None = None
    settlement_error: str | None = None

    @property
    def requirement(self) -> PaymentRequirements:
        """The requirement that was chosen and signed."""
        return self.signed.requirement

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
        """What the server says it charged: its ``amount``, else the signed amount once settled."""
        if self.status is not PaymentStatus.SETTLED or self.settlement is None:
            return None
        return self.settlement.amount if self.settlement.amount is not None else self.signed.amount

    @property
    def transaction(self) -> str | None:
        """The settlement transaction hash the server reported, if any."""
        if self.settlement is None or not self.settlement.transaction:
            return None
        return self.settlement.transaction


def payment_of(response: Any) -> Payment | None:
    """The `Payment` made for `response` (an httpx or httpx2 Response), or None if it was not paid for.

    A response reached through redirects reports the payment made along the way (``response.history``).
    """
    for hop in (response, *reversed(getattr(response, "history", []))):
        payment = (getattr(hop, "extensions", None) or {}).get(PAYMENT_EXTENSION)
        if isinstance(payment, Payment):
            return payment
    return None
