"""x402pay's MCP client paying x402pay's paid tools on anvil (mcp 2.x): in memory, over streamable HTTP, over SSE
and over stdio, through both ``mcp.Client`` and ``mcp.ClientSession``; balances checked on chain."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, ClientSession
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from paid_tools_support import PER_WORD, PERMIT2_PRICE, PRICE, UPTO_MAX, Calls, make_server

from x402pay import (
    BudgetExceeded,
    NoAcceptableRequirement,
    PaymentStatus,
    SpendCapExceeded,
    SpendPolicy,
    Wallet,
    payment_of,
)
from x402pay.ledger import Budget, EntryState, Ledger
from x402pay.mcp import RESPONSE_META, PaymentSession
from x402pay.server._serving import serve_app
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

SUPPORT = Path(__file__).with_name("paid_tools_support.py")
KINDS = ["memory", "http", "sse", "stdio"]


@dataclass
class Connected:
    client: Any
    origin: str
    calls: Calls
    devnet: Devnet

    def ran(self) -> list[str]:
        if self.calls.file is not None:
            return self.calls.file.read_text().split() if self.calls.file.exists() else []
        return list(self.calls.names)

    def balance(self, address: str) -> int:
        return int(self.devnet.contract("TestUSDC", self.devnet.usdc).functions.balanceOf(address).call())

    def paying(self, cap: int = 100_000, **options: Any) -> PaymentSession:
        policy = SpendPolicy(max_per_request=cap, networks=(self.devnet.network,))
        return PaymentSession(self.client, wallet=Wallet(self.devnet.payers[0]), policy=policy, origin=self.origin,
                              **options)  # fmt: skip


def server_args(devnet: Devnet, calls: Calls) -> dict[str, Any]:
    return {"rpc_url": devnet.rpc_url, "network": devnet.network, "usdc": devnet.usdc,
            "payee": devnet.payee.address, "facilitator": devnet.facilitator, "calls": calls}  # fmt: skip


@contextlib.asynccontextmanager
async def connect(kind: str, devnet: Devnet, tmp_path: Path) -> AsyncIterator[Connected]:
    """A client connected to the paid weather server: in memory, over streamable HTTP or SSE, or over stdio."""
    if kind == "stdio":
        calls = Calls(file=tmp_path / "calls.txt")
        config = {"rpc_url": devnet.rpc_url, "network": devnet.network, "usdc": devnet.usdc,
                  "payee": devnet.payee.address, "facilitator_key": devnet.facilitator.key.hex(),
                  "calls_file": str(calls.file)}  # fmt: skip
        params = StdioServerParameters(command=sys.executable, args=[str(SUPPORT)],
                                       env={"X402PAY_TEST_MCP": json.dumps(config)})  # fmt: skip
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield Connected(session, "stdio://weather", calls, devnet)
        return
    calls = Calls()
    server = make_server(**server_args(devnet, calls))
    if kind == "memory":
        async with Client(server) as client:
            yield Connected(client, "memory://weather", calls, devnet)
        return
    if kind == "sse":
        with serve_app(server.sse_app(), lifespan=True) as url:
            async with sse_client(url + "/sse") as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                yield Connected(session, url, calls, devnet)
        return
    with serve_app(server.streamable_http_app(), lifespan=True) as url:
        async with Client(url + "/mcp") as client:
            yield Connected(client, url, calls, devnet)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_paid_tool_call_moves_exactly_the_price(kind: str, x402pay_chain: Devnet, tmp_path: Path) -> None:
    async with connect(kind, x402pay_chain, tmp_path) as conn:
        payer, payee = conn.devnet.payers[0].address, conn.devnet.payee.address
        before = conn.balance(payer), conn.balance(payee)
        async with conn.paying() as paying:
            result = await paying.call_tool("get_weather", {"city": "Paris"})

        assert result.content[0].text == "sunny in Paris"
        assert not result.is_error
        payment = payment_of(result)
        assert payment is not None
        assert payment.status is PaymentStatus.SETTLED
        assert payment.settled_amount == PRICE
        assert payment.origin == conn.origin
        assert result.meta[RESPONSE_META]["transaction"] == payment.transaction
        receipt = conn.devnet.web3().eth.get_transaction_receipt(payment.transaction)
        assert receipt["status"] == 1
        assert (conn.balance(payer), conn.balance(payee)) == (before[0] - PRICE, before[1] + PRICE)
        assert conn.ran() == ["get_weather"]


@pytest.mark.parametrize("kind", KINDS)
async def test_free_tools_and_tools_that_raise_cost_nothing(kind: str, x402pay_chain: Devnet, tmp_path: Path) -> None:
    async with connect(kind, x402pay_chain, tmp_path) as conn:
        payer = conn.devnet.payers[0].address
        before = conn.balance(payer)
        async with conn.paying() as paying:
            free = await paying.call_tool("ping")
            broken = await paying.call_tool("boom")

        assert free.content[0].text == "pong"
        assert payment_of(free) is None
        assert broken.is_error
        assert broken.content[0].text == "Error executing tool boom"
        unsettled = payment_of(broken)
        assert unsettled is not None  # signed and sent: it stays held, as nothing says it will not be used
        assert unsettled.status is PaymentStatus.UNSETTLED
        assert conn.balance(payer) == before
        assert conn.ran() == ["ping", "boom"]


async def test_upto_charges_what_the_tool_used(x402pay_chain: Devnet, tmp_path: Path) -> None:
    async with connect("http", x402pay_chain, tmp_path) as conn:
        payer = conn.devnet.payers[0].address
        before = conn.balance(payer)
        async with conn.paying() as paying:
            result = await paying.call_tool("summarize", {"words": 42})

        payment = payment_of(result)
        assert payment is not None
        assert (payment.signed_amount, payment.settled_amount) == (UPTO_MAX, 42 * PER_WORD)
        assert conn.balance(payer) == before - 42 * PER_WORD


async def test_permit2_exact_is_paid(x402pay_chain: Devnet, tmp_path: Path) -> None:
    async with connect("memory", x402pay_chain, tmp_path) as conn:
        payee = conn.devnet.payee.address
        before = conn.balance(payee)
        async with conn.paying() as paying:
            result = await paying.call_tool("report")

        assert result.content[0].text == "the report"
        assert conn.balance(payee) == before + PERMIT2_PRICE


@pytest.mark.parametrize("kind", ["memory", "stdio"])
async def test_a_price_above_the_policy_signs_nothing(kind: str, x402pay_chain: Devnet, tmp_path: Path) -> None:
    async with connect(kind, x402pay_chain, tmp_path) as conn:
        before = conn.balance(conn.devnet.payers[0].address)
        async with conn.paying(cap=PRICE - 1) as paying:
            with pytest.raises(SpendCapExceeded):
                await paying.call_tool("get_weather", {"city": "Paris"})

        assert conn.balance(conn.devnet.payers[0].address) == before
        assert conn.ran() == []


async def test_a_replayed_payment_is_refused_and_the_tool_does_not_run(x402pay_chain: Devnet, tmp_path: Path) -> None:
    async with connect("http", x402pay_chain, tmp_path) as conn:
        async with conn.paying() as paying:
            paid = await paying.call_tool("get_weather", {"city": "Paris"})
        payment = payment_of(paid)
        assert payment is not None
        sent: list[dict[str, Any]] = []
        original = conn.client.call_tool

        async def recording(*args: Any, meta: Any = None, **kwargs: Any) -> Any:
            sent.append(dict(meta or {}))
            return await original(*args, meta=meta, **kwargs)

        async with conn.paying() as paying:
            conn.client.call_tool = recording
            await paying.call_tool("get_weather", {"city": "Rome"})
        replay = await original("get_weather", {"city": "Oslo"}, meta=sent[-1])

        assert replay.is_error
        assert replay.structured_content["error"] == "invalid_exact_evm_nonce_already_used"
        assert replay.structured_content["accepts"][0]["amount"] == str(PRICE)
        assert conn.ran() == ["get_weather", "get_weather"]


async def test_a_retried_call_re_sends_its_payment(x402pay_chain: Devnet, tmp_path: Path) -> None:
    """A call that failed (the tool's error) and is made again is the same logical call: one signature."""
    async with connect("memory", x402pay_chain, tmp_path) as conn:
        payer = conn.devnet.payers[0].address
        before = conn.balance(payer)
        async with conn.paying() as paying:
            first = await paying.call_tool("flaky")
            second = await paying.call_tool("flaky")

        assert first.is_error
        assert not second.is_error
        one, two = payment_of(first), payment_of(second)
        assert one is not None
        assert two is not None
        assert one.signed.payload == two.signed.payload
        assert conn.balance(payer) == before - PRICE


async def test_the_ledger_books_and_the_chain_verifies(x402pay_chain: Devnet, tmp_path: Path) -> None:
    ledger = Ledger.sqlite(tmp_path / "books.db")
    async with connect("http", x402pay_chain, tmp_path) as conn:
        async with conn.paying(ledger=ledger, rpc_url=conn.devnet.rpc_url, verify="inline") as paying:
            result = await paying.call_tool("get_weather", {"city": "Paris"})
        payment = payment_of(result)
        assert payment is not None
        assert payment.verification is not None
        assert payment.verification.verified
        [entry] = ledger.entries()
        assert (entry.state, entry.settled_amount, entry.origin) == (EntryState.SETTLED, PRICE, conn.origin)
        assert entry.tx_hash == payment.transaction


async def test_a_budget_refuses_before_anything_is_signed(x402pay_chain: Devnet, tmp_path: Path) -> None:
    ledger = Ledger.sqlite(tmp_path / "books.db", budgets=[Budget(x402pay_chain.usdc, PRICE + 5)])
    async with connect("memory", x402pay_chain, tmp_path) as conn:
        async with conn.paying(ledger=ledger) as paying:
            await paying.call_tool("get_weather", {"city": "Paris"})
            with pytest.raises(BudgetExceeded, match=f"only 5 of {PRICE + 5} left"):
                await paying.call_tool("get_weather", {"city": "Rome"})
        assert conn.ran() == ["get_weather"]
        assert [entry.state for entry in ledger.entries()] == [EntryState.CLAIMED]


async def test_an_origin_outside_the_policy_is_not_paid(x402pay_chain: Devnet, tmp_path: Path) -> None:
    async with connect("memory", x402pay_chain, tmp_path) as conn:
        policy = SpendPolicy(max_per_request=100_000, networks=(conn.devnet.network,), origins={"https://other"})
        paying = PaymentSession(conn.client, wallet=Wallet(conn.devnet.payers[0]), policy=policy, origin=conn.origin)
        with pytest.raises(NoAcceptableRequirement):
            await paying.call_tool("get_weather", {"city": "Paris"})
        assert conn.ran() == []


def test_a_session_needs_an_origin_and_a_client() -> None:
    policy = SpendPolicy(max_per_request=1)
    wallet = Wallet.from_key("0x" + "11" * 32)
    with pytest.raises(ValueError, match="origin"):
        PaymentSession(object.__new__(ClientSession), wallet=wallet, policy=policy, origin="weather")
    with pytest.raises(TypeError, match="ClientSession"):
        PaymentSession(object(), wallet=wallet, policy=policy, origin="stdio://weather")
    with pytest.raises(ValueError, match="announce_ceiling"):
        PaymentSession(object.__new__(ClientSession), wallet=wallet, policy=policy, origin="stdio://w",
                       announce_ceiling=True)  # fmt: skip
