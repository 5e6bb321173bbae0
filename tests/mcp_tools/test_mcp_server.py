"""x402pay's paid tools on anvil, as any MCP client sees them: the binding's shapes, the payment forms accepted,
a settlement that fails after the tool ran (its result is withheld), and a remote facilitator."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from paid_tools_support import PRICE, Calls, make_server

from x402pay import PaymentRejected, SettlementPending, SpendPolicy, Wallet, payment_of
from x402pay._flow import decode_challenge, sign
from x402pay._protocol.codec import encode_header
from x402pay._protocol.headers import PAYMENT_REQUIRED
from x402pay.ledger import Ledger
from x402pay.mcp import PAYMENT_META, RESPONSE_META, PaidTools, PaymentSession, paid_call
from x402pay.server import HTTPFacilitator, LocalFacilitator, Price, facilitator_app, serve_app
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain


def weather(devnet: Devnet, calls: Calls) -> MCPServer:
    return make_server(rpc_url=devnet.rpc_url, network=devnet.network, usdc=devnet.usdc,
                       payee=devnet.payee.address, facilitator=devnet.facilitator, calls=calls)  # fmt: skip


def balance(devnet: Devnet, address: str) -> int:
    return int(devnet.contract("TestUSDC", devnet.usdc).functions.balanceOf(address).call())


def signed_header(devnet: Devnet, required: dict[str, Any]) -> str:
    """A payment for the challenge `required`, signed as x402pay's client signs it: the base64 header value."""
    challenge = decode_challenge({PAYMENT_REQUIRED: encode_header(required)}, None)
    assert challenge is not None
    policy = SpendPolicy(max_per_request=PRICE, networks=(devnet.network,))
    _, header = sign(challenge, challenge.requirements[0], wallet=Wallet(devnet.payers[0]), policy=policy,
                     origin="memory://weather", now=int(time.time()))  # fmt: skip
    return header[1]


async def test_an_unpaid_call_gets_the_binding_s_payment_required_result(x402pay_chain: Devnet) -> None:
    calls = Calls()
    async with Client(weather(x402pay_chain, calls)) as client:
        result = await client.call_tool("get_weather", {"city": "Paris"})
    required = result.structured_content
    assert result.is_error
    assert json.loads(result.content[0].text) == required
    assert required["x402Version"] == 2
    assert required["error"] == 'a payment is required at params._meta["x402/payment"]'
    assert required["resource"] == {"url": "mcp://tool/get_weather", "description": "the weather"}
    [option] = required["accepts"]
    assert (option["scheme"], option["amount"], option["payTo"]) == ("exact", str(PRICE), x402pay_chain.payee.address)
    assert calls.names == []


@pytest.mark.parametrize("form", ["base64", "json-text", "object"])
async def test_a_payment_is_accepted_in_each_form_clients_send(form: str, x402pay_chain: Devnet) -> None:
    calls = Calls()
    payee = balance(x402pay_chain, x402pay_chain.payee.address)
    async with Client(weather(x402pay_chain, calls)) as client:
        unpaid = await client.call_tool("get_weather", {"city": "Paris"})
        header = signed_header(x402pay_chain, unpaid.structured_content)
        decoded = json.loads(base64.b64decode(header))
        given = {"base64": header, "json-text": json.dumps(decoded), "object": decoded}[form]
        paid = await client.call_tool("get_weather", {"city": "Paris"}, meta={PAYMENT_META: given})
    assert paid.content[0].text == "sunny in Paris"
    assert paid.meta[RESPONSE_META]["success"] is True
    assert balance(x402pay_chain, x402pay_chain.payee.address) == payee + PRICE


@pytest.mark.parametrize("given", [42, "not base64!", "[1]"])
async def test_a_malformed_payment_is_refused_and_the_tool_does_not_run(given: object, x402pay_chain: Devnet) -> None:
    calls = Calls()
    async with Client(weather(x402pay_chain, calls)) as client:
        result = await client.call_tool("get_weather", {"city": "Paris"}, meta={PAYMENT_META: given})
    assert result.is_error
    assert result.structured_content["error"] == "invalid_payload"
    assert result.structured_content["accepts"][0]["amount"] == str(PRICE)
    assert calls.names == []


def draining_server(devnet: Devnet, ran: list[str]) -> MCPServer:
    """A paid tool whose run empties the payer's balance: verified before it ran, its payment cannot settle."""
    paid = PaidTools(facilitator=LocalFacilitator(devnet.rpc_url, devnet.facilitator), network=devnet.network,
                     pay_to=devnet.payee.address, tools={"drain": Price.exact(PRICE, asset=devnet.usdc)})  # fmt: skip
    server = MCPServer("drain", extensions=[paid.extension()])

    @server.tool()
    def drain() -> str:
        ran.append("drain")
        payer = devnet.payers[0]
        usdc = devnet.contract("TestUSDC", devnet.usdc)
        everything = usdc.functions.balanceOf(payer.address).call()
        devnet.web3().eth.send_transaction(
            usdc.functions.transfer(devnet.deployer.address, everything).build_transaction({"from": payer.address})
        )
        return "the paid result"

    return server


