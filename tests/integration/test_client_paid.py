"""The client paying a real x402 server on anvil: PaymentMiddleware + LocalFacilitator behind uvicorn on loopback.

Every driver of the payment program (httpx and httpx2, sync and async, requests) pays; the payee's balance rises by
exactly the price.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import httpx
import httpx2
import pytest
import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from x402pay import (
    AsyncPaymentTransport,
    PaymentAdapter,
    PaymentRejected,
    PaymentStatus,
    PaymentTransport,
    SpendCapExceeded,
    SpendPolicy,
    Wallet,
    payment_of,
)
from x402pay.server import LocalFacilitator, PaymentMiddleware, Price
from x402pay.server._serving import serve_app
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

PRICE = 10_000


@dataclass
class Seen:
    bodies: list[bytes] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    gate_opened_in_time: list[bool] = field(default_factory=list)


def paid_app(seen: Seen) -> Starlette:
    async def report(request: Request) -> Response:
        return JSONResponse({"report": "the good stuff"})

    async def echo(request: Request) -> Response:
        body = await request.body()
        seen.bodies.append(body)
        return Response(body, media_type="application/octet-stream")

    async def stream(request: Request) -> Response:
        async def frames() -> AsyncIterator[str]:
            yield 'data: {"n":1}\n\n'
            seen.gate_opened_in_time.append(await anyio.to_thread.run_sync(seen.gate.wait, 10))
            yield 'data: {"n":2}\n\n'
            yield "data: [DONE]\n\n"

        return StreamingResponse(frames(), media_type="text/event-stream")

    return Starlette(
        routes=[
            Route("/report", report),
            Route("/permit2", report),
            Route("/echo", echo, methods=["POST"]),
            Route("/stream", stream),
        ]
    )


class V1Challenges:
    """Turns the middleware's v2 challenges into v1 ones (JSON body, maxAmountRequired), like a v1-only server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        challenge: dict[str, Any] = {}

        async def rewrite(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 402:
                headers = dict(message["headers"])
                if b"payment-required" in headers:
                    challenge.update(json.loads(base64.b64decode(headers[b"payment-required"])))
                    return
            if message["type"] == "http.response.body" and challenge:
                body = json.dumps(v1_challenge(challenge, scope)).encode()
                start = {"type": "http.response.start", "status": 402,
                         "headers": [(b"content-type", b"application/json")]}  # fmt: skip
                await send(start)
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, rewrite)


def v1_challenge(v2: dict[str, Any], scope: Scope) -> dict[str, Any]:
    accepts = []
    for option in v2["accepts"]:
        option = dict(option)
        option["maxAmountRequired"] = option.pop("amount")
        option.update(resource=v2["resource"]["url"], description="", mimeType="application/json")
        accepts.append(option)
    return {"x402Version": 1, "error": "X-PAYMENT header is required", "accepts": accepts}


@dataclass
class Paid:
    url: str
    v1_url: str
    devnet: Devnet
    seen: Seen

    def balance(self, address: str) -> int:
        usdc = self.devnet.contract("TestUSDC", self.devnet.usdc)
        return int(usdc.functions.balanceOf(address).call())


@pytest.fixture(scope="module")
def servers(x402pay_devnet: Devnet) -> Iterator[tuple[str, str, Seen]]:
    devnet = x402pay_devnet
    seen = Seen()
    routes = {
        "GET /report": Price.exact(PRICE, asset=devnet.usdc, description="a paid report"),
        "GET /permit2": Price.exact(PRICE, asset=devnet.usdc, transfer="permit2"),
        "POST /echo": Price.exact(PRICE, asset=devnet.usdc),
        "GET /stream": Price.exact(PRICE, asset=devnet.usdc),
    }
    facilitator = LocalFacilitator(devnet.rpc_url, devnet.facilitator)
    app = PaymentMiddleware(
        paid_app(seen), facilitator=facilitator, routes=routes, network=devnet.network, pay_to=devnet.payee.address
    )
    with serve_app(app) as url, serve_app(V1Challenges(app)) as v1_url:
        yield url, v1_url, seen


@pytest.fixture
def paid(servers: tuple[str, str, Seen], x402pay_chain: Devnet) -> Paid:
    url, v1_url, seen = servers
    seen.bodies.clear()
    seen.gate.clear()
    seen.gate_opened_in_time.clear()
    return Paid(url, v1_url, x402pay_chain, seen)


def wallet_of(devnet: Devnet) -> Wallet:
    return Wallet(devnet.payers[0])


def policy(cap: int = 50_000) -> SpendPolicy:
    return SpendPolicy(max_per_request=cap, networks=("eip155:31337",))


def fetch(flavour: str, devnet: Devnet, method: str, url: str, cap: int = 50_000, **kwargs: Any) -> Any:
    """One request through a paying client of the given flavour; returns the (read) response."""
    if flavour == "requests":
        with requests.Session() as session:
            session.mount("http://", PaymentAdapter(wallet=wallet_of(devnet), policy=policy(cap)))
            return session.request(method, url, data=kwargs.pop("content", None), timeout=60, **kwargs)
    library = {"httpx": httpx, "httpx2": httpx2}[flavour.split("-")[0]]
    if flavour.endswith("async"):
        transport: Any = AsyncPaymentTransport(wallet=wallet_of(devnet), policy=policy(cap))

        async def go() -> Any:
            async with library.AsyncClient(transport=transport, timeout=60) as client:
                return await client.request(method, url, **kwargs)

        return anyio.run(go)
    with library.Client(transport=PaymentTransport(wallet=wallet_of(devnet), policy=policy(cap)), timeout=60) as client:
        return client.request(method, url, **kwargs)


