"""The paid test app of tests/server: its routes and prices, and `paid_server`, which serves it behind
PaymentMiddleware + LocalFacilitator on loopback, on the devnet."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from x402pay.server import LineItem, LocalFacilitator, PaymentMiddleware, Price, paid_request
from x402pay.server._serving import serve_app
from x402pay.testing import Devnet

PRICE = 10_000  # 0.01 USDC
UPTO_MAX = 50_000


@dataclass
class Probe:
    """What the app saw, and a gate a streaming test opens once its first chunk has arrived."""

    calls: list[str] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)


def make_app(probe: Probe) -> Starlette:
    async def paid(request: Request) -> Response:
        probe.calls.append(request.url.path)
        return JSONResponse({"report": "the good stuff"})

    async def metered(request: Request) -> Response:
        probe.calls.append(request.url.path)
        use = (await request.json())["use"]
        item = LineItem(key="output_tokens", unit="tokens", quantity=use, unit_price_usd=0.000001, amount_wei=use)
        paid_request(request.scope).charge(use, line_items=[item], subject="fake-model")
        return JSONResponse({"used": use})

    async def metered_by_header(request: Request) -> Response:
        probe.calls.append(request.url.path)
        use = (await request.json())["use"]
        return JSONResponse({"used": use}, headers={"Settlement-Overrides": f'{{"amount":"{use}"}}'})

    async def stream(request: Request) -> Response:
        probe.calls.append(request.url.path)
        body = await request.json()

        async def frames() -> AsyncIterator[str]:
            if body.get("charge_first"):  # metered before the content: a cut stream still has its charge
                paid_request(request.scope).charge(body["use"])
            yield 'data: {"n":1}\n\n'
            if body.get("wait"):
                await anyio.to_thread.run_sync(probe.gate.wait, 20)
            if body.get("charge_first"):
                await anyio.sleep(0.5)  # a checkpoint, where a client that left is noticed
            yield 'data: {"n":2}\n\n'
            if request.scope["state"]["x402pay"].scheme == "upto" and not body.get("charge_first"):
                paid_request(request.scope).charge(body["use"])
            yield "data: [DONE]\n\n"

        return StreamingResponse(frames(), media_type="text/event-stream")

    async def broken(request: Request) -> Response:
        probe.calls.append(request.url.path)
        return JSONResponse({"error": "the app failed"}, status_code=500)

    async def free(request: Request) -> Response:
        return JSONResponse({"free": True})

    return Starlette(
        routes=[
            Route("/paid", paid),
            Route("/paid-permit2", paid),
            Route("/metered", metered, methods=["POST"]),
            Route("/metered-by-header", metered_by_header, methods=["POST"]),
            Route("/stream", stream, methods=["POST"]),
            Route("/stream-exact", stream, methods=["POST"]),
            Route("/broken", broken),
            Route("/free", free),
        ]
    )


def routes(devnet: Devnet) -> dict[str, Any]:
    usdc = devnet.usdc
    return {
        "GET /paid": Price.exact(PRICE, asset=usdc, description="a paid report"),
        "GET /paid-permit2": Price.exact(PRICE, asset=usdc, transfer="permit2"),
        "POST /metered": Price.upto(UPTO_MAX, asset=usdc),
        "POST /metered-by-header": Price.upto(UPTO_MAX, asset=usdc),
        "POST /stream": Price.upto(UPTO_MAX, asset=usdc),
        "POST /stream-exact": Price.exact(PRICE, asset=usdc),
        "GET /broken": Price.exact(PRICE, asset=usdc),
    }


@dataclass
class PaidServer:
    url: str
    devnet: Devnet
    probe: Probe
    client: httpx.Client

    def balance(self, address: str) -> int:
        return int(self.devnet.contract("TestUSDC", self.devnet.usdc).functions.balanceOf(address).call())


@contextlib.contextmanager
def paid_server(
    devnet: Devnet, facilitator: LocalFacilitator, *, port: int = 0, **options: Any
) -> Iterator[PaidServer]:
    """The test app behind PaymentMiddleware (`options` go to the middleware), served on loopback (on `port`, or
    any free one)."""
    probe = Probe()
    app = PaymentMiddleware(
        make_app(probe),
        facilitator=facilitator,
        network=devnet.network,
        pay_to=devnet.payee.address,
        routes=routes(devnet),
        **options,
    )
    with serve_app(app, port=port) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield PaidServer(url, devnet, probe, client)
        probe.gate.set()
