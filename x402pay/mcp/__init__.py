# ruff: noqa: E402  -- the extra is checked before the modules that need it are imported
"""Paid MCP tools: agents pay for ``tools/call`` with the HTTP transports' wallet, policy, ledger and verification;
servers charge for tools with `PaymentMiddleware`'s prices and facilitators.

    async with ClientSession(read, write) as session:
        await session.initialize()
        paying = PaymentSession(session, wallet=wallet, policy=policy, origin="https://tools.example")
        result = await paying.call_tool("get_weather", {"city": "Paris"})
        payment = x402pay.payment_of(result)

    paid = PaidTools(facilitator=facilitator, network="eip155:8453", pay_to=merchant,
                     tools={"get_weather": Price.exact(10_000, asset=USDC)})
    server = MCPServer("weather", extensions=[paid.extension()])

The wire is x402's MCP binding (``_meta["x402/payment"]``, ``_meta["x402/payment-response"]``); see
`x402pay.mcp._wire` for what is read leniently. Needs the ``mcp`` extra; without it, importing this package raises
`MissingExtra` (an ImportError) naming the pip command.
"""

from x402pay import _extras

_extras.require_extra("mcp", "x402pay.mcp")

from x402pay.mcp._client import PaymentSession
from x402pay.mcp._gate import paid_call
from x402pay.mcp._server import PaidTools
from x402pay.mcp._wire import PAYMENT_META, RESPONSE_META

__all__ = ["PAYMENT_META", "RESPONSE_META", "PaidTools", "PaymentSession", "paid_call"]
