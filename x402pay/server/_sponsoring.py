"""The ``eip2612GasSponsoring`` extension on the paid side: gas-free Permit2 approval by an EIP-2612 permit.

A Permit2 payment moves nothing unless the payer has approved Permit2 on the token. A server may offer (`offer`)
to take that approval as a signed EIP-2612 ``Permit`` inside the payment instead; the facilitator then settles with
the proxy's ``settleWithPermit``, which submits the permit and the transfer in one transaction, at its own cost.

Pure CPU. `read_permit` parses the payload's entry (None when the client signed none, e.g. it only echoed the
offer); `check_permit` and `check_permit_signer` raise `Refusal` with the reference SDKs' reason codes
(``eip2612_*``, ``permit2_2612_amount_mismatch``), and ``invalid_eip2612_signature`` where they leave the
signature to the chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from eth_abi.abi import encode
from eth_account import Account
from eth_account.messages import SignableMessage
from eth_typing import ChecksumAddress
from eth_utils.crypto import keccak

from x402pay._allowance import GAS_SPONSORING
from x402pay._protocol.addresses import PERMIT2_ADDRESS
from x402pay._protocol.models import parse_uint
from x402pay.server._evm import DEADLINE_BUFFER, Permit2Authorization, Refusal, parse_address, parse_hex, same_address

PERMIT_TYPEHASH: Final = keccak(
    text="Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"
)
#: The ``info`` fields the client adds to the offer, all strings on the wire.
_CLIENT_FIELDS: Final = ("from", "asset", "spender", "amount", "nonce", "deadline", "signature")
_VERSION: Final = "1"


def _field(description: str, pattern: str) -> dict[str, str]:
    return {"type": "string", "pattern": pattern, "description": description}


_ADDRESS_PATTERN: Final = "^0x[0-9a-fA-F]{40}$"
_UINT_PATTERN: Final = "^[0-9]+$"
#: JSON Schema of the ``info`` a paying client sends back.
INFO_SCHEMA: Final = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "from": _field("The payer, who signed the permit.", _ADDRESS_PATTERN),
        "asset": _field("The ERC-20 token (EIP-2612) being approved.", _ADDRESS_PATTERN),
        "spender": _field("The canonical Permit2 contract.", _ADDRESS_PATTERN),
        "amount": _field("The approved value (uint256): the payment's permitted amount.", _UINT_PATTERN),
        "nonce": _field("The payer's current EIP-2612 nonce on the token.", _UINT_PATTERN),
        "deadline": _field("Unix time after which the permit is void.", _UINT_PATTERN),
        "signature": _field("The 65-byte permit signature r || s || v, hex.", "^0x[0-9a-fA-F]+$"),
        "version": _field("Version of this extension's info.", r"^[0-9]+(\.[0-9]+)*$"),
    },
    "required": [*_CLIENT_FIELDS, "version"],
}


def offer() -> dict[str, Any]:
    """The entry a challenge's ``extensions`` carry under `GAS_SPONSORING`: ``{info, schema}``."""
    description = "The facilitator accepts an EIP-2612 permit for the canonical Permit2 and pays its gas."
    return {"info": {"description": description, "version": _VERSION}, "schema": INFO_SCHEMA}


@dataclass(frozen=True)
class Eip2612Permit:
    """A payer's signed EIP-2612 ``Permit`` (owner lets `spender` move `value` of `token` until `deadline`)."""

    owner: ChecksumAddress
    token: ChecksumAddress
    spender: ChecksumAddress
    value: int
    nonce: int
    deadline: int
    signature: bytes  # r || s || v

    @property
    def contract_tuple(self) -> tuple[int, int, bytes, bytes, int]:
        """The proxies' ``EIP2612Permit`` struct: (value, deadline, r, s, v)."""
        sig = self.signature
        return (self.value, self.deadline, sig[:32], sig[32:64], sig[64])

    def signable(self, domain_separator: bytes, nonce: int) -> SignableMessage:
        """The EIP-712 message under the token's `domain_separator` with the token's `nonce` for the owner."""
        words = (PERMIT_TYPEHASH, self.owner, self.spender, self.value, nonce, self.deadline)
        struct = keccak(encode(["bytes32", "address", "address", "uint256", "uint256", "uint256"], words))
        return SignableMessage(b"\x01", domain_separator, struct)


def read_permit(extensions: dict[str, Any] | None) -> Eip2612Permit | None:
    """The permit in a payload's extensions; None when there is none. Refusal when it is malformed."""
    entry = (extensions or {}).get(GAS_SPONSORING)
    info = entry.get("info") if isinstance(entry, dict) else None
    if not isinstance(info, dict) or not any(key in info for key in _CLIENT_FIELDS):
        return None  # nothing signed: at most the server's own offer, echoed back
    if info.get("version") != _VERSION:
        raise Refusal("invalid_eip2612_extension_format", f"extension version {info.get('version')!r} is not 1")
    try:
        return Eip2612Permit(
            owner=parse_address(info["from"]),
            token=parse_address(info["asset"]),
            spender=parse_address(info["spender"]),
            value=parse_uint(_string(info["amount"])),
            nonce=parse_uint(_string(info["nonce"])),
            deadline=parse_uint(_string(info["deadline"])),
            signature=parse_hex(info["signature"], 65),
        )
    except (KeyError, ValueError) as exc:
        raise Refusal("invalid_eip2612_extension_format", f"the EIP-2612 permit is malformed: {exc!r}") from exc


def check_permit(permit: Eip2612Permit, auth: Permit2Authorization, asset: str, *, now: int) -> None:
    """The permit approves Permit2, for the payer, on the payment's token, for the permitted amount, in time."""
    if not same_address(permit.owner, auth.payer):
        raise Refusal("eip2612_from_mismatch", f"the permit is from {permit.owner}, the payer is {auth.payer}")
    if not same_address(permit.token, asset):
        raise Refusal("eip2612_asset_mismatch", f"the permit is for {permit.token}, the asset is {asset}")
    if not same_address(permit.spender, PERMIT2_ADDRESS):
        raise Refusal("eip2612_spender_not_permit2", f"the permit's spender is {permit.spender}, not Permit2")
    if permit.value != auth.amount:
        raise Refusal(
            "permit2_2612_amount_mismatch", f"the permit approves {permit.value}, the payment permits {auth.amount}"
        )
    if permit.deadline < now + DEADLINE_BUFFER:
        raise Refusal("eip2612_deadline_expired", f"the permit is valid until {permit.deadline}; it is {now}")


def check_permit_signer(permit: Eip2612Permit, domain_separator: bytes, nonce: int) -> None:
    """The permit recovers to its owner under the token's domain and current nonce (as the token will check)."""
    if permit.nonce != nonce:
        raise Refusal("invalid_eip2612_signature", f"signed for nonce {permit.nonce}, the token's is {nonce}")
    if permit.signature[64] not in (27, 28):
        raise Refusal("invalid_eip2612_signature", "the permit signature's v is not 27 or 28")
    try:
        signer = Account.recover_message(permit.signable(domain_separator, nonce), signature=permit.signature)
    except Exception as exc:  # eth-keys raises several types for a malformed signature
        raise Refusal("invalid_eip2612_signature", f"the permit signature does not recover: {exc}") from exc
    if signer != permit.owner:
        raise Refusal("invalid_eip2612_signature", f"the permit was signed by {signer}, not by {permit.owner}")


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a decimal string, got {type(value).__name__}")
    return value
