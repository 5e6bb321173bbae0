"""Budgets in units people mean, on two real anvil chains: one "USDC anywhere" budget stops payments on both, and
a token no budget covers is refused before anything is signed (a covered option is paid instead, when offered).

The second chain is anvil with chain id 1337 (x402pay knows the devnet's test USDC there too), the devnet deployed
on it, and a paid server of its own; every payment is settled on chain by the servers' local facilitators.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_typing import ChecksumAddress
from recording import Recording
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from web3 import Web3

from x402pay import NotBudgeted, PaymentTransport, SpendPolicy, Wallet, payment_of
from x402pay._protocol.networks import known_asset
from x402pay.ledger import ANY_USDC, Budget, BudgetExceeded, Ledger
from x402pay.server import LocalFacilitator, PaymentMiddleware, Price
from x402pay.server._serving import serve_app
from x402pay.testing import Anvil, Devnet, deploy_devnet, load_artifact

pytestmark = pytest.mark.chain

PRICE = 10_000
SECOND_CHAIN_ID = 1337


async def report(request: Request) -> Response:
    return JSONResponse({"report": "paid"})


def paid_app(devnet: Devnet, routes: dict[str, Any]) -> PaymentMiddleware:
    paths = {key.split(" ", 1)[1] for key in routes}
    return PaymentMiddleware(
        Starlette(routes=[Route(path, report) for path in sorted(paths)]),
        facilitator=LocalFacilitator(devnet.rpc_url, devnet.facilitator),
        routes=routes,
        network=devnet.network,
        pay_to=devnet.payee.address,
    )


@pytest.fixture(scope="module")
def second_devnet(x402pay_anvil: Anvil) -> Iterator[Devnet]:
    """The devnet on a second anvil (chain id 1337); x402pay_anvil makes it skip or fail as the suite's chain tests
    do when anvil is missing."""
    with Anvil(chain_id=SECOND_CHAIN_ID) as anvil:
        yield deploy_devnet(anvil.rpc_url)


@pytest.fixture
def second_chain(second_devnet: Devnet) -> Iterator[Devnet]:
    snapshot = second_devnet.snapshot()
    yield second_devnet
    second_devnet.revert(snapshot)


@pytest.fixture(scope="module")
def usdc_servers(x402pay_devnet: Devnet, second_devnet: Devnet) -> Iterator[tuple[str, str]]:
    """A server charging PRICE in USDC on each chain."""
    first, second = (
        {"GET /report": Price.exact(PRICE, asset=devnet.usdc)} for devnet in (x402pay_devnet, second_devnet)
    )
    with (
        serve_app(paid_app(x402pay_devnet, first)) as first_url,
        serve_app(paid_app(second_devnet, second)) as second_url,
    ):
        yield first_url, second_url


def client(devnet: Devnet, ledger: Ledger, wire: Recording, policy: SpendPolicy | None = None) -> httpx.Client:
    transport = PaymentTransport(
        wallet=Wallet(devnet.payers[1]), policy=policy or SpendPolicy(max_per_request=50_000), ledger=ledger,
        inner=wire,
    )  # fmt: skip
    return httpx.Client(transport=transport, timeout=60)


def balance(devnet: Devnet, token: str, owner: str) -> int:
    return int(devnet.contract("TestUSDC", token).functions.balanceOf(owner).call())


def signed(requests: list[httpx.Request]) -> list[httpx.Request]:
    return [request for request in requests if "payment-signature" in request.headers]


def test_payments_on_two_chains_stop_at_one_usdc_anywhere_budget(
    x402pay_chain: Devnet, second_chain: Devnet, usdc_servers: tuple[str, str], tmp_path: Path
) -> None:
    first_url, second_url = usdc_servers
    assert x402pay_chain.usdc == second_chain.usdc  # the same deployment address, on two chains
    assert known_asset(SECOND_CHAIN_ID, second_chain.usdc) is not None
    payee = x402pay_chain.payee.address
    before = (balance(x402pay_chain, x402pay_chain.usdc, payee), balance(second_chain, second_chain.usdc, payee))
    ledger = Ledger.sqlite(tmp_path / "spend.db", budgets=[Budget(ANY_USDC, 3 * PRICE + 5, name="usdc")])
    wire = Recording()
    with client(x402pay_chain, ledger, wire) as http:
        for url in (first_url, second_url, first_url):
            assert http.get(url + "/report").status_code == 200
        with pytest.raises(BudgetExceeded, match=f"budget 'usdc' refuses {PRICE}: only 5 of {3 * PRICE + 5} left"):
            http.get(second_url + "/report")
    assert len(signed(wire.sent)) == 3  # the refused payment was never signed
    after = (balance(x402pay_chain, x402pay_chain.usdc, payee), balance(second_chain, second_chain.usdc, payee))
    assert (after[0] - before[0], after[1] - before[1]) == (2 * PRICE, PRICE)  # what the chains moved
    assert sorted(entry.network for entry in ledger.entries()) == sorted(
        [x402pay_chain.network] * 2 + [second_chain.network]
    )
    assert [(status.held, status.remaining) for status in ledger.budget_status()] == [(3 * PRICE, 5)]


def test_a_budget_for_usdc_on_one_chain_refuses_usdc_on_another_unsigned(
    x402pay_chain: Devnet, second_chain: Devnet, usdc_servers: tuple[str, str], tmp_path: Path
) -> None:
    first_url, second_url = usdc_servers
    one_chain = Budget([(x402pay_chain.network, x402pay_chain.usdc)], 1_000_000)
    ledger = Ledger.sqlite(tmp_path / "spend.db", budgets=[one_chain])
    wire = Recording()
    with client(x402pay_chain, ledger, wire) as http:
        assert http.get(first_url + "/report").status_code == 200
        refusal = (
            f"on {second_chain.network} for {second_url} (the budgets: [{{0x5fbdb231… on {x402pay_chain.network}}}"
        )
        with pytest.raises(NotBudgeted, match=re.escape(refusal)):
            http.get(second_url + "/report")  # the policy alone would pay it: USDC, on a chain it allows
    assert [request.url.port for request in signed(wire.sent)] == [httpx.URL(first_url).port]
    assert [entry.network for entry in ledger.entries()] == [x402pay_chain.network]


def deploy_token(devnet: Devnet, holder: str) -> ChecksumAddress:
    """Another EIP-3009 token (not USDC: no budget of "USDC anywhere" covers it), minted to `holder`."""
    artifact = load_artifact("TestUSDC")
    web3 = devnet.web3()
    factory = web3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    deployer = devnet.deployer.address
    receipt = web3.eth.wait_for_transaction_receipt(factory.constructor(deployer).transact({"from": deployer}))
    token = Web3.to_checksum_address(receipt["contractAddress"])
    mint = devnet.contract("TestUSDC", token).functions.mint(holder, 1_000_000).transact({"from": deployer})
    web3.eth.wait_for_transaction_receipt(mint)
    return token


def test_a_token_no_budget_covers_is_refused_unsigned_and_a_covered_option_is_paid_instead(
    x402pay_chain: Devnet, tmp_path: Path
) -> None:
    devnet, payer = x402pay_chain, x402pay_chain.payers[1].address
    other = deploy_token(devnet, payer)
    in_other = Price.exact(PRICE // 2, asset=other, token_name="USD Coin", token_version="2")
    app = paid_app(devnet, {"GET /other": in_other, "GET /either": [in_other, Price.exact(PRICE, asset=devnet.usdc)]})
    policy = SpendPolicy(max_per_request=50_000, assets={devnet.usdc, other})  # the policy alone would pay it
    ledger = Ledger.sqlite(tmp_path / "spend.db", budgets=[Budget(ANY_USDC, 1_000_000)])
    wire = Recording()
    with serve_app(app) as url, client(devnet, ledger, wire, policy) as http:
        refusal = f"no budget covers asset {other} on {devnet.network} for {url} (the budgets: [USDC in total])"
        with pytest.raises(NotBudgeted, match=re.escape(refusal)):
            http.get(url + "/other")
        assert signed(wire.sent) == []
        response = http.get(url + "/either")  # the cheaper option is in the other token: USDC is paid instead
    assert response.status_code == 200
    payment = payment_of(response)
    assert payment is not None
    assert payment.signed.requirement.asset == devnet.usdc
    assert [request.url.path for request in signed(wire.sent)] == ["/either"]
    assert balance(devnet, other, payer) == 1_000_000  # not a unit of the other token moved
    assert balance(devnet, other, devnet.payee.address) == 0
    assert [(entry.asset, entry.amount) for entry in ledger.entries()] == [(devnet.usdc.lower(), PRICE)]
