"""Gas-free Permit2 approval end to end on anvil: a wallet that never approved Permit2 pays anyway.

The server offers ``eip2612GasSponsoring``; the x402pay client (with an RPC) sees its allowance is short and signs
an EIP-2612 permit for Permit2; the LocalFacilitator checks it and settles with the proxy's ``settleWithPermit``.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from web3 import Web3

from x402pay import AsyncPaymentTransport, Payment, PaymentStatus, PaymentTransport, SpendPolicy, Wallet, payment_of
from x402pay._protocol.addresses import EXACT_PERMIT2_PROXY_ADDRESS, PERMIT2_ADDRESS, UPTO_PERMIT2_PROXY_ADDRESS
from x402pay.server import LocalFacilitator, PaymentMiddleware, Price, serve_app
from x402pay.server._demo import running_demo
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

FRESH_KEY = "0x" + "6b" * 32
CAP = 100_000  # the client's cap, announced as the upto ceiling: the signed maximum and the permit's value
PRICE = 25_000
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def demo_url(x402pay_devnet: Devnet) -> Iterator[str]:
    """The demo API (upto routes), which offers gas sponsoring by default."""
    with running_demo(x402pay_devnet) as url:
        yield url


@pytest.fixture(scope="module")
def exact_url(x402pay_devnet: Devnet) -> Iterator[str]:
    """One route priced exact, paid by Permit2."""

    async def report(request: Request) -> JSONResponse:
        return JSONResponse({"report": "paid by Permit2"})

    app = PaymentMiddleware(
        Starlette(routes=[Route("/report", report)]),
        facilitator=LocalFacilitator(x402pay_devnet.rpc_url, x402pay_devnet.facilitator),
        network=x402pay_devnet.network,
        pay_to=x402pay_devnet.payee.address,
        routes={"GET /report": Price.exact(PRICE, asset=x402pay_devnet.usdc, transfer="permit2")},
    )
    with serve_app(app) as url:
        yield url + "/report"


@pytest.fixture
def fresh(x402pay_chain: Devnet) -> Wallet:
    """A wallet with gas money and USDC, which has never approved Permit2."""
    wallet = Wallet.from_key(FRESH_KEY)
    web3 = x402pay_chain.web3()
    web3.provider.make_request("anvil_setBalance", [wallet.address, hex(10**18)])  # type: ignore[arg-type]
    usdc = x402pay_chain.contract("TestUSDC", x402pay_chain.usdc)
    tx = usdc.functions.mint(wallet.address, 10**9).transact({"from": x402pay_chain.deployer.address})
    web3.eth.wait_for_transaction_receipt(tx)
    assert usdc.functions.allowance(wallet.address, PERMIT2_ADDRESS).call() == 0
    return wallet


def usdc_view(devnet: Devnet, function: str, *args: str) -> int:
    return int(devnet.contract("TestUSDC", devnet.usdc).functions[function](*args).call())


def policy() -> SpendPolicy:
    return SpendPolicy(max_per_request=CAP)


def settled(response: httpx.Response) -> Payment:
    assert response.status_code == 200, response.text
    payment = payment_of(response)
    assert payment is not None
    assert payment.status is PaymentStatus.SETTLED, payment.settlement_error
    assert payment.settled_amount is not None
    return payment


def settled_with_permit(devnet: Devnet, payment: Payment, proxy: str) -> None:
    """The settlement was one transaction from the facilitator to `proxy` that submitted the permit."""
    assert payment.transaction is not None
    receipt = devnet.web3().eth.get_transaction_receipt(payment.transaction)
    assert (receipt["status"], receipt["from"], receipt["to"]) == (1, devnet.facilitator.address, proxy)
    topic = Web3.keccak(text="SettledWithPermit()")
    assert any(log["address"] == proxy and log["topics"][0] == topic for log in receipt["logs"])


def test_a_wallet_without_approval_pays_an_upto_route(x402pay_chain: Devnet, demo_url: str, fresh: Wallet) -> None:
    devnet = x402pay_chain
    transport = PaymentTransport(wallet=fresh, policy=policy(), rpc_url=devnet.rpc_url)
    before = usdc_view(devnet, "balanceOf", fresh.address)
    with httpx.Client(transport=transport, timeout=60) as client:
        payment = settled(client.post(demo_url + "/v1/chat/completions", json=CHAT))

    charged = payment.settled_amount
    assert charged is not None
    assert (payment.scheme, payment.signed_amount) == ("upto", CAP)
    assert 0 < charged < CAP
    assert usdc_view(devnet, "balanceOf", fresh.address) == before - charged
    # The permit let Permit2 move the signed maximum; the upto proxy moved only the charge.
    assert usdc_view(devnet, "allowance", fresh.address, PERMIT2_ADDRESS) == CAP - charged
    assert usdc_view(devnet, "nonces", fresh.address) == 1
    settled_with_permit(devnet, payment, UPTO_PERMIT2_PROXY_ADDRESS)


def test_the_leftover_allowance_is_replaced_by_the_next_permit(
    x402pay_chain: Devnet, demo_url: str, fresh: Wallet
) -> None:
    devnet = x402pay_chain
    transport = PaymentTransport(wallet=fresh, policy=policy(), rpc_url=devnet.rpc_url)
    before = usdc_view(devnet, "balanceOf", fresh.address)
    with httpx.Client(transport=transport, timeout=60) as client:
        first = settled(client.post(demo_url + "/v1/chat/completions", json=CHAT))
        second = settled(client.post(demo_url + "/api/inference", json=CHAT))

    charges = [first.settled_amount, second.settled_amount]
    assert None not in charges
    assert usdc_view(devnet, "balanceOf", fresh.address) == before - sum(c or 0 for c in charges)
    # EIP-2612 sets the allowance (it does not add to it): what is left is the second maximum minus its charge.
    assert usdc_view(devnet, "allowance", fresh.address, PERMIT2_ADDRESS) == CAP - (second.settled_amount or 0)
    assert usdc_view(devnet, "nonces", fresh.address) == 2


def test_a_wallet_without_approval_pays_an_exact_permit2_route(
    x402pay_chain: Devnet, exact_url: str, fresh: Wallet
) -> None:
    devnet = x402pay_chain
    transport = PaymentTransport(wallet=fresh, policy=policy(), rpc_url=devnet.rpc_url)
    before = usdc_view(devnet, "balanceOf", fresh.address), usdc_view(devnet, "balanceOf", devnet.payee.address)
    with httpx.Client(transport=transport, timeout=60) as client:
        response = client.get(exact_url)
    payment = settled(response)

    assert response.json() == {"report": "paid by Permit2"}
    assert (payment.scheme, payment.signed_amount, payment.settled_amount) == ("exact", PRICE, PRICE)
    assert usdc_view(devnet, "balanceOf", fresh.address) == before[0] - PRICE
    assert usdc_view(devnet, "balanceOf", devnet.payee.address) == before[1] + PRICE
    assert usdc_view(devnet, "allowance", fresh.address, PERMIT2_ADDRESS) == 0  # the permit was for exactly PRICE
    settled_with_permit(devnet, payment, EXACT_PERMIT2_PROXY_ADDRESS)


async def test_a_wallet_without_approval_pays_an_exact_permit2_route_async(
    x402pay_chain: Devnet, exact_url: str, fresh: Wallet
) -> None:
    devnet = x402pay_chain
    transport = AsyncPaymentTransport(wallet=fresh, policy=policy(), rpc_url=devnet.rpc_url)
    before = usdc_view(devnet, "balanceOf", fresh.address)
    async with httpx.AsyncClient(transport=transport, timeout=60) as client:
        payment = settled(await client.get(exact_url))

    assert payment.settled_amount == PRICE
    assert usdc_view(devnet, "balanceOf", fresh.address) == before - PRICE
    assert usdc_view(devnet, "allowance", fresh.address, PERMIT2_ADDRESS) == 0
    settled_with_permit(devnet, payment, EXACT_PERMIT2_PROXY_ADDRESS)
