"""The hostile server spoken over MCP: the MCP column of the adversarial suite.

An in-memory MCP server (mcp 2.x) answers every ``tools/call`` of tool ``<name>`` by asking the hostile HTTP server
for ``/<name>`` (with the payment from ``_meta["x402/payment"]`` as its ``PAYMENT-SIGNATURE`` header) and puts its
answer in x402's MCP binding: a 402's challenge as the payment-required result, ``PAYMENT-RESPONSE`` at
``_meta["x402/payment-response"]``. So each hostile script lies the same way over both transports, and the hostile
server's record (`Hostile.seen`, `Hostile.signatures`) counts MCP calls too.
"""

from __future__ import annotations

import binascii
import json
from typing import Any

import anyio
import httpx
from hostile_support import policy, unb64, wallet
from mcp import Client
from mcp.server.extension import Extension
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult

from x402pay.mcp import PAYMENT_META, RESPONSE_META, PaymentSession
from x402pay.mcp._wire import payment_header
from x402pay.testing import Devnet


def _decoded(value: str) -> Any:
    try:
        return unb64(value)
    except (binascii.Error, ValueError):
        return value  # as garbled as the server sent it


def binding_of(response: httpx.Response, shape: str = "binding") -> dict[str, Any]:
    """The hostile server's HTTP answer as x402's MCP binding puts it (`shape`: a challenge as the binding says,
    or as other implementations put it: ``meta-error``, ``draft-text``, ``jsonrpc``; see `SHAPES`)."""
    meta = {RESPONSE_META: _decoded(response.headers["payment-response"])} if "payment-response" in response.headers \
        else {}  # fmt: skip
    required = response.headers.get("payment-required")
    if response.status_code == 402 and required is not None:
        return _challenge(_decoded(required), meta, shape)
    text = response.text or "(empty)"
    return {"content": [{"type": "text", "text": text}], "isError": response.status_code >= 400, "_meta": meta}


#: Where implementations put a challenge: the binding (``structuredContent`` and text), Cloudflare's agents
#: (``_meta["x402/error"]``), an older draft (an ``x402/error`` wrapper in the text), a JSON-RPC error 402.
SHAPES = ("binding", "meta-error", "draft-text", "jsonrpc")


def _challenge(required: Any, meta: dict[str, Any], shape: str) -> dict[str, Any]:
    if shape == "jsonrpc":
        raise MCPError(402, "Payment required", required)
    if shape == "meta-error":
        return {"content": [{"type": "text", "text": "payment required"}], "isError": True,
                "_meta": {**meta, "x402/error": required}}  # fmt: skip
    if shape == "draft-text":
        text = json.dumps({"x402/error": {"code": 402, "message": "payment required", "data": required}})
        return {"content": [{"type": "text", "text": text}], "isError": True, "_meta": meta}
    return {"content": [{"type": "text", "text": json.dumps(required)}], "structuredContent": required,
            "isError": True, "_meta": meta}  # fmt: skip


class Bridge(Extension):
    """Answers each ``tools/call`` by asking the hostile server (see the module)."""

    identifier = "dev.x402pay/hostile-bridge"

    def __init__(self, base_url: str, shape: str) -> None:
        self.base_url = base_url
        self.shape = shape

    async def intercept_tool_call(self, params: Any, ctx: Any, call_next: Any) -> Any:
        payment = (params.meta or {}).get(PAYMENT_META)
        headers = {"payment-signature": payment_header(payment)} if payment is not None else {}
        async with httpx.AsyncClient(base_url=self.base_url, timeout=60) as http:
            response = await http.get("/" + params.name, headers=headers)
        return CallToolResult.model_validate(binding_of(response, self.shape))


def hostile_mcp(url: str, shape: str = "binding") -> tuple[MCPServer, str, str]:
    """An MCP server speaking for the hostile server at `url`; the origin it is paid as (the hostile server's, so
    that policies and trust marks are the same), and the tool named by `url`'s path."""
    parsed = httpx.URL(url)
    origin = f"{parsed.scheme}://{parsed.netloc.decode()}"
    server = MCPServer("hostile", extensions=[Bridge(origin, shape)])
    tool = parsed.path.strip("/")

    @server.tool(name=tool, structured_output=False)
    def unused() -> str:
        return "the bridge answers before any tool runs"

    return server, origin, tool


def mcp_fetch(devnet: Devnet, url: str, **options: Any) -> Any:
    """Call the tool named by `url`'s path through a PaymentSession (`options`: cap, rules, shape, transport
    options); the tool result, or what the session raised."""
    options.pop("timeout", None)
    cap, rules = options.pop("cap", None), options.pop("rules", None)
    server, origin, tool = hostile_mcp(url, options.pop("shape", "binding"))

    async def go() -> tuple[Any, BaseException | None]:
        async with Client(server) as client:  # what is raised inside would leave it wrapped in an ExceptionGroup
            rules_ = rules or (policy(devnet) if cap is None else policy(devnet, cap))
            async with PaymentSession(client, wallet=wallet(devnet), policy=rules_, origin=origin, **options) as paying:
                try:
                    return await paying.call_tool(tool, {}), None
                except Exception as exc:  # re-raised below, outside the client's task group
                    return None, exc

    result, raised = anyio.run(go)
    if raised is not None:
        raise raised
    return result
