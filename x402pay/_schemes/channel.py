"""Payment channels of the x402 ``batch-settlement`` scheme: what identifies a channel and what its parties sign.

Pure CPU, no I/O. A channel is a `ChannelConfig`; its id is the config's full EIP-712 digest under the settlement
contract's domain (``name "x402 Batch Settlement", version "1"``, the chain, the canonical contract), so it is bound to
the chain and the contract. Three messages are signed under that same domain: the payer side's cumulative
``Voucher``, and the receiverAuthorizer's ``Refund`` and ``ClaimBatch`` (an array of ``ClaimEntry``, hashed as EIP-712
says: the keccak of the entries' struct hashes laid end to end). The deposits' own authorizations are in
`x402pay._schemes.channel_deposit`.

Each message comes two ways that must agree: a ``*_digest`` function packs the 32-byte words directly (the contract's
``getChannelId`` / ``getVoucherDigest`` / ``getRefundDigest`` / ``getClaimBatchDigest``), and a ``*_typed_data``
builder gives eth-account's ``full_message`` form for a wallet to sign. The unit tests hold both to the official SDK,
and the chain tests to the contract. Bad input raises `SigningError`, naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from eth_typing import ChecksumAddress
from eth_utils.address import is_checksum_address, to_checksum_address

from x402pay._protocol.addresses import BATCH_SETTLEMENT_ADDRESS
from x402pay._schemes.eip712 import DOMAIN_WITH_VERSION, TypedData
from x402pay._schemes.fast712 import domain_separator, keccak256
from x402pay.errors import SigningError

DOMAIN_NAME: Final = "x402 Batch Settlement"
DOMAIN_VERSION: Final = "1"
#: The withdrawal delays a deposit accepts, in seconds (15 minutes to 30 days).
MIN_WITHDRAW_DELAY: Final = 900
MAX_WITHDRAW_DELAY: Final = 2_592_000

CHANNEL_CONFIG_TYPE: Final = (
    "ChannelConfig(address payer,address payerAuthorizer,address receiver,address receiverAuthorizer,"
    "address token,uint40 withdrawDelay,bytes32 salt)"
)
VOUCHER_TYPE: Final = "Voucher(bytes32 channelId,uint128 maxClaimableAmount)"
REFUND_TYPE: Final = "Refund(bytes32 channelId,uint256 nonce,uint128 amount)"
CLAIM_ENTRY_TYPE: Final = "ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)"
CLAIM_BATCH_TYPE: Final = "ClaimBatch(ClaimEntry[] claims)" + CLAIM_ENTRY_TYPE

_CHANNEL_CONFIG_TYPEHASH: Final = keccak256(CHANNEL_CONFIG_TYPE.encode())
_VOUCHER_TYPEHASH: Final = keccak256(VOUCHER_TYPE.encode())
_REFUND_TYPEHASH: Final = keccak256(REFUND_TYPE.encode())
_CLAIM_ENTRY_TYPEHASH: Final = keccak256(CLAIM_ENTRY_TYPE.encode())
_CLAIM_BATCH_TYPEHASH: Final = keccak256(CLAIM_BATCH_TYPE.encode())

_HEX_ADDRESS: Final = re.compile(r"0x[0-9a-fA-F]{40}")
_ZERO_ADDRESS: Final = "0x" + "0" * 40
_UINT40_LIMIT: Final = 1 << 40
_UINT128_LIMIT: Final = 1 << 128
_UINT256_LIMIT: Final = 1 << 256

_CLAIM_ENTRY_FIELDS: Final = [
    {"name": "channelId", "type": "bytes32"},
    {"name": "maxClaimableAmount", "type": "uint128"},
    {"name": "totalClaimed", "type": "uint128"},
]


# -- checked values -------------------------------------------------------------------------------------------


def address(value: object, field: str, *, zero_ok: bool = False) -> ChecksumAddress:
    """`value` as an EIP-55 address; SigningError if malformed, mis-checksummed, or zero unless `zero_ok`."""
    if not isinstance(value, str) or not _HEX_ADDRESS.fullmatch(value):
        raise SigningError(f"{field} is not a 0x EVM address: {str(value)[:64]!r}")
    body = value[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(value):
        raise SigningError(f"{field} has a broken EIP-55 checksum: {value!r}")
    if not zero_ok and value.lower() == _ZERO_ADDRESS:
        raise SigningError(f"{field} is the zero address")
    return to_checksum_address(value)


def uint(value: object, field: str, *, bits: int = 256) -> int:
    """`value` if it is an int in ``[0, 2**bits)``; SigningError otherwise (bools are not amounts)."""
    if type(value) is not int or not 0 <= value < 1 << bits:
        raise SigningError(f"{field} must be an int in [0, 2**{bits}), got {str(value)[:80]!r}")
    return value


def bytes32(value: object, field: str) -> bytes:
    """`value` if it is exactly 32 bytes; SigningError otherwise."""
    if not isinstance(value, bytes) or len(value) != 32:
        raise SigningError(f"{field} must be 32 bytes")
    return bytes(value)


def word(value: int) -> bytes:
    """One 32-byte big-endian ABI word of a checked unsigned int."""
    return value.to_bytes(32, "big")


def address_word(value: str) -> bytes:
    """One 32-byte ABI word of a checked address."""
    return bytes(12) + bytes.fromhex(value[2:])


# -- the channel ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelConfig:
    """What a channel is; the client fills in payer, payer authorizer and salt, the receiver side the rest.

    A zero `payer_authorizer` means the payer itself signs vouchers (EOA or EIP-1271 wallet). Addresses are stored
    EIP-55 checksummed; `salt` is 32 bytes (the official client uses 32 zero bytes: one channel per receiver,
    receiverAuthorizer, token and delay).
    """

    payer: str
    payer_authorizer: str
    receiver: str
    receiver_authorizer: str
    token: str
    withdraw_delay: int
    salt: bytes = bytes(32)

    def __post_init__(self) -> None:
        for name in ("payer", "receiver", "receiver_authorizer", "token"):
            object.__setattr__(self, name, address(getattr(self, name), name))
        object.__setattr__(self, "payer_authorizer", address(self.payer_authorizer, "payer_authorizer", zero_ok=True))
        uint(self.withdraw_delay, "withdraw_delay", bits=40)
        bytes32(self.salt, "salt")

    def struct_hash(self) -> bytes:
        """EIP-712 ``hashStruct(ChannelConfig)``."""
        addresses = (self.payer, self.payer_authorizer, self.receiver, self.receiver_authorizer, self.token)
        words = [address_word(value) for value in addresses]
        return keccak256(b"".join([_CHANNEL_CONFIG_TYPEHASH, *words, word(self.withdraw_delay), self.salt]))

    def as_abi(self) -> tuple[str, str, str, str, str, int, bytes]:
        """The ``ChannelConfig`` tuple as a contract call takes it."""
        return (
            self.payer,
            self.payer_authorizer,
            self.receiver,
            self.receiver_authorizer,
            self.token,
            self.withdraw_delay,
            self.salt,
        )

    def as_wire(self) -> dict[str, Any]:
        """The ``channelConfig`` object of a payment payload (``withdrawDelay`` a number, ``salt`` 0x hex)."""
        return {
            "payer": self.payer,
            "payerAuthorizer": self.payer_authorizer,
            "receiver": self.receiver,
            "receiverAuthorizer": self.receiver_authorizer,
            "token": self.token,
            "withdrawDelay": self.withdraw_delay,
            "salt": "0x" + self.salt.hex(),
        }


@dataclass(frozen=True)
class ClaimEntry:
    """One row of a claim batch: a channel, its voucher's ceiling, and the cumulative amount claimed under it."""

    channel_id: bytes
    max_claimable_amount: int
    total_claimed: int

    def __post_init__(self) -> None:
        bytes32(self.channel_id, "channel_id")
        uint(self.max_claimable_amount, "max_claimable_amount", bits=128)
        uint(self.total_claimed, "total_claimed", bits=128)

    def struct_hash(self) -> bytes:
        """EIP-712 ``hashStruct(ClaimEntry)``."""
        words = [self.channel_id, word(self.max_claimable_amount), word(self.total_claimed)]
        return keccak256(b"".join([_CLAIM_ENTRY_TYPEHASH, *words]))


