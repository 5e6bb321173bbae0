"""The ``batch-settlement`` scheme's wire objects, shared by the paying and the paid side: pure, no I/O.

- Client to server (``PaymentPayload.payload``): `DepositPayload` (first request or top-up: an EIP-3009 or a Permit2
  deposit authorization plus that request's voucher), `VoucherPayload` (every later request), `RefundPayload` (a
  zero-charge voucher; ``amount`` absent for a full refund). `parse_payload` tells them apart by ``type``.
- Server to client: `ChannelExtra`, the requirement's ``extra`` (a corrective 402 adds `ChannelState` and
  `VoucherState`), and `ResponseExtra`, the ``extra`` of ``PAYMENT-RESPONSE``.

Encodings are the official SDKs': amounts, nonces and deadlines are decimal strings; ``withdrawDelay`` and
``withdrawRequestedAt`` JSON numbers; ids, salts and signatures 0x hex. Each ``from_wire`` is strict and raises the
error class it is given (by default: `MalformedPayment` for what a payer sends, `ChallengeError` for a requirement,
`SettlementError` for a response), with a message naming the field; ``as_wire`` builds the JSON-ready dict.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from x402pay._schemes.channel import ChannelConfig, address
from x402pay.errors import ChallengeError, MalformedPayment, SettlementError, SigningError, X402PayError

TransferMethod = Literal["eip3009", "permit2"]
ErrorClass = type[X402PayError]

#: Longest signature accepted (an EIP-1271 / EIP-6492 wallet's may be far longer than 65 bytes).
MAX_SIGNATURE_BYTES: Final = 4096
_UINT128: Final = 128
_HEX: Final = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
_DIGITS: Final = 78


# -- field readers ---------------------------------------------------------------------------------------------


def _obj(value: object, field: str, error: ErrorClass) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise error(f"{field} must be a JSON object")
    return value


def _uint(value: object, field: str, error: ErrorClass, bits: int = 256) -> int:
    """A decimal string (or JSON integer, as some peers send) below ``2**bits``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise error(f"{field} must be a decimal string, got {type(value).__name__}")
    if isinstance(value, str) and not (value.isascii() and value.isdigit() and len(value) <= _DIGITS):
        raise error(f"{field} must be a decimal string, got {value[:80]!r}")
    number = int(value)
    if not 0 <= number < 1 << bits:
        raise error(f"{field} is out of the uint{bits} range")
    return number


def _hex(value: object, field: str, error: ErrorClass, *, size: int | None = None) -> bytes:
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise error(f"{field} must be 0x-prefixed hex, got {str(value)[:80]!r}")
    data = bytes.fromhex(value[2:])
    if size is not None and len(data) != size:
        raise error(f"{field} must be {size} bytes, got {len(data)}")
    return data


def _signature(value: object, field: str, error: ErrorClass) -> bytes:
    data = _hex(value, field, error)
    if not 0 < len(data) <= MAX_SIGNATURE_BYTES:
        raise error(f"{field} must be 1 to {MAX_SIGNATURE_BYTES} bytes")
    return data


def _address(value: object, field: str, error: ErrorClass, *, zero_ok: bool = False) -> str:
    try:
        return address(value, field, zero_ok=zero_ok)
    except SigningError as exc:
        raise error(str(exc)) from exc


