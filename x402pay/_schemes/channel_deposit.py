"""What a payer signs to fund a ``batch-settlement`` channel, and how the deposit collectors read it.

Pure CPU, no I/O. Two ways to authorize a deposit, each bound to one channel so that a signature cannot fund
another one:

- EIP-3009 ``ReceiveWithAuthorization`` under the token's own domain, payee the ERC3009DepositCollector, with nonce
  ``keccak256(abi.encode(channelId, salt))`` for a random 32-byte `salt` that travels on the wire; the collector
  reads ``abi.encode(uint256 validAfter, uint256 validBefore, uint256 salt, bytes signature)``.
- Permit2 ``PermitWitnessTransferFrom`` with spender the Permit2DepositCollector and witness
  ``DepositWitness(bytes32 channelId)``; the collector reads ``abi.encode(uint256 nonce, uint256 deadline,
  bytes permit2Signature, bytes eip2612Permit)``, where a non-empty ``eip2612Permit`` is
  ``abi.encode(uint256 value, uint256 deadline, uint8 v, bytes32 r, bytes32 s)``.

As in `x402pay._schemes.channel`, each digest has a typed-data twin for wallets, and bad input raises `SigningError`.
"""

from __future__ import annotations

from typing import Final

from x402pay._protocol.addresses import (
    ERC3009_DEPOSIT_COLLECTOR_ADDRESS,
    PERMIT2_ADDRESS,
    PERMIT2_DEPOSIT_COLLECTOR_ADDRESS,
)
from x402pay._schemes import eip712
from x402pay._schemes.channel import address, address_word, bytes32, uint, word
from x402pay._schemes.fast712 import domain_separator, keccak256
from x402pay.errors import SigningError

RECEIVE_WITH_AUTHORIZATION_TYPE: Final = (
    "ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,"
    "bytes32 nonce)"
)
#: The tail the Permit2 deposit collector hands Permit2 after its ``PermitWitnessTransferFrom(...,`` stub.
DEPOSIT_WITNESS_TYPE_STRING: Final = (
    "DepositWitness witness)DepositWitness(bytes32 channelId)TokenPermissions(address token,uint256 amount)"
)
PERMIT_WITNESS_TRANSFER_FROM_TYPE: Final = (
    "PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline,"
    + DEPOSIT_WITNESS_TYPE_STRING
)
#: The deposit witness's fields, for `eip712.permit_witness_transfer_from`.
DEPOSIT_WITNESS_FIELDS: Final = [{"name": "channelId", "type": "bytes32"}]

_RECEIVE_TYPEHASH: Final = keccak256(RECEIVE_WITH_AUTHORIZATION_TYPE.encode())
_PERMIT_TYPEHASH: Final = keccak256(PERMIT_WITNESS_TRANSFER_FROM_TYPE.encode())
_TOKEN_PERMISSIONS_TYPEHASH: Final = keccak256(b"TokenPermissions(address token,uint256 amount)")
_DEPOSIT_WITNESS_TYPEHASH: Final = keccak256(b"DepositWitness(bytes32 channelId)")
_SIGNATURE_LENGTH: Final = 65


def erc3009_deposit_nonce(channel: bytes, salt: int) -> bytes:
    """The EIP-3009 nonce of a deposit into `channel`: ``keccak256(abi.encode(bytes32 channelId, uint256 salt))``."""
    return keccak256(bytes32(channel, "channel_id") + word(uint(salt, "salt")))


def receive_with_authorization_digest(
    *,
    token_name: str,
    token_version: str,
    chain_id: int,
    token: str,
    payer: str,
    value: int,
    valid_after: int,
    valid_before: int,
    nonce: bytes,
    collector: str = ERC3009_DEPOSIT_COLLECTOR_ADDRESS,
) -> bytes:
    """The digest a payer signs for an EIP-3009 deposit of `value` (payee: the collector) under the token's domain."""
    addresses = [address_word(address(payer, "payer")), address_word(address(collector, "collector"))]
    amounts = [uint(value, "value"), uint(valid_after, "valid_after"), uint(valid_before, "valid_before")]
    struct = keccak256(b"".join([_RECEIVE_TYPEHASH, *addresses, *map(word, amounts), bytes32(nonce, "nonce")]))
    separator = domain_separator(token_name, token_version, uint(chain_id, "chain_id"), address(token, "token"))
    return keccak256(b"\x19\x01" + separator + struct)


def receive_with_authorization_typed_data(
    *,
    token_name: str,
    token_version: str,
    chain_id: int,
    token: str,
    payer: str,
    value: int,
    valid_after: int,
    valid_before: int,
    nonce: bytes,
    collector: str = ERC3009_DEPOSIT_COLLECTOR_ADDRESS,
) -> eip712.TypedData:
    """`receive_with_authorization_digest`'s message in eth-account's ``full_message`` form."""
    typed = eip712.transfer_with_authorization(
        token_name=token_name,
        token_version=token_version,
        chain_id=uint(chain_id, "chain_id"),
        token=address(token, "token"),
        authorization={
            "from": address(payer, "payer"),
            "to": address(collector, "collector"),
            "value": uint(value, "value"),
            "validAfter": uint(valid_after, "valid_after"),
            "validBefore": uint(valid_before, "valid_before"),
            "nonce": bytes32(nonce, "nonce"),
        },
    )
    fields = typed["types"].pop("TransferWithAuthorization")
    return {
        **typed,
        "types": {**typed["types"], "ReceiveWithAuthorization": fields},
        "primaryType": "ReceiveWithAuthorization",
    }


