"""The paid side of a tool call, written once for every mcp version: `ToolGate`.

Theory of operation. A paid tool call goes through the very `PaymentMiddleware` that guards HTTP routes, as an
in-process request ``POST /<tool>`` (its resource: ``mcp://tool/<tool>``) carrying the payment from
``_meta["x402/payment"]`` as its ``PAYMENT-SIGNATURE`` header, so that prices, facilitators, verification, replay
refusal and settlement are the HTTP ones, not a second copy. In order:

1. no payment: the tool does not run; the answer is the payment-required result (the middleware's challenge);
2. a payment that does not verify (wrong terms, spent nonce, presented twice): the tool does not run; the answer is
   the challenge with the reason in ``error``;
3. a verified payment: the tool runs; a tool that raises or reports an error is answered as it is, and charges
   nothing (the authorization is not used, and may be presented again);
4. the tool succeeded: the payment settles (an upto tool is charged what it reported with ``paid_call().charge``, or
   its whole maximum) before the result leaves; the settlement goes out at ``_meta["x402/payment-response"]``;
5. the settlement failed: the tool's result is withheld; the answer is the challenge, with the failed settlement in
   ``_meta`` and, for the official SDK's client, in ``structuredContent``.

So the tool runs only for a payment that verified, and its result reaches only a caller whose payment settled.
What a tool does besides returning its result happens before settlement: a tool with side effects that must never
happen unpaid should leave them to the caller's next step, or be priced so that verification is the last check
(a verified EIP-3009 or Permit2 payment fails to settle only if the payer spends the funds in between).
"""

from __future__ import annotations

import contextvars
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from starlette.types import Message, Receive, Scope, Send

from x402pay._protocol.headers import PAYMENT_RESPONSE, PAYMENT_SIGNATURE, X_PAYMENT_RESPONSE
from x402pay.errors import MalformedPayment
from x402pay.mcp._wire import PAYMENT_META, RESPONSE_META, decoded, payment_header, text_of
from x402pay.server._facilitator import Facilitator
from x402pay.server._middleware import PaymentMiddleware
from x402pay.server._pricing import Price
from x402pay.server._receipts import PaidRequest, paid_request

#: What runs the tool and returns its result as a wire object (``content``, ``isError``, ``_meta``, ...).
RunTool = Callable[[], Awaitable[dict[str, Any]]]

_TOOL_NAME: Final = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_UNPAID: Final = f'a payment is required at params._meta["{PAYMENT_META}"]'
_RUN: Final = "x402pay.mcp.run"
_RESULT: Final = "x402pay.mcp.result"
_PAID: contextvars.ContextVar[PaidRequest | None] = contextvars.ContextVar("x402pay_mcp_paid", default=None)


def paid_call() -> PaidRequest | None:
    """The verified payment of the tool call being run, or None (a free tool, or outside a tool call).

    An upto tool reports what it used with ``paid_call().charge(amount)``; otherwise its whole maximum is charged.
    """
    return _PAID.get()