def _int(value: object, field: str, error: ErrorClass) -> int:
    """A JSON number that is a whole non-negative int (``withdrawDelay``, ``withdrawRequestedAt``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise error(f"{field} must be a non-negative JSON integer, got {str(value)[:80]!r}")
    return value


def _hex32(value: bytes) -> str:
    return "0x" + value.hex()


def parse_config(data: object, error: ErrorClass = MalformedPayment) -> ChannelConfig:
    """A ``channelConfig`` object (``withdrawDelay`` a number, ``salt`` 32 bytes of 0x hex)."""
    cfg = _obj(data, "channelConfig", error)
    try:
        return ChannelConfig(
            payer=_address(cfg.get("payer"), "channelConfig.payer", error),
            payer_authorizer=_address(cfg.get("payerAuthorizer"), "channelConfig.payerAuthorizer", error, zero_ok=True),
            receiver=_address(cfg.get("receiver"), "channelConfig.receiver", error),
            receiver_authorizer=_address(cfg.get("receiverAuthorizer"), "channelConfig.receiverAuthorizer", error),
            token=_address(cfg.get("token"), "channelConfig.token", error),
            withdraw_delay=_int(cfg.get("withdrawDelay"), "channelConfig.withdrawDelay", error),
            salt=_hex(cfg.get("salt"), "channelConfig.salt", error, size=32),
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
        obj = _obj(data, "voucher", error)
        return cls(
            channel_id=_hex(obj.get("channelId"), "voucher.channelId", error, size=32),
            max_claimable_amount=_uint(obj.get("maxClaimableAmount"), "voucher.maxClaimableAmount", error, _UINT128),
            signature=_signature(obj.get("signature"), "voucher.signature", error),
        )

    def as_wire(self) -> dict[str, Any]:
        """The wire object."""
        return {
            "channelId": _hex32(self.channel_id),
            "maxClaimableAmount": str(self.max_claimable_amount),
            "signature": _hex32(self.signature),
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
        obj = _obj(data, "erc3009Authorization", error)
        return cls(
            valid_after=_uint(obj.get("validAfter"), "erc3009Authorization.validAfter", error),
            valid_before=_uint(obj.get("validBefore"), "erc3009Authorization.validBefore", error),
            salt=int.from_bytes(_hex(obj.get("salt"), "erc3009Authorization.salt", error, size=32), "big"),
            signature=_signature(obj.get("signature"), "erc3009Authorization.signature", error),
        )

    def as_wire(self) -> dict[str, Any]:
        """The ``erc3009Authorization`` object."""
        return {
            "validAfter": str(self.valid_after),
            "validBefore": str(self.valid_before),
            "salt": _hex32(self.salt.to_bytes(32, "big")),
            "signature": _hex32(self.signature),
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
        obj = _obj(data, "permit2Authorization", error)
        permitted = _obj(obj.get("permitted"), "permit2Authorization.permitted", error)
        witness = _obj(obj.get("witness"), "permit2Authorization.witness", error)
        return cls(
            payer=_address(obj.get("from"), "permit2Authorization.from", error),
            token=_address(permitted.get("token"), "permit2Authorization.permitted.token", error),
            amount=_uint(permitted.get("amount"), "permit2Authorization.permitted.amount", error),
            spender=_address(obj.get("spender"), "permit2Authorization.spender", error),
            nonce=_uint(obj.get("nonce"), "permit2Authorization.nonce", error),
            deadline=_uint(obj.get("deadline"), "permit2Authorization.deadline", error),
            channel_id=_hex(witness.get("channelId"), "permit2Authorization.witness.channelId", error, size=32),
            signature=_signature(obj.get("signature"), "permit2Authorization.signature", error),
        )

    def as_wire(self) -> dict[str, Any]:
        """The ``permit2Authorization`` object."""
        return {
            "from": self.payer,
            "permitted": {"token": self.token, "amount": str(self.amount)},
            "spender": self.spender,
            "nonce": str(self.nonce),
            "deadline": str(self.deadline),
            "witness": {"channelId": _hex32(self.channel_id)},
            "signature": _hex32(self.signature),
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
        obj = _obj(data, "deposit", error)
        auth = _obj(obj.get("authorization"), "deposit.authorization", error)
        kinds = [key for key in ("erc3009Authorization", "permit2Authorization") if auth.get(key) is not None]
        if len(kinds) != 1:
            raise error("deposit.authorization needs exactly one of erc3009Authorization, permit2Authorization")
        parsed: Erc3009Deposit | Permit2Deposit
        if kinds[0] == "erc3009Authorization":
            parsed = Erc3009Deposit.from_wire(auth[kinds[0]], error)
        else:
            parsed = Permit2Deposit.from_wire(auth[kinds[0]], error)
        amount = _uint(obj.get("amount"), "deposit.amount", error, _UINT128)
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
    obj = _obj(data, "payload", error)
    kind = obj.get("type")
    config = parse_config(obj.get("channelConfig"), error)
    voucher = Voucher.from_wire(obj.get("voucher"), error)
    if kind == "voucher":
        return VoucherPayload(config, voucher)
    if kind == "deposit":
        return DepositPayload(config, voucher, Deposit.from_wire(obj.get("deposit"), error))
    if kind == "refund":
        amount = obj.get("amount")
        return RefundPayload(config, voucher, None if amount is None else _uint(amount, "amount", error, _UINT128))
    raise error(f"payload.type must be deposit, voucher or refund, not {str(kind)[:40]!r}")


# -- server -> client ------------------------------------------------------------------------------------------


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
        obj = _obj(data, "channelState", error)
        charged = obj.get("chargedCumulativeAmount")
        return cls(
            channel_id=_hex(obj.get("channelId"), "channelState.channelId", error, size=32),
            balance=_uint(obj.get("balance"), "channelState.balance", error),
            total_claimed=_uint(obj.get("totalClaimed"), "channelState.totalClaimed", error),
            withdraw_requested_at=_int(obj.get("withdrawRequestedAt", 0), "channelState.withdrawRequestedAt", error),
            refund_nonce=_uint(obj.get("refundNonce", "0"), "channelState.refundNonce", error),
            charged_cumulative_amount=(
                None if charged is None else _uint(charged, "channelState.chargedCumulativeAmount", error)
            ),
        )

    def as_wire(self) -> dict[str, Any]:
        """The ``channelState`` object."""
        wire: dict[str, Any] = {
            "channelId": _hex32(self.channel_id),
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
        obj = _obj(data, "voucherState", error)
        ceiling, signature = obj.get("signedMaxClaimable"), obj.get("signature")
        return cls(
            signed_max_claimable=None if ceiling is None else _uint(ceiling, "voucherState.signedMaxClaimable", error),
            signature=None if signature is None else _signature(signature, "voucherState.signature", error),
        )

    def as_wire(self) -> dict[str, Any]:
        """The ``voucherState`` object."""
        wire: dict[str, Any] = {}
        if self.signed_max_claimable is not None:
            wire["signedMaxClaimable"] = str(self.signed_max_claimable)
        if self.signature is not None:
            wire["signature"] = _hex32(self.signature)
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
        obj = _obj(data, "extra", error)
        method = obj.get("assetTransferMethod")
        if method not in (None, "eip3009", "permit2"):
            raise error(f"extra.assetTransferMethod must be eip3009 or permit2, not {str(method)[:40]!r}")
        state, voucher, floor = obj.get("channelState"), obj.get("voucherState"), obj.get("minDeposit")
        return cls(
            receiver_authorizer=_address(obj.get("receiverAuthorizer"), "extra.receiverAuthorizer", error),
            withdraw_delay=_int(obj.get("withdrawDelay"), "extra.withdrawDelay", error),
            name=_optional_text(obj.get("name"), "extra.name", error),
            version=_optional_text(obj.get("version"), "extra.version", error),
            asset_transfer_method=method,
            min_deposit=None if floor is None else _uint(floor, "extra.minDeposit", error),
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
        obj = _obj(data, "extra", error)
        charged, state, voucher = obj.get("chargedAmount"), obj.get("channelState"), obj.get("voucherState")
        return cls(
            charged_amount=None if charged is None else _uint(charged, "extra.chargedAmount", error),
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


def _optional_text(value: object, field: str, error: ErrorClass) -> str | None:
    if value is not None and not isinstance(value, str):
        raise error(f"{field} must be a string")
    return value
