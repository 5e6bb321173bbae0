"""Strict readers of the ``batch-settlement`` scheme's JSON fields, shared by its wire objects (`channel_wire`,
`channel_extra`) and the paid side's action payloads: each takes the value, the field's name for the message, and the
error class to raise (a payer's payload, a server's challenge or answer).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from x402pay._schemes.channel import address
from x402pay.errors import SigningError, X402PayError

ErrorClass = type[X402PayError]

#: Longest signature accepted (an EIP-1271 / EIP-6492 wallet's may be far longer than 65 bytes).
MAX_SIGNATURE_BYTES: Final = 4096
#: Amounts of the channel contract are uint128.
UINT128: Final = 128
_HEX: Final = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
_DIGITS: Final = 78


def json_object(value: object, field: str, error: ErrorClass) -> Mapping[str, Any]:
    """A JSON object."""
    if not isinstance(value, Mapping):
        raise error(f"{field} must be a JSON object")
    return value


def uint(value: object, field: str, error: ErrorClass, bits: int = 256) -> int:
    """A decimal string (or JSON integer, as some peers send) below ``2**bits``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise error(f"{field} must be a decimal string, got {type(value).__name__}")
    if isinstance(value, str) and not (value.isascii() and value.isdigit() and len(value) <= _DIGITS):
        raise error(f"{field} must be a decimal string, got {value[:80]!r}")
    number = int(value)
    if not 0 <= number < 1 << bits:
        raise error(f"{field} is out of the uint{bits} range")
    return number


def hex_bytes(value: object, field: str, error: ErrorClass, *, size: int | None = None) -> bytes:
    """0x-prefixed hex of whole bytes (exactly `size` of them when given)."""
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise error(f"{field} must be 0x-prefixed hex, got {str(value)[:80]!r}")
    data = bytes.fromhex(value[2:])
    if size is not None and len(data) != size:
        raise error(f"{field} must be {size} bytes, got {len(data)}")
    return data


def signature_bytes(value: object, field: str, error: ErrorClass) -> bytes:
    """A signature: 0x hex, 1 to `MAX_SIGNATURE_BYTES` bytes."""
    data = hex_bytes(value, field, error)
    if not 0 < len(data) <= MAX_SIGNATURE_BYTES:
        raise error(f"{field} must be 1 to {MAX_SIGNATURE_BYTES} bytes")
    return data


def checked_address(value: object, field: str, error: ErrorClass, *, zero_ok: bool = False) -> str:
    """An EVM address, returned EIP-55 checksummed (a mixed-case one must carry a valid checksum; the zero address
    only when `zero_ok`)."""
    try:
        return address(value, field, zero_ok=zero_ok)
    except SigningError as exc:
        raise error(str(exc)) from exc


def json_whole(value: object, field: str, error: ErrorClass) -> int:
    """A JSON number that is a whole non-negative int (``withdrawDelay``, ``withdrawRequestedAt``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise error(f"{field} must be a non-negative JSON integer, got {str(value)[:80]!r}")
    return value


def hex_text(value: bytes) -> str:
    """`value` as 0x-prefixed hex."""
    return "0x" + value.hex()


def optional_text(value: object, field: str, error: ErrorClass) -> str | None:
    """A string, or None when absent."""
    if value is not None and not isinstance(value, str):
        raise error(f"{field} must be a string")
    return value
