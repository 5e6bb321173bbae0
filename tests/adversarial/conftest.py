"""Fixtures of the adversarial suite: two hostile servers on loopback (two origins), reset for every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hostile_support import Hostile

from x402pay.server._serving import serve_app
from x402pay.testing import Devnet


@pytest.fixture(scope="package")
def hostile_servers(x402pay_devnet: Devnet) -> Iterator[tuple[Hostile, Hostile]]:
    first, second = Hostile(x402pay_devnet), Hostile(x402pay_devnet)
    with serve_app(first) as first.url, serve_app(second) as second.url:
        yield first, second
        first.reset()
        second.reset()


@pytest.fixture
def hostile(hostile_servers: tuple[Hostile, Hostile], x402pay_chain: Devnet) -> Iterator[Hostile]:
    """The hostile server at its own origin, on a devnet restored after the test."""
    server = hostile_servers[0]
    server.reset()
    yield server
    server.reset()


@pytest.fixture
def elsewhere(hostile_servers: tuple[Hostile, Hostile]) -> Iterator[Hostile]:
    """A second hostile server, on another origin."""
    server = hostile_servers[1]
    server.reset()
    yield server
    server.reset()
