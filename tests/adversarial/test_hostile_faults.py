"""Faults around the paid request: the RPC down during verification, a server that dies after settling, a client
killed between signing and sending, and clocks ten minutes off the chain's. Nothing is lost: the ledger holds
what may still move, and reconcile finds what did.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hostile_support import (
    FLAVOURS,
    PRICE,
    Balances,
    Call,
    Hostile,
    Reply,
    assert_pending_and_booked,
    bounded,
    challenge,
    challenge_reply,
    challenge_then,
    client,
    fetch,
    honest,
    paid_claim,
    read_body,
    requirement,
    settle_honestly,
    unb64,
)
from web3 import AsyncHTTPProvider, AsyncWeb3, Web3

from x402pay import PaymentRejected, payment_of
from x402pay.errors import ChainUnavailable
from x402pay.ledger import EntryState, Ledger, Web3Chain
from x402pay.server._serving import serve_app
from x402pay.verify import Verdict, averify_claims, verify_claims

pytestmark = pytest.mark.chain


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


# -- verification RPC -------------------------------------------------------------------------------------------


def test_the_rpc_down_during_inline_verification_leaves_the_verdict_pending(hostile: Hostile, tmp_path: Path) -> None:
    honest(hostile)
    ledger = Ledger.sqlite(tmp_path / "spend.db")

    with client(hostile.devnet, ledger=ledger, rpc_url=closed_port_url(), verify="inline", verify_patience=0.5) as http:
        response = http.get(hostile.url + "/report")

    assert response.status_code == 200
    assert_pending_and_booked(payment_of(response), ledger)


async def _garbage(scope: object, receive: object, send: object) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b'{"jsonrpc": "2.0", "result": [[[['})  # type: ignore[operator]


def test_an_rpc_that_answers_garbage_leaves_the_verdict_pending(hostile: Hostile) -> None:
    honest(hostile)

    with (
        serve_app(_garbage) as rpc,
        client(hostile.devnet, rpc_url=rpc, verify="background", verify_patience=0.5) as http,
    ):
        response = http.get(hostile.url + "/report")
    payment = payment_of(response)

    assert payment is not None
    assert payment.verification is not None
    assert payment.verification.verdict == "pending"


# A hostile RPC's batch answers: right length, wrong items (web3 itself trips over some of them).
MALFORMED_BATCHES: dict[str, Callable[[int], Any]] = {
    "nulls": lambda count: [None] * count,
    "numbers": lambda count: list(range(count)),
    "ids of mixed types": lambda count: [
        {"jsonrpc": "2.0", "id": index if index % 2 else str(index), "result": "0x1"} for index in range(count)
    ],
    "neither result nor error": lambda count: [{"jsonrpc": "2.0", "id": index} for index in range(count)],
}


def malformed_rpc(make: Callable[[int], Any]) -> Any:
    """An ASGI JSON-RPC endpoint answering each batch of n requests with `make(n)`."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        asked = json.loads(await read_body(receive))
        answer = make(len(asked)) if isinstance(asked, list) else make(1)[0]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})

    return app


@pytest.mark.parametrize("shape", MALFORMED_BATCHES)
def test_verify_claims_against_malformed_batch_answers_is_pending_not_a_crash(hostile: Hostile, shape: str) -> None:
    claim = paid_claim(hostile)
    with serve_app(malformed_rpc(MALFORMED_BATCHES[shape])) as rpc:
        (verification,), _ = bounded(lambda: verify_claims(Web3(Web3.HTTPProvider(rpc)), [claim]))

    assert verification.verdict is Verdict.PENDING
    assert verification.check == "rpc"


@pytest.mark.parametrize("shape", MALFORMED_BATCHES)
def test_averify_claims_against_malformed_batch_answers_is_pending_not_a_crash(hostile: Hostile, shape: str) -> None:
    claim = paid_claim(hostile)

    async def verify(url: str) -> list[Any]:
        web3 = AsyncWeb3(AsyncHTTPProvider(url))
        try:
            return await averify_claims(web3, [claim])
        finally:
            await web3.provider.disconnect()

    with serve_app(malformed_rpc(MALFORMED_BATCHES[shape])) as rpc:
        (verification,), _ = bounded(lambda: anyio.run(verify, rpc))

    assert verification.verdict is Verdict.PENDING
    assert verification.check == "rpc"


