"""Runs inside a venv with mcp 1.x and the official x402 SDK (see test_mcp_official.py): both directions of
x402-over-MCP interop on the devnet named by ``X402PAY_TEST_MCP`` (JSON), one scenario per call, facts as JSON.

    python mcp1_peer.py <scenario> [transport]

Scenarios ``ours-pays-official-*`` run x402pay's PaymentSession against a FastMCP server whose tools are wrapped
by the official ``create_payment_wrapper``; ``official-pays-ours`` runs the official ``x402MCPSession`` against a
FastMCP server with x402pay's ``PaidTools.install``. None of the official SDK's code is copied: it is driven
through its public names.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

from eth_account import Account
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.fastmcp import FastMCP
from mcp.shared.memory import create_connected_server_and_client_session
from web3 import Web3
from x402 import x402Client, x402Facilitator, x402ResourceServer
from x402.mcp import create_payment_wrapper, x402MCPSession
from x402.mechanisms.evm import FacilitatorWeb3Signer
from x402.mechanisms.evm.exact import ExactEvmServerScheme, register_exact_evm_facilitator
from x402.mechanisms.evm.exact.register import register_exact_evm_client
from x402.mechanisms.evm.signers import EthAccountSigner
from x402.mechanisms.evm.upto import UptoEvmFacilitatorScheme, UptoEvmServerScheme
from x402.schemas import ResourceConfig

from x402pay import SpendCapExceeded, SpendPolicy, Wallet, payment_of
from x402pay.mcp import PaidTools, PaymentSession
from x402pay.server import LocalFacilitator, Price, serve_app

CONFIG: dict[str, Any] = json.loads(os.environ["X402PAY_TEST_MCP"])
PRICE, PERMIT2_PRICE, UPTO_MAX = 10_000, 15_000, 50_000
BALANCE_OF = [{"name": "balanceOf", "type": "function", "stateMutability": "view",
               "inputs": [{"name": "a", "type": "address"}], "outputs": [{"name": "", "type": "uint256"}]}]  # fmt: skip
ran: list[str] = []


def balances() -> dict[str, int]:
    web3 = Web3(Web3.HTTPProvider(CONFIG["rpc_url"]))
    usdc = web3.eth.contract(address=CONFIG["usdc"], abi=BALANCE_OF)
    return {who: usdc.functions.balanceOf(CONFIG[who]).call() for who in ("payer", "payee")}


def tx_status(tx: str) -> int:
    return int(Web3(Web3.HTTPProvider(CONFIG["rpc_url"])).eth.get_transaction_receipt(tx)["status"])


def official_server() -> FastMCP:
    """The official SDK's paid tools, settled by its own facilitator on the devnet."""
    signer = FacilitatorWeb3Signer(private_key=CONFIG["facilitator_key"], rpc_url=CONFIG["rpc_url"])
    facilitator = register_exact_evm_facilitator(x402Facilitator(), signer, networks=CONFIG["network"])
    facilitator.register([CONFIG["network"]], UptoEvmFacilitatorScheme(signer))
    server = x402ResourceServer(facilitator)
    server.register(CONFIG["network"], ExactEvmServerScheme())
    server.register(CONFIG["network"], UptoEvmServerScheme())
    server.initialize()
    token = {"name": "USD Coin", "version": "2"}

    def accepts(scheme: str, amount: int, **extra: str) -> Any:
        price = {"amount": str(amount), "asset": CONFIG["usdc"], "extra": {**token, **extra}}
        config = ResourceConfig(scheme=scheme, network=CONFIG["network"], pay_to=CONFIG["payee"], price=price,
                                max_timeout_seconds=120)  # fmt: skip
        return server.build_payment_requirements(config)

    mcp = FastMCP("official")

    @mcp.tool(name="get_weather")
    @create_payment_wrapper(server, accepts=accepts("exact", PRICE))
    async def get_weather(city: str) -> str:
        ran.append("get_weather")
        return f"sunny in {city}"

    @mcp.tool(name="report")
    @create_payment_wrapper(server, accepts=accepts("exact", PERMIT2_PRICE, assetTransferMethod="permit2"))
    async def report() -> str:
        ran.append("report")
        return "the report"

    @mcp.tool(name="summarize")
    @create_payment_wrapper(server, accepts=accepts("upto", UPTO_MAX))
    async def summarize(words: int) -> str:
        ran.append("summarize")
        return f"{words} words"

    @mcp.tool(name="boom")
    @create_payment_wrapper(server, accepts=accepts("exact", PRICE))
    async def boom() -> str:
        ran.append("boom")
        raise RuntimeError("the tool broke")

    @mcp.tool(name="ping")
    async def ping() -> str:
        ran.append("ping")
        return "pong"

    return mcp


def our_server() -> FastMCP:
    """x402pay's paid tools on mcp 1.x's FastMCP."""
    facilitator = LocalFacilitator(CONFIG["rpc_url"], Account.from_key(CONFIG["facilitator_key"]))
    paid = PaidTools(facilitator=facilitator, network=CONFIG["network"], pay_to=CONFIG["payee"],
                     tools={"get_weather": Price.exact(PRICE, asset=CONFIG["usdc"])})  # fmt: skip
    mcp = paid.install(FastMCP("ours"))

    @mcp.tool(name="get_weather")
    async def get_weather(city: str) -> str:
        ran.append("get_weather")
        return f"sunny in {city}"

    return mcp


