"""`PaidTools`: paid tools on the `mcp` SDK's servers, through its tool-call interceptor (`ToolGate` does the rest)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any, Final

from x402pay.mcp._gate import ToolGate
from x402pay.mcp._wire import wire_of
from x402pay.server._facilitator import Facilitator
from x402pay.server._pricing import Price

#: The identifier the interceptor is advertised under in the server's ``capabilities.extensions``.
IDENTIFIER: Final = "dev.x402pay/paid-tools"


class PaidTools:
    """Charges for the tools in `tools` (name: `Price`, or several offered side by side): `PaymentMiddleware`'s
    arguments, with tool names for routes. Tools not named here are free.

    On mcp 2.x, give the interceptor to the server: ``MCPServer("weather", extensions=[paid.extension()])``; on
    mcp 1.x, which has none, let it take over the ``tools/call`` handler: ``paid.install(FastMCP("weather"))``.
    See `x402pay.mcp._gate` for when the tool runs and when the payment settles.
    """

    def __init__(
        self, *, facilitator: Facilitator, tools: Mapping[str, Price | Sequence[Price]], network: str,
        pay_to: str | None = None, gas_sponsoring: bool = True,
    ) -> None:  # fmt: skip
        prices = {name: price if isinstance(price, Price) else list(price) for name, price in tools.items()}
        self.gate = ToolGate(facilitator=facilitator, tools=prices, network=network, pay_to=pay_to,
                             gas_sponsoring=gas_sponsoring)  # fmt: skip

    def extension(self) -> Any:
        """The mcp 2.x ``Extension`` whose ``intercept_tool_call`` charges for the paid tools."""
        return _interceptor_class()(self.gate)

    def install(self, server: Any) -> Any:
        """mcp 1.x: wrap the ``tools/call`` handler of `server` (a ``FastMCP``, or its low-level ``Server``) so that
        the paid tools are charged for; returns `server`. On mcp 2.x, use `extension` instead."""
        types: Any = importlib.import_module("mcp.types")
        lowlevel = getattr(server, "_mcp_server", server)
        handlers = getattr(lowlevel, "request_handlers", None)
        if not isinstance(handlers, dict) or types.CallToolRequest not in handlers:
            raise TypeError(f"install needs mcp 1.x's FastMCP or Server with tools, not {type(server).__name__}")
        original = handlers[types.CallToolRequest]

        async def call_tool(request: Any) -> Any:
            async def run() -> dict[str, Any]:
                return wire_of((await original(request)).root)

            meta = request.params.meta
            given = meta.model_dump(by_alias=True) if meta is not None else None
            answer = await self.gate.call(request.params.name, given, run)
            return types.ServerResult(types.CallToolResult.model_validate(answer))

        handlers[types.CallToolRequest] = call_tool
        return server


def _interceptor_class() -> type[Any]:
    """The interceptor, defined on first use: its base class is mcp 2.x's (``mcp.server.extension``)."""
    from mcp.server.extension import Extension
    from mcp_types import CallToolResult

    class PaidToolsExtension(Extension):
        """Answers each ``tools/call`` of a paid tool through the `ToolGate`."""

        identifier = IDENTIFIER

        def __init__(self, gate: ToolGate) -> None:
            self.gate = gate

        def settings(self) -> dict[str, Any]:
            return {"tools": sorted(self.gate.tools)}

        async def intercept_tool_call(self, params: Any, ctx: Any, call_next: Any) -> Any:
            async def run() -> dict[str, Any]:
                result = await call_next(ctx)
                if not isinstance(result, CallToolResult):  # e.g. an InputRequiredResult: not an answer to charge for
                    raise TypeError(f"paid tool {params.name!r} answered with a {type(result).__name__}; "
                                    "x402pay charges only for tools that answer with a CallToolResult")  # fmt: skip
                return wire_of(result)

            answer = await self.gate.call(params.name, params.meta, run)
            return CallToolResult.model_validate(answer)

    return PaidToolsExtension
