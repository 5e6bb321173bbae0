"""The Compose-compatible demo API, paid: upto on the generation routes (metered by the fake model's tokens),
exact on ``GET /v1/fortune``, a payment channel on ``GET /v1/fortune/channel`` (when the facilitator holds a
receiverAuthorizer key); `running_demo` serves it on a devnet for tests, `serve_demo` for the CLI.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from eth_account import Account
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from x402pay._protocol.networks import caip2
from x402pay.server._demo.chat import chat_completions
from x402pay.server._demo.messages import create_message
from x402pay.server._demo.model import MODEL_NAME, Meter
from x402pay.server._demo.responses_api import (
    ResponseStore,
    cancel_response,
    create_response,
    list_input_items,
    retrieve_response,
)
from x402pay.server._facilitator import Facilitator
from x402pay.server._local import LocalFacilitator
from x402pay.server._middleware import PaymentMiddleware
from x402pay.server._pricing import Price
from x402pay.server._serving import serve_app

if TYPE_CHECKING:
    from x402pay.testing import Devnet

#: The generation routes, priced upto.
METERED_ROUTES = ("POST /v1/chat/completions", "POST /api/inference", "POST /v1/responses", "POST /v1/messages")
FORTUNE = "A paid request is a promise kept on chain."


@dataclass(frozen=True)
class DemoConfig:
    """Prices of the demo API, in atomic USDC units: the upto maximum (0.1 USDC: under the official clients'
    default cap of 1 USDC per payment, which a maximum of exactly 1 USDC would meet only without a lower cap),
    the exact price, the channel price (a deposit of ten of them, then a voucher a call), the per-token meter; and
    whether its Permit2 routes offer gas-free approval
    (``eip2612GasSponsoring``)."""

    upto_max: int = 100_000
    exact_price: int = 10_000
    channel_price: int = 1_000
    meter: Meter = field(default_factory=Meter)
    gas_sponsoring: bool = True


def demo_api(meter: Meter | None = None) -> Starlette:
    """The unpaid API: chat completions, Responses (with a store), Anthropic Messages, ``/api/inference``, models,
    the fortune."""
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/api/inference", chat_completions, methods=["POST"]),
            Route("/v1/responses", create_response, methods=["POST"]),
            Route("/v1/responses/{response_id}", retrieve_response, methods=["GET"]),
            Route("/v1/responses/{response_id}/input_items", list_input_items, methods=["GET"]),
            Route("/v1/responses/{response_id}/cancel", cancel_response, methods=["POST"]),
            Route("/v1/messages", create_message, methods=["POST"]),
            Route("/v1/models", _models, methods=["GET"]),
            Route("/v1/fortune", _fortune, methods=["GET"]),
            Route("/v1/fortune/channel", _fortune, methods=["GET"]),
        ]
    )
    app.state.meter = meter or Meter()
    app.state.responses = ResponseStore()
    return app


def demo_routes(asset: str, config: DemoConfig, receiver_authorizer: str | None = None) -> dict[str, Price]:
    """The demo's price table (the channel route only with a `receiver_authorizer`)."""
    routes = {
        route: Price.upto(config.upto_max, asset=asset, description="fake model inference") for route in METERED_ROUTES
    }
    routes["GET /v1/fortune"] = Price.exact(config.exact_price, asset=asset, description="one fortune")
    if receiver_authorizer is not None:
        routes["GET /v1/fortune/channel"] = Price.channel(
            config.channel_price, asset=asset, receiver_authorizer=receiver_authorizer,
            description="one fortune, paid from a channel",
        )  # fmt: skip
    return routes


def demo_app(
    *, facilitator: Facilitator, network: str, asset: str, pay_to: str, config: DemoConfig | None = None
) -> PaymentMiddleware:
    """The demo API behind `PaymentMiddleware` (a channel route when a `LocalFacilitator` holds a channel key)."""
    config = config or DemoConfig()
    authorizer = facilitator.channels.authorizer if isinstance(facilitator, LocalFacilitator) else None
    return PaymentMiddleware(
        demo_api(config.meter),
        facilitator=facilitator,
        network=network,
        pay_to=pay_to,
        routes=demo_routes(asset, config, authorizer.address if authorizer is not None else None),
        gas_sponsoring=config.gas_sponsoring,
    )


@contextlib.contextmanager
def running_demo(devnet: Devnet, *, config: DemoConfig | None = None) -> Iterator[str]:
    """Serve the paid demo on loopback against `devnet` (its facilitator account settles, its payee is paid).

    Yields the base URL; the server stops when the block exits.
    """
    facilitator = LocalFacilitator(devnet.rpc_url, devnet.facilitator, channel_authorizer=Account.create())
    app = demo_app(
        facilitator=facilitator, network=devnet.network, asset=devnet.usdc, pay_to=devnet.payee.address, config=config
    )
    with serve_app(app) as url:
        yield url


def serve_demo(
    *,
    rpc_url: str,
    facilitator_key: str,
    asset: str,
    pay_to: str,
    host: str = "127.0.0.1",
    port: int = 8402,
    config: DemoConfig | None = None,
    settlements: str | Path | None = None,
    receipt_timeout: float = 30.0,
) -> None:
    """Run the paid demo API with uvicorn until interrupted (blocking); for ``x402pay serve-demo``.

    `facilitator_key` is the hex private key of the account that settles (and pays gas) on `rpc_url`;
    `settlements` the SQLite file of the settlements it sends (its directory is made), `receipt_timeout` how long
    a settlement waits to be mined before the answer says ``settlement_pending``. The facilitator's key also
    signs the channel route's claims and refunds (its receiverAuthorizer).
    """
    if settlements is not None:
        Path(settlements).parent.mkdir(parents=True, exist_ok=True)
    account = Account.from_key(facilitator_key)
    facilitator = LocalFacilitator(
        rpc_url, account, receipt_timeout=receipt_timeout, settlements=settlements, channel_authorizer=account
    )
    app = demo_app(
        facilitator=facilitator, network=caip2(facilitator.chain_id), asset=asset, pay_to=pay_to, config=config
    )
    uvicorn.run(app, host=host, port=port, log_level="info")


async def _models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [{"id": MODEL_NAME, "object": "model", "owned_by": "x402pay"}]})


async def _fortune(request: Request) -> Response:
    return JSONResponse({"fortune": FORTUNE})
