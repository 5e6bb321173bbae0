"""upto payments through the real OpenAI SDK (on httpx2) against the Compose-compatible demo API on anvil.

The payer's on-chain balance falls by exactly the receipt's amount, below the signed maximum; streams stay clean
(no receipt frame reaches the SDK) and the receipt lands on the Payment and through `on_receipt`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import openai
import pytest

from x402pay import AsyncPaymentTransport, Payment, PaymentStatus, PaymentTransport, SpendPolicy, Wallet, payment_of
from x402pay.server._demo import DemoConfig, running_demo
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

CAP = 200_000  # the client's cap, below the demo's 1 USDC route maximum: the server must ask for the announced cap
MESSAGES: Any = [{"role": "user", "content": "how much does a paid echo cost"}]


@pytest.fixture(scope="module")
def demo_url(x402pay_devnet: Devnet) -> Iterator[str]:
    with running_demo(x402pay_devnet, config=DemoConfig(upto_max=1_000_000)) as url:
        yield url


def balance(devnet: Devnet, address: str) -> int:
    return int(devnet.contract("TestUSDC", devnet.usdc).functions.balanceOf(address).call())


class Receipts:
    def __init__(self) -> None:
        self.payments: list[Payment] = []

    def __call__(self, payment: Payment) -> None:
        self.payments.append(payment)


def sync_client(devnet: Devnet, url: str, receipts: Receipts) -> tuple[openai.OpenAI, httpx2.Client]:
    transport = PaymentTransport(
        wallet=Wallet(devnet.payers[0]), policy=SpendPolicy(max_per_request=CAP), on_receipt=receipts
    )
    http = httpx2.Client(transport=transport, timeout=60)
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", http_client=http, max_retries=0), http


def assert_paid_by_receipt(devnet: Devnet, payment: Payment | None, before: int, receipts: Receipts) -> None:
    assert payment is not None
    assert payment.scheme == "upto"
    assert payment.status is PaymentStatus.SETTLED
    assert payment.signed_amount == CAP
    assert payment.settled_amount is not None
    assert 0 < payment.settled_amount < CAP
    assert balance(devnet, devnet.payers[0].address) == before - payment.settled_amount
    assert receipts.payments == [payment]
    receipt = devnet.web3().eth.get_transaction_receipt(payment.transaction)
    assert receipt["status"] == 1


def test_a_chat_completion_is_paid_by_the_metered_amount(x402pay_chain: Devnet, demo_url: str) -> None:
    receipts = Receipts()
    client, _ = sync_client(x402pay_chain, demo_url, receipts)
    before = balance(x402pay_chain, x402pay_chain.payers[0].address)

    raw = client.chat.completions.with_raw_response.create(model="demo", messages=MESSAGES)
    completion = raw.parse()

    assert completion.choices[0].message.content == "Echo: how much does a paid echo cost"
    assert_paid_by_receipt(x402pay_chain, payment_of(raw.http_response), before, receipts)


def test_a_streamed_chat_completion_yields_only_real_chunks(x402pay_chain: Devnet, demo_url: str) -> None:
    receipts = Receipts()
    client, _ = sync_client(x402pay_chain, demo_url, receipts)
    before = balance(x402pay_chain, x402pay_chain.payers[0].address)

    with client.chat.completions.with_streaming_response.create(model="demo", messages=MESSAGES, stream=True) as raw:
        chunks = list(raw.parse())
        payment = payment_of(raw.http_response)

    assert chunks
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "Echo: how much does a paid echo cost"
    assert payment is not None
    assert payment.receipt is not None
    assert payment.receipt.source == "sse"
    assert_paid_by_receipt(x402pay_chain, payment, before, receipts)


def test_the_responses_api_streamed_and_not(x402pay_chain: Devnet, demo_url: str) -> None:
    receipts = Receipts()
    client, _ = sync_client(x402pay_chain, demo_url, receipts)

    response = client.responses.create(model="demo", input="first question")
    events = list(client.responses.create(model="demo", input="second question", stream=True))

    assert response.output_text == "Echo: first question"
    assert events[-1].type == "response.completed"
    assert {event.type for event in events} <= {
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed",
    }  # fmt: skip
    assert [payment.scheme for payment in receipts.payments] == ["upto", "upto"]


def test_the_async_sdk_pays_the_same_way(x402pay_chain: Devnet, demo_url: str) -> None:
    receipts = Receipts()
    before = balance(x402pay_chain, x402pay_chain.payers[0].address)

    async def go() -> list[Any]:
        transport = AsyncPaymentTransport(
            wallet=Wallet(x402pay_chain.payers[0]), policy=SpendPolicy(max_per_request=CAP), on_receipt=receipts
        )
        async with httpx2.AsyncClient(transport=transport, timeout=60) as http:
            client = openai.AsyncOpenAI(base_url=demo_url + "/v1", api_key="unused", http_client=http, max_retries=0)
            stream = await client.chat.completions.create(model="demo", messages=MESSAGES, stream=True)
            return [chunk async for chunk in stream]

    chunks = anyio.run(go)

    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len(receipts.payments) == 1
    assert_paid_by_receipt(x402pay_chain, receipts.payments[0], before, receipts)


def test_the_ceiling_is_announced_and_kept_on_the_retry(x402pay_chain: Devnet, demo_url: str) -> None:
    seen: list[httpx2.Request] = []
    transport = PaymentTransport(wallet=Wallet(x402pay_chain.payers[0]), policy=SpendPolicy(max_per_request=CAP))
    with httpx2.Client(transport=transport, timeout=60, event_hooks={"request": [seen.append]}) as http:
        response = http.post(demo_url + "/v1/chat/completions", json={"model": "demo", "messages": MESSAGES})
    assert response.status_code == 200
    assert seen[0].headers["x-x402-max-amount-wei"] == str(CAP)
    payment = payment_of(response)
    assert payment is not None
    assert payment.requirement.amount == CAP  # the server rebuilt its challenge from the announced ceiling
