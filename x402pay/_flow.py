"""The payment flow, written once without I/O and driven by the sync and the async transport.

Theory of operation. For one logical request the transport:

1. sends the request; a response other than 402 passes through untouched (unread, still streaming);
2. asks `challenge_needs_body`: a v2 challenge lives in the ``PAYMENT-REQUIRED`` header, so only a v1 challenge
   makes it read the 402's body, and then at most `MAX_BODY_BYTES` of it;
3. calls `decode_challenge`, which returns None for a 402 that is not x402 (passed through to the caller);
4. calls `choose` (the policy picks an option or says why none), checks the Permit2 allowance where the option
   needs one (`approval_needed`), and only then calls `sign`, which returns the `Payment` and the one header
   that carries it;
5. sends the same request once more with that header, to the same URL, never to another origin;
6. calls `conclude`: a second 402 is a `PaymentRejected` (no further retry); anything else records the settlement
   the server reported on the `Payment` it attaches to the response.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, Protocol

from x402pay._allowance import offers_gas_sponsoring
from x402pay._payment import Payment, PaymentStatus
from x402pay._policy import SpendPolicy
from x402pay._protocol.codec import decode_header, decode_json, encode_header, parse_model
from x402pay._protocol.headers import (
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    PAYMENT_SIGNATURE,
    X_PAYMENT,
    X_PAYMENT_RESPONSE,
)
from x402pay._protocol.models import PaymentPayload, PaymentRequired, PaymentRequirements, SettleResponse
from x402pay._protocol.networks import chain_id_of
from x402pay._receipts import (
    Receipt,
    read_compose_receipt,
    receipt_from_body,
    receipt_from_header,
    receipt_from_settlement,
)
from x402pay._schemes.exact import SignedPayment
from x402pay._schemes.signing import sign_requirement
from x402pay._sse import ERROR_EVENTS, VendorFrame
from x402pay._wallet import Wallet
from x402pay.errors import (
    ChallengeError,
    PaymentRejected,
    Permit2AllowanceRequired,
    ReceiptMismatch,
    SettlementError,
    SettlementFailed,
    SettlementPending,
)

logger = logging.getLogger(__name__)

SETTLEMENT_HEADERS: Final = (PAYMENT_RESPONSE, X_PAYMENT_RESPONSE)
#: The ``errorReason`` of a settlement that was broadcast but not confirmed within the facilitator's wait.
SETTLEMENT_PENDING: Final = "settlement_pending"


@dataclass(frozen=True)
class Challenge:
    """A decoded 402: the envelope, the options that parsed (by their index), and why the others did not."""

    required: PaymentRequired
    requirements: dict[int, PaymentRequirements]
    malformed: dict[int, str] = field(default_factory=dict)

    @property
    def version(self) -> int:
        """The x402 protocol version of the challenge (1 or 2)."""
        return self.required.x402_version


def announced_ceiling(policy: SpendPolicy, given: str | None, room: int | None = None) -> int:
    """The ceiling to announce in ``x-x402-max-amount-wei``: the policy's cap, lowered by the caller's own value
    and by the room left in the budgets."""
    ceiling = policy.max_per_request if room is None else min(policy.max_per_request, room)
    if given is not None and given.isascii() and given.isdigit() and len(given) <= 78:
        return min(ceiling, int(given))
    return ceiling


def challenge_needs_body(headers: Mapping[str, str]) -> bool:
    """Whether the 402's body must be read: only for JSON when there is no v2 ``PAYMENT-REQUIRED`` header."""
    return PAYMENT_REQUIRED not in headers and "json" in headers.get("content-type", "").lower()