@contextlib.asynccontextmanager
async def session_to(mcp: FastMCP, transport: str) -> AsyncIterator[tuple[ClientSession, str]]:
    """A client session to `mcp` in memory, over streamable HTTP or over SSE; and the origin it is paid as."""
    if transport == "memory":
        async with create_connected_server_and_client_session(mcp._mcp_server) as session:
            yield session, "memory://official"
        return
    app = mcp.streamable_http_app() if transport == "http" else mcp.sse_app()
    with serve_app(app, lifespan=True) as url:
        if transport == "http":
            async with streamable_http_client(url + "/mcp") as (read, write, _), ClientSession(read, write) as session:
                await session.initialize()
                yield session, url
        else:
            async with sse_client(url + "/sse") as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                yield session, url


def paying(session: ClientSession, origin: str, cap: int = 100_000) -> PaymentSession:
    policy = SpendPolicy(max_per_request=cap, networks=(CONFIG["network"],))
    return PaymentSession(session, wallet=Wallet(Account.from_key(CONFIG["payer_key"])), policy=policy,
                          origin=origin, rpc_url=CONFIG["rpc_url"], verify="inline")  # fmt: skip


def paid_facts(result: Any) -> dict[str, Any]:
    payment = payment_of(result)
    facts: dict[str, Any] = {"is_error": result.isError, "text": result.content[0].text if result.content else None}
    if payment is not None:
        facts |= {"status": str(payment.status), "signed": payment.signed_amount, "settled": payment.settled_amount,
                  "verified": bool(payment.verification and payment.verification.verified)}  # fmt: skip
        facts["tx_status"] = tx_status(payment.transaction) if payment.transaction else None
    return facts


async def ours_pays_official(transport: str) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    async with session_to(official_server(), transport) as (session, origin):
        client = paying(session, origin)
        for name, arguments in [("get_weather", {"city": "Paris"}), ("report", {}), ("summarize", {"words": 7}),
                                ("ping", {}), ("boom", {})]:  # fmt: skip
            before = balances()
            facts[name] = paid_facts(await client.call_tool(name, arguments))
            after = balances()
            facts[name]["moved"] = after["payee"] - before["payee"]
            facts[name]["payer_moved"] = before["payer"] - after["payer"]
        facts |= await refusals(session, origin)
    facts["ran"] = ran
    return facts


async def refusals(session: ClientSession, origin: str) -> dict[str, Any]:
    """A replayed payment, and a price above the policy."""
    sent: list[dict[str, Any]] = []
    original = session.call_tool

    async def recording(*args: Any, meta: Any = None, **kwargs: Any) -> Any:
        sent.append(dict(meta or {}))
        return await original(*args, meta=meta, **kwargs)

    session.call_tool = recording  # type: ignore[method-assign]
    await paying(session, origin).call_tool("get_weather", {"city": "Rome"})
    session.call_tool = original  # type: ignore[method-assign]
    before, count = balances(), len(ran)
    replay = await session.call_tool("get_weather", {"city": "Oslo"}, meta=sent[-1])
    try:
        await paying(session, origin, cap=PRICE - 1).call_tool("get_weather", {"city": "Lima"})
        capped = "paid"
    except SpendCapExceeded:
        capped = "SpendCapExceeded"
    return {"replay": {"is_error": replay.isError, "error": (replay.structuredContent or {}).get("error"),
                       "ran": len(ran) - count, "moved": balances()["payee"] - before["payee"]},
            "above_policy": {"outcome": capped, "moved": balances()["payee"] - before["payee"]}}  # fmt: skip


def official_client() -> x402Client:
    client = x402Client()
    register_exact_evm_client(client, EthAccountSigner(Account.from_key(CONFIG["payer_key"])),
                              networks=CONFIG["network"])  # fmt: skip
    allowed = {"network": CONFIG["network"], "asset": CONFIG["usdc"], "max_amount_per_payment": "100000"}
    return client.set_spend_controls({"allowed_assets": [allowed]})


async def official_pays_ours(transport: str) -> dict[str, Any]:
    async with session_to(our_server(), transport) as (session, _):
        unpaid = await session.call_tool("get_weather", {"city": "Paris"})
        before = balances()
        result = await x402MCPSession(session, official_client()).call_tool("get_weather", {"city": "Paris"})
        after = balances()
    response = result.payment_response
    return {
        "unpaid": {"is_error": unpaid.isError, "structured": unpaid.structuredContent,
                   "text": json.loads(unpaid.content[0].text)},
        "paid": {"is_error": result.is_error, "payment_made": result.payment_made,
                 "text": result.content[0].text if result.content else None,
                 "success": getattr(response, "success", None), "payer": getattr(response, "payer", None),
                 "tx_status": tx_status(response.transaction) if response is not None else None},
        "moved": after["payee"] - before["payee"], "payer_moved": before["payer"] - after["payer"], "ran": ran,
    }  # fmt: skip


def main() -> None:
    scenario, transport = sys.argv[1], sys.argv[2]
    run = {"ours-pays-official": ours_pays_official, "official-pays-ours": official_pays_ours}[scenario]
    print(json.dumps(asyncio.run(run(transport))))


if __name__ == "__main__":
    main()
