"""The payment flow, written once without I/O and driven by the sync and the async transport.

Theory of operation. For one logical request the transport:

1. sends the request; a response other than 402 passes through untouched (unread, still streaming);
2. asks `challenge_needs_body`: a v2 challenge lives in the ``PAYMENT-REQUIRED`` header, so only a v1 challenge
   makes it read the 402's body, and then at most `MAX_BODY_BYTES` of it;
3. calls `decode_challenge`, which returns None for a 402 that is not x402 (passed through to the caller);
4. calls `authorize`: the policy chooses an option and only then is anything signed; it returns the `Payment`
   and the one header that carries it;
5. sends the same request once more with that header, to the same URL, never to another origin;
6. calls `conclude`: a second 402 is a `PaymentRejected` (no further retry); anything else records the settlement
   the server reported on the `Payment` it attaches to the response.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from x402pay.errors import ChallengeError, PaymentRejected, SettlementError
from x402pay.payment import Payment, PaymentStatus
from x402pay.policy import SpendPolicy
from x402pay.protocol.codec import decode_header, decode_json, encode_header, parse_model
from x402pay.protocol.models import PaymentPayload, PaymentRequired, PaymentRequirements, SettleResponse
from x402pay.schemes.exact import SignedPayment, sign_exact
from x402pay.wallet import Wallet

logger = logging.getLogger(__name__)

PAYMENT_REQUIRED: Final = "payment-required"
PAYMENT_SIGNATURE: Final = "PAYMENT-SIGNATURE"
X_PAYMENT: Final = "X-PAYMENT"
SETTLEMENT_HEADERS: Final = ("payment-response", "x-payment-response")


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


def _split_options(required: PaymentRequired) -> Challenge:
    parsed: dict[int, PaymentRequirements] = {}
    malformed: dict[int, str] = {}
    for index, entry in enumerate(required.accepts):
        try:
            parsed[index] = parse_model(entry, PaymentRequirements, what=f"option {index}", error=ChallengeError)
        except ChallengeError as exc:
            malformed[index] = str(exc)
    return Challenge(required, parsed, malformed)


def authorize(
    challenge: Challenge, *, wallet: Wallet, policy: SpendPolicy, origin: str, now: int
) -> tuple[Payment, tuple[str, str]]:
    """Choose an option under `policy`, sign it, and return the Payment with the header that carries it."""
    index, requirement = policy.choose(challenge.requirements, origin, challenge.malformed)
    signed = sign_exact(wallet, requirement, now=now, max_lifetime=policy.max_lifetime)
    logger.debug("signed option %d for %s: %s %s on %s", index, origin, signed.amount, requirement.asset,
                 requirement.network)  # fmt: skip
    payment = Payment(origin=origin, x402_version=challenge.version, signed=signed)
    return payment, _payment_header(challenge, signed)


def _payment_header(challenge: Challenge, signed: SignedPayment) -> tuple[str, str]:
    required = challenge.required
    if challenge.version == 2:
        payload = PaymentPayload(
            x402_version=2,
            accepted=signed.requirement.raw,
            payload=signed.payload,
            resource=required.resource,
            extensions=required.extensions,
        )
        return PAYMENT_SIGNATURE, encode_header(payload)
    payload = PaymentPayload(
        x402_version=1, scheme=signed.requirement.scheme, network=signed.requirement.network, payload=signed.payload
    )
    return X_PAYMENT, encode_header(payload)


def conclude(payment: Payment, status_code: int, headers: Mapping[str, str], body: bytes | None) -> None:
    """Record what the server said about `payment`; raise `PaymentRejected` if it answered with another 402."""
    try:
        settlement = read_settlement(headers)
    except SettlementError as exc:
        if status_code == 402:
            raise PaymentRejected(f"{payment.origin} refused the signed payment ({exc})") from exc
        # The request was paid for and answered: keep the answer, and say what was wrong with the claim.
        payment.settlement_error = str(exc)
        logger.info("unreadable settlement from %s: %s", payment.origin, exc)
        return
    if settlement is not None:
        payment.settlement = settlement
        payment.status = PaymentStatus.SETTLED if settlement.success else PaymentStatus.FAILED
    if status_code == 402:
        payment.status = PaymentStatus.FAILED
        reason = _rejection_reason(settlement, headers, body)
        raise PaymentRejected(f"{payment.origin} refused the signed payment: {reason or 'no reason given'}", reason)


def read_settlement(headers: Mapping[str, str]) -> SettleResponse | None:
    """The settlement the server reported in ``PAYMENT-RESPONSE`` / ``X-PAYMENT-RESPONSE``, if any."""
    for name in SETTLEMENT_HEADERS:
        value = headers.get(name)
        if value is not None:
            data = decode_header(value, what=name.upper(), error=SettlementError)
            return parse_model(data, SettleResponse, what=name.upper(), error=SettlementError)
    return None


def _rejection_reason(settlement: SettleResponse | None, headers: Mapping[str, str], body: bytes | None) -> str | None:
    if settlement is not None and settlement.error_reason:
        return settlement.error_reason
    try:
        challenge = decode_challenge(headers, body)
    except ChallengeError:
        return None
    return challenge.required.error if challenge is not None else None
