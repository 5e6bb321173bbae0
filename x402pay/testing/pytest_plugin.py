"""pytest fixtures for a real local chain; registered automatically when x402pay is installed.

Fixture names carry the ``x402pay_`` prefix so the plugin can be enabled in any project:

- ``x402pay_anvil`` (session): a running `Anvil`.
- ``x402pay_devnet`` (session): the `Devnet` deployed on it once per session.
- ``x402pay_chain``: the same `Devnet`, isolated per test by ``evm_snapshot`` / ``evm_revert``.
- ``x402pay_web3``: a ``Web3`` on the isolated chain.
- ``x402pay_payer``: a payer account with 1,000 USDC and a Permit2 allowance, on the isolated chain.

Without anvil the chain fixtures skip with a message saying what to install, except when the ``CI`` environment
variable is set (or ``X402PAY_REQUIRE_CHAIN=1``): then they fail, so a missing chain never passes as green.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # the heavy imports wait until a chain fixture is used
    from eth_account.signers.local import LocalAccount
    from web3 import Web3

    from x402pay.testing._anvil import Anvil
    from x402pay.testing._devnet import Devnet


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``chain`` marker, so that projects running with ``--strict-markers`` can mark chain tests."""
    config.addinivalue_line("markers", "chain: needs a local anvil chain (fails in CI when anvil is missing)")


def _chain_required() -> bool:
    return bool(os.environ.get("CI")) or os.environ.get("X402PAY_REQUIRE_CHAIN") == "1"


@pytest.fixture(scope="session")
def x402pay_anvil() -> Iterator[Anvil]:
    """A session-wide anvil node, stopped by PID at the end of the session."""
    from x402pay.testing._anvil import Anvil
    from x402pay.testing._errors import AnvilNotFound

    missing: str | None = None
    try:
        anvil = Anvil().start()
    except AnvilNotFound as exc:
        missing = str(exc)
    if missing is not None:  # decided outside the handler, so the report is this one line, not a chained story
        if _chain_required():
            pytest.fail(f"a chain test needs anvil: {missing}", pytrace=False)
        pytest.skip(f"needs anvil: {missing}")
    try:
        yield anvil
    finally:
        anvil.stop()


@pytest.fixture(scope="session")
def x402pay_devnet(x402pay_anvil: Anvil) -> Devnet:
    """The x402 contracts deployed on the session's anvil, with funded payers."""
    from x402pay.testing._devnet import deploy_devnet

    return deploy_devnet(x402pay_anvil.rpc_url)


@pytest.fixture
def x402pay_chain(x402pay_devnet: Devnet) -> Iterator[Devnet]:
    """The session's devnet, returned to its earlier state after the test (``evm_snapshot`` / ``evm_revert``), its
    latest block no older than a minute when the test starts (`Devnet.keep_time`)."""
    x402pay_devnet.keep_time()
    snapshot_id = x402pay_devnet.snapshot()
    try:
        yield x402pay_devnet
    finally:
        x402pay_devnet.revert(snapshot_id)


@pytest.fixture
def x402pay_web3(x402pay_chain: Devnet) -> Web3:
    """A ``Web3`` connected to the isolated devnet."""
    return x402pay_chain.web3()


@pytest.fixture
def x402pay_payer(x402pay_chain: Devnet) -> LocalAccount:
    """A payer account holding 1,000 USDC with a Permit2 allowance, on the isolated devnet."""
    return x402pay_chain.payers[0]
