"""One tiny app behind x402pay's PaymentMiddleware + LocalFacilitator, priced three ways, for `bench.bench_channels`.

- ``GET /exact``: `PRICE`, exact (EIP-3009): one transfer on chain per request, settled before the answer;
- ``GET /upto``: up to `PRICE` (Permit2), the app charging all of it: one proxy settlement per request;
- ``GET /channel``: `PRICE` from a payment channel (``batch-settlement``, EIP-3009 deposits, the SDKs' deposit hint
  of ten times the price): a deposit now and then, otherwise an off-chain voucher checked by the server alone.

The facilitator (the devnet's, anvil account 1) sends every settlement and pays its gas; it holds the channel's
receiverAuthorizer key, given on the command line (a throwaway test key), and the server keeps its vouchers in the
SQLite channel store STORE, where the benchmark's claims manager finds them.

``python -m bench.channel_server RPC_URL USDC STORE AUTHORIZER_KEY`` prints ``port N`` once it listens, then serves
until terminated.
"""

from __future__ import annotations

import sys
from typing import Final

from eth_account import Account
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from bench.harness import serve_here
from x402pay.testing import anvil_account

NETWORK: Final = "eip155:31337"
PRICE: Final = 1_000  # 0.001 USDC
TIMEOUT: Final = 3600
PAYEE_INDEX: Final = 2
FACILITATOR_INDEX: Final = 1


async def report(request: Request) -> Response:
    """The paid answer; a metered request uses all of its maximum."""
    from x402pay.server import paid_request

    paid = paid_request(request.scope)
    if paid is not None and paid.requirement.scheme == "upto":
        paid.charge(PRICE)
    return JSONResponse({"report": "the good stuff"})


def build(rpc_url: str, usdc: str, store: str, authorizer_key: str) -> ASGIApp:
    """The app behind the middleware, with the three prices."""
    from x402pay.server import LocalFacilitator, PaymentMiddleware, Price

    authorizer = Account.from_key(authorizer_key)
    facilitator = LocalFacilitator(rpc_url, anvil_account(FACILITATOR_INDEX), channel_authorizer=authorizer)
    app = Starlette(routes=[Route(path, report) for path in ("/exact", "/upto", "/channel")])
    return PaymentMiddleware(
        app,
        facilitator=facilitator,
        network=NETWORK,
        pay_to=anvil_account(PAYEE_INDEX).address,
        routes={
            "GET /exact": Price.exact(PRICE, asset=usdc, max_timeout_seconds=TIMEOUT),
            "GET /upto": Price.upto(PRICE, asset=usdc, max_timeout_seconds=TIMEOUT),
            "GET /channel": Price.channel(
                PRICE, asset=usdc, receiver_authorizer=authorizer.address, max_timeout_seconds=TIMEOUT
            ),
        },
        channels=store,
        gas_sponsoring=False,
    )


def main(argv: list[str]) -> None:
    """Serve on a free loopback port (printed as ``port N``) until terminated."""
    rpc_url, usdc, store, authorizer_key = argv
    serve_here(build(rpc_url, usdc, store, authorizer_key))


if __name__ == "__main__":
    main(sys.argv[1:])