class ToolGate:
    """Charges for the tools in `tools` (name: price, or prices offered side by side) through `facilitator`, on
    one `network`, paying `pay_to`: `PaymentMiddleware`'s arguments, with tool names for routes."""

    def __init__(
        self, *, facilitator: Facilitator, tools: Mapping[str, Price | list[Price] | tuple[Price, ...]], network: str,
        pay_to: str | None = None, gas_sponsoring: bool = True,
    ) -> None:  # fmt: skip
        for name in tools:
            if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not an MCP tool name (1 to 128 of A-Z a-z 0-9 _ - .)")
        self.tools = frozenset(tools)
        routes = {f"POST /{name}": price for name, price in tools.items()}
        self._middleware = PaymentMiddleware(_run_tool, facilitator=facilitator, routes=routes, network=network,
                                             pay_to=pay_to, gas_sponsoring=gas_sponsoring)  # fmt: skip

    async def call(self, name: str, meta: Mapping[str, Any] | None, run: RunTool) -> dict[str, Any]:
        """The answer to a ``tools/call`` of `name` with request `_meta` `meta`: `run` is awaited only for a free
        tool or a verified payment (see the module's theory of operation)."""
        if name not in self.tools:
            return await run()
        try:
            header = payment_header((meta or {}).get(PAYMENT_META))
        except MalformedPayment as exc:
            return await self._refusal(name, {"error": "invalid_payload", "errorMessage": str(exc)})
        status, headers, body, scope = await self._exchange(name, header, run)
        settlement = headers.get(PAYMENT_RESPONSE.lower()) or headers.get(X_PAYMENT_RESPONSE.lower())
        if _RESULT in scope and status < 400:
            return _with_settlement(scope[_RESULT], decoded(settlement) if settlement else None)
        if _RESULT in scope and status != 402:
            result: dict[str, Any] = scope[_RESULT]  # the tool's own error: passed through, nothing charged
            return result
        if status == 402 and settlement is None:
            reason = _error_of(body) if header is not None else {"error": _UNPAID}
            return _payment_required(decoded(headers["payment-required"]) | reason)
        return await self._refusal(name, body, decoded(settlement) if settlement else None)

    async def _refusal(self, name: str, reason: Mapping[str, Any], settlement: Any = None) -> dict[str, Any]:
        """The challenge of `name` with `reason`'s ``error`` (and `settlement`, for a failed one)."""
        status, headers, body, _ = await self._exchange(name, None, _never_run)
        if status != 402:  # the challenge itself could not be made (the facilitator is down)
            return {"content": [{"type": "text", "text": text_of(body)}], "isError": True}
        required = decoded(headers["payment-required"]) | _error_of(reason)
        return _payment_required(required, settlement)

    async def _exchange(
        self, name: str, header: str | None, run: RunTool
    ) -> tuple[int, dict[str, str], dict[str, Any], Scope]:  # fmt: skip
        """Run one in-process request for tool `name` through the middleware: status, headers, JSON body, scope."""
        headers = [(b"host", b"tool")] + ([(PAYMENT_SIGNATURE.lower().encode(), header.encode())] if header else [])
        scope: Scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                        "scheme": "mcp", "path": f"/{name}", "raw_path": f"/{name}".encode(), "query_string": b"",
                        "root_path": "", "headers": headers, "client": None, "server": None, "state": {},
                        _RUN: run}  # fmt: skip
        reply = _Reply()
        await self._middleware(scope, _receive_nothing, reply)
        return reply.status, reply.headers, reply.json(), scope


async def _run_tool(scope: Scope, receive: Receive, send: Send) -> None:
    """The app behind the middleware: run the tool with its payment at hand, keep its result in the scope, and
    answer 200 (500 for the tool's own error, which the middleware then charges nothing for)."""
    token = _PAID.set(paid_request(scope))
    try:
        result = await scope[_RUN]()
    finally:
        _PAID.reset(token)
    scope[_RESULT] = result
    status = 500 if result.get("isError") else 200
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def _never_run() -> dict[str, Any]:
    raise RuntimeError("an unpaid request reached a paid tool")


async def _receive_nothing() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class _Reply:
    """The `send` the middleware answers an in-process request to: status, headers and body, collected."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._body: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in message["headers"]}
        elif message["type"] == "http.response.body":
            self._body.append(message.get("body", b""))

    def json(self) -> dict[str, Any]:
        """The body as a JSON object ({} when it is empty or not an object)."""
        text = b"".join(self._body)
        data = json.loads(text) if text.strip() else {}
        return data if isinstance(data, dict) else {}


def _error_of(reason: Mapping[str, Any]) -> dict[str, Any]:
    return {key: reason[key] for key in ("error", "errorMessage") if reason.get(key)}


def _with_settlement(result: dict[str, Any], settlement: Any) -> dict[str, Any]:
    if settlement is None:
        return result
    return {**result, "_meta": {**(result.get("_meta") or {}), RESPONSE_META: settlement}}


def _payment_required(required: dict[str, Any], settlement: Any = None) -> dict[str, Any]:
    """The binding's payment-required result; a failed `settlement` goes in ``_meta`` and ``structuredContent``."""
    structured = required | ({RESPONSE_META: settlement} if settlement is not None else {})
    result = {"content": [{"type": "text", "text": text_of(structured)}], "structuredContent": structured,
              "isError": True}  # fmt: skip
    return _with_settlement(result, settlement)
