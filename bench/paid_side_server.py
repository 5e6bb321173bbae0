"""One tiny app behind three paid sides, for `bench.bench_paid_side`: run as a subprocess per stack.

The app (Starlette, the same for every stack):

- ``GET /exact``: a small JSON body, with ``x-app-at`` (the handler's ``time.perf_counter()``, CLOCK_MONOTONIC on
  Linux, so comparable across processes) so that the client can split its latency into before and after the app.
- ``POST /stream``: an SSE answer of `FRAMES` ``data:`` frames, `FRAME_GAP` seconds apart (a model producing
  tokens), then ``data: [DONE]``; it reports the metered charge, `UPTO_CHARGE`, in a ``Settlement-Overrides``
  header, which both paid sides read.

Stacks: ``unpaid`` (the app alone, the floor), ``x402pay`` (`PaymentMiddleware` + `LocalFacilitator`),
``x402pay-chain`` (the same with ``verify_ttl=0``: every payment is checked on chain, as a payer's first is),
``official`` (the official SDK's FastAPI/Starlette ``PaymentMiddlewareASGI`` + ``x402ResourceServer`` + its in-process
``x402Facilitator`` with ``FacilitatorWeb3Signer``, wired as its docstrings show). Both paid sides settle for real
on the anvil at RPC_URL, each from its own funded account, and price ``/exact`` at `PRICE` (EIP-3009) and
``/stream`` at up to `UPTO_MAX` (Permit2), both with a `TIMEOUT` s maximum authorization lifetime.

``python -m bench.paid_side_server STACK RPC_URL USDC`` prints ``port N`` once it listens, then serves until
terminated.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from bench.harness import serve_here
from x402pay.testing import anvil_account

STACKS: Final = ("unpaid", "x402pay", "x402pay-chain", "official")
NETWORK: Final = "eip155:31337"
PRICE: Final = 10_000  # 0.01 USDC
UPTO_MAX: Final = 50_000
UPTO_CHARGE: Final = 1_234
TIMEOUT: Final = 3600
FRAMES: Final = 5
FRAME_GAP: Final = 0.002
PAYEE_INDEX: Final = 2
#: anvil dev accounts that send the settlements: the devnet's facilitator, and one no devnet role uses.
FACILITATOR_INDEX: Final = {"x402pay": 1, "official": 7, "x402pay-chain": 8}
_DOMAIN: Final = {"name": "USD Coin", "version": "2"}


async def exact(request: Request) -> Response:
    """The paid report: tiny, and it says when it ran."""
    return JSONResponse({"report": "the good stuff"}, headers={"x-app-at": repr(time.perf_counter())})


async def stream(request: Request) -> Response:
    """A metered SSE answer: `FRAMES` frames `FRAME_GAP` s apart, then ``[DONE]``; it used `UPTO_CHARGE`."""

    async def frames() -> AsyncIterator[bytes]:
        for index in range(FRAMES):
            if index:
                await asyncio.sleep(FRAME_GAP)
            yield b'data: {"choices":[{"delta":{"content":"token %d"}}]}\n\n' % index
        yield b"data: [DONE]\n\n"

    overrides = {"Settlement-Overrides": f'{{"amount":"{UPTO_CHARGE}"}}'}
    return StreamingResponse(frames(), media_type="text/event-stream", headers=overrides)


def tiny_app(middleware: list[Middleware] | None = None) -> Starlette:
    """The app every stack serves."""
    routes = [Route("/exact", exact), Route("/stream", stream, methods=["POST"])]
    return Starlette(routes=routes, middleware=middleware)


def x402pay_app(rpc_url: str, usdc: str, stack: str = "x402pay") -> ASGIApp:
    """The app behind x402pay's PaymentMiddleware and LocalFacilitator (``x402pay-chain``: with ``verify_ttl=0``)."""
    from x402pay.server import LocalFacilitator, PaymentMiddleware, Price

    account = anvil_account(FACILITATOR_INDEX[stack])
    return PaymentMiddleware(
        tiny_app(),
        facilitator=LocalFacilitator(rpc_url, account, verify_ttl=0 if stack == "x402pay-chain" else 30.0),
        network=NETWORK,
        pay_to=anvil_account(PAYEE_INDEX).address,
        routes={
            "GET /exact": Price.exact(PRICE, asset=usdc, max_timeout_seconds=TIMEOUT),
            "POST /stream": Price.upto(UPTO_MAX, asset=usdc, max_timeout_seconds=TIMEOUT),
        },
        gas_sponsoring=False,  # the official server offers none either: the same challenge shape
    )


def official_app(rpc_url: str, usdc: str) -> ASGIApp:
    """The app behind the official SDK's middleware, resource server and in-process facilitator."""
    from x402 import x402Facilitator, x402ResourceServer
    from x402.http.middleware.fastapi import PaymentMiddlewareASGI
    from x402.http.types import PaymentOption, RouteConfig
    from x402.mechanisms.evm.exact import ExactEvmFacilitatorScheme, ExactEvmServerScheme
    from x402.mechanisms.evm.signers import FacilitatorWeb3Signer
    from x402.mechanisms.evm.upto import UptoEvmFacilitatorScheme, UptoEvmServerScheme

    key = anvil_account(FACILITATOR_INDEX["official"]).key.to_0x_hex()
    signer = FacilitatorWeb3Signer(private_key=key, rpc_url=rpc_url)
    facilitator = x402Facilitator()
    facilitator.register([NETWORK], ExactEvmFacilitatorScheme(signer))
    facilitator.register([NETWORK], UptoEvmFacilitatorScheme(signer))
    server = x402ResourceServer(facilitator)
    server.register(NETWORK, ExactEvmServerScheme())
    server.register(NETWORK, UptoEvmServerScheme())
    pay_to = anvil_account(PAYEE_INDEX).address

    def option(scheme: str, amount: int) -> Any:
        price = {"amount": str(amount), "asset": usdc, "extra": dict(_DOMAIN)}
        return PaymentOption(scheme=scheme, pay_to=pay_to, price=price, network=NETWORK, max_timeout_seconds=TIMEOUT)

    routes = {
        "GET /exact": RouteConfig(accepts=option("exact", PRICE)),
        "POST /stream": RouteConfig(accepts=option("upto", UPTO_MAX)),
    }
    return tiny_app([Middleware(PaymentMiddlewareASGI, routes=routes, server=server)])


def build(stack: str, rpc_url: str, usdc: str) -> ASGIApp:
    """The ASGI app of `stack`."""
    builders: dict[str, Callable[[str, str], ASGIApp]] = {
        "unpaid": lambda _rpc, _usdc: tiny_app(),
        "x402pay": x402pay_app,
        "x402pay-chain": lambda rpc, usdc: x402pay_app(rpc, usdc, "x402pay-chain"),
        "official": official_app,
    }
    return builders[stack](rpc_url, usdc)


def main(argv: list[str]) -> None:
    """Serve STACK on a free loopback port (printed as ``port N``) until terminated."""
    stack, rpc_url, usdc = argv
    serve_here(build(stack, rpc_url, usdc))


if __name__ == "__main__":
    main(sys.argv[1:])
