"""A slow or stalled verification RPC: the verdict stays ``pending`` within a bounded time, nothing crashes or hangs.

`SlowRpc` is a real JSON-RPC endpoint on loopback, a proxy in front of the devnet's anvil that holds every request
(for some seconds, or until the test ends). Every call that could hang runs under `bounded`, so a hang fails the
test instead of hanging the suite. Bounds are generous (tens of seconds for timeouts of one or two): they tell a
bounded wait from an unbounded one, not a fast machine from a slow one.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from hostile_support import (
    HTTP_FLAVOURS,
    Hostile,
    SlowRpc,
    assert_pending_and_booked,
    async_client,
    bounded,
    client,
    fetch,
    honest,
    paid_claim,
)
from web3 import AsyncHTTPProvider, AsyncWeb3, HTTPProvider, Web3

from x402pay import payment_of
from x402pay.ledger import Ledger
from x402pay.server._serving import serve_app
from x402pay.verify import Verdict, averify_claims, verify_claims

pytestmark = pytest.mark.chain

#: The RPC client's timeout in these tests.
RPC_TIMEOUT = 2.0


@contextlib.contextmanager
def serve_slow(hostile: Hostile, delay: float | None) -> Iterator[tuple[str, SlowRpc]]:
    rpc = SlowRpc(hostile.devnet.rpc_url, delay)
    with serve_app(rpc) as url:
        try:
            yield url, rpc
        finally:
            rpc.release()  # stalled requests end, so that the server can stop


@pytest.fixture
def stalled(hostile: Hostile) -> Iterator[tuple[str, SlowRpc]]:
    """A JSON-RPC endpoint that never answers (until the test ends)."""
    with serve_slow(hostile, None) as served:
        yield served


@pytest.fixture(params=[5.0, None], ids=["slow", "stalled"])
def late(hostile: Hostile, request: pytest.FixtureRequest) -> Iterator[tuple[str, SlowRpc]]:
    """An endpoint that answers after 5 s (beyond the client's 2 s timeout), or never."""
    with serve_slow(hostile, request.param) as served:
        yield served


# -- verify_claims directly --------------------------------------------------------------------------------------


def test_verify_claims_through_an_rpc_slower_than_usual_but_within_the_timeout_is_verified(hostile: Hostile) -> None:
    """The control: the proxy forwards faithfully, so a pending verdict below is the delay's doing."""
    claim = paid_claim(hostile)
    with serve_slow(hostile, 0.5) as (url, rpc):
        web3 = Web3(HTTPProvider(url, request_kwargs={"timeout": 30}))
        (verification,), _ = bounded(lambda: verify_claims(web3, [claim]))
    assert verification.verdict is Verdict.VERIFIED
    assert rpc.posts >= 1


def test_verify_claims_against_a_late_rpc_is_pending_within_the_clients_timeout(
    hostile: Hostile, late: tuple[str, SlowRpc]
) -> None:
    claim = paid_claim(hostile)
    url, rpc = late
    web3 = Web3(HTTPProvider(url, request_kwargs={"timeout": RPC_TIMEOUT}))

    (verification,), took = bounded(lambda: verify_claims(web3, [claim]))

    assert verification.verdict is Verdict.PENDING
    assert verification.check == "rpc"
    assert "Timeout" in verification.reason
    assert url not in verification.reason  # the endpoint's URL (often carrying an API key) is not repeated
    assert rpc.posts >= 1
    assert took < 25  # the client's 2 s timeout ended it, not web3's default 30 s


def test_averify_claims_against_a_late_rpc_is_pending_within_the_clients_timeout(
    hostile: Hostile, late: tuple[str, SlowRpc]
) -> None:
    claim = paid_claim(hostile)
    url, rpc = late

    async def verify() -> list[Any]:
        timeout = aiohttp.ClientTimeout(total=RPC_TIMEOUT)
        web3 = AsyncWeb3(AsyncHTTPProvider(url, request_kwargs={"timeout": timeout}))
        try:
            return await averify_claims(web3, [claim])
        finally:
            await web3.provider.disconnect()

    (verification,), _ = bounded(lambda: anyio.run(verify))

    assert verification.verdict is Verdict.PENDING
    assert verification.check == "rpc"
    assert rpc.posts >= 1


# -- the transport: inline and background verification -----------------------------------------------------------


@pytest.mark.parametrize("flavour", HTTP_FLAVOURS)
def test_a_stalled_rpc_during_inline_verification_leaves_the_verdict_pending_and_the_answer_arrives(
    hostile: Hostile, stalled: tuple[str, SlowRpc], tmp_path: Path, flavour: str
) -> None:
    honest(hostile)
    url, rpc = stalled
    ledger = Ledger.sqlite(tmp_path / "spend.db")

    response, _ = bounded(
        lambda: fetch(
            flavour,
            hostile.devnet,
            hostile.url + "/report",
            ledger=ledger,
            rpc_url=url,
            verify="inline",
            verify_patience=1.0,
        ),
        seconds=120,  # generous: the verifier's requests time out after 5 s (RPC_TIMEOUT)
    )

    assert response.status_code == 200
    assert rpc.posts >= 1  # verification did ask the stalled endpoint
    assert_pending_and_booked(payment_of(response), ledger)


def test_a_stalled_rpc_holds_an_inline_verified_answer_no_longer_than_the_verification_patience(
    hostile: Hostile, stalled: tuple[str, SlowRpc], tmp_path: Path
) -> None:
    honest(hostile)
    url, _ = stalled
    ledger = Ledger.sqlite(tmp_path / "spend.db")

    with client(hostile.devnet, ledger=ledger, rpc_url=url, verify="inline", verify_patience=1.0) as http:
        response, took = bounded(lambda: http.get(hostile.url + "/report"), seconds=120)

    assert_pending_and_booked(payment_of(response), ledger)
    assert took < 20  # patience 1 s plus one round of the verifier's 5 s timeout; web3 alone would wait 30 s


def test_a_stalled_rpc_never_delays_an_answer_verified_in_the_background(
    hostile: Hostile, stalled: tuple[str, SlowRpc], tmp_path: Path
) -> None:
    honest(hostile)
    url, rpc = stalled
    ledger = Ledger.sqlite(tmp_path / "spend.db")
    verified = threading.Event()
    http = client(
        hostile.devnet,
        ledger=ledger,
        rpc_url=url,
        verify="background",
        verify_patience=1.0,
        on_verified=lambda _: verified.set(),
    )

    try:
        response, took = bounded(lambda: http.get(hostile.url + "/report"), seconds=120)
        assert response.status_code == 200
        assert took < 20  # the answer does not wait for the stalled RPC (web3 alone waits 30 s for it)
        assert not verified.is_set()  # still waiting on the RPC while the answer is in our hands
    finally:
        bounded(http.close, seconds=120)  # close finishes the queued verification: bounded, not forever

    assert rpc.posts >= 1
    assert verified.is_set()
    assert_pending_and_booked(payment_of(response), ledger)


def test_a_stalled_rpc_in_the_background_leaves_the_async_answer_alone(
    hostile: Hostile, stalled: tuple[str, SlowRpc], tmp_path: Path
) -> None:
    honest(hostile)
    url, _ = stalled
    ledger = Ledger.sqlite(tmp_path / "spend.db")
    timings: list[float] = []

    async def go() -> Any:
        async with async_client(
            hostile.devnet, ledger=ledger, rpc_url=url, verify="background", verify_patience=1.0
        ) as http:
            started = time.monotonic()
            response = await http.get(hostile.url + "/report")
            timings.append(time.monotonic() - started)
            return response

    response, _ = bounded(lambda: anyio.run(go), seconds=120)

    assert response.status_code == 200
    assert timings[0] < 20
    assert_pending_and_booked(payment_of(response), ledger)
