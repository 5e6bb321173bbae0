"""Settlement receipts, from every place a server puts them, as one `Receipt`.

Sources: ``PAYMENT-RESPONSE`` / ``X-PAYMENT-RESPONSE`` (x402), Compose Market's ``X-Receipt`` /
``X-Compose-Receipt`` headers (base64url JSON), a ``receipt`` / ``compose_receipt`` object in a JSON body, and SSE
frames ``event: compose.receipt`` / ``event: receipt`` inside a stream (see `x402pay._sse`). Keys are read in
camelCase or snake_case. A receipt is a claim by the server until the chain confirms it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from x402pay._protocol.codec import decode_header
from x402pay._protocol.models import SettleResponse, parse_uint
from x402pay.errors import SettlementError

RECEIPT_HEADERS: Final = ("x-receipt", "x-compose-receipt")
BODY_FIELDS: Final = ("receipt", "compose_receipt")
_MAX_LINE_ITEMS: Final = 1000


@dataclass(frozen=True)
class Receipt:
    """What a server says it charged for one paid request.

    `amount` is in atomic units of the signed asset; `transaction` may be None (queued or batched settlement);
    `source` names where it came from (``PAYMENT-RESPONSE``, ``X-Receipt``, ``body``, ``sse``); `raw` is the JSON
    object the server sent.
    """

    amount: int
    source: str
    transaction: str | None = None
    network: str | None = None
    settled_at: datetime | None = None
    payer: str | None = None
    status: str | None = None
    line_items: tuple[Mapping[str, Any], ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


def receipt_from_settlement(
    settlement: SettleResponse, signed_amount: int, source: str, sent: Mapping[str, Any] | None = None
) -> Receipt | None:
    """The receipt in an x402 settlement response (`sent`: the JSON object it was read from, kept as the receipt's
    `raw`); None when it reports failure.

    Without ``amount`` (exact servers omit it) the charge is the signed amount: all an exact payment can move.
    """
    if not settlement.success:
        return None
    return Receipt(
        amount=settlement.amount if settlement.amount is not None else signed_amount,
        source=source,
        transaction=settlement.transaction or None,
        network=settlement.network or None,
        payer=settlement.payer,
        raw=sent if sent is not None else settlement.to_wire(),
    )


def receipt_from_header(headers: Mapping[str, str]) -> Receipt | None:
    """A Compose-style ``X-Receipt`` / ``X-Compose-Receipt`` header; SettlementError when malformed."""
    for name in RECEIPT_HEADERS:
        value = headers.get(name)
        if value is not None:
            data = decode_header(value, what=name, error=SettlementError)
            return read_compose_receipt(data, source=name)
    return None


def receipt_from_body(data: Any) -> Receipt | None:
    """The ``receipt`` / ``compose_receipt`` object of a decoded JSON body, if it has one."""
    if not isinstance(data, dict):
        return None
    for name in BODY_FIELDS:
        if isinstance(data.get(name), dict):
            return read_compose_receipt(data[name], source="body")
    return None


def read_compose_receipt(data: Any, *, source: str) -> Receipt:
    """Read a Compose receipt object (camelCase or snake_case keys); SettlementError naming what is wrong."""
    if not isinstance(data, dict):
        raise SettlementError(f"{source} receipt is not a JSON object")
    amount = _field(data, "finalAmountWei", "final_amount_wei")
    if amount is None:
        raise SettlementError(f"{source} receipt has no finalAmountWei")
    try:
        charged = parse_uint(amount)
    except ValueError as exc:
        raise SettlementError(f"{source} receipt finalAmountWei: {exc}") from exc
    return Receipt(
        amount=charged,
        source=source,
        transaction=_text(_field(data, "txHash", "tx_hash") or _field(data, "settleTxHash", "settle_tx_hash")),
        network=_text(_field(data, "network", "network")),
        settled_at=_epoch_ms(_field(data, "settledAt", "settled_at")),
        payer=_text(_field(data, "userAddress", "user_address") or _field(data, "payer", "payer")),
        status=_text(_field(data, "settlementStatus", "settlement_status")),
        line_items=_line_items(_field(data, "lineItems", "line_items")),
        raw=data,
    )


def _field(data: Mapping[str, Any], camel: str, snake: str) -> Any:
    return data[camel] if camel in data else data.get(snake)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _epoch_ms(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 2**53:
        return None
    try:
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    except (ValueError, OverflowError, OSError):  # past year 9999: not a time this receipt could mean
        return None


def _line_items(value: Any) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value[:_MAX_LINE_ITEMS] if isinstance(item, dict))