FLAVOURS = ["httpx-sync", "httpx-async", "httpx2-sync", "httpx2-async", "requests"]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_paid_get_moves_exactly_the_price(paid: Paid, flavour: str) -> None:
    payer, payee = paid.devnet.payers[0].address, paid.devnet.payee.address
    before = paid.balance(payer), paid.balance(payee)

    response = fetch(flavour, paid.devnet, "GET", paid.url + "/report")

    assert response.status_code == 200
    assert response.json() == {"report": "the good stuff"}
    assert type(response).__module__.split(".")[0] == flavour.split("-")[0]
    assert (paid.balance(payer), paid.balance(payee)) == (before[0] - PRICE, before[1] + PRICE)
    payment = payment_of(response)
    assert payment is not None
    assert payment.status is PaymentStatus.SETTLED
    assert payment.settled_amount == payment.signed_amount == PRICE
    assert payment.payer == payer
    receipt = paid.devnet.web3().eth.get_transaction_receipt(payment.transaction)
    assert receipt["status"] == 1


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_paid_post_replays_its_body_byte_for_byte(paid: Paid, flavour: str) -> None:
    body = bytes(range(256)) * 64

    response = fetch(flavour, paid.devnet, "POST", paid.url + "/echo", content=body)

    assert response.status_code == 200
    assert response.content == body
    assert paid.seen.bodies == [body]  # the app ran once, on the paid retry, with the same bytes


@pytest.mark.parametrize("flavour", ["httpx-sync", "requests"])
def test_a_generator_body_is_buffered_and_replayed(paid: Paid, flavour: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"first,"
        yield b"second"

    response = fetch(flavour, paid.devnet, "POST", paid.url + "/echo", content=chunks())

    assert response.content == b"first,second"


@pytest.mark.parametrize("flavour", ["httpx-sync", "httpx2-async", "requests"])
def test_a_v1_body_challenge_is_paid_with_x_payment(paid: Paid, flavour: str) -> None:
    payee = paid.devnet.payee.address
    before = paid.balance(payee)

    response = fetch(flavour, paid.devnet, "GET", paid.v1_url + "/report")

    assert response.status_code == 200
    assert paid.balance(payee) == before + PRICE
    payment = payment_of(response)
    assert payment is not None
    assert payment.x402_version == 1
    assert payment.status is PaymentStatus.SETTLED


def test_permit2_exact_settles_through_the_proxy(paid: Paid) -> None:
    payee = paid.devnet.payee.address
    before = paid.balance(payee)

    response = fetch("httpx-sync", paid.devnet, "GET", paid.url + "/permit2")

    assert response.status_code == 200
    assert paid.balance(payee) == before + PRICE
    payment = payment_of(response)
    assert payment is not None
    assert payment.signed.method == "permit2"


def test_a_price_over_the_cap_is_refused_and_nothing_moves(paid: Paid) -> None:
    payer = paid.devnet.payers[0].address
    before = paid.balance(payer)

    with pytest.raises(SpendCapExceeded, match="max_per_request 9999"):
        fetch("httpx-sync", paid.devnet, "GET", paid.url + "/report", cap=PRICE - 1)

    assert paid.balance(payer) == before


def test_a_payer_without_funds_gets_payment_rejected_with_the_reason(paid: Paid) -> None:
    broke = Wallet.from_key("0x" + "42" * 32)
    client = httpx.Client(transport=PaymentTransport(wallet=broke, policy=policy()), timeout=60)

    with client, pytest.raises(PaymentRejected) as caught:
        client.get(paid.url + "/report")

    assert caught.value.reason is not None
    assert "insufficient" in caught.value.reason or "simulation" in caught.value.reason


def test_a_streamed_paid_response_arrives_in_chunks(paid: Paid) -> None:
    transport = PaymentTransport(wallet=wallet_of(paid.devnet), policy=policy())
    with (
        httpx.Client(transport=transport, timeout=60) as client,
        client.stream("GET", paid.url + "/stream") as response,
    ):
        lines = response.iter_lines()
        first = next(line for line in lines if line)
        # The server has not produced its second frame yet: it waits for this gate.
        assert first == 'data: {"n":1}'
        paid.seen.gate.set()
        rest = [line for line in lines if line]
    assert paid.seen.gate_opened_in_time == [True]  # a buffering client would have let the server time out
    assert rest == ['data: {"n":2}', "data: [DONE]"]  # the in-band receipt frame was taken out of the stream
    payment = payment_of(response)
    assert payment is not None
    assert payment.status is PaymentStatus.SETTLED
    assert payment.receipt is not None
    assert payment.receipt.source == "sse"
    assert payment.settled_amount == PRICE
    assert paid.devnet.web3().eth.get_transaction_receipt(payment.transaction)["status"] == 1


def test_a_streamed_paid_response_arrives_in_chunks_through_requests(paid: Paid) -> None:
    with requests.Session() as session:
        session.mount("http://", PaymentAdapter(wallet=wallet_of(paid.devnet), policy=policy()))
        with session.get(paid.url + "/stream", stream=True, timeout=60) as response:
            lines = response.iter_lines(decode_unicode=True)
            first = next(line for line in lines if line)
            assert first == 'data: {"n":1}'  # the server waits for the gate before its second frame
            paid.seen.gate.set()
            rest = [line for line in lines if line]
    assert paid.seen.gate_opened_in_time == [True]
    assert rest == ['data: {"n":2}', "data: [DONE]"]  # the receipt frame was taken out of the stream
    payment = payment_of(response)
    assert payment is not None
    assert payment.receipt is not None
    assert (payment.status, payment.receipt.source, payment.settled_amount) == (PaymentStatus.SETTLED, "sse", PRICE)
    assert paid.devnet.web3().eth.get_transaction_receipt(payment.transaction)["status"] == 1
