"""The ``batch-settlement`` scheme's client-to-server wire objects, shared by the paying and the paid side: pure, no
I/O. The server's answers are in `x402pay._protocol.channel_extra`.

``PaymentPayload.payload`` is a `DepositPayload` (first request or top-up: an EIP-3009 or a Permit2 deposit
authorization plus that request's voucher), a `VoucherPayload` (every later request) or a `RefundPayload` (a
zero-charge voucher; ``amount`` absent for a full refund). `parse_payload` tells them apart by ``type``.

Encodings are the official SDKs': amounts, nonces and deadlines are decimal strings; ``withdrawDelay`` and
``withdrawRequestedAt`` JSON numbers; ids, salts and signatures 0x hex. Each ``from_wire`` is strict and raises the
error class it is given (by default: `MalformedPayment` for what a payer sends, `ChallengeError` for a requirement,
`SettlementError` for a response), with a message naming the field; ``as_wire`` builds the JSON-ready dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from x402pay._protocol.channel_fields import (
    UINT128,
    ErrorClass,
    checked_address,
    hex_bytes,
    hex_text,
    json_object,
    json_whole,
    signature_bytes,
    uint,
)
from x402pay._schemes.channel import ChannelConfig
from x402pay.errors import MalformedPayment, SigningError

TransferMethod = Literal["eip3009", "permit2"]


def parse_config(data: object, error: ErrorClass = MalformedPayment) -> ChannelConfig:
    """A ``channelConfig`` object (``withdrawDelay`` a number, ``salt`` 32 bytes of 0x hex)."""
    cfg = json_object(data, "channelConfig", error)
    try:
        return ChannelConfig(
            payer=checked_address(cfg.get("payer"), "channelConfig.payer", error),
            payer_authorizer=checked_address(
                cfg.get("payerAuthorizer"), "channelConfig.payerAuthorizer", error, zero_ok=True
            ),
            receiver=checked_address(cfg.get("receiver"), "channelConfig.receiver", error),
            receiver_authorizer=checked_address(
                cfg.get("receiverAuthorizer"), "channelConfig.receiverAuthorizer", error
            ),
            token=checked_address(cfg.get("token"), "channelConfig.token", error),
            withdraw_delay=json_whole(cfg.get("withdrawDelay"), "channelConfig.withdrawDelay", error),
            salt=hex_bytes(cfg.get("salt"), "channelConfig.salt", error, size=32),
        )
    except SigningError as exc:
        raise error(f"channelConfig: {exc}") from exc


# -- client -> server ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Voucher:
    """A cumulative voucher: the channel may be claimed from up to `max_claimable_amount`, signed by the payer side."""

    channel_id: bytes
    max_claimable_amount: int
    signature: bytes = field(repr=False)  # never in a repr or a log

    @classmethod
    def from_wire(cls, data: object, error: ErrorClass = MalformedPayment) -> Voucher:
        """Parse ``{channelId, maxClaimableAmount, signature}``."""
        obj = json_object(data, "voucher", error)
        return cls(
            channel_id=hex_bytes(obj.get("channelId"), "voucher.channelId", error, size=32),
            max_claimable_amount=uint(obj.get("maxClaimableAmount"), "voucher.maxClaimableAmount", error, UINT128),
            signature=signature_bytes(obj.get("signature"), "voucher.signature", error),
        )

    def as_wire(self) -> dict[str, Any]:
        """The wire object."""
        return {
            "channelId": hex_text(self.channel_id),
            "maxClaimableAmount": str(self.max_claimable_amount),
            "signature": hex_text(self.signature),
        }


@dataclass(frozen=True)
class Erc3009Deposit:
    """An EIP-3009 ``ReceiveWithAuthorization`` to the deposit collector; the nonce derives from `salt`."""

    valid_after: int
    valid_before: int
    salt: int
    signature: bytes = field(repr=False)  # never in a repr or a log

    @classmethod
    def from_wire(cls, data: object, error: ErrorClass = MalformedPayment) -> Erc3009Deposit:
        """Parse ``{validAfter, validBefore, salt, signature}`` (salt: 32 bytes of 0x hex)."""
        obj = json_object(data, "erc3009Authorization", error)
        return cls(
            valid_after=uint(obj.get("validAfter"), "erc3009Authorization.validAfter", error),
            valid_before=uint(obj.get("validBefore"), "erc3009Authorization.validBefore", error),
            salt=int.from_bytes(hex_bytes(obj.get("salt"), "erc3009Authorization.salt", error, size=32), "big"),
            signature=signature_bytes(obj.get("signature"), "erc3009Authorization.signature", error),
        )

    def as_wire(self) -> dict[str, Any]:
        """The ``erc3009Authorization`` object."""
        return {
            "validAfter": str(self.valid_after),
            "validBefore": str(self.valid_before),
            "salt": hex_text(self.salt.to_bytes(32, "big")),
            "signature": hex_text(self.signature),
        }


@dataclass(frozen=True)
class Permit2Deposit:
    """A Permit2 ``PermitWitnessTransferFrom`` to the deposit collector, its witness naming the channel."""

    payer: str
    token: str
    amount: int
    spender: str
    nonce: int
    deadline: int
    channel_id: bytes
    signature: bytes = field(repr=False)  # never in a repr or a log

    @classmethod
    def from_wire(cls, data: object, error: ErrorClass = MalformedPayment) -> Permit2Deposit:
        """Parse ``{from, permitted{token, amount}, spender, nonce, deadline, witness{channelId}, signature}``."""
        obj = json_object(data, "permit2Authorization", error)
        permitted = json_object(obj.get("permitted"), "permit2Authorization.permitted", error)
        witness = json_object(obj.get("witness"), "permit2Authorization.witness", error)
        return cls(
            payer=checked_address(obj.get("from"), "permit2Authorization.from", error),
            token=checked_address(permitted.get("token"), "permit2Authorization.permitted.token", error),
            amount=uint(permitted.get("amount"), "permit2Authorization.permitted.amount", error),
            spender=checked_address(obj.get("spender"), "permit2Authorization.spender", error),
            nonce=uint(obj.get("nonce"), "permit2Authorization.nonce", error),
            deadline=uint(obj.get("deadline"), "permit2Authorization.deadline", error),
            channel_id=hex_bytes(witness.get("channelId"), "permit2Authorization.witness.channelId", error, size=32),
            signature=signature_bytes(obj.get("signature"), "permit2Authorization.signature", error),
        )

    def as_wire(self) -> dict[str, Any]:
        """The ``permit2Authorization`` object."""
        return {
            "from": self.payer,
            "permitted": {"token": self.token, "amount": str(self.amount)},
            "spender": self.spender,
            "nonce": str(self.nonce),
            "deadline": str(self.deadline),
            "witness": {"channelId": hex_text(self.channel_id)},
            "signature": hex_text(self.signature),
        }


@dataclass(frozen=True)
class Deposit:
    """A deposit of `amount` into the channel, authorized one of two ways."""

    amount: int
    authorization: Erc3009Deposit | Permit2Deposit

    @property
    def method(self) -> TransferMethod:
        """``eip3009`` or ``permit2``."""
        return "eip3009" if isinstance(self.authorization, Erc3009Deposit) else "permit2"

    @classmethod
    def from_wire(cls, data: object, error: ErrorClass = MalformedPayment) -> Deposit:
        """Parse ``{amount, authorization: {erc3009Authorization | permit2Authorization}}`` (exactly one)."""
        obj = json_object(data, "deposit", error)
        auth = json_object(obj.get("authorization"), "deposit.authorization", error)
        kinds = [key for key in ("erc3009Authorization", "permit2Authorization") if auth.get(key) is not None]
        if len(kinds) != 1:
            raise error("deposit.authorization needs exactly one of erc3009Authorization, permit2Authorization")
        parsed: Erc3009Deposit | Permit2Deposit
        if kinds[0] == "erc3009Authorization":
            parsed = Erc3009Deposit.from_wire(auth[kinds[0]], error)
        else:
            parsed = Permit2Deposit.from_wire(auth[kinds[0]], error)
        amount = uint(obj.get("amount"), "deposit.amount", error, UINT128)
        if amount == 0:
            raise error("deposit.amount must be positive")
        return cls(amount=amount, authorization=parsed)

    def as_wire(self) -> dict[str, Any]:
        """The ``deposit`` object."""
        key = "erc3009Authorization" if self.method == "eip3009" else "permit2Authorization"
        return {"amount": str(self.amount), "authorization": {key: self.authorization.as_wire()}}


@dataclass(frozen=True)
class VoucherPayload:
    """``type: voucher``: a request paid from the channel's escrow."""

    config: ChannelConfig
    voucher: Voucher
    type: Literal["voucher"] = "voucher"

    def as_wire(self) -> dict[str, Any]:
        """The payment payload."""
        return {"type": self.type, "channelConfig": self.config.as_wire(), "voucher": self.voucher.as_wire()}


