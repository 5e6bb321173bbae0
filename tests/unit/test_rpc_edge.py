"""The chain edge: a Web3 for a URL times out after the timeout it was given, and an RPC failure becomes ours
without its message (which may hold the endpoint's URL and an API key)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests

from x402pay._rpc import RPC_TIMEOUT, async_web3_for, chain_unavailable, web3_for
from x402pay.errors import ChainUnavailable

TIMEOUT = 0.5
# Far below web3's own 30 s default (and its five retries), far above TIMEOUT on a busy machine.
PATIENCE = 10.0


@pytest.fixture
def stalled() -> Iterator[socket.socket]:
    """A listener on loopback that never accepts: connections complete, and no answer ever comes."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:
        yield listener


def _url(listener: socket.socket) -> str:
    host, port = listener.getsockname()
    return f"http://{host}:{port}/v3/secret-api-key"


def _connections(listener: socket.socket) -> int:
    """How many connections wait in the listener's backlog (each request attempt opens one)."""
    listener.setblocking(False)
    count = 0
    while True:
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            return count
        connection.close()
        count += 1


def test_the_default_timeout_is_a_few_seconds() -> None:
    assert 0 < RPC_TIMEOUT <= 10


def test_web3_for_times_out_a_stalled_endpoint_once(stalled: socket.socket) -> None:
    web3 = web3_for(_url(stalled), timeout=TIMEOUT)
    start = time.monotonic()
    with pytest.raises(requests.Timeout):
        _ = web3.eth.chain_id
    assert time.monotonic() - start < PATIENCE
    assert _connections(stalled) == 1  # not retried


async def test_async_web3_for_times_out_a_stalled_endpoint_once(stalled: socket.socket) -> None:
    web3 = async_web3_for(_url(stalled), timeout=TIMEOUT)
    start = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            await web3.eth.chain_id
    finally:
        await web3.provider.disconnect()
    assert time.monotonic() - start < PATIENCE
    assert _connections(stalled) == 1  # not retried


def test_chain_unavailable_names_the_failure_by_type_only() -> None:
    leaky = requests.ConnectionError("HTTPSConnectionPool(host='rpc.example', port=443): /v3/secret-api-key refused")
    error = chain_unavailable(leaky, "the Permit2 allowance")
    assert isinstance(error, ChainUnavailable)
    assert "the Permit2 allowance" in str(error)
    assert "ConnectionError" in str(error)
    assert "secret" not in str(error)
    assert "rpc.example" not in str(error)


def test_the_chain_edge_imports_web3_only_when_asked() -> None:
    probe = "import sys, x402pay._rpc\nprint('web3' in sys.modules, 'aiohttp' in sys.modules)\n"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.split() == ["False", "False"]
