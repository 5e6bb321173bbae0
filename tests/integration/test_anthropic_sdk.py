"""upto payments through the real Anthropic SDK (on httpx2), on anvil: the demo's Messages route, and a paid
Messages stream that fails mid-way with Anthropic's own ``event: error`` (``overloaded_error``).

The error is Anthropic's, not the paid API's: the SDK raises its own error, x402pay raises nothing, and the books
keep the signed maximum held until `reconcile` finds on chain what the server settled.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import anyio
import httpx2
import pytest
from starlette.types import Receive, Scope, Send

from x402pay import (
    AsyncPaymentTransport,
    Payment,
    PaymentError,
    PaymentStatus,
    PaymentTransport,
    SpendPolicy,
    Wallet,
    payment_of,
)
from x402pay.ledger import EntryState, Ledger, Web3Chain
from x402pay.server import LocalFacilitator, PaymentMiddleware, Price, paid_request
from x402pay.server._demo import Meter, complete, running_demo
from x402pay.server._demo.messages import anthropic_message, message_frames
from x402pay.server._serving import serve_app
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

CAP = 50_000  # under the demo's metered maximum: the client's ceiling is what it signs
MESSAGES: Any = [{"role": "user", "content": "how much does a paid echo cost"}]
COST = Meter().cost(complete(MESSAGES))  # what the demo meters for MESSAGES, with its default prices
OVERLOADED = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
CHARGED = 1_234  # what the overloaded server charges for the words it streamed before failing


@pytest.fixture(scope="module")
def demo_url(x402pay_devnet: Devnet) -> Iterator[str]:
    with running_demo(x402pay_devnet) as url:
        yield url


def balance(devnet: Devnet, address: str) -> int:
    return int(devnet.contract("TestUSDC", devnet.usdc).functions.balanceOf(address).call())


def claude(devnet: Devnet, url: str, paid: list[Payment], ledger: Ledger | None = None) -> anthropic.Anthropic:
    transport = PaymentTransport(
        wallet=Wallet(devnet.payers[0]), policy=SpendPolicy(max_per_request=CAP), ledger=ledger, on_receipt=paid.append
    )
    http = httpx2.Client(transport=transport, timeout=60)
    return anthropic.Anthropic(base_url=url, api_key="unused", http_client=http, max_retries=0)


def assert_paid_the_metered_cost(devnet: Devnet, payment: Payment | None, before: int, paid: list[Payment]) -> None:
    assert payment is not None
    assert (payment.scheme, payment.status, payment.signed_amount) == ("upto", PaymentStatus.SETTLED, CAP)
    assert payment.settled_amount == COST
    assert balance(devnet, devnet.payers[0].address) == before - COST
    assert paid == [payment]
    assert devnet.web3().eth.get_transaction_receipt(payment.transaction)["status"] == 1


def test_a_message_is_paid_by_the_metered_amount(x402pay_chain: Devnet, demo_url: str) -> None:
    paid: list[Payment] = []
    before = balance(x402pay_chain, x402pay_chain.payers[0].address)

    raw = claude(x402pay_chain, demo_url, paid).messages.with_raw_response.create(
        model="claude-fake", max_tokens=100, messages=MESSAGES
    )
    message = raw.parse()

    assert [block.text for block in message.content if block.type == "text"] == ["Echo: how much does a paid echo cost"]
    assert (message.stop_reason, message.usage.output_tokens) == ("end_turn", 8)
    payment = payment_of(raw.http_response)
    assert payment is not None
    assert payment.receipt is not None
    assert payment.receipt.source != "sse"  # a whole answer: the receipt came in the headers
    assert_paid_the_metered_cost(x402pay_chain, payment, before, paid)


def test_a_streamed_message_yields_only_anthropics_events(x402pay_chain: Devnet, demo_url: str) -> None:
    paid: list[Payment] = []
    before = balance(x402pay_chain, x402pay_chain.payers[0].address)

    with claude(x402pay_chain, demo_url, paid).messages.stream(
        model="claude-fake", max_tokens=100, messages=MESSAGES
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
        payment = payment_of(stream.response)

    assert {event.type for event in events} == {
        "message_start", "content_block_start", "text", "content_block_delta", "content_block_stop", "message_delta",
        "message_stop",
    }  # fmt: skip
    assert (events[0].type, events[-1].type) == ("message_start", "message_stop")
    assert final.content[0].type == "text"
    assert final.content[0].text == "Echo: how much does a paid echo cost"
    assert payment is not None
    assert payment.receipt is not None
    assert payment.receipt.source == "sse"  # in-band, after message_stop, and taken out before the SDK saw it
    assert_paid_the_metered_cost(x402pay_chain, payment, before, paid)


def test_the_async_sdk_streams_and_pays_the_same_way(x402pay_chain: Devnet, demo_url: str) -> None:
    paid: list[Payment] = []
    before = balance(x402pay_chain, x402pay_chain.payers[0].address)

    async def go() -> str:
        transport = AsyncPaymentTransport(
            wallet=Wallet(x402pay_chain.payers[0]), policy=SpendPolicy(max_per_request=CAP), on_receipt=paid.append
        )
        async with httpx2.AsyncClient(transport=transport, timeout=60) as http:
            client = anthropic.AsyncAnthropic(base_url=demo_url, api_key="unused", http_client=http, max_retries=0)
            stream = await client.messages.create(model="claude-fake", max_tokens=100, messages=MESSAGES, stream=True)
            return "".join([
                event.delta.text async for event in stream
                if event.type == "content_block_delta" and event.delta.type == "text_delta"
            ])  # fmt: skip

    assert anyio.run(go) == "Echo: how much does a paid echo cost"
    assert len(paid) == 1
    assert_paid_the_metered_cost(x402pay_chain, paid[0], before, paid)


# -- Anthropic's own error in the middle of a paid stream ----------------------------------------------------------


class OverloadedMidStream:
    """A paid Messages stream that sends the first words of the demo's answer, then Anthropic's ``overloaded_error``,
    and ends; it charges `CHARGED` for what it streamed. `settled` is set once the middleware has settled.

    A bare ASGI app, not Starlette's StreamingResponse: that one cancels the response, settlement included, when
    the client hangs up (as the SDK does on the error), and the test must know what the server did on chain.
    """

    def __init__(self, devnet: Devnet) -> None:
        self.settled = threading.Event()
        self.app = PaymentMiddleware(
            self._stream,
            facilitator=LocalFacilitator(devnet.rpc_url, devnet.facilitator),
            routes={"POST /v1/messages": Price.upto(CAP, asset=devnet.usdc)},
            network=devnet.network,
            pay_to=devnet.payee.address,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        if paid_request(scope) is not None:
            self.settled.set()

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = json.loads(await _read_body(receive))
        completion = complete(body["messages"], max_tokens=body["max_tokens"])
        frames = message_frames(anthropic_message(body["model"], completion), completion)
        paid = paid_request(scope)
        assert paid is not None
        paid.charge(CHARGED)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for frame in frames[:5]:  # message_start, content_block_start, ping, the first two words
            await send({"type": "http.response.body", "body": frame.encode(), "more_body": True})
        await send({"type": "http.response.body", "body": OVERLOADED, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _read_body(receive: Receive) -> bytes:
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    return body


def read_until_the_error(
    devnet: Devnet, url: str, ledger: Ledger, paid: list[Payment], *, asynchronous: bool
) -> tuple[anthropic.APIStatusError, list[Any]]:
    """Stream a message through the SDK (sync or async) until it raises; the error and the events before it."""
    received: list[Any] = []
    request: Any = {"model": "claude-fake", "max_tokens": 100, "messages": MESSAGES, "stream": True}
    if not asynchronous:
        stream = claude(devnet, url, paid, ledger).messages.create(**request)
        with pytest.raises(anthropic.APIStatusError) as raised:
            received.extend(stream)
        return raised.value, received

    async def go() -> anthropic.APIStatusError:
        transport = AsyncPaymentTransport(
            wallet=Wallet(devnet.payers[0]), policy=SpendPolicy(max_per_request=CAP), ledger=ledger,
            on_receipt=paid.append,
        )  # fmt: skip
        async with httpx2.AsyncClient(transport=transport, timeout=60) as http:
            client = anthropic.AsyncAnthropic(base_url=url, api_key="unused", http_client=http, max_retries=0)
            stream = await client.messages.create(**request)
            with pytest.raises(anthropic.APIStatusError) as raised:
                await collect(stream, received)
            return raised.value

    return anyio.run(go), received


async def collect(stream: Any, into: list[Any]) -> None:
    async for event in stream:
        into.append(event)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_anthropics_overloaded_error_mid_stream_is_the_sdks_error_and_the_books_follow_the_chain(
    x402pay_chain: Devnet, tmp_path: Path, asynchronous: bool
) -> None:
    server = OverloadedMidStream(x402pay_chain)
    ledger = Ledger.sqlite(tmp_path / "spend.db")
    paid: list[Payment] = []
    payer = x402pay_chain.payers[0].address
    before = balance(x402pay_chain, payer)

    with serve_app(server) as url:
        error, received = read_until_the_error(x402pay_chain, url, ledger, paid, asynchronous=asynchronous)
        (entry,) = ledger.entries()  # the error came before any receipt: the signed maximum stays held
        assert (entry.state, entry.held, entry.settled_amount) == (EntryState.AUTHORIZED, CAP, None)
        assert server.settled.wait(30)

    assert type(error) is anthropic.APIStatusError  # the SDK's error for an error event in a 200 stream
    assert error.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert not isinstance(error.__context__, PaymentError)
    assert "".join(event.delta.text for event in received if event.type == "content_block_delta") == "Echo: how"
    payment = payment_of(error.response)
    assert payment is not None
    assert (payment.status, payment.settled_amount, payment.settlement_error) == (PaymentStatus.UNSETTLED, None, None)
    assert paid == []  # no receipt reached the client: the SDK stopped reading at the error

    moved = before - balance(x402pay_chain, payer)
    assert moved == CHARGED  # the server settled what it charged for the words it streamed
    ledger.reconcile(Web3Chain(x402pay_chain.web3()))
    settled = ledger.get(entry.id)
    assert (settled.state, settled.settled_amount, settled.held) == (EntryState.SETTLED, moved, moved)
    assert settled.tx_hash is not None
