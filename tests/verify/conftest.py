"""Fixtures of the verification tests: a facilitator that settles on anvil, Web3 clients that count HTTP requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from verify_support import AsyncCountingProvider, CountingProvider, Facilitator
from web3 import AsyncWeb3, Web3

from x402pay.testing import Devnet


@pytest.fixture
def facilitator(x402pay_chain: Devnet) -> Facilitator:
    account = x402pay_chain.facilitator
    return Facilitator(x402pay_chain, account, x402pay_chain.web3().eth.get_transaction_count(account.address))


@pytest.fixture
def web3(x402pay_chain: Devnet) -> Web3:
    """A Web3 that counts its HTTP requests (``web3.provider.posts``)."""
    return Web3(CountingProvider(x402pay_chain.rpc_url))


@pytest.fixture
async def aweb3(x402pay_chain: Devnet) -> AsyncIterator[AsyncWeb3[Any]]:
    """An AsyncWeb3 that counts its HTTP requests; its session is closed after the test."""
    web3 = AsyncWeb3(AsyncCountingProvider(x402pay_chain.rpc_url))
    yield web3
    await web3.provider.disconnect()
