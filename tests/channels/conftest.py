"""Fixtures of the channel tests: the settlement contract on the isolated devnet, and two funded payers."""

from __future__ import annotations

import pytest
from channel_support import Channels
from eth_account.signers.local import LocalAccount

from x402pay.testing import Devnet


@pytest.fixture
def channels(x402pay_chain: Devnet) -> Channels:
    return Channels(x402pay_chain)


@pytest.fixture
def payer(x402pay_chain: Devnet) -> LocalAccount:
    return x402pay_chain.payers[0]


@pytest.fixture
def other_payer(x402pay_chain: Devnet) -> LocalAccount:
    return x402pay_chain.payers[1]


@pytest.fixture
def stranger(x402pay_chain: Devnet) -> LocalAccount:
    """A funded account that is neither side of the test's channels."""
    return x402pay_chain.payers[2]
