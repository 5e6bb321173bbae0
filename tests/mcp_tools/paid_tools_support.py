"""A paid MCP server for the tests (mcp 2.x's MCPServer with x402pay's PaidTools), in-process or over stdio.

Run as a script, it serves the same tools over stdio, configured by the ``X402PAY_TEST_MCP`` environment variable
(JSON: rpc_url, network, usdc, payee, facilitator_key, calls_file).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from mcp.server.mcpserver import MCPServer

from x402pay.mcp import PaidTools, paid_call
from x402pay.server import LocalFacilitator, Price

PRICE = 10_000
PERMIT2_PRICE = 15_000
UPTO_MAX = 50_000
PER_WORD = 100


@dataclass
class Calls:
    """The tools that ran, in order (also appended to `file`, for a server in another process)."""

    names: list[str] = field(default_factory=list)
    file: Path | None = None

    def ran(self, name: str) -> None:
        self.names.append(name)
        if self.file is not None:
            with self.file.open("a") as out:
                out.write(name + "\n")


def make_server(*, rpc_url: str, network: str, usdc: str, payee: str, facilitator: Any, calls: Calls) -> MCPServer:
    """The weather server: ``get_weather`` (exact), ``report`` (exact, Permit2), ``summarize`` (upto, metered by
    word), ``boom`` (exact, raises), ``flaky`` (exact, fails the first time), ``ping`` (free)."""
    paid = PaidTools(
        facilitator=LocalFacilitator(rpc_url, facilitator),
        network=network,
        pay_to=payee,
        tools={
            "get_weather": Price.exact(PRICE, asset=usdc, description="the weather"),
            "report": Price.exact(PERMIT2_PRICE, asset=usdc, transfer="permit2"),
            "summarize": Price.upto(UPTO_MAX, asset=usdc),
            "boom": Price.exact(PRICE, asset=usdc),
            "flaky": Price.exact(PRICE, asset=usdc),
        },
    )
    server = MCPServer("weather", extensions=[paid.extension()])

    @server.tool()
    async def get_weather(city: str) -> str:
        calls.ran("get_weather")
        return f"sunny in {city}"

    @server.tool()
    def report() -> str:
        calls.ran("report")
        return "the report"

    @server.tool()
    async def summarize(words: int) -> str:
        calls.ran("summarize")
        payment = paid_call()
        assert payment is not None
        payment.charge(words * PER_WORD)
        return f"{words} words"

    @server.tool()
    async def boom() -> str:
        calls.ran("boom")
        raise RuntimeError("the tool broke")

    @server.tool()
    async def flaky() -> str:
        calls.ran("flaky")
        if calls.names.count("flaky") == 1:
            raise RuntimeError("try again")
        return "worked the second time"

    @server.tool()
    async def ping() -> str:
        calls.ran("ping")
        return "pong"

    return server


def main() -> None:
    config = json.loads(os.environ["X402PAY_TEST_MCP"])
    calls = Calls(file=Path(config["calls_file"]))
    server = make_server(
        rpc_url=config["rpc_url"],
        network=config["network"],
        usdc=config["usdc"],
        payee=config["payee"],
        facilitator=Account.from_key(config["facilitator_key"]),
        calls=calls,
    )
    server.run("stdio")


if __name__ == "__main__":
    sys.exit(main())
