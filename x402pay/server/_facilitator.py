"""The facilitator interface: verify a payment, settle it, say what is supported.

A facilitator is async because the middleware is ASGI: `LocalFacilitator` runs its blocking web3 calls in a
worker thread, `HTTPFacilitator` awaits a remote one. Verdicts about a payment come back as values
(`VerifyResponse`, `SettleResponse` with the protocol's reason codes); only a facilitator that cannot give a
verdict at all (unreachable, nonsense answers) raises `FacilitatorError`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from pydantic import Field

from x402pay._protocol.models import PaymentPayload, PaymentRequirements, SettleResponse, WireModel
from x402pay.errors import FacilitatorError

__all__ = [
    "Facilitator",
    "FacilitatorError",
    "SettleResponse",
    "SupportedKind",
    "SupportedResponse",
    "VerifyResponse",
]


class VerifyResponse(WireModel):
    """The verdict on a payment before the work is done (``/verify``); `invalid_reason` is a protocol code.

    `extra` carries what a scheme reports beside the verdict (``batch-settlement``: the channel's on-chain state).
    """

    is_valid: bool
    invalid_reason: str | None = None
    invalid_message: str | None = None
    payer: str | None = None
    extra: dict[str, Any] | None = None

    @classmethod
    def valid(cls, payer: str) -> VerifyResponse:
        """An acceptance for `payer` (built from a facilitator's own values, so not validated again)."""
        return cls.model_construct(is_valid=True, payer=payer)

    @classmethod
    def invalid(cls, reason: str, message: str, payer: str | None = None) -> VerifyResponse:
        """A refusal with its reason code and a sentence for people."""
        return cls(is_valid=False, invalid_reason=reason, invalid_message=message, payer=payer)


class SupportedKind(WireModel):
    """One (version, scheme, network) the facilitator handles, with the `extra` servers copy into requirements."""

    x402_version: int
    scheme: str
    network: str
    extra: dict[str, Any] | None = None


class SupportedResponse(WireModel):
    """What ``/supported`` answers: the kinds, the extensions and the signer addresses per network family."""

    kinds: list[SupportedKind] = Field(max_length=1024)
    extensions: list[str] = Field(default_factory=list)
    signers: dict[str, list[str]] = Field(default_factory=dict)

    def kind(self, scheme: str, network: str, version: int = 2) -> SupportedKind | None:
        """The supported kind for `scheme` on `network`, or None."""
        for kind in self.kinds:
            if (kind.x402_version, kind.scheme, kind.network) == (version, scheme, network):
                return kind
        return None


@runtime_checkable
class Facilitator(Protocol):
    """Verifies and settles payments; what `PaymentMiddleware` talks to.

    For ``upto``, `verify` gets the requirement with the signed maximum as `amount` and `settle` gets it with
    the amount actually charged (possibly 0, which settles without a transaction).
    """

    async def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse:
        """Check that `payload` pays `requirements` and could settle now; never moves money."""
        ...

    async def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse:
        """Re-check and execute the payment, waiting for the chain's receipt."""
        ...

    async def supported(self) -> SupportedResponse:
        """The kinds this facilitator handles (for upto: ``extra.facilitatorAddress``)."""
        ...
