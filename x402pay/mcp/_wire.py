"""x402 on MCP's ``tools/call``, as the payment program and the paid tools see it (no I/O, no mcp import).

The binding (x402 ``transports-v2/mcp.md``): a tool that must be paid for answers with a result whose ``isError`` is
true and whose ``structuredContent`` (and the JSON text of ``content[0]``) is the PaymentRequired; the client calls
again with the PaymentPayload at ``params._meta["x402/payment"]``; the settlement comes back at
``result._meta["x402/payment-response"]``.

What is read is lenient, what is written is the binding alone. A client reads a challenge from
``structuredContent``, from an older draft's ``{"x402/error": {"data": ...}}`` wrapper (in ``structuredContent`` or
in the text), from ``_meta["x402/error"]`` (Cloudflare's agents) or from a JSON-RPC error with code 402; a server
reads a payment given as a JSON object, as JSON text, or as base64 JSON (as in the HTTP header).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any, Final

from x402pay._effects import Answer
from x402pay._protocol.codec import decode_header, decode_json, encode_header
from x402pay._protocol.headers import PAYMENT_REQUIRED, PAYMENT_RESPONSE
from x402pay.errors import ChallengeError, MalformedPayment

#: Where the client puts the PaymentPayload: ``params._meta[PAYMENT_META]``.
PAYMENT_META: Final = "x402/payment"
#: Where the server puts the SettlementResponse: ``result._meta[RESPONSE_META]``.
RESPONSE_META: Final = "x402/payment-response"
#: An older draft's (and Cloudflare's) wrapper around a PaymentRequired.
ERROR_META: Final = "x402/error"
#: The JSON-RPC error code some servers answer an unpaid call with.
PAYMENT_REQUIRED_CODE: Final = 402
#: The status a tool's own error is given in the program's terms: a retry of the same call may re-send its payment.
TOOL_ERROR_STATUS: Final = 500


def wire_of(result: Any) -> dict[str, Any]:
    """A ``CallToolResult`` (mcp 1.x or 2.x) as its JSON object, with the wire's camelCase names."""
    data: dict[str, Any] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
    return data


def answer_of(result: Any) -> Answer:
    """The program's view of a tool result: 402 with the challenge it carries, 500 for the tool's own error, 200
    otherwise; a settlement the server reported is a ``PAYMENT-RESPONSE`` header. `raw` stays the result."""
    data = wire_of(result)
    headers: dict[str, str] = {}
    settlement = _settlement_in(data)
    if settlement is not None:
        headers[PAYMENT_RESPONSE] = encode_header(settlement)
    required = challenge_in(data)
    if required is not None:
        return _challenge_answer(required, headers, result)
    return Answer(TOOL_ERROR_STATUS if data.get("isError") else 200, headers, result)


def error_answer(exc: BaseException) -> Answer | None:
    """The program's view of a JSON-RPC error with code 402 that carries a challenge, or None for any other error."""
    error = getattr(exc, "error", None)
    data = getattr(error, "data", None)
    if getattr(error, "code", None) != PAYMENT_REQUIRED_CODE or not isinstance(data, dict):
        return None
    required = _unwrapped(data)
    return _challenge_answer(required, {}, exc) if required is not None else None


class ChallengeBody:
    """The raw side of a v1 challenge's answer: the JSON the program reads as the 402's body."""

    def __init__(self, source: Any, body: bytes) -> None:
        self.source = source
        self.body = body


def _challenge_answer(required: dict[str, Any], headers: dict[str, str], source: Any) -> Answer:
    if required.get("x402Version") == 2:
        return Answer(402, {**headers, PAYMENT_REQUIRED: encode_header(required)}, source)
    body = json.dumps(required, separators=(",", ":")).encode()
    return Answer(402, {**headers, "content-type": "application/json"}, ChallengeBody(source, body))


def challenge_in(data: Mapping[str, Any]) -> dict[str, Any] | None:
    """The PaymentRequired a tool result carries, wherever a server put it, or None."""
    meta = data.get("_meta")
    if isinstance(meta, dict) and isinstance(meta.get(ERROR_META), dict):
        found = _unwrapped(meta[ERROR_META])
        if found is not None:
            return found
    if not data.get("isError"):
        return None
    structured = data.get("structuredContent")
    if isinstance(structured, dict) and (found := _unwrapped(structured)) is not None:
        return found
    for block in data.get("content") or ():
        if isinstance(block, dict) and block.get("type") == "text" and (found := _from_text(block.get("text"))):
            return found
    return None


def _from_text(text: object) -> dict[str, Any] | None:
    if not isinstance(text, str) or not text.lstrip().startswith("{"):
        return None
    try:
        data = decode_json(text.encode(), what="a tool result's text", error=ChallengeError)
    except ChallengeError:
        return None
    return _unwrapped(data) if isinstance(data, dict) else None


def _unwrapped(data: dict[str, Any]) -> dict[str, Any] | None:
    """`data` if it is a PaymentRequired, the one inside an ``x402/error`` wrapper (or its ``data``), or None."""
    if "x402Version" in data and isinstance(data.get("accepts"), list):
        return data
    inner = data.get(ERROR_META, data.get("data"))
    if isinstance(inner, dict) and inner is not data:
        return _unwrapped(inner)
    return None


def _settlement_in(data: Mapping[str, Any]) -> dict[str, Any] | None:
    """The SettlementResponse in ``_meta`` (the binding) or in ``structuredContent`` (a failure, for one SDK)."""
    for holder in (data.get("_meta"), data.get("structuredContent")):
        if isinstance(holder, dict) and isinstance(holder.get(RESPONSE_META), dict):
            found: dict[str, Any] = holder[RESPONSE_META]
            return found
    return None


def payment_meta(header: tuple[str, str]) -> dict[str, Any]:
    """The ``_meta`` entry that carries a signed payment, from the header the program made for it."""
    payload = decode_header(header[1], what=header[0], error=MalformedPayment)
    return {PAYMENT_META: payload}


def payment_header(value: object) -> str | None:
    """The base64 header value of the payment at ``_meta["x402/payment"]`` (an object, JSON text or base64 JSON), or
    None when there is none; `MalformedPayment` when it is something else."""
    if value is None:
        return None
    if isinstance(value, dict):
        return encode_header(value)
    if not isinstance(value, str):
        raise MalformedPayment(f"{PAYMENT_META} is a {type(value).__name__}, not an object or a string")
    if value.lstrip().startswith(("{", "[")):
        data = decode_json(value.encode(), what=PAYMENT_META, error=MalformedPayment)
    else:
        data = decode_header(value, what=PAYMENT_META, error=MalformedPayment)
    if not isinstance(data, dict):
        raise MalformedPayment(f"{PAYMENT_META} holds a JSON {type(data).__name__}, not an object")
    return encode_header(data)


def text_of(data: Mapping[str, Any]) -> str:
    """The compact JSON text a result's ``content[0]`` repeats its structured content in."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def decoded(header: str) -> Any:
    """A base64 JSON header value as JSON (the server's challenges and settlements, which it wrote itself)."""
    return json.loads(base64.b64decode(header))
