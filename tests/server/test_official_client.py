"""Interoperability: the official `x402` PyPI package, as the CLIENT, pays our middleware on anvil.

None of its code is copied; it is a dev dependency, driven through its public httpx transport.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from paid_app import PRICE, PaidServer, paid_server
from x402 import x402Client
from x402.http.clients.httpx import x402_httpx_transport
from x402.http.utils import decode_payment_response_header
from x402.mechanisms.evm.exact.register import register_exact_evm_client
from x402.mechanisms.evm.signers import EthAccountSigner
from x402.mechanisms.evm.upto import UptoEvmClientScheme

from x402pay.server import LocalFacilitator
from x402pay.server._demo import DemoConfig, running_demo
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain


@pytest.fixture
def server(x402pay_chain: Devnet, facilitator: LocalFacilitator) -> Iterator[PaidServer]:
    """The test server without the gas-sponsoring offer: the official client (2.25.0) meets any extension in a
    Permit2 challenge by importing ``x402.extensions``, which fails without its ``[extensions]`` extra."""
    with paid_server(x402pay_chain, facilitator, gas_sponsoring=False) as paid:
        yield paid


def official_client(devnet: Devnet, payer: LocalAccount) -> x402Client:
    """Its client, allowed to pay the devnet's USDC (not one of its built-in assets) up to 0.1 USDC."""
    client = x402Client()
    register_exact_evm_client(client, EthAccountSigner(payer), networks=devnet.network)
    client.register(devnet.network, UptoEvmClientScheme(EthAccountSigner(payer)))
    allowed = {"network": devnet.network, "asset": devnet.usdc, "max_amount_per_payment": "100000"}
    return client.set_spend_controls({"allowed_assets": [allowed]})


@pytest.mark.parametrize("path", ["/paid", "/paid-permit2"], ids=["eip3009", "permit2"])
async def test_the_official_client_pays_an_exact_route(server: PaidServer, path: str) -> None:
    devnet, payer = server.devnet, server.devnet.payers[0]
    before = server.balance(devnet.payee.address), server.balance(payer.address)
    transport = x402_httpx_transport(official_client(devnet, payer))
    async with httpx.AsyncClient(transport=transport, base_url=server.url, timeout=30) as http:
        response = await http.get(path)

    assert response.status_code == 200, response.text
    assert response.json() == {"report": "the good stuff"}
    settlement = decode_payment_response_header(response.headers["payment-response"])
    assert settlement.success
    assert settlement.payer == payer.address
    assert devnet.web3().eth.get_transaction_receipt(settlement.transaction)["status"] == 1
    assert server.balance(devnet.payee.address) == before[0] + PRICE
    assert server.balance(payer.address) == before[1] - PRICE
    assert server.probe.calls == [path]


async def test_the_official_client_pays_a_metered_upto_route(server: PaidServer) -> None:
    devnet, payer = server.devnet, server.devnet.payers[0]
    before = server.balance(devnet.payee.address)
    transport = x402_httpx_transport(official_client(devnet, payer))
    async with httpx.AsyncClient(transport=transport, base_url=server.url, timeout=30) as http:
        response = await http.post("/metered", json={"use": 4242})

    assert response.status_code == 200, response.text
    settlement = decode_payment_response_header(response.headers["payment-response"])
    assert (settlement.success, settlement.amount) == (True, "4242")
    assert server.balance(devnet.payee.address) == before + 4242


DEMO_CALLS = [
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "stream": True}),
    ("POST", "/api/inference", {"messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/v1/responses", {"input": "hi"}),
    ("POST", "/v1/responses", {"input": "hi", "stream": True}),
    ("POST", "/v1/messages", {"max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/v1/messages", {"max_tokens": 16, "messages": [{"role": "user", "content": "hi"}], "stream": True}),
    ("GET", "/v1/fortune", None),
]


@pytest.mark.parametrize(
    ("method", "path", "body"), DEMO_CALLS,
    ids=["chat", "chat-stream", "inference", "responses", "responses-stream", "messages", "messages-stream", "fortune"],
)  # fmt: skip
async def test_the_official_client_with_a_cap_under_1_usdc_pays_every_demo_route(
    x402pay_chain: Devnet, method: str, path: str, body: dict[str, Any] | None
) -> None:
    devnet, payer = x402pay_chain, x402pay_chain.payers[0]
    client = x402Client()
    register_exact_evm_client(client, EthAccountSigner(payer), networks=devnet.network)
    client.register(devnet.network, UptoEvmClientScheme(EthAccountSigner(payer)))
    under_a_dollar = {"network": devnet.network, "asset": devnet.usdc, "max_amount_per_payment": "999999"}
    client.set_spend_controls({"allowed_assets": [under_a_dollar]})
    before = int(devnet.contract("TestUSDC", devnet.usdc).functions.balanceOf(payer.address).call())
    # The demo's prices as they are; only the gas-free approval offer is withdrawn (see the `server` fixture).
    with running_demo(devnet, config=DemoConfig(gas_sponsoring=False)) as url:
        transport = x402_httpx_transport(client)
        async with httpx.AsyncClient(transport=transport, base_url=url, timeout=30) as http:
            response = await http.request(method, path, json=body)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "private"
    if response.headers["content-type"].startswith("text/event-stream"):
        assert '"settlementStatus":"settled"' in response.text  # the in-band receipt
    else:
        assert decode_payment_response_header(response.headers["payment-response"]).success
    paid = before - int(devnet.contract("TestUSDC", devnet.usdc).functions.balanceOf(payer.address).call())
    assert 0 < paid <= DemoConfig().upto_max < 1_000_000