def decode_challenge(headers: Mapping[str, str], body: bytes | None) -> Challenge | None:
    """Decode a 402 challenge (v2 header first, then a JSON body); None if the 402 is not x402 at all."""
    header = headers.get(PAYMENT_REQUIRED)
    if header is not None:
        data = decode_header(header, what="PAYMENT-REQUIRED", error=ChallengeError)
    elif body:
        try:
            data = decode_json(body, what="402 body", error=ChallengeError)
        except ChallengeError:
            return None  # not JSON: some other kind of 402
        if not isinstance(data, dict) or "x402Version" not in data:
            return None
    else:
        return None
    required = parse_model(data, PaymentRequired, what="the 402 challenge", error=ChallengeError)
    if header is not None and required.x402_version != 2:
        raise ChallengeError(f"PAYMENT-REQUIRED header carries x402Version {required.x402_version}, expected 2")
    return _split_options(required)


def challenge_from_wire(data: Any) -> Challenge:
    """A challenge kept as its decoded ``PAYMENT-REQUIRED`` object (`PaymentRequired.to_wire`); ChallengeError if
    it is not one."""
    return _split_options(parse_model(data, PaymentRequired, what="a remembered challenge", error=ChallengeError))


def _split_options(required: PaymentRequired) -> Challenge:
    parsed: dict[int, PaymentRequirements] = {}
    malformed: dict[int, str] = {}
    for index, entry in enumerate(required.accepts):
        try:
            parsed[index] = parse_model(entry, PaymentRequirements, what=f"option {index}", error=ChallengeError)
        except ChallengeError as exc:
            malformed[index] = str(exc)
    return Challenge(required, parsed, malformed)


class Coverage(Protocol):
    """What the books can hold: why no budget covers a payment of `asset` on `network` to `origin`, or None
    (`x402pay.ledger.Ledger.uncovered`)."""

    def __call__(self, asset: str, *, network: str, origin: str) -> str | None: ...


def choose(
    challenge: Challenge, *, policy: SpendPolicy, origin: str, ceiling: int | None = None,
    uncovered: Coverage | None = None,
) -> tuple[int, PaymentRequirements]:  # fmt: skip
    """The option `policy` accepts (within the announced `ceiling`) and a budget covers (`uncovered`, when the
    books have budgets), with its index in the challenge; raises why none is acceptable."""
    budgets = None if uncovered is None else partial(_uncovered_option, uncovered, origin)
    return policy.choose(challenge.requirements, origin, challenge.malformed, ceiling, budgets)


def _uncovered_option(uncovered: Coverage, origin: str, requirement: PaymentRequirements) -> str | None:
    return uncovered(requirement.asset, network=requirement.network, origin=origin)


def uses_permit2(requirement: PaymentRequirements) -> bool:
    """Whether paying `requirement` draws on a Permit2 allowance (upto, or exact with Permit2)."""
    return requirement.scheme == "upto" or requirement.extra_str("assetTransferMethod") == "permit2"


def approval_needed(challenge: Challenge, requirement: PaymentRequirements, allowance: int) -> bool:
    """Whether the payment must carry a gas-free EIP-2612 approval for Permit2 (the allowance is short).

    Raises `Permit2AllowanceRequired` when it is short and the server offers no such approval: nothing is signed.
    """
    if allowance >= requirement.amount:
        return False
    if offers_gas_sponsoring(challenge.required.extensions):
        return True
    raise Permit2AllowanceRequired(
        f"Permit2 may move {allowance} of {requirement.asset} for this wallet, the payment needs "
        f"{requirement.amount}, and the server offers no gas-free approval: approve Permit2 once "
        "(Wallet.approve_permit2, or `x402pay wallet approve-permit2`)"
    )


def sign(
    challenge: Challenge,
    requirement: PaymentRequirements,
    *,
    wallet: Wallet,
    policy: SpendPolicy,
    origin: str,
    now: int,
    extensions: dict[str, Any] | None = None,
) -> tuple[Payment, tuple[str, str]]:
    """Sign the chosen `requirement`: the Payment, and the header that carries it (with `extensions` added)."""
    signed = sign_requirement(wallet, requirement, now=now, max_lifetime=policy.max_lifetime)
    payment = Payment(origin=origin, x402_version=challenge.version, signed=signed)
    return payment, payment_header(challenge, signed, extensions or {})


