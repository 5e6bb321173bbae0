"""The demo's paid MCP tool: ``fortune`` at a fixed price, for the demo bot's agent step (`running_tools`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from x402pay.server._local import LocalFacilitator
from x402pay.server._pricing import Price
from x402pay.server._serving import serve_app

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from x402pay.testing import Devnet

FORTUNES = ("A paid tool call settles before its answer leaves.", "One signature per call, retried or not.")


def demo_tools(*, facilitator: LocalFacilitator, network: str, asset: str, pay_to: str, price: int) -> MCPServer:
    """An MCP server (mcp 2.x) with one paid tool, ``fortune``, at `price` atomic units of `asset`."""
    from mcp.server.mcpserver import MCPServer

    from x402pay.mcp import PaidTools

    paid = PaidTools(facilitator=facilitator, network=network, pay_to=pay_to,
                     tools={"fortune": Price.exact(price, asset=asset, description="a fortune")})  # fmt: skip
    # mcp's server configures the root logger (logging.basicConfig) at its own level: the demo's screen wants quiet
    server = MCPServer("x402pay demo tools", extensions=[paid.extension()], log_level="WARNING")
    told: list[str] = []

    @server.tool()
    async def fortune() -> str:
        """A fortune, paid for."""
        told.append(FORTUNES[len(told) % len(FORTUNES)])
        return told[-1]

    return server


@contextlib.contextmanager
def running_tools(devnet: Devnet, *, price: int) -> Iterator[str]:
    """Serve `demo_tools` over streamable HTTP on loopback against `devnet`; yields the MCP endpoint's URL."""
    facilitator = LocalFacilitator(devnet.rpc_url, devnet.facilitator)
    server = demo_tools(facilitator=facilitator, network=devnet.network, asset=devnet.usdc,
                        pay_to=devnet.payee.address, price=price)  # fmt: skip
    with serve_app(server.streamable_http_app(), lifespan=True) as url:
        yield url + "/mcp"
