"""Fast EIP-712 digests and signatures for exactly the typed data x402 signs.

eth-account encodes any typed data generically, which costs more than the signature itself. x402 signs only the
shapes that `x402pay._schemes.eip712` builds: EIP-3009 ``TransferWithAuthorization``, Permit2
``PermitWitnessTransferFrom`` with the exact or the upto witness, and EIP-2612 ``Permit``. For those, this module
compiles the builders' own type lists once (type hashes and a field encoder per member), packs the 32-byte ABI words
directly, caches each domain separator, and signs with coincurve.

`typed_data_digest` answers only for typed data of those shapes whose values are in a form that every supported
eth-account encodes the same way: ``int`` in range, ``0x`` hex addresses (all one case, or a valid EIP-55
checksum), a 32-byte nonce as bytes or ``0x`` hex, ``str`` domain names. For anything else it returns None, and the
caller falls back to eth-account, which keeps the last word on what is malformed and how to say so.
`sign_digest` gives eth-account's signature byte for byte (RFC 6979 nonce, low s, ``v = 27 + recovery id``);
the unit tests check both over random messages of every shape.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from coincurve import PrivateKey, PublicKey
from Crypto.Hash.keccak import Keccak_Hash
from eth_utils.address import is_checksum_address

from x402pay._schemes import eip712

_Types = Mapping[str, list[dict[str, str]]]
_Encoder = Callable[[Any], bytes]

_UINT256_LIMIT: Final = 1 << 256
_ADDRESS: Final = re.compile(r"0x[0-9a-fA-F]{40}")
_BYTES32_HEX: Final = re.compile(r"0x[0-9a-fA-F]{64}")
_EIP191_TYPED_DATA: Final = b"\x19\x01"
_ETH_V_OFFSET: Final = 27
_NO_VERSION: Final = object()  # the `version` of a domain that has none (Permit2's)


class _Unrecognised(Exception):
    """A value the fast path cannot promise to encode exactly as eth-account does: fall back to eth-account."""


def keccak256(data: bytes) -> bytes:
    """Ethereum's Keccak-256 of `data` (pycryptodome, the backend eth-hash uses here)."""
    return Keccak_Hash(data, 32, False).digest()


# -- field encoders: one 32-byte ABI word each, or _Unrecognised ------------------------------------------------


def _uint256(value: Any) -> bytes:
    if type(value) is not int or not 0 <= value < _UINT256_LIMIT:
        raise _Unrecognised
    return value.to_bytes(32, "big")


def _address(value: Any) -> bytes:
    word = _address_word(value) if type(value) is str else None
    if word is None:
        raise _Unrecognised
    return word


@functools.lru_cache(maxsize=4096)
def _address_word(value: str) -> bytes | None:
    """The left-padded word of a ``0x`` hex address; None for a mixed-case one whose EIP-55 checksum is wrong.

    (eth-abi's verdict on a broken checksum changed across eth-utils versions, so the fast path does not give one.)
    """
    if _ADDRESS.fullmatch(value) is None:
        return None
    digits = value[2:]
    if digits != digits.lower() and digits != digits.upper() and not is_checksum_address(value):
        return None
    return bytes(12) + bytes.fromhex(digits)


def _bytes32(value: Any) -> bytes:
    if isinstance(value, bytes) and len(value) == 32:
        return bytes(value)
    if type(value) is str and _BYTES32_HEX.fullmatch(value):
        return bytes.fromhex(value[2:])
    raise _Unrecognised


