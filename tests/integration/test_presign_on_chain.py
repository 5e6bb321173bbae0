"""Payments signed ahead (``presign=True``) against a real x402 server on anvil, sync and async.

While a pre-paid request is in flight, the route's next payment is reserved in the ledger and signed; the next
request sends it. Each test checks what moved on chain, which signed payments reached which server (every EIP-3009
nonce the servers saw), and what the ledger holds once the transport is closed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import httpx2
import pytest
from starlette.types import Receive, Scope, Send

from tests.integration.test_prepay_on_chain import PRICE, RAISED, Switch, switch  # noqa: F401 - switch: a fixture
from x402pay import (
    AsyncPaymentTransport,
    PaymentTransport,
    SpendCapExceeded,
    SpendPolicy,
    Wallet,
    payment_of,
)
from x402pay.ledger import Budget, Entry, EntryState, Ledger
from x402pay.server._serving import serve_app
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

Get = Callable[..., Awaitable[httpx.Response]]


@dataclass
class Recorder:
    """The paid app behind a second listener too: every signed payment that reaches either, as (port, nonce,
    amount)."""

    app: Switch
    seen: list[tuple[int, str, int]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        header = dict(scope.get("headers", ())).get(b"payment-signature")
        if header is not None:
            authorization = json.loads(base64.b64decode(header))["payload"]["authorization"]
            self.seen.append((scope["server"][1], authorization["nonce"], int(authorization["value"])))
        await self.app(scope, receive, send)


@dataclass
class Servers:
    one: str
    two: str
    recorder: Recorder
    devnet: Devnet

    def received(self) -> int:
        usdc = self.devnet.contract("TestUSDC", self.devnet.usdc)
        return int(usdc.functions.balanceOf(self.devnet.payee.address).call())

    def nonces(self) -> list[str]:
        return [nonce for _, nonce, _ in self.recorder.seen]


@pytest.fixture(scope="module")
def listeners(switch: tuple[str, Switch]) -> Iterator[tuple[str, str, Recorder]]:  # noqa: F811 - the fixture
    recorder = Recorder(switch[1])
    with serve_app(recorder) as one, serve_app(recorder) as two:
        yield one, two, recorder


@pytest.fixture
def servers(listeners: tuple[str, str, Recorder], x402pay_chain: Devnet) -> Servers:
    one, two, recorder = listeners
    recorder.app.current = "normal"
    recorder.seen.clear()
    return Servers(one, two, recorder, x402pay_chain)


@pytest.fixture(params=["sync", "async"])
def asynchronous(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "async")


@asynccontextmanager
async def paying(devnet: Devnet, ledger: Ledger, asynchronous: bool, **policy: Any) -> AsyncIterator[Get]:
    """GET through a pre-paying, pre-signing transport (sync: in a worker thread), closed at the end."""
    spend = SpendPolicy(max_per_request=50_000, networks=("eip155:31337",), **policy)
    kind = AsyncPaymentTransport if asynchronous else PaymentTransport
    transport = kind(wallet=Wallet(devnet.payers[0]), policy=spend, prepay=True, presign=True, ledger=ledger)
    if asynchronous:
        async with httpx.AsyncClient(transport=transport, timeout=60) as client:
            yield client.get
        return
    with httpx.Client(transport=transport, timeout=60) as client:
        yield lambda url, **options: anyio.to_thread.run_sync(partial(client.get, url, **options))


async def signed_ahead(ledger: Ledger, count: int = 1) -> list[Entry]:
    """Wait for `count` reservations of payments signed ahead (a reserved ``#prepay`` entry each)."""
    with anyio.fail_after(10):
        while True:
            held = [entry for entry in ledger.entries(states=[EntryState.RESERVED]) if entry.key.endswith("#prepay")]
            if len(held) >= count:
                return held
            await anyio.sleep(0.01)


def states(ledger: Ledger) -> list[EntryState]:
    return sorted(entry.state for entry in ledger.entries(limit=1000))


def open_ledger(tmp_path: Path, *budgets: Budget) -> Ledger:
    return Ledger.sqlite(tmp_path / "ledger.db", budgets=list(budgets))


def test_the_payment_signed_ahead_is_sent_once_and_the_unused_one_released(
    servers: Servers, tmp_path: Path, asynchronous: bool
) -> None:
    before = servers.received()

    async def go() -> tuple[list[httpx.Response], Entry]:
        async with paying(servers.devnet, ledger, asynchronous) as get:
            first = [await get(servers.one + "/report") for _ in range(2)]
            (ahead,) = await signed_ahead(ledger)
            third = await get(servers.one + "/report")
            return [*first, third], ahead

    with open_ledger(tmp_path) as ledger:
        responses, ahead = anyio.run(go)
        payments = [payment_of(response) for response in responses]
        assert [payment.prepaid for payment in payments if payment] == [False, True, True]
        third = payments[2]
        assert third is not None
        assert third.idempotency_key + "#prepay" == ahead.key  # the third request took the payment signed ahead
        assert third.signed.nonce == ledger.get(ahead.id).nonce
        assert servers.received() == before + 3 * PRICE
        assert len(set(servers.nonces())) == len(servers.nonces()) == 3  # each payment reached the server once
        # The fourth payment, signed ahead while the third was away, never left: released on close.
        assert states(ledger) == [EntryState.CLAIMED] * 3 + [EntryState.RELEASED]
        (released,) = ledger.entries(states=[EntryState.RELEASED])
        assert released.key.endswith("#prepay")
        assert released.nonce is None
        assert released.held == 0


def test_a_payment_signed_ahead_never_goes_to_another_origin(
    servers: Servers, tmp_path: Path, asynchronous: bool
) -> None:
    async def go() -> tuple[httpx.Response, Entry, httpx.Response]:
        async with paying(servers.devnet, ledger, asynchronous) as get:
            for _ in range(2):
                await get(servers.one + "/report")
            (ahead,) = await signed_ahead(ledger)
            elsewhere = await get(servers.two + "/report")  # the same app, another origin
            back = await get(servers.one + "/report")
            return elsewhere, ahead, back

    with open_ledger(tmp_path) as ledger:
        elsewhere, ahead, back = anyio.run(go)
        other = payment_of(elsewhere)
        assert other is not None
        assert other.prepaid is False  # paid reactively, with a signature of its own
        assert other.idempotency_key + "#prepay" != ahead.key
        came_back = payment_of(back)
        assert came_back is not None
        assert came_back.idempotency_key + "#prepay" == ahead.key  # still there for its own origin
        port_of = {nonce: port for port, nonce, _ in servers.recorder.seen}
        assert port_of[came_back.signed.nonce] == int(servers.one.rsplit(":", 1)[1])
        assert port_of[other.signed.nonce] == int(servers.two.rsplit(":", 1)[1])
        assert len(set(servers.nonces())) == len(servers.nonces()) == 4


def test_the_budget_bounds_payments_signed_ahead(servers: Servers, tmp_path: Path, asynchronous: bool) -> None:
    payer = servers.devnet.payers[0].address
    usdc = servers.devnet.contract("TestUSDC", servers.devnet.usdc)
    before = int(usdc.functions.balanceOf(payer).call())
    budget = Budget(servers.devnet.usdc, 3 * PRICE + PRICE // 2)

    async def go() -> None:
        async with paying(servers.devnet, ledger, asynchronous) as get:
            for _ in range(2):
                await get(servers.one + "/report")
            await signed_ahead(ledger)  # the third payment: room for it in the budget
            await get(servers.one + "/report")
            await anyio.sleep(0.3)  # the fourth, signed ahead, would not fit: nothing was reserved for it
            assert not [entry for entry in ledger.entries() if entry.state is EntryState.RESERVED]
            with pytest.raises(SpendCapExceeded):
                await get(servers.one + "/report")

    with open_ledger(tmp_path, budget) as ledger:
        anyio.run(go)
        assert before - int(usdc.functions.balanceOf(payer).call()) == 3 * PRICE
        assert sum(entry.held for entry in ledger.entries()) <= budget.limit
        assert states(ledger) == [EntryState.CLAIMED] * 3
        assert len(servers.nonces()) == 3


def test_a_payment_signed_ahead_too_long_ago_is_released_and_signed_anew(
    servers: Servers, tmp_path: Path, asynchronous: bool
) -> None:
    lifetime = 8  # a window of 8 s: a payment signed ahead is used for 2 s at most (a quarter of it)

    async def go() -> tuple[httpx.Response, Entry, float]:
        async with paying(servers.devnet, ledger, asynchronous, max_lifetime=lifetime) as get:
            for _ in range(2):
                await get(servers.one + "/report")
            (ahead,) = await signed_ahead(ledger)
            await anyio.sleep(2.5)
            sent_at = anyio.current_time()
            late = await get(servers.one + "/report")
            return late, ahead, sent_at

    with open_ledger(tmp_path) as ledger:
        late, ahead, _ = anyio.run(go)
        payment = payment_of(late)
        assert payment is not None
        assert payment.prepaid is True
        assert payment.signed.nonce != ledger.get(ahead.id).nonce
        assert ledger.get(ahead.id).state is EntryState.RELEASED  # released, never sent
        signed = payment.signed
        assert signed.valid_before - signed.valid_after <= lifetime + 600  # the policy's lifetime (+ clock skew)
        assert payment.settled_amount == PRICE
        assert len(set(servers.nonces())) == len(servers.nonces()) == 3


def test_a_new_price_gets_no_payment_signed_ahead_for_the_old_one(
    servers: Servers, tmp_path: Path, asynchronous: bool
) -> None:
    before = servers.received()

    async def go() -> list[httpx.Response]:
        async with paying(servers.devnet, ledger, asynchronous) as get:
            for _ in range(2):
                await get(servers.one + "/report")
            await signed_ahead(ledger)
            servers.recorder.app.current = "raised"
            changed = [await get(servers.one + "/report") for _ in range(3)]
            await anyio.sleep(0.3)
            return changed

    with open_ledger(tmp_path) as ledger:
        changed = anyio.run(go)
        assert [response.status_code for response in changed] == [200, 200, 200]
        amounts = [amount for _, _, amount in servers.recorder.seen]
        # Two at the old price, then the pre-payment the new price refused (the one signed ahead, sent once,
        # as a pre-payment signed on the spot would have been), then only the new price.
        assert amounts == [PRICE, PRICE, PRICE, RAISED, RAISED, RAISED]
        assert len(set(servers.nonces())) == 6
        assert servers.received() == before + 2 * PRICE + 3 * RAISED
        ahead = [entry for entry in ledger.entries() if entry.state is EntryState.RELEASED]
        assert all(entry.nonce is None and entry.amount == PRICE for entry in ahead)
        assert not ledger.entries(states=[EntryState.RESERVED, EntryState.AUTHORIZED])


def test_a_lower_ceiling_gets_no_payment_signed_ahead(servers: Servers, tmp_path: Path, asynchronous: bool) -> None:
    async def go() -> Entry:
        async with paying(servers.devnet, ledger, asynchronous) as get:
            for _ in range(2):
                await get(servers.one + "/report")
            (ahead,) = await signed_ahead(ledger)
            with pytest.raises(SpendCapExceeded):  # the caller allows less than the price this time
                await get(servers.one + "/report?ceiling", headers={"x-x402-max-amount-wei": str(PRICE - 1)})
            assert ledger.get(ahead.id).state is EntryState.RELEASED
            return ahead

    with open_ledger(tmp_path) as ledger:
        ahead = anyio.run(go)
        assert ledger.get(ahead.id).nonce is None
        assert len(servers.nonces()) == 2  # nothing was sent for the third request


def test_requests_in_flight_each_send_their_own_payment_once(
    servers: Servers, tmp_path: Path, asynchronous: bool
) -> None:
    before = servers.received()
    answers: list[httpx.Response] = []

    async def go() -> None:
        async with paying(servers.devnet, ledger, asynchronous) as get:
            await get(servers.one + "/report")

            async def worker() -> None:
                for _ in range(3):
                    answers.append(await get(servers.one + "/report"))

            async with anyio.create_task_group() as group:
                for _ in range(4):
                    group.start_soon(worker)

    with open_ledger(tmp_path) as ledger:
        anyio.run(go)
        assert [answer.status_code for answer in answers] == [200] * 12
        assert len(set(servers.nonces())) == len(servers.nonces()) == 13
        assert servers.received() == before + 13 * PRICE
        assert not ledger.entries(states=[EntryState.RESERVED, EntryState.AUTHORIZED])


def test_httpx2_clients_send_payments_signed_ahead_too(servers: Servers, tmp_path: Path) -> None:
    spend = SpendPolicy(max_per_request=50_000, networks=("eip155:31337",))
    with open_ledger(tmp_path) as ledger:
        transport = PaymentTransport(wallet=Wallet(servers.devnet.payers[0]), policy=spend, prepay=True,
                                     presign=True, ledger=ledger)  # fmt: skip
        with httpx2.Client(transport=transport, timeout=60) as client:
            client.get(servers.one + "/report")
            client.get(servers.one + "/report")
            (ahead,) = anyio.run(signed_ahead, ledger)
            third = payment_of(client.get(servers.one + "/report"))
        assert third is not None
        assert third.idempotency_key + "#prepay" == ahead.key
        assert len(set(servers.nonces())) == len(servers.nonces()) == 3
        assert not ledger.entries(states=[EntryState.RESERVED, EntryState.AUTHORIZED])
