"""Fixtures of the channel tests: the settlement contract on the isolated devnet, funded payers, and where a payer's
ledger lives (each backend)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from channel_support import Channels
from eth_account.signers.local import LocalAccount
from paid_channel_support import Place, drop_schema, reachable_postgres

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


@pytest.fixture(params=["sqlite", "postgres"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    """SQLite, or a schema of its own on PostgreSQL ($X402PAY_TEST_POSTGRES_DSN; unreachable, a skip that says so,
    except under CI, where it fails)."""
    if request.param == "sqlite":
        yield Place(str(tmp_path / "ledger.db"))
        return
    dsn = reachable_postgres()
    schema = f"x402pay_e2e_{uuid.uuid4().hex[:12]}"
    try:
        yield Place(dsn, schema)
    finally:
        drop_schema(dsn, schema)