# -- digests --------------------------------------------------------------------------------------------------


def _digest(chain_id: int, struct_hash: bytes) -> bytes:
    separator = domain_separator(DOMAIN_NAME, DOMAIN_VERSION, uint(chain_id, "chain_id"), BATCH_SETTLEMENT_ADDRESS)
    return keccak256(b"\x19\x01" + separator + struct_hash)


def channel_id(config: ChannelConfig, chain_id: int) -> bytes:
    """The channel's id: the EIP-712 digest of `config` under the settlement contract's domain on `chain_id`."""
    return _digest(chain_id, config.struct_hash())


def voucher_digest(channel: bytes, max_claimable_amount: int, chain_id: int) -> bytes:
    """The digest the payer side signs: the channel may be claimed from up to `max_claimable_amount`, cumulatively."""
    ceiling = uint(max_claimable_amount, "max_claimable_amount", bits=128)
    struct = keccak256(_VOUCHER_TYPEHASH + bytes32(channel, "channel_id") + word(ceiling))
    return _digest(chain_id, struct)


def refund_digest(channel: bytes, nonce: int, amount: int, chain_id: int) -> bytes:
    """The digest the receiverAuthorizer signs to return up to `amount` of unclaimed escrow at refund `nonce`."""
    words = [bytes32(channel, "channel_id"), word(uint(nonce, "nonce")), word(uint(amount, "amount", bits=128))]
    return _digest(chain_id, keccak256(b"".join([_REFUND_TYPEHASH, *words])))


