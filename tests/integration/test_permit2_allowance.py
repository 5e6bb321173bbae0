"""Permit2 allowance on anvil: a typed refusal before signing, the one-time approve, and the server's refusal."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from web3 import Web3

from x402pay import PaymentRejected, PaymentStatus, PaymentTransport, Permit2AllowanceRequired, SpendPolicy, Wallet
from x402pay import payment_of as paid_by
from x402pay._protocol.addresses import PERMIT2_ADDRESS
from x402pay.server._demo import DemoConfig, running_demo
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

FRESH_KEY = "0x" + "5a" * 32
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def demo_url(x402pay_devnet: Devnet) -> Iterator[str]:
    with running_demo(x402pay_devnet, config=DemoConfig(gas_sponsoring=False)) as url:
        yield url


@pytest.fixture
def fresh(x402pay_chain: Devnet) -> Wallet:
    """A wallet with USDC and gas money, but no Permit2 allowance."""
    wallet = Wallet.from_key(FRESH_KEY)
    web3 = x402pay_chain.web3()
    web3.provider.make_request("anvil_setBalance", [wallet.address, hex(10**18)])  # type: ignore[arg-type]
    usdc = x402pay_chain.contract("TestUSDC", x402pay_chain.usdc)
    usdc.functions.mint(wallet.address, 10**9).transact({"from": x402pay_chain.deployer.address})
    return wallet


def test_missing_allowance_is_refused_before_anything_is_signed(
    x402pay_chain: Devnet, demo_url: str, fresh: Wallet
) -> None:
    sent: list[httpx.Request] = []
    transport = PaymentTransport(
        wallet=fresh, policy=SpendPolicy(max_per_request=100_000), rpc_url=x402pay_chain.rpc_url
    )
    with (
        httpx.Client(transport=transport, event_hooks={"request": [sent.append]}) as client,
        pytest.raises(Permit2AllowanceRequired, match="approve Permit2 once"),
    ):
        client.post(demo_url + "/v1/chat/completions", json=CHAT)
    assert len(sent) == 1
    assert all("payment-signature" not in request.headers for request in sent)


def test_without_an_rpc_the_server_refuses_and_says_why(demo_url: str, fresh: Wallet) -> None:
    transport = PaymentTransport(wallet=fresh, policy=SpendPolicy(max_per_request=100_000))
    with httpx.Client(transport=transport) as client, pytest.raises(PaymentRejected) as caught:
        client.post(demo_url + "/v1/chat/completions", json=CHAT)
    assert caught.value.reason == "permit2_allowance_required"


def test_the_one_time_approve_is_a_real_transaction_and_then_payments_work(
    x402pay_chain: Devnet, demo_url: str, fresh: Wallet
) -> None:
    web3 = Web3(Web3.HTTPProvider(x402pay_chain.rpc_url))
    assert fresh.permit2_allowance(web3, x402pay_chain.usdc) == 0

    tx_hash = fresh.approve_permit2(web3, x402pay_chain.usdc, amount=500_000)

    assert web3.eth.get_transaction_receipt(tx_hash)["from"] == fresh.address
    assert fresh.permit2_allowance(web3, x402pay_chain.usdc) == 500_000
    usdc = x402pay_chain.contract("TestUSDC", x402pay_chain.usdc)
    assert usdc.functions.allowance(fresh.address, PERMIT2_ADDRESS).call() == 500_000
    transport = PaymentTransport(
        wallet=fresh, policy=SpendPolicy(max_per_request=100_000), rpc_url=x402pay_chain.rpc_url
    )
    with httpx.Client(transport=transport, timeout=60) as client:
        response = client.post(demo_url + "/v1/chat/completions", json=CHAT)
    payment = paid_by(response)
    assert response.status_code == 200
    assert payment is not None
    assert payment.status is PaymentStatus.SETTLED
