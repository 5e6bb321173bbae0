"""What each origin learns, recorded on loopback: the ceiling and the idempotency key reach only origins the
policy would pay, the payment only the origin that asked, also across redirects.

The paid origin is the demo API on anvil behind a recording proxy; the other origins are real servers that record
every request's headers: one the policy does not pay, and one it does that redirects there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
from dropping_proxy import dropping_proxy
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from x402pay import PaymentAdapter, PaymentTransport, SpendPolicy, Wallet, payment_of
from x402pay.server._demo import DemoConfig, running_demo
from x402pay.server._serving import serve_app
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

OURS = ("x-x402-max-amount-wei", "idempotency-key", "payment-signature", "x-payment")
CHAT: Any = {"model": "demo", "messages": [{"role": "user", "content": "who hears what"}]}


@pytest.fixture(scope="module")
def demo_url(x402pay_devnet: Devnet) -> Iterator[str]:
    with running_demo(x402pay_devnet, config=DemoConfig(upto_max=1_000_000)) as url:
        yield url


def recording_origin(seen: list[dict[str, str]], redirect_to: str | None = None) -> Starlette:
    async def anything(request: Request) -> Response:
        seen.append({name.lower(): value for name, value in request.headers.items()})
        if redirect_to is not None:
            return RedirectResponse(redirect_to, status_code=307)
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/{path:path}", anything, methods=["GET", "POST"])])


def heard(headers: dict[str, str]) -> set[str]:
    return {name for name in OURS if name in headers}


def call_through(driver: str, devnet: Devnet, policy: SpendPolicy, urls: list[str]) -> list[Any]:
    wallet = Wallet(devnet.payers[0])
    if driver == "httpx":
        with httpx.Client(transport=PaymentTransport(wallet=wallet, policy=policy), follow_redirects=True) as client:
            return [client.post(url, json=CHAT, timeout=60) for url in urls]
    with requests.Session() as session:
        session.mount("http://", PaymentAdapter(wallet=wallet, policy=policy))
        return [session.post(url, json=CHAT, timeout=60) for url in urls]


@pytest.mark.parametrize("driver", ["httpx", "requests"])
def test_only_origins_the_policy_pays_hear_the_ceiling_and_the_key(
    driver: str, x402pay_chain: Devnet, demo_url: str
) -> None:
    outside: list[dict[str, str]] = []
    hopping: list[dict[str, str]] = []
    with (
        dropping_proxy(demo_url, drops=0, after_settling=False) as (paid_url, paid),
        serve_app(recording_origin(outside)) as outside_url,
        serve_app(recording_origin(hopping, redirect_to=f"{outside_url}/after-the-hop")) as hop_url,
    ):
        policy = SpendPolicy(max_per_request=200_000, origins={paid_url, hop_url})
        answers = call_through(
            driver, x402pay_chain, policy, [f"{outside_url}/v1/x", f"{hop_url}/v1/x", f"{paid_url}/v1/chat/completions"]
        )
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert payment_of(answers[2]) is not None
    assert len(outside) == 2  # asked directly, and at the end of the hop
    assert [heard(headers) for headers in outside] == [set(), set()]
    assert heard(hopping[0]) == {"x-x402-max-amount-wei", "idempotency-key"}  # a payable origin, unpaid
    paid_heads = [head.decode("latin-1").lower() for head in paid.heads]
    assert len(paid_heads) == 2
    assert all("x-x402-max-amount-wei" in head and "idempotency-key" in head for head in paid_heads)
    assert ["payment-signature" in head for head in paid_heads] == [False, True]
