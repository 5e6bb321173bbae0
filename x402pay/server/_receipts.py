"""The paid request as the app sees it (`PaidRequest`: who paid, the maximum, `charge()` for metering) and the
receipts the middleware writes: Compose-style ``X-Receipt`` / ``event: compose.receipt`` and ``compose.error``.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from x402pay._protocol.models import PaymentPayload, PaymentRequirements, SettleResponse

#: The schemes whose app reports what it used (``charge``): ``upto`` and payment channels (``batch-settlement``).
METERED: Final = ("upto", "batch-settlement")
#: Where the middleware puts the `PaidRequest` in the ASGI scope's ``state`` (Starlette: ``request.state.x402pay``).
STATE_KEY: Final = "x402pay"


@dataclass(frozen=True)
class LineItem:
    """One priced quantity of a metered charge (e.g. input tokens), as Compose's receipts list them."""

    key: str
    unit: str
    quantity: int | float
    unit_price_usd: float
    amount_wei: int

    def to_json(self) -> dict[str, Any]:
        """camelCase JSON, amounts as decimal strings."""
        return {
            "key": self.key,
            "unit": self.unit,
            "quantity": self.quantity,
            "unitPriceUsd": self.unit_price_usd,
            "amountWei": str(self.amount_wei),
        }


@dataclass
class PaidRequest:
    """A verified payment, handed to the app in the scope; upto apps call `charge` with what they used.

    Read it with ``paid_request(scope)`` (or ``request.state.x402pay`` under Starlette). If an upto app reports
    nothing, the whole `maximum` is charged, as the reference servers do.
    """

    requirement: PaymentRequirements
    payload: PaymentPayload
    payer: str
    charged: int | None = None
    line_items: list[LineItem] = field(default_factory=list)
    subject: str | None = None

    @property
    def maximum(self) -> int:
        """The most this request may cost: the signed amount."""
        return self.requirement.amount

    @property
    def scheme(self) -> str:
        """``exact``, ``upto`` or ``batch-settlement``."""
        return self.requirement.scheme

    def charge(self, amount: int, *, line_items: Sequence[LineItem] = (), subject: str | None = None) -> None:
        """Set the metered amount of an upto or channel payment (upto: 0 settles without a transaction); ValueError
        past the max."""
        if self.scheme not in METERED:
            raise ValueError("only an upto or channel payment is metered; an exact price is charged as it is")
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= self.maximum:
            raise ValueError(f"a charge is an int between 0 and the signed maximum {self.maximum}, not {amount!r}")
        self.charged = amount
        self.line_items = list(line_items)
        self.subject = subject

    @property
    def amount_due(self) -> int:
        """What settlement will charge: the metered amount, or the whole maximum if none was reported."""
        return self.maximum if self.charged is None else self.charged


def paid_request(scope: Mapping[str, Any]) -> PaidRequest | None:
    """The `PaidRequest` of a request that went through `PaymentMiddleware`, or None if it was free."""
    state = scope.get("state")
    found = state.get(STATE_KEY) if isinstance(state, Mapping) else None
    return found if isinstance(found, PaidRequest) else None


def attach(scope: MutableMapping[str, Any], paid: PaidRequest) -> None:
    """Put `paid` where `paid_request` finds it."""
    state = scope.setdefault("state", {})
    state[STATE_KEY] = paid


def make_compose_receipt(
    paid: PaidRequest, settlement: SettleResponse, *, settled_at_ms: int | None = None
) -> dict[str, Any]:
    """The receipt Compose Market streams as ``compose.receipt`` (camelCase, decimal strings, ms timestamps).

    ``settlementStatus`` is ``settled``, or ``pending`` for a settlement sent and not yet confirmed (with its
    ``txHash``): a pending receipt is not a charge yet, but the payer may still be charged ``finalAmountWei``.
    """
    # A channel's settlement amount is its deposit, when there was one; the charge is what was used.
    metered_here = settlement.amount is None or paid.scheme == "batch-settlement"
    amount = paid.amount_due if metered_here else settlement.amount
    receipt: dict[str, Any] = {
        "finalAmountWei": str(amount),
        "network": settlement.network,
        "settledAt": settled_at_ms if settled_at_ms is not None else int(time.time() * 1000),
        "settlementStatus": "settled" if settlement.success else "pending",
        "userAddress": paid.payer,
    }
    if settlement.transaction:
        receipt["txHash"] = settlement.transaction
    if paid.subject:
        receipt["meterSubject"] = paid.subject
    if paid.line_items:
        receipt["lineItems"] = [item.to_json() for item in paid.line_items]
    return receipt


def x_receipt_header(receipt: Mapping[str, Any]) -> str:
    """``X-Receipt``: base64url without padding of the receipt JSON (the header form says ``subject``)."""
    header_form = {("subject" if key == "meterSubject" else key): value for key, value in receipt.items()}
    text = json.dumps(header_form, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode("ascii").rstrip("=")


def sse_event(event: str, data: Mapping[str, Any]) -> bytes:
    """One named SSE frame with a JSON data line."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def settlement_error(settlement: SettleResponse) -> dict[str, Any]:
    """The ``compose.error`` payload for a settlement that failed after the content was streamed."""
    return {
        "code": "upstream_error",
        "message": settlement.error_message or f"settlement failed: {settlement.error_reason}",
        "details": {"errorReason": settlement.error_reason, "network": settlement.network},
    }
