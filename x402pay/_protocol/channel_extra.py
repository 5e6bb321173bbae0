"""The ``batch-settlement`` scheme's server-to-client wire objects: `ChannelExtra`, a requirement's ``extra`` (a
corrective 402 adds `ChannelState` and `VoucherState`), and `ResponseExtra`, the ``extra`` of ``PAYMENT-RESPONSE``.
Pure, no I/O; encodings and errors as in `x402pay._protocol.channel_wire`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from x402pay._protocol.channel_fields import (
    ErrorClass,
    checked_address,
    hex_bytes,
    hex_text,
    json_object,
    json_whole,
    optional_text,
    signature_bytes,
    uint,
)
from x402pay._protocol.channel_wire import TransferMethod
from x402pay.errors import ChallengeError, SettlementError


@dataclass(frozen=True)
class ChannelState:
    """The server's view of a channel: the on-chain mirror and, when it says so, what it has charged in all."""

    channel_id: bytes
    balance: int
    total_claimed: int
    withdraw_requested_at: int = 0
    refund_nonce: int = 0
    charged_cumulative_amount: int | None = None

    @classmethod
    def from_wire(cls, data: object, error: ErrorClass = ChallengeError) -> ChannelState:
        """Parse ``channelState`` (``withdrawRequestedAt`` and ``refundNonce`` default to 0, as the SDKs read it)."""
        obj = json_object(data, "channelState", error)
        charged = obj.get("chargedCumulativeAmount")
        return cls(
            channel_id=hex_bytes(obj.get("channelId"), "channelState.channelId", error, size=32),
            balance=uint(obj.get("balance"), "channelState.balance", error),
            total_claimed=uint(obj.get("totalClaimed"), "channelState.totalClaimed", error),
            withdraw_requested_at=json_whole(
                obj.get("withdrawRequestedAt", 0), "channelState.withdrawRequestedAt", error
            ),
            refund_nonce=uint(obj.get("refundNonce", "0"), "channelState.refundNonce", error),
            charged_cumulative_amount=(
                None if charged is None else uint(charged, "channelState.chargedCumulativeAmount", error)
            ),
        )

    def as_wire(self) -> dict[str, Any]:
        """The ``channelState`` object."""
        wire: dict[str, Any] = {
            "channelId": hex_text(self.channel_id),
            "balance": str(self.balance),
            "totalClaimed": str(self.total_claimed),
            "withdrawRequestedAt": self.withdraw_requested_at,
            "refundNonce": str(self.refund_nonce),
        }
        if self.charged_cumulative_amount is not None:
            wire["chargedCumulativeAmount"] = str(self.charged_cumulative_amount)
        return wire


@dataclass(frozen=True)
class VoucherState:
    """The latest voucher the server holds for the channel (a corrective 402 proves it with the signature)."""

    signed_max_claimable: int | None = None
    signature: bytes | None = field(default=None, repr=False)  # never in a repr or a log

    @classmethod
    def from_wire(cls, data: object, error: ErrorClass = ChallengeError) -> VoucherState:
        """Parse ``voucherState`` (both fields optional)."""
        obj = json_object(data, "voucherState", error)
        ceiling, signature = obj.get("signedMaxClaimable"), obj.get("signature")
        return cls(
            signed_max_claimable=None if ceiling is None else uint(ceiling, "voucherState.signedMaxClaimable", error),
            signature=None if signature is None else signature_bytes(signature, "voucherState.signature", error),
        )

    def as_wire(self) -> dict[str, Any]:
        """The ``voucherState`` object."""
        wire: dict[str, Any] = {}
        if self.signed_max_claimable is not None:
            wire["signedMaxClaimable"] = str(self.signed_max_claimable)
        if self.signature is not None:
            wire["signature"] = hex_text(self.signature)
        return wire


@dataclass(frozen=True)
class ChannelExtra:
    """A batch-settlement requirement's ``extra``; `channel_state` / `voucher_state` only in a corrective 402."""

    receiver_authorizer: str
    withdraw_delay: int
    name: str | None = None
    version: str | None = None
    asset_transfer_method: TransferMethod | None = None
    min_deposit: int | None = None
    channel_state: ChannelState | None = None
    voucher_state: VoucherState | None = None

    @classmethod
    def from_wire(cls, data: object, error: ErrorClass = ChallengeError) -> ChannelExtra:
        """Parse the ``extra`` (a non-digit ``minDeposit`` is refused: it is a hint the client may size from)."""
        obj = json_object(data, "extra", error)
        method = obj.get("assetTransferMethod")
        if method not in (None, "eip3009", "permit2"):
            raise error(f"extra.assetTransferMethod must be eip3009 or permit2, not {str(method)[:40]!r}")
        state, voucher, floor = obj.get("channelState"), obj.get("voucherState"), obj.get("minDeposit")
        return cls(
            receiver_authorizer=checked_address(obj.get("receiverAuthorizer"), "extra.receiverAuthorizer", error),
            withdraw_delay=json_whole(obj.get("withdrawDelay"), "extra.withdrawDelay", error),
            name=optional_text(obj.get("name"), "extra.name", error),
            version=optional_text(obj.get("version"), "extra.version", error),
            asset_transfer_method=method,
            min_deposit=None if floor is None else uint(floor, "extra.minDeposit", error),
            channel_state=None if state is None else ChannelState.from_wire(state, error),
            voucher_state=None if voucher is None else VoucherState.from_wire(voucher, error),
        )

    def as_wire(self) -> dict[str, Any]:
        """The ``extra`` object, in the field order the SDKs write."""
        wire: dict[str, Any] = {"receiverAuthorizer": self.receiver_authorizer, "withdrawDelay": self.withdraw_delay}
        optional = {
            "name": self.name,
            "version": self.version,
            "assetTransferMethod": self.asset_transfer_method,
            "minDeposit": None if self.min_deposit is None else str(self.min_deposit),
            "channelState": None if self.channel_state is None else self.channel_state.as_wire(),
            "voucherState": None if self.voucher_state is None else self.voucher_state.as_wire(),
        }
        return wire | {key: value for key, value in optional.items() if value is not None}


@dataclass(frozen=True)
class ResponseExtra:
    """``PAYMENT-RESPONSE``'s ``extra``: what this request was charged and the channel as the server now sees it."""

    charged_amount: int | None = None
    channel_state: ChannelState | None = None
    voucher_state: VoucherState | None = None

    @classmethod
    def from_wire(cls, data: object, error: ErrorClass = SettlementError) -> ResponseExtra:
        """Parse the response's ``extra``."""
        obj = json_object(data, "extra", error)
        charged, state, voucher = obj.get("chargedAmount"), obj.get("channelState"), obj.get("voucherState")
        return cls(
            charged_amount=None if charged is None else uint(charged, "extra.chargedAmount", error),
            channel_state=None if state is None else ChannelState.from_wire(state, error),
            voucher_state=None if voucher is None else VoucherState.from_wire(voucher, error),
        )

    def as_wire(self) -> dict[str, Any]:
        """The ``extra`` object."""
        wire: dict[str, Any] = {}
        if self.charged_amount is not None:
            wire["chargedAmount"] = str(self.charged_amount)
        if self.channel_state is not None:
            wire["channelState"] = self.channel_state.as_wire()
        if self.voucher_state is not None:
            wire["voucherState"] = self.voucher_state.as_wire()
        return wire
