"""Header codec: strict, canonical encoding; lenient, bounded decoding.

Encoding is what the reference servers insist on: standard base64 with padding of compact UTF-8 JSON, no nulls.
Decoding accepts the url-safe alphabet and missing padding (some servers send base64url), but refuses anything
oversized, and maps every failure to the error class the caller names, with what was wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError

from x402pay._protocol.models import WireModel
from x402pay.errors import X402PayError

#: Largest header value decoded from a peer (base64 text).
MAX_HEADER_CHARS: Final = 64 * 1024
#: Largest JSON body decoded from a peer (a v1 challenge, a JSON receipt).
MAX_BODY_BYTES: Final = 256 * 1024
#: Deepest JSON nesting accepted from a peer (x402 objects nest a few levels).
MAX_DEPTH: Final = 64
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(rb"[\[\]{}]")

ModelT = TypeVar("ModelT", bound=BaseModel)


def encode_header(value: WireModel | dict[str, Any]) -> str:
    """Standard base64 (with padding) of the compact JSON of `value`, nulls omitted."""
    data = value.to_wire() if isinstance(value, WireModel) else value
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return base64.b64encode(text.encode()).decode("ascii")


def decode_header(value: str, *, what: str, error: type[X402PayError]) -> Any:
    """Decode a base64 JSON header leniently; raise `error` naming `what` and the fault."""
    text = value.strip()
    if len(text) > MAX_HEADER_CHARS:
        raise error(f"{what} header is {len(text)} characters, over the {MAX_HEADER_CHARS} limit")
    try:  # what the reference servers send: standard base64, padded, decoded in one strict step
        raw = binascii.a2b_base64(text, strict_mode=True)
    except ValueError:  # another alphabet, padding left out, not ASCII, not base64: read leniently below
        return decode_json(_lenient_base64(text, what, error), what=f"{what} header", error=error)
    return decode_json(raw, what=f"{what} header", error=error)


def _lenient_base64(text: str, what: str, error: type[X402PayError]) -> bytes:
    """The bytes of base64 `text` in either alphabet, padded or not; raise `error` naming `what` otherwise."""
    if not _BASE64_TEXT.fullmatch(text):
        raise error(f"{what} header is not base64")
    standard = text.replace("-", "+").replace("_", "/").rstrip("=")
    try:
        return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise error(f"{what} header is not valid base64: {exc}") from exc


def decode_json(raw: bytes, *, what: str, error: type[X402PayError]) -> Any:
    """Parse UTF-8 JSON from a peer, bounded in size and nesting; raise `error` naming `what` and the fault."""
    if len(raw) > MAX_BODY_BYTES:
        raise error(f"{what} is {len(raw)} bytes, over the {MAX_BODY_BYTES} limit")
    try:
        check_depth(raw)
        return _DECODER.decode(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not UTF-8: {exc}") from exc
    except (json.JSONDecodeError, ValueError) as exc:
        raise error(f"{what} is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise error(f"{what} is nested too deeply") from exc


def parse_model(data: Any, model: type[ModelT], *, what: str, error: type[X402PayError]) -> ModelT:
    """Validate decoded JSON against `model`; raise `error` listing the fields that were wrong."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or '(root)'}: {item['msg']}" for item in exc.errors()[:5]
        )
        raise error(f"{what} is not a valid {model.__name__}: {problems}") from exc
    except RecursionError as exc:
        raise error(f"{what} is nested too deeply") from exc


def check_depth(raw: bytes, limit: int = MAX_DEPTH) -> None:
    """ValueError when JSON `raw` nests deeper than `limit`.

    Checked before parsing: the recursion limit is no guard (py_ecc, under eth-account, raises it to 100,000, and
    a deep enough document then overflows the C stack and kills the process).
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return
    depth = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub(b'""', raw)):
        depth += 1 if bracket in b"[{" else -1
        if depth > limit:
            raise ValueError(f"nested deeper than {limit} levels")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


#: One decoder for every peer's JSON (``json.loads`` with an option builds a new one, scanner included, each call).
_DECODER: Final = json.JSONDecoder(parse_constant=_refuse_constant)