def permit2_deposit_digest(
    *,
    chain_id: int,
    token: str,
    amount: int,
    nonce: int,
    deadline: int,
    channel: bytes,
    spender: str = PERMIT2_DEPOSIT_COLLECTOR_ADDRESS,
) -> bytes:
    """The digest a payer signs for a Permit2 deposit of `amount` into `channel` (spender: the collector)."""
    permitted = keccak256(
        _TOKEN_PERMISSIONS_TYPEHASH + address_word(address(token, "token")) + word(uint(amount, "amount"))
    )
    witness = keccak256(_DEPOSIT_WITNESS_TYPEHASH + bytes32(channel, "channel_id"))
    words = [permitted, address_word(address(spender, "spender")), word(uint(nonce, "nonce"))]
    struct = keccak256(b"".join([_PERMIT_TYPEHASH, *words, word(uint(deadline, "deadline")), witness]))
    separator = domain_separator("Permit2", None, uint(chain_id, "chain_id"), PERMIT2_ADDRESS)
    return keccak256(b"\x19\x01" + separator + struct)


def permit2_deposit_typed_data(
    *,
    chain_id: int,
    token: str,
    amount: int,
    nonce: int,
    deadline: int,
    channel: bytes,
    spender: str = PERMIT2_DEPOSIT_COLLECTOR_ADDRESS,
) -> eip712.TypedData:
    """`permit2_deposit_digest`'s message in eth-account's ``full_message`` form."""
    typed = eip712.permit_witness_transfer_from(
        chain_id=uint(chain_id, "chain_id"),
        token=address(token, "token"),
        amount=uint(amount, "amount"),
        spender=address(spender, "spender"),
        nonce=uint(nonce, "nonce"),
        deadline=uint(deadline, "deadline"),
        witness={"channelId": bytes32(channel, "channel_id")},
        witness_fields=DEPOSIT_WITNESS_FIELDS,
    )
    # The builder calls the witness struct "Witness", as the x402 proxies do; this collector names it "DepositWitness".
    types = {name: fields for name, fields in typed["types"].items() if name != "Witness"}
    types["DepositWitness"] = DEPOSIT_WITNESS_FIELDS
    types["PermitWitnessTransferFrom"] = [
        {**member, "type": "DepositWitness"} if member["name"] == "witness" else member
        for member in types["PermitWitnessTransferFrom"]
    ]
    return {**typed, "types": types}


# -- collector data ----------------------------------------------------------------------------------------------


def _abi_bytes_tail(value: bytes) -> bytes:
    """A dynamic ``bytes`` value's ABI tail: its length, then its content padded to whole words."""
    padding = -len(value) % 32
    return word(len(value)) + value + bytes(padding)


def _abi_with_bytes(static: list[int], dynamic: list[bytes]) -> bytes:
    """``abi.encode`` of uint256 values followed by ``bytes`` values (heads first, then the tails in order)."""
    offset = 32 * (len(static) + len(dynamic))
    heads, tails = [word(value) for value in static], []
    for value in dynamic:
        tail = _abi_bytes_tail(value)
        heads.append(word(offset))
        tails.append(tail)
        offset += len(tail)
    return b"".join(heads + tails)


def _signature(value: object, field: str) -> bytes:
    if not isinstance(value, bytes) or not value:
        raise SigningError(f"{field} must be non-empty bytes")
    return bytes(value)


def erc3009_collector_data(*, valid_after: int, valid_before: int, salt: int, signature: bytes) -> bytes:
    """``collectorData`` for the ERC3009DepositCollector."""
    static = [uint(valid_after, "valid_after"), uint(valid_before, "valid_before"), uint(salt, "salt")]
    return _abi_with_bytes(static, [_signature(signature, "signature")])


def permit2_collector_data(*, nonce: int, deadline: int, signature: bytes, eip2612_permit: bytes = b"") -> bytes:
    """``collectorData`` for the Permit2DepositCollector; `eip2612_permit` from `eip2612_permit_data`, or empty."""
    if not isinstance(eip2612_permit, bytes):
        raise SigningError("eip2612_permit must be bytes (empty for none)")
    static = [uint(nonce, "nonce"), uint(deadline, "deadline")]
    return _abi_with_bytes(static, [_signature(signature, "signature"), eip2612_permit])


def eip2612_permit_data(*, value: int, deadline: int, signature: bytes) -> bytes:
    """The collector's EIP-2612 segment, from the payer's 65-byte ``r || s || v`` permit signature for Permit2."""
    if not isinstance(signature, bytes) or len(signature) != _SIGNATURE_LENGTH:
        raise SigningError("the EIP-2612 permit signature must be 65 bytes (r || s || v)")
    r, s, v = signature[:32], signature[32:64], signature[64]
    return word(uint(value, "value")) + word(uint(deadline, "deadline")) + word(v) + r + s