def claim_batch_digest(entries: Sequence[ClaimEntry], chain_id: int) -> bytes:
    """The digest the receiverAuthorizer signs for a ``claimWithSignature`` of `entries`, in that order."""
    members = keccak256(b"".join(entry.struct_hash() for entry in entries))
    return _digest(chain_id, keccak256(_CLAIM_BATCH_TYPEHASH + members))


# -- typed data for wallets -----------------------------------------------------------------------------------


def _typed(chain_id: int, primary: str, types: dict[str, Any], message: dict[str, Any]) -> TypedData:
    domain = {
        "name": DOMAIN_NAME,
        "version": DOMAIN_VERSION,
        "chainId": uint(chain_id, "chain_id"),
        "verifyingContract": BATCH_SETTLEMENT_ADDRESS,
    }
    return {
        "types": {"EIP712Domain": DOMAIN_WITH_VERSION, **types},
        "primaryType": primary,
        "domain": domain,
        "message": message,
    }


def voucher_typed_data(channel: bytes, max_claimable_amount: int, chain_id: int) -> TypedData:
    """``Voucher`` in eth-account's ``full_message`` form; its digest is `voucher_digest`."""
    fields = [{"name": "channelId", "type": "bytes32"}, {"name": "maxClaimableAmount", "type": "uint128"}]
    ceiling = uint(max_claimable_amount, "max_claimable_amount", bits=128)
    message = {"channelId": bytes32(channel, "channel_id"), "maxClaimableAmount": ceiling}
    return _typed(chain_id, "Voucher", {"Voucher": fields}, message)


def refund_typed_data(channel: bytes, nonce: int, amount: int, chain_id: int) -> TypedData:
    """``Refund`` in eth-account's ``full_message`` form; its digest is `refund_digest`."""
    fields = [
        {"name": "channelId", "type": "bytes32"},
        {"name": "nonce", "type": "uint256"},
        {"name": "amount", "type": "uint128"},
    ]
    message = {
        "channelId": bytes32(channel, "channel_id"),
        "nonce": uint(nonce, "nonce"),
        "amount": uint(amount, "amount", bits=128),
    }
    return _typed(chain_id, "Refund", {"Refund": fields}, message)


def claim_batch_typed_data(entries: Sequence[ClaimEntry], chain_id: int) -> TypedData:
    """``ClaimBatch`` in eth-account's ``full_message`` form; its digest is `claim_batch_digest`."""
    types = {"ClaimBatch": [{"name": "claims", "type": "ClaimEntry[]"}], "ClaimEntry": _CLAIM_ENTRY_FIELDS}
    rows = [
        {"channelId": e.channel_id, "maxClaimableAmount": e.max_claimable_amount, "totalClaimed": e.total_claimed}
        for e in entries
    ]
    return _typed(chain_id, "ClaimBatch", types, {"claims": rows})
