"""One logical call, one signature: the real SDKs' own retries and retries by hand, on anvil, without a key.

A loopback proxy in front of the paid demo API takes the first payment and drops the connection, either before the
server sees it or after the server settled it. The OpenAI and Anthropic SDKs (default retries, streaming and not), an
httpx client and a requests session that retry by hand send no ``Idempotency-Key``: every payment the server receives
carries the same nonce, and the chain moves the payer's money once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
import requests
from dropping_proxy import dropping_proxy
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from x402pay import PaymentAdapter, PaymentRejected, PaymentTransport, SpendPolicy, Wallet, payment_of
from x402pay.ledger import Ledger
from x402pay.server._demo import DemoConfig, running_demo
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

CAP = 200_000
MESSAGES: Any = [{"role": "user", "content": "one call, one payment"}]
CHAT = {"model": "demo", "messages": MESSAGES}
TRANSFER = Web3.keccak(text="Transfer(address,address,uint256)")
Caller = Callable[[Devnet, str], Any]


@pytest.fixture(scope="module")
def demo_url(x402pay_devnet: Devnet) -> Iterator[str]:
    with running_demo(x402pay_devnet, config=DemoConfig(upto_max=1_000_000)) as url:
        yield url


def policy() -> SpendPolicy:
    return SpendPolicy(max_per_request=CAP)


def openai_client(devnet: Devnet, url: str) -> openai.OpenAI:
    transport = PaymentTransport(wallet=Wallet(devnet.payers[0]), policy=policy())
    http = httpx2.Client(transport=transport, timeout=60)
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", http_client=http)  # the SDK's default retries


def openai_chat(devnet: Devnet, url: str) -> Any:
    raw = openai_client(devnet, url).chat.completions.with_raw_response.create(**CHAT)
    return raw.parse().choices[0].message.content, payment_of(raw.http_response)


def openai_stream(devnet: Devnet, url: str) -> Any:
    stream = openai_client(devnet, url).chat.completions.create(**CHAT, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    return text, payment_of(stream.response)


def claude(devnet: Devnet, url: str) -> anthropic.Anthropic:
    transport = PaymentTransport(wallet=Wallet(devnet.payers[0]), policy=policy())
    http = httpx2.Client(transport=transport, timeout=60)
    return anthropic.Anthropic(base_url=url, api_key="unused", http_client=http)  # the SDK's default retries


def anthropic_message(devnet: Devnet, url: str) -> Any:
    raw = claude(devnet, url).messages.with_raw_response.create(model="claude-fake", max_tokens=100, messages=MESSAGES)
    return raw.parse().content[0].text, payment_of(raw.http_response)


def anthropic_stream(devnet: Devnet, url: str) -> Any:
    with claude(devnet, url).messages.stream(model="claude-fake", max_tokens=100, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        return text, payment_of(stream.response)


def httpx_by_hand(devnet: Devnet, url: str) -> Any:
    with httpx.Client(transport=PaymentTransport(wallet=Wallet(devnet.payers[0]), policy=policy())) as client:
        for attempt in range(3):
            try:
                answer = client.post(url + "/v1/chat/completions", json=CHAT, timeout=60)
            except httpx.TransportError:
                if attempt == 2:
                    raise
                continue
            return answer.json()["choices"][0]["message"]["content"], payment_of(answer)
    raise AssertionError("unreachable")


def requests_by_hand(devnet: Devnet, url: str) -> Any:
    with requests.Session() as session:
        session.mount("http://", PaymentAdapter(wallet=Wallet(devnet.payers[0]), policy=policy()))
        for attempt in range(3):
            try:
                answer = session.post(url + "/v1/chat/completions", json=CHAT, timeout=60)
            except requests.ConnectionError:
                if attempt == 2:
                    raise
                continue
            return answer.json()["choices"][0]["message"]["content"], payment_of(answer)
    raise AssertionError("unreachable")


CALLERS: dict[str, Caller] = {
    "openai": openai_chat,
    "openai-stream": openai_stream,
    "anthropic": anthropic_message,
    "anthropic-stream": anthropic_stream,
    "httpx-by-hand": httpx_by_hand,
    "requests-by-hand": requests_by_hand,
}


def transfers_from(devnet: Devnet, payer: str, since: int) -> int:
    logs = devnet.web3().eth.get_logs({
        "address": Web3.to_checksum_address(devnet.usdc), "fromBlock": since, "toBlock": "latest",
        "topics": [TRANSFER, "0x" + payer[2:].lower().rjust(64, "0")],
    })  # fmt: skip
    return len(logs)


@pytest.mark.parametrize("caller", CALLERS)
def test_a_payment_taken_before_the_server_saw_it_is_re_sent_and_paid_once(
    caller: str, x402pay_chain: Devnet, demo_url: str
) -> None:
    since = x402pay_chain.web3().eth.block_number + 1
    with dropping_proxy(demo_url, drops=1, after_settling=False) as (url, proxy):
        text, payment = CALLERS[caller](x402pay_chain, url)
    assert text == "Echo: one call, one payment"
    assert payment is not None
    assert payment.settled_amount is not None
    assert len(proxy.nonces) == 2  # taken and dropped, then re-sent
    assert len(set(proxy.nonces)) == 1  # one signed authorization
    assert transfers_from(x402pay_chain, x402pay_chain.payers[0].address, since) == 1


@pytest.mark.parametrize("caller", CALLERS)
def test_a_payment_settled_and_dropped_is_never_signed_again(caller: str, x402pay_chain: Devnet, demo_url: str) -> None:
    since = x402pay_chain.web3().eth.block_number + 1
    with (
        dropping_proxy(demo_url, drops=1, after_settling=True) as (url, proxy),
        pytest.raises((PaymentRejected, anthropic.APIConnectionError)) as raised,
    ):
        CALLERS[caller](x402pay_chain, url)
    refusal = raised.value
    if caller.startswith("anthropic"):  # its SDK wraps every error of its client, and retries it
        assert isinstance(refusal, anthropic.APIConnectionError)
        refusal = refusal.__cause__
    assert isinstance(refusal, PaymentRejected)  # the others pass x402pay's errors through, unwrapped
    assert "nonce" in str(refusal)  # the server refused the re-sent payment as spent
    retries = 2 if caller.startswith("anthropic") else 1
    assert len(proxy.nonces) == 1 + retries  # every retry re-sent the payment
    assert len(set(proxy.nonces)) == 1
    assert transfers_from(x402pay_chain, x402pay_chain.payers[0].address, since) == 1


def slow_signer(payer: Any) -> Wallet:
    """The payer behind a signer that takes half a second (a remote one), so that twins overlap while it signs."""

    class RemoteSigner(LocalAccount):
        def sign_message(self, signable_message: Any) -> Any:
            time.sleep(0.5)
            return super().sign_message(signable_message)

    return Wallet(RemoteSigner(Account.from_key(payer.key)._key_obj, Account))


def test_two_concurrent_requests_with_one_key_and_no_ledger_sign_once(x402pay_chain: Devnet, demo_url: str) -> None:
    since = x402pay_chain.web3().eth.block_number + 1
    transport = PaymentTransport(wallet=slow_signer(x402pay_chain.payers[0]), policy=policy())
    outcomes: list[object] = []
    start = threading.Barrier(2)

    def post(client: httpx.Client) -> None:
        start.wait()
        try:
            outcomes.append(client.post("/v1/chat/completions", json=CHAT, headers={"Idempotency-Key": "twin-1"}))
        except PaymentRejected as refused:  # the twin's re-sent payment, when the server had taken it already
            outcomes.append(refused)

    with (
        dropping_proxy(demo_url, drops=0, after_settling=False) as (url, proxy),
        httpx.Client(transport=transport, base_url=url, timeout=60) as client,
    ):
        threads = [threading.Thread(target=post, args=(client,)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert len(outcomes) == 2
    assert any(isinstance(outcome, httpx.Response) and outcome.status_code == 200 for outcome in outcomes)
    assert len(proxy.nonces) == 2
    assert len(set(proxy.nonces)) == 1
    assert transfers_from(x402pay_chain, x402pay_chain.payers[0].address, since) == 1


CHILD = """
import sys, httpx, x402pay
from x402pay.ledger import Ledger
url, path, key, body = sys.argv[1:]
policy = x402pay.SpendPolicy(max_per_request=200_000)
transport = x402pay.PaymentTransport(wallet=x402pay.Wallet.from_key(key), policy=policy, ledger=Ledger.sqlite(path))
with httpx.Client(transport=transport, timeout=60) as client:
    try:
        client.post(url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    except httpx.TransportError:
        sys.exit(3)
"""


def test_a_repeat_in_another_process_re_sends_the_payment_through_the_ledger(
    x402pay_chain: Devnet, demo_url: str, tmp_path: Path
) -> None:
    since = x402pay_chain.web3().eth.block_number + 1
    payer = x402pay_chain.payers[0]
    body = json.dumps(CHAT)
    books = str(tmp_path / "spend.db")
    with dropping_proxy(demo_url, drops=1, after_settling=False) as (url, proxy):
        child = subprocess.run(
            [sys.executable, "-c", CHILD, url, books, "0x" + payer.key.hex(), body], timeout=120, check=False
        )
        assert child.returncode == 3  # its payment was taken and its connection dropped: it died unanswered
        transport = PaymentTransport(wallet=Wallet(payer), policy=policy(), ledger=Ledger.sqlite(books))
        with httpx.Client(transport=transport, timeout=60) as client:
            headers = {"content-type": "application/json"}
            repeat = client.post(url + "/v1/chat/completions", content=body, headers=headers)
            assert repeat.status_code == 200
            assert len(set(proxy.nonces)) == 1  # the other process's payment, re-sent: nothing signed here
            again = client.post(url + "/v1/chat/completions", content=body, headers=headers)
    assert again.status_code == 200  # the repeat got its answer: a request like it later is a new one, paid anew
    assert len(proxy.nonces) == 3
    assert len(set(proxy.nonces)) == 2
    assert transfers_from(x402pay_chain, payer.address, since) == 2
