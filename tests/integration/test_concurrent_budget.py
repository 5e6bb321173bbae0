"""Many concurrent async paid requests against one budget, through the transport, settled on anvil: exactly as
many are paid as the budget fits, never more, and the ledger's sum equals the payee's balance change."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from x402pay import AsyncPaymentTransport, SpendCapExceeded, SpendPolicy, Wallet
from x402pay.ledger import Budget, EntryState, Ledger, Web3Chain
from x402pay.server import LocalFacilitator, PaymentMiddleware, Price
from x402pay.server._serving import serve_app
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

PRICE = 10_000
FITS = 17
REQUESTS = 60


async def fortune(request: Request) -> Response:
    return JSONResponse({"fortune": "paid"})


@pytest.fixture(scope="module")
def url(x402pay_devnet: Devnet) -> Iterator[str]:
    devnet = x402pay_devnet
    app = PaymentMiddleware(
        Starlette(routes=[Route("/fortune", fortune)]),
        facilitator=LocalFacilitator(devnet.rpc_url, devnet.facilitator),
        routes={"GET /fortune": Price.exact(PRICE, asset=devnet.usdc)},
        network=devnet.network,
        pay_to=devnet.payee.address,
    )
    with serve_app(app) as base:
        yield base


def test_concurrent_requests_never_overspend_a_shared_budget(x402pay_chain: Devnet, url: str, tmp_path: Path) -> None:
    usdc = x402pay_chain.contract("TestUSDC", x402pay_chain.usdc)
    before = usdc.functions.balanceOf(x402pay_chain.payee.address).call()
    ledger = Ledger.sqlite(tmp_path / "spend.db", budgets=[Budget(x402pay_chain.usdc, FITS * PRICE + PRICE // 2)])
    outcomes: list[str] = []

    async def one(client: httpx.AsyncClient) -> None:
        try:
            response = await client.get(url + "/fortune")
            outcomes.append("paid" if response.status_code == 200 else f"http {response.status_code}")
        except SpendCapExceeded:
            outcomes.append("refused")

    async def main() -> None:
        transport = AsyncPaymentTransport(
            wallet=Wallet(x402pay_chain.payers[1]), policy=SpendPolicy(max_per_request=PRICE), ledger=ledger
        )
        async with httpx.AsyncClient(transport=transport, timeout=120) as client, anyio.create_task_group() as tasks:
            for _ in range(REQUESTS):
                tasks.start_soon(one, client)

    anyio.run(main)

    assert outcomes.count("paid") == FITS
    assert outcomes.count("refused") == REQUESTS - FITS
    claims = [entry for entry in ledger.entries(limit=REQUESTS) if entry.state is EntryState.CLAIMED]
    assert len(claims) == FITS  # the server's word: each holds its maximum until the chain shows it
    assert len(ledger.reconcile(Web3Chain(x402pay_chain.web3())).settled) == FITS
    settled = [entry for entry in ledger.entries(limit=REQUESTS) if entry.state is EntryState.SETTLED]
    assert len(settled) == FITS
    moved = usdc.functions.balanceOf(x402pay_chain.payee.address).call() - before
    assert moved == sum(entry.settled_amount or 0 for entry in settled) == FITS * PRICE