@dataclass(frozen=True)
class DepositPayload:
    """``type: deposit``: the first request on a channel, or a top-up, with that request's voucher."""

    config: ChannelConfig
    voucher: Voucher
    deposit: Deposit
    type: Literal["deposit"] = "deposit"

    def as_wire(self) -> dict[str, Any]:
        """The payment payload."""
        return {
            "type": self.type,
            "channelConfig": self.config.as_wire(),
            "voucher": self.voucher.as_wire(),
            "deposit": self.deposit.as_wire(),
        }


@dataclass(frozen=True)
class RefundPayload:
    """``type: refund``: return unclaimed escrow; `amount` None asks for all of it."""

    config: ChannelConfig
    voucher: Voucher
    amount: int | None = None
    type: Literal["refund"] = "refund"

    def as_wire(self) -> dict[str, Any]:
        """The payment payload (``amount`` only for a partial refund)."""
        wire = {"type": self.type, "channelConfig": self.config.as_wire(), "voucher": self.voucher.as_wire()}
        return wire | ({} if self.amount is None else {"amount": str(self.amount)})


ChannelPayload = DepositPayload | VoucherPayload | RefundPayload


def parse_payload(data: object, error: ErrorClass = MalformedPayment) -> ChannelPayload:
    """The client's payload, by its ``type`` (``deposit``, ``voucher`` or ``refund``)."""
    obj = json_object(data, "payload", error)
    kind = obj.get("type")
    config = parse_config(obj.get("channelConfig"), error)
    voucher = Voucher.from_wire(obj.get("voucher"), error)
    if kind == "voucher":
        return VoucherPayload(config, voucher)
    if kind == "deposit":
        return DepositPayload(config, voucher, Deposit.from_wire(obj.get("deposit"), error))
    if kind == "refund":
        amount = obj.get("amount")
        return RefundPayload(config, voucher, None if amount is None else uint(amount, "amount", error, UINT128))
    raise error(f"payload.type must be deposit, voucher or refund, not {str(kind)[:40]!r}")
