"""A fleet on one channel: two payers' transports with the same key, each on its own PostgreSQL connection, pay the
official server from two threads and two processes at once; the shared channel book's lease queues them, so no two
vouchers are signed from the same cumulative charge and the server refuses none as busy.

PostgreSQL comes from $X402PAY_TEST_POSTGRES_DSN (default: postgres@127.0.0.1:5432/test); unreachable, the tests
skip saying so, except under CI, where they fail.
"""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from channel_support import Channels
from eth_account.signers.local import LocalAccount
from official_stack import PRICE, official_server
from paid_channel_support import drop_schema, reachable_postgres

import x402pay
from x402pay.ledger import Ledger
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

ROUNDS = 6


@pytest.fixture
def postgres_schema() -> Iterator[tuple[str, str]]:
    """A reachable PostgreSQL DSN and a schema of this test's own (dropped after); a skip (CI: a failure) without."""
    dsn = reachable_postgres()
    schema = f"x402pay_fleet_{uuid.uuid4().hex[:12]}"
    Ledger.postgres(dsn, schema=schema).close()
    yield dsn, schema
    drop_schema(dsn, schema)


def pay_rounds(chain: tuple[str, str], key: bytes, dsn: str, schema: str, url: str, rounds: int) -> list[int]:
    """One fleet member: its own ledger connection and transport; the statuses of its paid requests."""
    rpc_url, usdc = chain
    policy = x402pay.SpendPolicy(max_per_request=PRICE, assets={usdc}, schemes=("batch-settlement",))
    with Ledger.postgres(dsn, schema=schema) as ledger:
        transport = x402pay.PaymentTransport(wallet=x402pay.Wallet.from_key(key), policy=policy, rpc_url=rpc_url,
                                             ledger=ledger)  # fmt: skip
        with httpx.Client(transport=transport) as client:
            return [client.get(url + "/report").status_code for _ in range(rounds)]


def chain_of(devnet: Devnet) -> tuple[str, str]:
    return devnet.rpc_url, devnet.usdc


def check_the_book(channels: Channels, dsn: str, schema: str, members: int) -> None:
    paid = members * ROUNDS
    with Ledger.postgres(dsn, schema=schema) as ledger:
        (record,) = ledger.channels.all()
        deposits = ledger.entries()
    assert record.charged == record.signed_max == paid * PRICE  # every ceiling signed once, in turn
    identity = bytes.fromhex(record.channel_id[2:])
    balance, claimed = channels.settlement.functions.channels(identity).call()
    assert (balance, claimed) == (record.deposited, 0)
    assert sum(entry.amount for entry in deposits) == record.deposited  # every deposit held in the shared books
    assert record.deposited == -(-paid // 10) * 10 * PRICE  # no deposit more than the charges needed


def test_two_threads_with_their_own_connections_share_one_channel(
    channels: Channels, payer: LocalAccount, postgres_schema: tuple[str, str]
) -> None:
    dsn, schema = postgres_schema
    devnet = channels.devnet
    with official_server(devnet) as stack, ThreadPoolExecutor(2) as pool:
        runs = [
            pool.submit(pay_rounds, chain_of(devnet), bytes(payer.key), dsn, schema, stack.url, ROUNDS)
            for _ in range(2)
        ]
        assert [run.result() for run in runs] == [[200] * ROUNDS] * 2
    check_the_book(channels, dsn, schema, 2)


def test_two_processes_share_one_channel(
    channels: Channels, payer: LocalAccount, postgres_schema: tuple[str, str]
) -> None:
    dsn, schema = postgres_schema
    devnet = channels.devnet
    context = multiprocessing.get_context("spawn")
    with official_server(devnet) as stack, context.Pool(2) as pool:
        args = (chain_of(devnet), bytes(payer.key), dsn, schema, stack.url, ROUNDS)
        results = [pool.apply_async(pay_rounds, args) for _ in range(2)]
        assert [result.get(timeout=180) for result in results] == [[200] * ROUNDS] * 2
    check_the_book(channels, dsn, schema, 2)
