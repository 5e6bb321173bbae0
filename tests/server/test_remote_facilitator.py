"""LocalFacilitator served over HTTP (facilitator_app) and used through HTTPFacilitator, on anvil."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from paid_app import PRICE, PaidServer, Probe, make_app, routes
from server_support import decode, eip3009_payload, header, permit2_payload

from x402pay._protocol.models import PaymentPayload, PaymentRequirements
from x402pay.server import HTTPFacilitator, LocalFacilitator, PaymentMiddleware, facilitator_app, serve_app
from x402pay.server._facilitator import FacilitatorError
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain


@pytest.fixture
def facilitator_url(facilitator: LocalFacilitator) -> Iterator[str]:
    with serve_app(facilitator_app(facilitator)) as url:
        yield url


@pytest.fixture
async def remote(facilitator_url: str) -> AsyncIterator[HTTPFacilitator]:
    async with HTTPFacilitator(facilitator_url) as remote:
        yield remote


def no_keepalive(url: str) -> HTTPFacilitator:
    # Used from uvicorn's event loop: pooled connections would outlive that loop.
    return HTTPFacilitator(url, client=httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0)))


def exact_requirement(devnet: Devnet) -> PaymentRequirements:
    return routes(devnet)["GET /paid"].requirement(
        network=devnet.network, chain_id=devnet.chain_id, pay_to=devnet.payee.address, ceiling=None, facilitator=None
    )


async def test_supported_round_trips(remote: HTTPFacilitator, facilitator: LocalFacilitator) -> None:
    assert await remote.supported() == await facilitator.supported()


async def test_verify_and_settle_over_http(remote: HTTPFacilitator, x402pay_chain: Devnet) -> None:
    requirement = exact_requirement(x402pay_chain)
    payload = PaymentPayload.model_validate(
        eip3009_payload(x402pay_chain, x402pay_chain.payers[0], requirement.to_wire())
    )
    verdict = await remote.verify(payload, requirement)
    assert (verdict.is_valid, verdict.payer) == (True, x402pay_chain.payers[0].address)
    settlement = await remote.settle(payload, requirement)
    assert settlement.success, settlement
    again = await remote.verify(payload, requirement)
    assert (again.is_valid, again.invalid_reason) == (False, "invalid_exact_evm_nonce_already_used")


async def test_a_refusal_is_a_verdict_and_a_bad_request_is_a_400(facilitator_url: str, x402pay_chain: Devnet) -> None:
    requirement = exact_requirement(x402pay_chain).to_wire()
    payload = eip3009_payload(x402pay_chain, x402pay_chain.payers[0], {**requirement, "amount": "1"})
    body = {"x402Version": 2, "paymentPayload": payload, "paymentRequirements": requirement}
    async with httpx.AsyncClient(base_url=facilitator_url) as client:
        refused = await client.post("/verify", json=body)
        assert refused.status_code == 200
        assert refused.json()["invalidReason"] == "invalid_exact_evm_payload_authorization_value_mismatch"
        bad = await client.post("/settle", json={"x402Version": 2, "paymentPayload": {"x402Version": 2}})
        assert bad.status_code == 400
        assert "paymentPayload" in bad.json()["errorMessage"]


async def test_an_unreachable_facilitator_raises() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with HTTPFacilitator(f"http://127.0.0.1:{port}") as remote:
        with pytest.raises(FacilitatorError, match="unreachable"):
            await remote.supported()


@pytest.fixture
def remote_server(x402pay_chain: Devnet, facilitator_url: str) -> Iterator[PaidServer]:
    probe = Probe()
    app = PaymentMiddleware(
        make_app(probe),
        facilitator=no_keepalive(facilitator_url),
        network=x402pay_chain.network,
        pay_to=x402pay_chain.payee.address,
        routes=routes(x402pay_chain),
    )
    with serve_app(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield PaidServer(url, x402pay_chain, probe, client)


def test_the_middleware_pays_through_a_remote_facilitator(remote_server: PaidServer) -> None:
    devnet = remote_server.devnet
    before = remote_server.balance(devnet.payee.address)
    requirement = decode(remote_server.client.get("/paid").headers["payment-required"])["accepts"][0]
    payment = header(eip3009_payload(devnet, devnet.payers[0], requirement))
    response = remote_server.client.get("/paid", headers={"PAYMENT-SIGNATURE": payment})
    assert response.status_code == 200, response.text
    assert remote_server.balance(devnet.payee.address) == before + PRICE

    upto = decode(remote_server.client.post("/metered", json={}).headers["payment-required"])["accepts"][0]
    assert upto["extra"]["facilitatorAddress"] == devnet.facilitator.address
    payment = header(permit2_payload(devnet, devnet.payers[0], upto))
    metered = remote_server.client.post("/metered", json={"use": 99}, headers={"PAYMENT-SIGNATURE": payment})
    assert decode(metered.headers["payment-response"])["amount"] == "99"
    assert remote_server.balance(devnet.payee.address) == before + PRICE + 99


def test_the_middleware_answers_502_when_the_facilitator_is_down(x402pay_chain: Devnet) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    probe = Probe()
    app = PaymentMiddleware(
        make_app(probe),
        facilitator=no_keepalive(f"http://127.0.0.1:{port}"),
        network=x402pay_chain.network,
        pay_to=x402pay_chain.payee.address,
        routes=routes(x402pay_chain),
    )
    requirement = exact_requirement(x402pay_chain).to_wire()
    payment = header(eip3009_payload(x402pay_chain, x402pay_chain.payers[0], requirement))
    with serve_app(app) as url:
        assert httpx.post(url + "/metered", json={}).status_code == 502
        response = httpx.get(url + "/paid", headers={"PAYMENT-SIGNATURE": payment})
    assert response.status_code == 502
    assert probe.calls == []