def _string(value: str) -> bytes:
    try:
        return keccak256(value.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: let eth-account report it
        raise _Unrecognised from None


_ATOMS: Final[dict[str, _Encoder]] = {"address": _address, "uint256": _uint256, "bytes32": _bytes32}


# -- struct types, compiled from the builders' type lists -------------------------------------------------------


@dataclass(frozen=True)
class _Struct:
    """One struct type: its type hash and, per member in order, the member's name and encoder."""

    typehash: bytes
    members: tuple[tuple[str, _Encoder], ...]

    def hash(self, value: Any) -> bytes:
        """``hashStruct(value)``; _Unrecognised unless `value` is a dict whose every member encodes."""
        if type(value) is not dict:
            raise _Unrecognised
        get = value.get
        return keccak256(b"".join([self.typehash, *[encode(get(name)) for name, encode in self.members]]))


def _dependencies(name: str, types: _Types) -> set[str]:
    """`name` and every struct type it refers to, transitively."""
    found = {name}
    for member in types[name]:
        if member["type"] in types and member["type"] not in found:
            found |= _dependencies(member["type"], types)
    return found


def encode_type(primary: str, types: _Types) -> str:
    """EIP-712 ``encodeType``: the primary type, then its dependencies sorted by name."""
    order = [primary, *sorted(_dependencies(primary, types) - {primary})]
    return "".join(f"{name}({_members(types[name])})" for name in order)


def _members(fields: list[dict[str, str]]) -> str:
    return ",".join(field["type"] + " " + field["name"] for field in fields)


def _compile(primary: str, types: _Types) -> _Struct:
    members = tuple(
        (member["name"], _ATOMS.get(member["type"]) or _compile(member["type"], types).hash)
        for member in types[primary]
    )
    return _Struct(keccak256(encode_type(primary, types).encode()), members)


@dataclass(frozen=True)
class _Shape:
    """Typed data as one of our builders makes it: the whole ``types`` object, the domain's keys, the message."""

    types: dict[str, Any]
    domain_keys: frozenset[str]
    message: _Struct


def _shape(sample: eip712.TypedData) -> _Shape:
    types = copy.deepcopy(sample["types"])
    message_types = {name: fields for name, fields in types.items() if name != "EIP712Domain"}
    domain_keys = frozenset(field["name"] for field in types["EIP712Domain"])
    return _Shape(types, domain_keys, _compile(sample["primaryType"], message_types))


def _builder_samples() -> list[eip712.TypedData]:
    """One output of each builder (values are irrelevant: only the types and the primary type are kept)."""
    token: dict[str, Any] = {"token_name": "", "token_version": "", "chain_id": 0, "token": ""}
    permit2: dict[str, Any] = {"chain_id": 0, "token": "", "amount": 0, "spender": "", "nonce": 0, "deadline": 0}
    return [
        eip712.transfer_with_authorization(**token, authorization={}),
        eip712.permit_witness_transfer_from(**permit2, witness={}, witness_fields=eip712.EXACT_WITNESS_FIELDS),
        eip712.permit_witness_transfer_from(**permit2, witness={}, witness_fields=eip712.UPTO_WITNESS_FIELDS),
        eip712.eip2612_permit(**token, owner="", spender="", value=0, nonce=0, deadline=0),
    ]


def _shapes_by_primary_type() -> dict[str, tuple[_Shape, ...]]:
    shapes: dict[str, tuple[_Shape, ...]] = {}
    for sample in _builder_samples():
        shapes[sample["primaryType"]] = (*shapes.get(sample["primaryType"], ()), _shape(sample))
    return shapes


_SHAPES: Final = _shapes_by_primary_type()


# -- domains ----------------------------------------------------------------------------------------------------

# eth-account hashes a domain under the type made of its keys in this canonical order, whatever types.EIP712Domain says.
_DOMAIN_TYPEHASH: Final = keccak256(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
_DOMAIN_NO_VERSION_TYPEHASH: Final = keccak256(b"EIP712Domain(string name,uint256 chainId,address verifyingContract)")


def _domain_hash(domain: Any, keys: frozenset[str]) -> bytes:
    """The separator of `domain`, whose keys must be exactly `keys`; _Unrecognised otherwise."""
    if type(domain) is not dict or domain.keys() != keys:
        raise _Unrecognised
    name, chain_id, contract = domain["name"], domain["chainId"], domain["verifyingContract"]
    version = domain.get("version", _NO_VERSION)
    if type(name) is not str or type(chain_id) is not int or type(contract) is not str:
        raise _Unrecognised
    if version is not _NO_VERSION and type(version) is not str:
        raise _Unrecognised
    return _domain_separator(name, version, chain_id, contract)


@functools.lru_cache(maxsize=256, typed=True)
def _domain_separator(name: str, version: object, chain_id: int, contract: str) -> bytes:
    """``hashStruct(EIP712Domain)``, cached per (name, version, chainId, verifyingContract)."""
    if isinstance(version, str):
        words = [_DOMAIN_TYPEHASH, _string(name), _string(version)]
    else:
        words = [_DOMAIN_NO_VERSION_TYPEHASH, _string(name)]
    return keccak256(b"".join([*words, _uint256(chain_id), _address(contract)]))


# -- public API -------------------------------------------------------------------------------------------------


def domain_separator(name: str, version: str | None, chain_id: int, contract: str) -> bytes:
    """``hashStruct(EIP712Domain)`` of a domain with `version` (or, when None, without one); cached.

    `contract` must be a ``0x`` hex address (all one case, or a valid EIP-55 checksum): callers check it first.
    """
    return _domain_separator(name, _NO_VERSION if version is None else version, chain_id, contract)


def typed_data_digest(typed_data: Any) -> bytes | None:
    """The EIP-712 digest eth-account signs for `typed_data`, or None if it is not one of x402's shapes.

    Equal to ``eth_account.messages.encode_typed_data(full_message=typed_data)`` hashed (``keccak(0x19 0x01 ||
    domainSeparator || hashStruct(message))``) whenever it is not None.
    """
    shape = _recognise(typed_data)
    if shape is None:
        return None
    try:
        domain = _domain_hash(typed_data.get("domain"), shape.domain_keys)
        message = shape.message.hash(typed_data.get("message"))
    except _Unrecognised:
        return None
    return keccak256(_EIP191_TYPED_DATA + domain + message)


def transfer_with_authorization_digest(
    *, token_name: str, token_version: str, chain_id: int, token: str, authorization: dict[str, Any]
) -> bytes | None:
    """`typed_data_digest` of ``eip712.transfer_with_authorization`` with these arguments, without building and
    recognising the typed data (a verifier's path: the shape is known); None where that would be None."""
    return _known_digest(_TRANSFER, (token_name, token_version, chain_id, token), authorization)


def permit_witness_digest(*, chain_id: int, message: dict[str, Any], upto: bool, permit2: str) -> bytes | None:
    """`typed_data_digest` of ``eip712.permit_witness_transfer_from`` (the upto witness when `upto`, else the exact
    one) whose ``message`` is `message`, without building and recognising the typed data; None where that would be.
    """
    return _known_digest(_PERMIT_WITNESS[upto], ("Permit2", _NO_VERSION, chain_id, permit2), message)


def _known_digest(struct: _Struct, domain: tuple[str, object, Any, Any], message: dict[str, Any]) -> bytes | None:
    name, version, chain_id, contract = domain
    if type(chain_id) is not int or type(contract) is not str:
        return None
    try:
        separator = _domain_separator(name, version, chain_id, contract)
        return keccak256(_EIP191_TYPED_DATA + separator + struct.hash(message))
    except _Unrecognised:
        return None


_TRANSFER: Final = _SHAPES["TransferWithAuthorization"][0].message
_PERMIT_WITNESS: Final = {  # by upto: True for the upto witness, False for the exact one
    shape.types["Witness"] == eip712.UPTO_WITNESS_FIELDS: shape.message
    for shape in _SHAPES["PermitWitnessTransferFrom"]
}


def _recognise(typed_data: Any) -> _Shape | None:
    """The shape whose builder made `typed_data` (same primaryType, same types), or None."""
    if type(typed_data) is not dict:
        return None
    primary = typed_data.get("primaryType")
    if type(primary) is not str:
        return None
    types = typed_data.get("types")
    return next((shape for shape in _SHAPES.get(primary, ()) if shape.types == types), None)


def sign_digest(key: PrivateKey, digest: bytes) -> bytes:
    """The 65-byte ``r || s || v`` signature of a 32-byte `digest`, byte-identical to eth-account's."""
    signature = key.sign_recoverable(digest, hasher=None)
    return signature[:64] + bytes((_ETH_V_OFFSET + signature[64],))


def recover_signer(digest: bytes, signature: bytes) -> str | None:
    """The address whose key made `signature` (``r || s || v``, v 27 or 28) of a 32-byte `digest`, in lower
    case; None when the signature has another form or recovers to no key (eth-account then has the last word)."""
    if len(signature) != 65 or signature[64] not in (_ETH_V_OFFSET, _ETH_V_OFFSET + 1):
        return None
    recoverable = signature[:64] + bytes((signature[64] - _ETH_V_OFFSET,))
    try:
        public = PublicKey.from_signature_and_message(recoverable, digest, hasher=None)
    except ValueError:
        return None
    return _address_of(public.format(compressed=False))


@functools.lru_cache(maxsize=4096)
def _address_of(public_key: bytes) -> str:
    """The lower-case address of an uncompressed public key (signers repeat: each is a keccak)."""
    return "0x" + keccak256(public_key[1:])[-20:].hex()
