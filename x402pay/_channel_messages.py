"""The messages of a channel payment as the payment program handles them: the Payment records and the header a
signed channel payload travels in, and what a server's answer says (its report, a corrective 402's state).

Pure: no I/O. The wire objects themselves are `x402pay._protocol.channel_wire`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from x402pay import _flow
from x402pay._channel_sign import SignedChannelPayment
from x402pay._channel_terms import CHANNEL_SCHEME
from x402pay._payment import Payment
from x402pay._prepay import asks_for_signed
from x402pay._protocol.addresses import BATCH_SETTLEMENT_ADDRESS
from x402pay._protocol.channel_extra import ChannelExtra, ResponseExtra
from x402pay._protocol.codec import decode_header
from x402pay._protocol.headers import CHANNEL_REFUND
from x402pay._protocol.models import PaymentRequirements
from x402pay._schemes.exact import SignedPayment
from x402pay.errors import ChallengeError, SettlementError


def deposit_requirement(requirement: PaymentRequirements, amount: int) -> PaymentRequirements:
    """The deposit as the books hold it: `amount` of the token, paid into the settlement contract's escrow."""
    return PaymentRequirements(
        scheme=CHANNEL_SCHEME, network=requirement.network, amount=amount, asset=requirement.asset,
        pay_to=BATCH_SETTLEMENT_ADDRESS, max_timeout_seconds=requirement.max_timeout_seconds,
    )  # fmt: skip


def payment_of(
    challenge: _flow.Challenge, requirement: PaymentRequirements, origin: str, signed: SignedChannelPayment,
    payer: str, amount: int | None = None,
) -> tuple[Payment, tuple[str, str]]:  # fmt: skip
    """The request's Payment (its signed amount: this request's maximum, or `amount`) and its header."""
    record = SignedPayment(
        requirement=requirement, payload=signed.as_wire(), payer=payer,  # type: ignore[arg-type]
        amount=requirement.amount if amount is None else amount, nonce="0x" + signed.payload.voucher.channel_id.hex(),
        valid_after=0,
        valid_before=signed.valid_before, method="voucher",
    )  # fmt: skip
    header = _flow.payment_header(challenge, record, {})
    return Payment(origin=origin, x402_version=challenge.version, signed=record), header


def deposit_payment(payment: Payment, signed: SignedChannelPayment, requirement: PaymentRequirements) -> Payment:
    """The deposit as its own Payment, for the books: its amount, its authorization's nonce and method."""
    method = "permit2" if signed.deposit_nonce is not None and not signed.deposit_nonce.startswith("0x") else "eip3009"
    record = replace(
        payment.signed, requirement=deposit_requirement(requirement, signed.deposit), amount=signed.deposit,
        nonce=str(signed.deposit_nonce), method=method,
    )  # fmt: skip
    return Payment(origin=payment.origin, x402_version=payment.x402_version, signed=record)


@dataclass(frozen=True)
class Report:
    """What a paid answer's ``PAYMENT-RESPONSE`` says: the channel's `extra`, and a deposit's `transaction`."""

    extra: ResponseExtra
    transaction: str | None


def report_of(headers: Mapping[str, str]) -> Report | None:
    """The successful settlement report of a channel payment, or None (absent, failed or unreadable).

    Read here, not as a `SettleResponse`: a voucher's report carries ``amount: ""``, which is no amount."""
    for name in _flow.SETTLEMENT_HEADERS:
        value = headers.get(name)
        if value is None:
            continue
        try:
            data = decode_header(value, what=name, error=SettlementError)
            if not isinstance(data, dict) or data.get("success") is not True:
                return None
            transaction = data.get("transaction")
            extra = ResponseExtra.from_wire(data.get("extra") or {})
        except SettlementError:
            return None
        return Report(extra, transaction[:256] if isinstance(transaction, str) and transaction else None)
    return None


def transaction_of(report: Report | None) -> str | None:
    return None if report is None else report.transaction


def refund_amount(asked: str) -> int | None:
    """The refund the caller asked for: None for ``all``, else a positive number of atomic units."""
    if asked.strip().lower() == "all":
        return None
    if not asked.isascii() or not asked.isdigit() or int(asked) <= 0 or len(asked) > 38:
        raise ValueError(f"{CHANNEL_REFUND} must be 'all' or a positive number of atomic units, not {asked[:40]!r}")
    return int(asked)


def refusal_reason(headers: Mapping[str, str]) -> str:
    """Why a 402 refused a signed channel payment, as its challenge says (``error``), or a note that it did not."""
    try:
        challenge = _flow.decode_challenge(headers, None)
    except Exception:  # a malformed 402 gives no reason
        return "no reason given"
    error = challenge.required.error if challenge is not None else None
    return error[:200] if error else "no reason given"


def corrective(headers: Mapping[str, str], channel: bytes, requirement: PaymentRequirements) -> ChannelExtra | None:
    """The channel option of a corrective 402 for `channel` (one that carries its state), or None."""
    try:
        challenge = _flow.decode_challenge(headers, None)
    except Exception:  # a malformed 402 is a plain refusal
        return None
    if challenge is None:
        return None
    for option in challenge.requirements.values():
        if option.scheme != CHANNEL_SCHEME or option.pay_to.lower() != requirement.pay_to.lower():
            continue
        try:
            extra = ChannelExtra.from_wire(option.extra or {})
        except Exception:  # noqa: S112 - an option we cannot read proves nothing
            continue
        if extra.channel_state is not None and extra.channel_state.channel_id == channel:
            return extra
    return None


def new_terms(headers: Mapping[str, str], signed: PaymentRequirements) -> _flow.Challenge | None:
    """The challenge of a 402 to a pre-paid voucher when it offers other terms than the ones signed (the route's
    price changed since it was remembered): to be paid reactively. None for a refusal: no challenge, a malformed
    one, or the very terms signed."""
    try:
        challenge = _flow.decode_challenge(headers, None)
    except ChallengeError:
        return None
    if challenge is None or asks_for_signed(challenge, signed):
        return None
    return challenge
