"""Fixtures of tests/server: a LocalFacilitator on the devnet, and the paid test app served with it (see `paid_app`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from paid_app import PaidServer, paid_server

from x402pay.server import LocalFacilitator
from x402pay.testing import Devnet


@pytest.fixture
def facilitator(x402pay_chain: Devnet) -> LocalFacilitator:
    return LocalFacilitator(x402pay_chain.rpc_url, x402pay_chain.facilitator)


@pytest.fixture
def server(x402pay_chain: Devnet, facilitator: LocalFacilitator) -> Iterator[PaidServer]:
    with paid_server(x402pay_chain, facilitator) as paid:
        yield paid
