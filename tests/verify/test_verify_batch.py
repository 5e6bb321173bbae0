"""200 claims verified in one batch agree with one-by-one verification and cost a few HTTP requests."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from verify_support import (
    AMOUNT,
    AsyncCountingProvider,
    CountingProvider,
    Facilitator,
    claim_of,
    requirement,
    sign,
    sign_upto,
)
from web3 import AsyncWeb3, HTTPProvider, Web3
from web3.providers import BaseProvider

from x402pay.testing import Devnet
from x402pay.verify import Claim, Verdict, averify_claims, verify_claim, verify_claims

pytestmark = pytest.mark.chain

CLAIMS = 200


def one_claim(devnet: Devnet, facilitator: Facilitator, index: int, now: int) -> Claim:
    """Claim number `index`: EIP-3009, Permit2 and upto settlements, queued ones, unsettled ones, and lies."""
    payer = devnet.payers[index % len(devnet.payers)]
    kind = index % 5
    if kind == 2:
        signed = sign_upto(devnet, payer)
        charge = 1 + index
        tx_hash = facilitator.settle(signed, charge)
        return claim_of(signed, tx_hash, charge * 2 if index % 3 == 0 else charge)  # every third lies
    extra = {"assetTransferMethod": "permit2"} if kind == 1 else None
    signed = sign(devnet, payer, requirement(devnet, extra=extra), now=now)
    if kind == 4 and index % 3 == 0:
        return claim_of(signed, None)  # never settled: pending
    tx_hash = facilitator.settle(signed)
    return claim_of(signed, None if kind == 3 else tx_hash)  # kind 3: queued, located by nonce


@pytest.fixture(scope="module")
def claims(x402pay_devnet: Devnet) -> Iterator[list[Claim]]:
    snapshot = x402pay_devnet.snapshot()
    try:
        account = x402pay_devnet.facilitator
        nonce = x402pay_devnet.web3().eth.get_transaction_count(account.address)
        facilitator = Facilitator(x402pay_devnet, account, nonce, wait=False)
        now = x402pay_devnet.chain_time()
        made = [one_claim(x402pay_devnet, facilitator, index, now) for index in range(CLAIMS)]
        for claim in made:
            if claim.tx_hash:
                x402pay_devnet.web3().eth.wait_for_transaction_receipt(claim.tx_hash, timeout=10, poll_latency=0.01)
        made.append(dataclasses.replace(made[0], tx_hash=made[5].tx_hash))  # another payment's transaction
        yield made
    finally:
        x402pay_devnet.revert(snapshot)


def test_a_batch_agrees_with_one_by_one_in_a_few_requests(x402pay_devnet: Devnet, claims: list[Claim]) -> None:
    single = Web3(CountingProvider(x402pay_devnet.rpc_url))
    expected = [verify_claim(single, claim) for claim in claims]
    batched = Web3(CountingProvider(x402pay_devnet.rpc_url))
    assert verify_claims(batched, claims) == expected
    verdicts = Counter(verification.verdict for verification in expected)
    assert set(verdicts) == {Verdict.VERIFIED, Verdict.MISMATCH, Verdict.PENDING}, verdicts
    assert verdicts[Verdict.VERIFIED] > CLAIMS // 2
    assert single.provider.posts >= len(claims)  # type: ignore[attr-defined]
    assert batched.provider.posts <= 4  # type: ignore[attr-defined]


async def test_a_batch_agrees_with_one_by_one_in_a_few_requests_async(
    x402pay_devnet: Devnet, claims: list[Claim]
) -> None:
    expected = verify_claims(Web3(HTTPProvider(x402pay_devnet.rpc_url)), claims)
    provider = AsyncCountingProvider(x402pay_devnet.rpc_url)
    try:
        assert await averify_claims(AsyncWeb3(provider), claims, batch_size=100) == expected
    finally:
        await provider.disconnect()
    assert provider.posts <= 12


def test_small_batches_give_the_same_verdicts(x402pay_devnet: Devnet, claims: list[Claim]) -> None:
    web3 = Web3(CountingProvider(x402pay_devnet.rpc_url))
    expected = verify_claims(Web3(HTTPProvider(x402pay_devnet.rpc_url)), claims)
    assert verify_claims(web3, claims, batch_size=7) == expected
    assert web3.provider.posts > len(claims) // 7  # type: ignore[attr-defined]


class OneAtATime(BaseProvider):
    """A provider that cannot batch: it forwards single requests to an HTTPProvider."""

    def __init__(self, rpc_url: str) -> None:
        super().__init__()
        self.inner = HTTPProvider(rpc_url)
        self.requests = 0

    def make_request(self, method: Any, params: Any) -> Any:
        self.requests += 1
        return self.inner.make_request(method, params)


def test_a_provider_without_batches_is_asked_one_request_at_a_time(x402pay_devnet: Devnet, claims: list[Claim]) -> None:
    some = claims[:20]
    provider = OneAtATime(x402pay_devnet.rpc_url)
    assert verify_claims(Web3(provider), some) == verify_claims(Web3(HTTPProvider(x402pay_devnet.rpc_url)), some)
    assert provider.requests >= len(some)


def test_claims_in_one_batch_are_judged_alone(x402pay_devnet: Devnet, claims: list[Claim]) -> None:
    web3 = Web3(HTTPProvider(x402pay_devnet.rpc_url))
    liar = dataclasses.replace(claims[0], claimed_amount=AMOUNT + 1)
    first, lie, again = verify_claims(web3, [claims[0], liar, claims[0]])
    assert first == again
    assert first.verified
    assert lie.verdict is Verdict.MISMATCH