def payment_header(challenge: Challenge, signed: SignedPayment, extensions: dict[str, Any]) -> tuple[str, str]:
    """The header that carries `signed` (with `extensions` added) in answer to `challenge`."""
    required = challenge.required
    if challenge.version == 2:
        echoed = {**(required.extensions or {}), **extensions} or None
        payload = PaymentPayload(
            x402_version=2,
            accepted=signed.requirement.raw,
            payload=signed.payload,
            resource=required.resource,
            extensions=echoed,
        )
        return PAYMENT_SIGNATURE, encode_header(payload)
    payload = PaymentPayload(
        x402_version=1, scheme=signed.requirement.scheme, network=signed.requirement.network, payload=signed.payload
    )
    return X_PAYMENT, encode_header(payload)


def conclude(payment: Payment, status_code: int, headers: Mapping[str, str], body: bytes | None) -> None:
    """Record what the server said about `payment` in its headers.

    A second 402 raises `PaymentRejected`; a receipt that disagrees with what was signed raises `ReceiptMismatch`
    (after recording it). An unreadable claim on a paid answer is recorded, not raised: the answer was paid for.
    """
    try:
        settlement, sent = read_settlement(headers)
        receipt = receipt_from_header(headers)
    except SettlementError as exc:
        if status_code == 402:
            payment.status = PaymentStatus.FAILED
            raise PaymentRejected(f"{payment.origin} refused the signed payment ({exc})") from exc
        payment.settlement_error = str(exc)
        logger.debug("unreadable settlement from %s: %s", payment.origin, exc)
        return
    payment.settlement = settlement
    if is_pending(settlement):  # broadcast, not yet confirmed: may still be charged, so neither settled nor failed
        assert settlement is not None  # noqa: S101 - is_pending says so
        if status_code == 402:
            raise SettlementPending(
                f"{payment.origin} sent the settlement but has not confirmed it (settlement_pending, transaction "
                f"{(settlement.transaction or 'not given')[:80]}): you may be charged; do not pay again",
                payment, settlement.transaction or None,
            )  # fmt: skip
        return
    if status_code == 402 or (settlement is not None and not settlement.success):
        payment.status = PaymentStatus.FAILED
    if status_code == 402:
        reason = _rejection_reason(settlement, headers, body)
        raise PaymentRejected(f"{payment.origin} refused the signed payment: {reason or 'no reason given'}", reason)
    if settlement is not None and settlement.success:
        receipt = receipt_from_settlement(settlement, payment.signed_amount, "PAYMENT-RESPONSE", sent) or receipt
    if receipt is not None:
        accept_receipt(payment, receipt)


def is_pending(settlement: SettleResponse | None) -> bool:
    """Whether a settlement answer says it was sent but not confirmed (the official facilitator's form)."""
    return settlement is not None and not settlement.success and settlement.error_reason == SETTLEMENT_PENDING


def accept_receipt(payment: Payment, receipt: Receipt) -> None:
    """Put `receipt` on `payment`; if it disagrees with what was signed, record that and raise `ReceiptMismatch`."""
    if payment.receipt is not None and payment.receipt.amount == receipt.amount:
        return  # the same claim again (a header and a frame, or a repeated frame)
    problem = receipt_problem(payment, receipt)
    if problem is None and payment.receipt is not None:
        problem = f"a second, different receipt ({receipt.amount}, after {payment.receipt.amount})"
    payment.receipt = payment.receipt or receipt
    payment.status = PaymentStatus.SETTLED
    if problem is not None:
        payment.mismatch = problem
        raise ReceiptMismatch(f"receipt from {payment.origin} does not match the payment: {problem}", payment)


