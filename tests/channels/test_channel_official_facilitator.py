"""x402pay's paid side in front of the OFFICIAL SDK's batch-settlement facilitator (over HTTP), paid by the official
client: our middleware's verify and deposit settlement and our ChannelClaims' claim, sweep and refund requests are
understood by its facilitator. None of its code is copied; it is a dev dependency."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anyio.to_thread
import pytest
from eth_account import Account
from paid_channel_support import PRICE, Probe, make_app, official_http, official_scheme
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from x402 import x402Facilitator
from x402.mechanisms.evm.batch_settlement.authorizer_signer import LocalAuthorizerSigner
from x402.mechanisms.evm.batch_settlement.facilitator.scheme import BatchSettlementEvmFacilitator
from x402.mechanisms.evm.signers import FacilitatorWeb3Signer
from x402.schemas import PaymentPayload as SdkPayload
from x402.schemas import PaymentRequirements as SdkRequirements

from x402pay.server import ChannelClaims, HTTPFacilitator, PaymentMiddleware, Price, serve_app
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain


def official_facilitator_app(devnet: Devnet, authorizer: Account) -> Starlette:
    """The official facilitator behind the x402 facilitator HTTP API (``/verify``, ``/settle``)."""
    signer = FacilitatorWeb3Signer(private_key="0x" + bytes(devnet.facilitator.key).hex(), rpc_url=devnet.rpc_url)
    scheme = BatchSettlementEvmFacilitator(signer, authorizer_signer=LocalAuthorizerSigner(authorizer))
    facilitator = x402Facilitator().register([devnet.network], scheme)

    async def call(request: Request, action: str) -> Response:
        body = json.loads(await request.body())
        payload = SdkPayload.model_validate(body["paymentPayload"])
        requirements = SdkRequirements.model_validate(body["paymentRequirements"])
        answer = await getattr(facilitator, action)(payload, requirements)
        return JSONResponse(answer.model_dump(mode="json", by_alias=True, exclude_none=True))

    async def verify(request: Request) -> Response:
        return await call(request, "verify")

    async def settle(request: Request) -> Response:
        return await call(request, "settle")

    return Starlette(routes=[Route("/verify", verify, methods=["POST"]), Route("/settle", settle, methods=["POST"])])


@pytest.fixture
def served(x402pay_chain: Devnet) -> Iterator[tuple[str, str, PaymentMiddleware, Probe]]:
    devnet, authorizer = x402pay_chain, Account.create()
    probe = Probe()
    with serve_app(official_facilitator_app(devnet, authorizer)) as facilitator_url:
        route = Price.channel(PRICE, asset=devnet.usdc, receiver_authorizer=authorizer.address)
        middleware = PaymentMiddleware(
            make_app(probe), facilitator=HTTPFacilitator(facilitator_url), network=devnet.network,
            pay_to=devnet.payee.address, routes={"GET /quote": route},
        )  # fmt: skip
        with serve_app(middleware) as url:
            yield url, facilitator_url, middleware, probe


async def test_our_middleware_and_claims_over_the_official_facilitator(
    x402pay_chain: Devnet, tmp_path: Path, served: tuple[str, str, PaymentMiddleware, Probe]
) -> None:
    devnet, (url, facilitator_url, middleware, probe) = x402pay_chain, served
    usdc = devnet.contract("TestUSDC", devnet.usdc).functions
    payee_before = usdc.balanceOf(devnet.payee.address).call()
    scheme = official_scheme(devnet, devnet.payers[0], tmp_path)
    uses = [PRICE, 400, 250, PRICE]
    async with official_http(devnet, scheme, url) as http:
        for use in uses:
            response = await http.get("/quote", params={"use": use})
            assert response.status_code == 200, response.text
    assert len(probe.calls) == len(uses)
    [record] = middleware.channels.store.all()
    assert record.charged == sum(uses)

    async with HTTPFacilitator(facilitator_url) as facilitator:
        claims = ChannelClaims(middleware.channels.store, facilitator, network=devnet.network)
        assert [result.success for result in await claims.claim()] == [True]
        assert [result.success for result in await claims.sweep()] == [True]
    assert usdc.balanceOf(devnet.payee.address).call() == payee_before + sum(uses)

    payer = devnet.payers[0].address
    payer_before = usdc.balanceOf(payer).call()
    refunded = await anyio.to_thread.run_sync(lambda: scheme.refund(url + "/quote"))
    assert refunded.success, refunded
    assert usdc.balanceOf(payer).call() == payer_before + 10 * PRICE - sum(uses)
    assert middleware.channels.store.all() == []
    assert len(probe.calls) == len(uses)  # the refund never reached the app
