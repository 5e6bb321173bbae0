# ruff: noqa: E402  -- the extra is checked before the modules that need it are imported
"""The paid side of x402: ASGI payment middleware, facilitators, and a Compose-compatible demo API.

    from x402pay.server import LocalFacilitator, PaymentMiddleware, Price

    app = PaymentMiddleware(
        app,
        facilitator=LocalFacilitator(rpc_url, facilitator_account),
        network="eip155:8453",
        pay_to=merchant_address,
        routes={
            "GET /report": Price.exact(10_000, asset=USDC),
            "POST /v1/chat/completions": Price.upto(50_000, asset=USDC),
            "GET /quote": Price.channel(1_000, asset=USDC, receiver_authorizer=authorizer.address),
        },
    )

A channel price is paid by a deposit once and a voucher a request; `ChannelClaims` claims the vouchers in time.

Needs the ``server`` extra (starlette, uvicorn); without it, importing this package raises `MissingExtra` (an
ImportError) naming the pip command.
"""

from x402pay import _extras

_extras.require_extra("server", "x402pay.server")

from x402pay.errors import FacilitatorError, MalformedPayment, ServerStartError
from x402pay.server._channel_claims import ChannelClaims
from x402pay.server._channel_store import ChannelRecord, ChannelStore
from x402pay.server._facilitator import Facilitator, SupportedKind, SupportedResponse, VerifyResponse
from x402pay.server._local import LocalFacilitator
from x402pay.server._middleware import PaymentMiddleware
from x402pay.server._pricing import MAX_AMOUNT_HEADER, Price
from x402pay.server._receipts import LineItem, PaidRequest, paid_request
from x402pay.server._remote import HTTPFacilitator, facilitator_app
from x402pay.server._serving import serve_app
from x402pay.server._settlements import Broadcast, SettlementStore

__all__ = [
    "MAX_AMOUNT_HEADER",
    "Broadcast",
    "ChannelClaims",
    "ChannelRecord",
    "ChannelStore",
    "Facilitator",
    "FacilitatorError",
    "HTTPFacilitator",
    "LineItem",
    "LocalFacilitator",
    "MalformedPayment",
    "PaidRequest",
    "PaymentMiddleware",
    "Price",
    "ServerStartError",
    "SettlementStore",
    "SupportedKind",
    "SupportedResponse",
    "VerifyResponse",
    "facilitator_app",
    "paid_request",
    "serve_app",
]
