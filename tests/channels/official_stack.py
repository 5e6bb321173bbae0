"""The official x402 SDK's batch-settlement server and facilitator on the devnet, served by uvicorn on loopback.

`official_server` builds the SDK's ``x402ResourceServer`` with its ``BatchSettlementEvmScheme`` over its in-process
``x402Facilitator`` (``BatchSettlementEvmFacilitator``, sending as the devnet's facilitator), behind its
``PaymentMiddlewareASGI``, as the SDK's docstrings wire them. Two routes: ``GET /report`` charges the whole price,
``GET /metered`` charges `METERED` of it (``Settlement-Overrides``). `manager` is the SDK's own channel manager,
which claims the vouchers the server holds and sweeps them to the receiver. None of the SDK's code is copied.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from eth_account import Account
from eth_account.signers.local import LocalAccount
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from x402 import x402Facilitator, x402FacilitatorSync, x402ResourceServer
from x402.http.middleware.fastapi import PaymentMiddlewareASGI
from x402.http.types import PaymentOption, RouteConfig
from x402.mechanisms.evm.batch_settlement.authorizer_signer import LocalAuthorizerSigner
from x402.mechanisms.evm.batch_settlement.facilitator.scheme import BatchSettlementEvmFacilitator
from x402.mechanisms.evm.batch_settlement.server.channel_manager_common import ChannelManagerConfigSync
from x402.mechanisms.evm.batch_settlement.server.channel_manager_sync import BatchSettlementChannelManagerSync
from x402.mechanisms.evm.batch_settlement.server.scheme import (
    BatchSettlementEvmScheme,
    BatchSettlementEvmSchemeServerConfig,
)
from x402.mechanisms.evm.signers import FacilitatorWeb3Signer

from x402pay.server import serve_app
from x402pay.testing import Devnet

PRICE: Final = 1_000
METERED: Final = 600
DELAY: Final = 900
TIMEOUT: Final = 3_600


async def report(request: Request) -> Response:
    """A paid answer at the full price."""
    return JSONResponse({"report": "the good stuff"})


async def metered(request: Request) -> Response:
    """A paid answer that used only `METERED` of the price."""
    return JSONResponse({"report": "a little"}, headers={"Settlement-Overrides": json.dumps({"amount": str(METERED)})})


@dataclass
class OfficialStack:
    """The served official stack: its URL, its scheme (the server's channel records) and its receiver side."""

    url: str
    scheme: BatchSettlementEvmScheme
    facilitator_scheme: BatchSettlementEvmFacilitator
    authorizer: LocalAccount
    devnet: Devnet

    def manager(self) -> BatchSettlementChannelManagerSync:
        """The SDK's channel manager for this receiver (claims vouchers, sweeps to the receiver)."""
        facilitator = x402FacilitatorSync().register([self.devnet.network], self.facilitator_scheme)
        config = ChannelManagerConfigSync(self.scheme, facilitator, self.devnet.payee.address, self.devnet.usdc,
                                          self.devnet.network)  # fmt: skip
        return BatchSettlementChannelManagerSync(config)


def _option(devnet: Devnet, method: str, price: int) -> Any:
    extra = {"name": "USD Coin", "version": "2", "assetTransferMethod": method}
    return PaymentOption(
        scheme="batch-settlement", pay_to=devnet.payee.address, network=devnet.network,
        price={"amount": str(price), "asset": devnet.usdc, "extra": extra}, max_timeout_seconds=TIMEOUT,
    )  # fmt: skip


@contextmanager
def official_server(devnet: Devnet, method: str = "eip3009", price: int = PRICE) -> Iterator[OfficialStack]:
    """Serve the official stack for `method` deposits at `price` per request until the block exits."""
    authorizer = Account.create()
    signer = FacilitatorWeb3Signer(private_key="0x" + bytes(devnet.facilitator.key).hex(), rpc_url=devnet.rpc_url)
    facilitator_scheme = BatchSettlementEvmFacilitator(signer, authorizer_signer=LocalAuthorizerSigner(authorizer))
    facilitator = x402Facilitator().register([devnet.network], facilitator_scheme)
    config = BatchSettlementEvmSchemeServerConfig(
        receiver_authorizer_signer=LocalAuthorizerSigner(authorizer), withdraw_delay=DELAY
    )
    scheme = BatchSettlementEvmScheme(devnet.payee.address, config)
    server = x402ResourceServer(facilitator).register(devnet.network, scheme)
    routes = {
        "GET /report": RouteConfig(accepts=_option(devnet, method, price)),
        "GET /metered": RouteConfig(accepts=_option(devnet, method, price)),
    }
    app = Starlette(
        routes=[Route("/report", report), Route("/metered", metered)],
        middleware=[Middleware(PaymentMiddlewareASGI, routes=routes, server=server)],
    )
    with serve_app(app) as url:
        yield OfficialStack(url, scheme, facilitator_scheme, authorizer, devnet)