def test_malformed_batch_answers_during_inline_verification_leave_the_verdict_pending(
    hostile: Hostile, tmp_path: Path
) -> None:
    honest(hostile)
    ledger = Ledger.sqlite(tmp_path / "spend.db")

    with (
        serve_app(malformed_rpc(MALFORMED_BATCHES["nulls"])) as rpc,
        client(hostile.devnet, ledger=ledger, rpc_url=rpc, verify="inline", verify_patience=0.5) as http,
    ):
        response = http.get(hostile.url + "/report")

    assert response.status_code == 200
    assert_pending_and_booked(payment_of(response), ledger)


# -- the RPC down before signing (the Permit2 allowance check) -------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_the_rpc_down_during_the_permit2_allowance_check_signs_nothing(hostile: Hostile, flavour: str) -> None:
    extra = {"name": "USD Coin", "version": "2", "assetTransferMethod": "permit2"}
    hostile.script = challenge_then(
        challenge_reply(challenge(requirement(hostile.devnet, extra=extra))), settle_honestly
    )

    with pytest.raises(Exception):  # noqa: B017, PT011 - which one is the next test's business
        fetch(flavour, hostile.devnet, hostile.url + "/report", rpc_url=closed_port_url())

    assert hostile.signatures == []
    assert len(hostile.seen) == 1


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_the_rpc_down_during_the_permit2_allowance_check_is_a_typed_error(hostile: Hostile, flavour: str) -> None:
    extra = {"name": "USD Coin", "version": "2", "assetTransferMethod": "permit2"}
    hostile.script = challenge_then(
        challenge_reply(challenge(requirement(hostile.devnet, extra=extra))), settle_honestly
    )

    with pytest.raises(ChainUnavailable, match="nothing was signed"):
        fetch(flavour, hostile.devnet, hostile.url + "/report", rpc_url=closed_port_url())
    assert hostile.signatures == []


# -- the server dies after settling -----------------------------------------------------------------------------


def dies_after_settling(hostile: Hostile, how: str) -> None:
    def paid(call: Call) -> Reply:
        settlement = call.settle()
        assert settlement.success
        if how == "hang":
            return Reply(200, [("content-type", "text/plain")], [], hang=True)  # never a status line's end
        return Reply(200, [("content-type", "text/plain"), ("content-length", "100")], [b"partial"], cut=True)

    hostile.script = challenge_then(challenge_reply(challenge(requirement(hostile.devnet))), paid)


@pytest.mark.parametrize("how", ["hang", "cut"])
def test_a_server_that_dies_after_settling_leaves_the_entry_held_and_reconcile_finds_it(
    hostile: Hostile, tmp_path: Path, how: str
) -> None:
    balances = Balances(hostile.devnet)
    dies_after_settling(hostile, how)
    ledger = Ledger.sqlite(tmp_path / "spend.db")

    with (
        client(hostile.devnet, ledger=ledger, timeout=httpx.Timeout(10, read=1.0)) as http,
        pytest.raises(httpx.HTTPError),
    ):
        http.get(hostile.url + "/report").read()

    (entry,) = ledger.entries()
    assert entry.state in (EntryState.UNKNOWN, EntryState.AUTHORIZED)
    assert entry.held == PRICE
    assert balances.moved() == PRICE

    report = ledger.reconcile(Web3Chain(Web3(Web3.HTTPProvider(hostile.devnet.rpc_url))))

    assert [settled.id for settled in report.settled] == [entry.id]
    settled = ledger.get(entry.id)
    assert (settled.state, settled.settled_amount) == (EntryState.SETTLED, PRICE)
    assert settled.tx_hash == hostile.settlements[0].transaction


# -- the client dies between signing and sending ----------------------------------------------------------------

KILLED_CLIENT = """
import os, signal, sys, httpx
from x402pay import PaymentTransport, SpendPolicy, Wallet
from x402pay.ledger import Ledger
url, network, database = sys.argv[1:4]

class DiesBeforeSending(httpx.HTTPTransport):
    def handle_request(self, request):
        if "payment-signature" in request.headers:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().handle_request(request)

paying = PaymentTransport(wallet=Wallet.from_env(), policy=SpendPolicy(max_per_request=50000, networks=(network,)),
                          ledger=Ledger.sqlite(database), inner=DiesBeforeSending())
httpx.Client(transport=paying).get(url, headers={"Idempotency-Key": "killed-1"})
"""


