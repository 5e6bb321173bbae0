"""What the paid side asks a facilitator to do on a channel's behalf: claim, sweep (``settle``) and refund.

These travel to ``/settle`` as payment payloads with synthetic requirements (amount 0), in the official SDKs'
shapes: ``{"type": "claim", "claims": [VoucherClaim], "claimAuthorizerSignature"?}``, ``{"type": "settle",
"receiver", "token"}`` and the enriched refund (the client's refund plus ``amount``, ``refundNonce``, ``claims``
and the receiverAuthorizer's signatures, which a facilitator holding that key may leave out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from eth_account.signers.base import BaseAccount
from eth_typing import Hash32

from x402pay._protocol.channel_fields import ErrorClass, checked_address, json_object, signature_bytes, uint
from x402pay._protocol.channel_wire import Voucher, parse_config
from x402pay._protocol.models import PaymentPayload
from x402pay._schemes.channel import ChannelConfig, ClaimEntry, channel_id, claim_batch_digest, refund_digest
from x402pay.errors import MalformedPayment


@dataclass(frozen=True)
class VoucherClaim:
    """One claim row: a channel, its latest voucher (ceiling and signature), and the total to count as claimed."""

    config: ChannelConfig
    max_claimable_amount: int
    signature: bytes = field(repr=False)  # never in a repr or a log
    total_claimed: int

    @classmethod
    def from_wire(cls, data: object, error: ErrorClass = MalformedPayment) -> VoucherClaim:
        """Parse ``{voucher: {channel, maxClaimableAmount}, signature, totalClaimed}``."""
        obj = json_object(data, "claim", error)
        voucher = json_object(obj.get("voucher"), "claim.voucher", error)
        return cls(
            config=parse_config(voucher.get("channel"), error),
            max_claimable_amount=uint(voucher.get("maxClaimableAmount"), "claim.maxClaimableAmount", error, 128),
            signature=signature_bytes(obj.get("signature"), "claim.signature", error),
            total_claimed=uint(obj.get("totalClaimed"), "claim.totalClaimed", error, 128),
        )

    def as_wire(self) -> dict[str, Any]:
        """The wire object."""
        return {
            "voucher": {"channel": self.config.as_wire(), "maxClaimableAmount": str(self.max_claimable_amount)},
            "signature": "0x" + self.signature.hex(),
            "totalClaimed": str(self.total_claimed),
        }

    def entry(self, chain_id: int) -> ClaimEntry:
        """The row as the ClaimBatch signature covers it."""
        return ClaimEntry(channel_id(self.config, chain_id), self.max_claimable_amount, self.total_claimed)

    def as_abi(self) -> tuple[Any, ...]:
        """The ``VoucherClaim`` tuple as ``claimWithSignature`` takes it."""
        return ((self.config.as_abi(), self.max_claimable_amount), self.signature, self.total_claimed)


@dataclass(frozen=True)
class ClaimAction:
    """Claim these rows in one transaction (all of one receiverAuthorizer)."""

    claims: tuple[VoucherClaim, ...]
    authorizer_signature: bytes | None = field(default=None, repr=False)

    def as_wire(self) -> dict[str, Any]:
        """The payload."""
        wire: dict[str, Any] = {"type": "claim", "claims": [claim.as_wire() for claim in self.claims]}
        if self.authorizer_signature:
            wire["claimAuthorizerSignature"] = "0x" + self.authorizer_signature.hex()
        return wire


@dataclass(frozen=True)
class SweepAction:
    """Move everything claimed for `receiver` in `token` to it."""

    receiver: str
    token: str

    def as_wire(self) -> dict[str, Any]:
        """The payload."""
        return {"type": "settle", "receiver": self.receiver, "token": self.token}


@dataclass(frozen=True)
class RefundAction:
    """Return `amount` of the channel's unclaimed escrow at `refund_nonce`, claiming `claims` first."""

    config: ChannelConfig
    voucher: Voucher
    amount: int
    refund_nonce: int
    claims: tuple[VoucherClaim, ...] = ()
    refund_signature: bytes | None = field(default=None, repr=False)
    claim_signature: bytes | None = field(default=None, repr=False)

    def as_wire(self) -> dict[str, Any]:
        """The enriched refund payload."""
        wire: dict[str, Any] = {
            "type": "refund",
            "channelConfig": self.config.as_wire(),
            "voucher": self.voucher.as_wire(),
            "amount": str(self.amount),
            "refundNonce": str(self.refund_nonce),
            "claims": [claim.as_wire() for claim in self.claims],
        }
        if self.refund_signature:
            wire["refundAuthorizerSignature"] = "0x" + self.refund_signature.hex()
        if self.claim_signature:
            wire["claimAuthorizerSignature"] = "0x" + self.claim_signature.hex()
        return wire


Action = ClaimAction | SweepAction | RefundAction


def parse_action(data: object, error: ErrorClass = MalformedPayment) -> Action | None:
    """A claim, sweep or enriched refund; None for anything else (a client's deposit, voucher or plain refund)."""
    obj = json_object(data, "payload", error)
    kind = obj.get("type")
    if kind == "claim":
        return ClaimAction(_claims(obj.get("claims"), error), _optional_sig(obj, "claimAuthorizerSignature", error))
    if kind == "settle":
        return SweepAction(
            checked_address(obj.get("receiver"), "receiver", error), checked_address(obj.get("token"), "token", error)
        )
    if kind == "refund" and "refundNonce" in obj:
        return RefundAction(
            config=parse_config(obj.get("channelConfig"), error),
            voucher=Voucher.from_wire(obj.get("voucher"), error),
            amount=uint(obj.get("amount"), "amount", error, 128),
            refund_nonce=uint(obj.get("refundNonce"), "refundNonce", error),
            claims=_claims(obj.get("claims", []), error),
            refund_signature=_optional_sig(obj, "refundAuthorizerSignature", error),
            claim_signature=_optional_sig(obj, "claimAuthorizerSignature", error),
        )
    return None


def action_payload(action: Action, accepted: dict[str, Any]) -> PaymentPayload:
    """`action` as the payment payload ``/settle`` takes, with `accepted` (synthetic requirements)."""
    return PaymentPayload(x402_version=2, payload=action.as_wire(), accepted=accepted)


def _claims(value: object, error: ErrorClass) -> tuple[VoucherClaim, ...]:
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise error("claims must be a JSON array")
    return tuple(VoucherClaim.from_wire(item, error) for item in value)


def _optional_sig(obj: Any, key: str, error: ErrorClass) -> bytes | None:
    value = obj.get(key)
    return None if value is None else signature_bytes(value, key, error)


def signed_by(action: Action, authorizer: BaseAccount | None, chain_id: int) -> Action:
    """`action` with the receiverAuthorizer's signatures it needs, made by `authorizer` (unchanged without one: the
    facilitator then signs with the key it holds)."""
    if authorizer is None or isinstance(action, SweepAction):
        return action

    def sign(digest: bytes) -> bytes:
        return bytes(authorizer.unsafe_sign_hash(Hash32(digest)).signature)

    claims = sign(claim_batch_digest([c.entry(chain_id) for c in action.claims], chain_id)) if action.claims else None
    if isinstance(action, ClaimAction):
        return replace(action, authorizer_signature=claims)
    refund = sign(refund_digest(action.voucher.channel_id, action.refund_nonce, action.amount, chain_id))
    return replace(action, refund_signature=refund, claim_signature=claims)
