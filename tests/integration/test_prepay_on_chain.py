"""Pre-payment against a real x402 server on anvil (PaymentMiddleware + LocalFacilitator behind uvicorn).

After one reactive payment to a route, the next request to it carries a fresh payment from the start: one round
trip. A price change is paid reactively once; a refusal on the same terms is never signed for twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from x402pay import (
    AsyncPaymentTransport,
    PaymentRejected,
    PaymentStatus,
    PaymentTransport,
    SpendCapExceeded,
    SpendPolicy,
    Wallet,
    payment_of,
)
from x402pay.ledger import Budget, Ledger
from x402pay.server import LocalFacilitator, PaymentMiddleware, Price
from x402pay.server._serving import serve_app
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

PRICE = 10_000
RAISED = 12_000


@dataclass
class Switch:
    """The paid server: two price lists behind one address, and a log of (path, paid?) per request."""

    apps: dict[str, Any]
    current: str = "normal"
    seen: list[tuple[str, bool]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            paid = any(name == b"payment-signature" for name, _ in scope["headers"])
            self.seen.append((scope["path"], paid))
        await self.apps[self.current](scope, receive, send)


@dataclass
class Server:
    url: str
    switch: Switch
    devnet: Devnet

    def balance(self, address: str) -> int:
        usdc = self.devnet.contract("TestUSDC", self.devnet.usdc)
        return int(usdc.functions.balanceOf(address).call())


def content_app() -> Starlette:
    async def report(request: Request) -> Response:
        return JSONResponse({"report": request.url.query})

    return Starlette(routes=[Route("/report", report), Route("/other", report)])


@pytest.fixture(scope="module")
def switch(x402pay_devnet: Devnet) -> Iterator[tuple[str, Switch]]:
    devnet = x402pay_devnet
    facilitator = LocalFacilitator(devnet.rpc_url, devnet.facilitator)

    def priced(amount: int) -> PaymentMiddleware:
        price = Price.exact(amount, asset=devnet.usdc)
        return PaymentMiddleware(
            content_app(), facilitator=facilitator, routes={"GET /report": price, "GET /other": price},
            network=devnet.network, pay_to=devnet.payee.address,
        )  # fmt: skip

    switch = Switch({"normal": priced(PRICE), "raised": priced(RAISED)})
    with serve_app(switch) as url:
        yield url, switch


@pytest.fixture
def server(switch: tuple[str, Switch], x402pay_chain: Devnet) -> Server:
    url, app = switch
    app.current = "normal"
    app.seen.clear()
    return Server(url, app, x402pay_chain)


def transport(devnet: Devnet, *, asynchronous: bool = False, **options: Any) -> Any:
    kind = AsyncPaymentTransport if asynchronous else PaymentTransport
    policy = SpendPolicy(max_per_request=options.pop("cap", 50_000), networks=("eip155:31337",))
    return kind(wallet=Wallet(devnet.payers[0]), policy=policy, prepay=True, **options)


@pytest.mark.parametrize("library", [httpx, httpx2])
def test_the_second_request_is_paid_in_one_round_trip(server: Server, library: Any) -> None:
    payee = server.devnet.payee.address
    before = server.balance(payee)

    with library.Client(transport=transport(server.devnet), timeout=60) as client:
        first = client.get(server.url + "/report?n=1")
        second = client.get(server.url + "/report?n=2")

    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json() == {"report": "n=2"}
    assert server.switch.seen == [("/report", False), ("/report", True), ("/report", True)]
    assert server.balance(payee) == before + 2 * PRICE
    one, two = payment_of(first), payment_of(second)
    assert one is not None
    assert two is not None
    assert (one.prepaid, two.prepaid) == (False, True)
    assert two.status is PaymentStatus.SETTLED
    assert two.settled_amount == PRICE
    assert two.transaction != one.transaction
    assert two.signed.nonce != one.signed.nonce  # signed afresh, never re-used


@pytest.mark.parametrize("library", [httpx, httpx2])
def test_the_async_transport_pre_pays_the_same_way(server: Server, library: Any) -> None:
    payee = server.devnet.payee.address
    before = server.balance(payee)

    async def go() -> list[Any]:
        async with library.AsyncClient(transport=transport(server.devnet, asynchronous=True), timeout=60) as client:
            return [await client.get(server.url + "/report") for _ in range(3)]

    responses = anyio.run(go)

    assert [response.status_code for response in responses] == [200, 200, 200]
    assert [paid for _, paid in server.switch.seen] == [False, True, True, True]
    assert server.balance(payee) == before + 3 * PRICE
    assert [payment_of(response).prepaid for response in responses] == [False, True, True]  # type: ignore[union-attr]


def test_another_route_is_not_pre_paid(server: Server) -> None:
    with httpx.Client(transport=transport(server.devnet), timeout=60) as client:
        client.get(server.url + "/report")
        client.get(server.url + "/other")

    assert server.switch.seen == [("/report", False), ("/report", True), ("/other", False), ("/other", True)]


def test_a_price_change_is_paid_once_at_the_new_price(server: Server) -> None:
    payee = server.devnet.payee.address
    with httpx.Client(transport=transport(server.devnet), timeout=60) as client:
        client.get(server.url + "/report")
        before = server.balance(payee)
        server.switch.current = "raised"
        server.switch.seen.clear()

        changed = client.get(server.url + "/report")
        after_change = client.get(server.url + "/report")

    assert changed.status_code == 200
    payment = payment_of(changed)
    assert payment is not None
    assert (payment.prepaid, payment.settled_amount) == (False, RAISED)
    # The refused pre-payment (at the old price) never moved; the reactive one moved the new price.
    assert server.balance(payee) == before + 2 * RAISED
    # Pre-payment, its 402, the reactive payment; then (pre-payment barred for that origin) reactive again.
    assert [paid for _, paid in server.switch.seen] == [True, True, False, True]
    assert after_change.status_code == 200


def test_a_refusal_on_the_same_terms_is_not_signed_for_again(server: Server) -> None:
    payer = server.devnet.payers[0]
    usdc = server.devnet.contract("TestUSDC", server.devnet.usdc)
    with httpx.Client(transport=transport(server.devnet), timeout=60) as client:
        client.get(server.url + "/report")
        everything = usdc.functions.balanceOf(payer.address).call()
        server.devnet.web3().eth.send_transaction(
            usdc.functions.transfer(server.devnet.deployer.address, everything).build_transaction(
                {"from": payer.address}
            )
        )
        server.switch.seen.clear()

        with pytest.raises(PaymentRejected):
            client.get(server.url + "/report")

    assert server.switch.seen == [("/report", True)]  # one pre-payment, no second signature, no other send


def test_the_budget_still_bounds_a_pre_payment(server: Server, tmp_path: Any) -> None:
    payer = server.devnet.payers[0].address
    ledger = Ledger.sqlite(tmp_path / "ledger.db", budgets=[Budget(server.devnet.usdc, PRICE + PRICE // 2)])
    with httpx.Client(transport=transport(server.devnet, ledger=ledger), timeout=60) as client:
        client.get(server.url + "/report")
        before = server.balance(payer)
        server.switch.seen.clear()

        with pytest.raises(SpendCapExceeded):
            client.get(server.url + "/report")

    assert server.balance(payer) == before
    assert server.switch.seen == [("/report", False)]  # not pre-paid: the budget's room is below the price


def test_a_restarted_transport_pre_pays_what_the_ledger_remembers(server: Server, tmp_path: Any) -> None:
    payee = server.devnet.payee.address
    before = server.balance(payee)
    path = tmp_path / "ledger.db"
    with Ledger.sqlite(path) as ledger, httpx.Client(transport=transport(server.devnet, ledger=ledger)) as client:
        learned = client.get(server.url + "/report")
    server.switch.seen.clear()

    async def restarted() -> list[Any]:  # another process, later: a new transport, a new connection to the ledger
        ledger = Ledger.sqlite(path)
        try:
            paying = transport(server.devnet, asynchronous=True, ledger=ledger)
            async with httpx.AsyncClient(transport=paying) as client:
                return [await client.get(server.url + "/report") for _ in range(2)]
        finally:
            ledger.close()

    responses = anyio.run(restarted)

    assert payment_of(learned).prepaid is False  # type: ignore[union-attr]
    assert [payment_of(response).prepaid for response in responses] == [True, True]  # type: ignore[union-attr]
    assert server.switch.seen == [("/report", True), ("/report", True)]  # one round trip from the first call
    assert server.balance(payee) == before + 3 * PRICE


def test_a_refused_pre_payment_makes_every_process_forget_the_origin(server: Server, tmp_path: Any) -> None:
    path = tmp_path / "ledger.db"
    with Ledger.sqlite(path) as ledger, httpx.Client(transport=transport(server.devnet, ledger=ledger)) as client:
        client.get(server.url + "/report")
        client.get(server.url + "/other")
    server.switch.current = "raised"
    server.switch.seen.clear()

    with Ledger.sqlite(path) as ledger, httpx.Client(transport=transport(server.devnet, ledger=ledger)) as client:
        changed = client.get(server.url + "/report")  # pre-paid at the old price, refused, paid reactively
        assert ledger.routes(max_age=300) == []
    with Ledger.sqlite(path) as ledger, httpx.Client(transport=transport(server.devnet, ledger=ledger)) as client:
        other = client.get(server.url + "/other")  # the third process does not pre-pay that origin

    assert payment_of(changed).settled_amount == RAISED  # type: ignore[union-attr]
    assert payment_of(other).prepaid is False  # type: ignore[union-attr]
    assert server.switch.seen == [("/report", True), ("/report", True), ("/other", False), ("/other", True)]