def test_a_client_killed_between_signing_and_sending_resends_the_stored_payment(
    hostile: Hostile, tmp_path: Path
) -> None:
    honest(hostile)
    database = tmp_path / "spend.db"
    env = {**os.environ, "X402PAY_PRIVATE_KEY": "0x" + bytes(hostile.devnet.payers[1].key).hex()}
    command = [sys.executable, "-c", KILLED_CLIENT, hostile.url + "/report", hostile.devnet.network, str(database)]

    died = subprocess.run(command, env=env, capture_output=True, timeout=120, check=False)

    assert died.returncode == -9
    assert hostile.signatures == []  # killed before the payment left
    ledger = Ledger.sqlite(database)
    (entry,) = ledger.entries()
    assert entry.state is EntryState.AUTHORIZED
    assert entry.held == PRICE
    stored = entry.payment["header"][1]

    with client(hostile.devnet, ledger=ledger) as http:
        response = http.get(hostile.url + "/report", headers={"Idempotency-Key": "killed-1"})

    assert response.status_code == 200
    assert hostile.signatures == [stored]  # the stored payment, byte for byte: no second signature
    assert ledger.get(entry.id).state is EntryState.CLAIMED


# -- clock skew -------------------------------------------------------------------------------------------------


def chain_time(hostile: Hostile) -> int:
    return int(hostile.devnet.web3().eth.get_block("latest")["timestamp"])


@pytest.mark.parametrize("skew", [300, 590])
def test_a_client_clock_minutes_ahead_still_pays_within_the_window(hostile: Hostile, skew: int) -> None:
    honest(hostile)
    balances = Balances(hostile.devnet)
    hostile.devnet.web3().provider.make_request("evm_mine", [])  # a reverted devnet's latest block may be old
    offset = chain_time(hostile) - time.time() + skew  # the skew is between the client and the chain
    with client(hostile.devnet, clock=lambda: time.time() + offset) as http:
        response = http.get(hostile.url + "/report")

    assert response.status_code == 200
    assert balances.moved() == PRICE
    authorization = unb64(hostile.signatures[0])["payload"]["authorization"]
    lifetime = int(authorization["validBefore"]) - int(authorization["validAfter"])
    assert lifetime <= 600 + 300  # backdated by the clock skew allowance, alive at most max_lifetime


def test_a_client_clock_ten_minutes_behind_signs_an_expired_window_and_nothing_moves(
    hostile: Hostile, tmp_path: Path
) -> None:
    honest(hostile)
    balances = Balances(hostile.devnet)
    ledger = Ledger.sqlite(tmp_path / "spend.db")
    with (
        client(hostile.devnet, ledger=ledger, clock=lambda: time.time() - 600) as http,
        pytest.raises(PaymentRejected),
    ):
        http.get(hostile.url + "/report")

    assert balances.moved() == 0
    (entry,) = ledger.entries()
    assert entry.state is EntryState.UNKNOWN
    assert entry.valid_before is not None
    assert entry.valid_before < chain_time(hostile)  # already expired on chain when it was signed
    report = ledger.reconcile(Web3Chain(Web3(Web3.HTTPProvider(hostile.devnet.rpc_url))), margin=0)
    assert [released.id for released in report.released] == [entry.id]
    assert ledger.get(entry.id).held == 0


def test_a_client_clock_ten_minutes_ahead_pays_once_or_is_refused_with_nothing_lost(
    hostile: Hostile, tmp_path: Path
) -> None:
    """At exactly the backdating allowance (600 s) validAfter is the chain's "now": settlement may be refused."""
    honest(hostile)
    balances = Balances(hostile.devnet)
    ledger = Ledger.sqlite(tmp_path / "spend.db")

    with client(hostile.devnet, ledger=ledger, clock=lambda: time.time() + 600) as http:
        try:
            http.get(hostile.url + "/report")
        except PaymentRejected:
            (entry,) = ledger.entries()
            assert (entry.state, entry.held, balances.moved()) == (EntryState.UNKNOWN, PRICE, 0)
        else:
            (entry,) = ledger.entries()
            assert (entry.state, balances.moved()) == (EntryState.SETTLED, PRICE)
    assert len(hostile.signatures) == 1