async def test_a_failed_settlement_withholds_the_result(x402pay_chain: Devnet) -> None:
    devnet, ran = x402pay_chain, []
    payee = balance(devnet, devnet.payee.address)
    async with Client(draining_server(devnet, ran)) as client:
        unpaid = await client.call_tool("drain")
        header = signed_header(devnet, unpaid.structured_content)
        result = await client.call_tool("drain", meta={PAYMENT_META: header})

        policy = SpendPolicy(max_per_request=PRICE, networks=(devnet.network,))
        paying = PaymentSession(client, wallet=Wallet(devnet.payers[0]), policy=policy, origin="memory://drain")
        with pytest.raises(PaymentRejected, match="insufficient_funds"):  # verified again first: the tool waits
            await paying.call_tool("drain")

    assert ran == ["drain"]
    assert result.is_error
    assert "the paid result" not in result.content[0].text
    failed = result.meta[RESPONSE_META]
    assert failed["success"] is False
    assert result.structured_content[RESPONSE_META] == failed
    assert result.structured_content["accepts"][0]["amount"] == str(PRICE)
    assert balance(devnet, devnet.payee.address) == payee


async def test_paid_tools_settle_through_a_remote_facilitator(x402pay_chain: Devnet) -> None:
    """The HTTP facilitator (x402pay's facilitator app on loopback), as PaymentMiddleware uses it."""
    devnet, ran = x402pay_chain, []
    payee = balance(devnet, devnet.payee.address)
    with serve_app(facilitator_app(LocalFacilitator(devnet.rpc_url, devnet.facilitator))) as url:
        async with HTTPFacilitator(url) as remote:
            paid = PaidTools(facilitator=remote, network=devnet.network, pay_to=devnet.payee.address,
                             tools={"summarize": Price.upto(50_000, asset=devnet.usdc)})  # fmt: skip
            server = MCPServer("remote", extensions=[paid.extension()])

            @server.tool()
            async def summarize(words: int) -> str:
                ran.append("summarize")
                payment = paid_call()
                assert payment is not None
                payment.charge(words)
                return f"{words} words"

            policy = SpendPolicy(max_per_request=50_000, networks=(devnet.network,))
            async with Client(server) as client:
                paying = PaymentSession(client, wallet=Wallet(devnet.payers[0]), policy=policy, origin="memory://r")
                result = await paying.call_tool("summarize", {"words": 777})

    payment = payment_of(result)
    assert payment is not None
    assert (payment.signed_amount, payment.settled_amount) == (50_000, 777)
    assert balance(devnet, devnet.payee.address) == payee + 777
    assert ran == ["summarize"]


async def test_on_a_slow_chain_a_pending_settlement_is_pending_for_the_caller(
    x402pay_chain: Devnet, tmp_path: Path
) -> None:
    """Sent and not mined within the facilitator's wait: the caller is told pending (the maximum held), not refused."""
    devnet, calls = x402pay_chain, Calls()
    facilitator = LocalFacilitator(devnet.rpc_url, devnet.facilitator, receipt_timeout=1.0)
    paid = PaidTools(facilitator=facilitator, network=devnet.network, pay_to=devnet.payee.address,
                     tools={"get_weather": Price.exact(PRICE, asset=devnet.usdc)})  # fmt: skip
    server = MCPServer("slow", extensions=[paid.extension()])

    @server.tool()
    async def get_weather(city: str) -> str:
        calls.ran("get_weather")
        return f"sunny in {city}"

    ledger = Ledger.sqlite(tmp_path / "books.db")
    policy = SpendPolicy(max_per_request=PRICE, networks=(devnet.network,))
    payee = balance(devnet, devnet.payee.address)
    rpc = devnet.web3().provider
    rpc.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        async with Client(server) as client:
            paying = PaymentSession(client, wallet=Wallet(devnet.payers[0]), policy=policy, origin="memory://slow",
                                    ledger=ledger)  # fmt: skip
            with pytest.raises(SettlementPending) as pending:
                await paying.call_tool("get_weather", {"city": "Paris"})
    finally:
        rpc.make_request("anvil_mine", [1])  # type: ignore[arg-type]
        rpc.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]

    assert pending.value.transaction is not None
    (entry,) = ledger.entries()
    assert entry.held == PRICE  # may still be charged: held at the signed maximum
    assert calls.names == ["get_weather"]
    assert balance(devnet, devnet.payee.address) == payee + PRICE  # mined now: the charge the caller was told of