def receipt_problem(payment: Payment, receipt: Receipt) -> str | None:
    """How `receipt` contradicts what was signed, or None: amount, network and payer are checked."""
    signed = payment.signed
    if receipt.amount > signed.amount:
        return f"charged {receipt.amount}, above the signed maximum {signed.amount}"
    if payment.scheme == "exact" and receipt.amount != signed.amount:
        return f"charged {receipt.amount} for an exact payment of {signed.amount}"
    if receipt.network is not None and _chain_id_or_none(receipt.network) != signed.requirement.chain_id:
        return f"network {receipt.network[:80]!r}, but the payment was signed for {signed.requirement.network}"
    if receipt.payer is not None and receipt.payer.lower() != signed.payer.lower():
        return f"payer {receipt.payer[:80]!r}, but {signed.payer} signed"
    return None


def apply_frame(payment: Payment, frame: VendorFrame) -> None:
    """Apply one receipt or error frame of a paid stream, as soon as it has arrived.

    An error frame raises `SettlementFailed`: the content may have arrived, but the payment did not settle.
    A receipt that says ``settlementStatus: pending`` is no receipt yet: it becomes the payment's (pending)
    `settlement`, and the books keep the signed maximum held until the chain decides.
    A stream that never brings a receipt leaves the payment unsettled, its whole signed amount still at stake.
    """
    if frame.event in ERROR_EVENTS:
        payment.status = PaymentStatus.FAILED
        code, message = _error_of(frame.data)
        payment.settlement_error = message
        raise SettlementFailed(f"{payment.origin} reports a failed settlement: {message}", code)
    try:
        receipt = read_compose_receipt(frame.data, source="sse")
    except SettlementError as exc:
        payment.settlement_error = str(exc)
        return
    if receipt.status == "pending":  # sent, not confirmed: the payment stays unsettled, its signed maximum held
        payment.settlement = pending_settlement(receipt)
        return
    accept_receipt(payment, receipt)


def pending_settlement(receipt: Receipt) -> SettleResponse:
    """A receipt that says ``settlementStatus: pending``, as the x402 settlement answer that says so."""
    return SettleResponse(
        success=False, error_reason=SETTLEMENT_PENDING, transaction=receipt.transaction or "",
        network=receipt.network or "", payer=receipt.payer, amount=receipt.amount,
    )  # fmt: skip


def conclude_body(payment: Payment, body: bytes) -> None:
    """Apply a ``receipt`` / ``compose_receipt`` object found in a paid JSON body (when no header carried one)."""
    try:
        receipt = receipt_from_body(decode_json(body, what="paid JSON body", error=SettlementError))
    except SettlementError as exc:
        payment.settlement_error = str(exc)
        return
    if receipt is not None:
        accept_receipt(payment, receipt)


def _error_of(data: object) -> tuple[str | None, str]:
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            data = error
        elif isinstance(error, str):
            return None, error[:500]
        code, message = data.get("code"), data.get("message")
        return (str(code)[:100] if code is not None else None), str(message or data)[:500]
    return None, "an error frame without details"


def _chain_id_or_none(network: str) -> int | None:
    try:
        return chain_id_of(network)
    except ValueError:
        return None


def read_settlement(headers: Mapping[str, str]) -> tuple[SettleResponse | None, dict[str, Any] | None]:
    """The settlement the server reported in ``PAYMENT-RESPONSE`` / ``X-PAYMENT-RESPONSE`` and the JSON object it
    was read from, if any."""
    for name in SETTLEMENT_HEADERS:
        value = headers.get(name)
        if value is not None:
            data = decode_header(value, what=name, error=SettlementError)
            return parse_model(data, SettleResponse, what=name, error=SettlementError), data
    return None, None


def _rejection_reason(settlement: SettleResponse | None, headers: Mapping[str, str], body: bytes | None) -> str | None:
    if settlement is not None and settlement.error_reason:
        return settlement.error_reason
    try:
        challenge = decode_challenge(headers, body)
    except ChallengeError:
        return None
    return challenge.required.error if challenge is not None else None
