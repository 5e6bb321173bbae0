"""The payer's channel records in the ledger (SQLite and PostgreSQL), through a `Ledger` or an `AsyncLedger`: leases
that queue holders across threads, tasks and processes, changes only under a lease, and records that survive a
reopen."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import threading

import pytest
from ledger_support import ASSET, NETWORK, ORIGIN, PAY_TO, Backend, authorize, reserve

from x402pay._protocol.addresses import BATCH_SETTLEMENT_ADDRESS
from x402pay.ledger import Budget, Ledger
from x402pay.ledger._channels import AsyncChannelBook, ChannelBook, ChannelRecord
from x402pay.ledger._holder import new_holder

CHANNEL = "0x" + "ab" * 32
STEP = 7


def record(channel_id: str = CHANNEL) -> ChannelRecord:
    config = {"payer": PAY_TO, "receiver": PAY_TO, "withdrawDelay": 900}
    return ChannelRecord(channel_id, NETWORK, ORIGIN, ASSET, PAY_TO, config)


def test_a_lease_keeps_every_other_holder_out_until_released(backend: Backend) -> None:
    with backend.ledger() as ledger:
        book = ledger.channels
        first = book.lease(record(), "holder-a", 60)
        assert first is not None
        assert first.lease == "holder-a"
        assert book.lease(record(), "holder-b", 60) is None
        assert book.lease(record(), "holder-a", 60) is not None  # its own lease is renewed
        book.release(CHANNEL, "holder-a")
        taken = book.lease(record(), "holder-b", 60)
        assert taken is not None
        assert taken.lease == "holder-b"


def test_an_expired_lease_is_taken_over(backend: Backend) -> None:
    now = [1_000.0]
    with backend.ledger(clock=lambda: now[0]) as ledger:
        book = ledger.channels
        assert book.lease(record(), "dead", 30) is not None
        assert book.lease(record(), "alive", 30) is None
        now[0] += 31
        assert book.lease(record(), "alive", 30) is not None
        with pytest.raises(LookupError):
            book.update(CHANNEL, "dead", charged=5)


def _lease_and_die(backend: Backend) -> None:
    with backend.ledger() as ledger:
        assert ledger.channels.lease(record(), new_holder("child"), 3_600) is not None
        os._exit(0)  # no release, no close: as a process that was killed


def test_the_lease_of_a_process_that_ended_is_taken_over_at_once(backend: Backend) -> None:
    context = multiprocessing.get_context("spawn")
    child = context.Process(target=_lease_and_die, args=(backend,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    with backend.ledger() as ledger:
        book = ledger.channels
        left = book.get(CHANNEL)
        assert left is not None
        assert left.lease is not None
        assert left.lease.startswith(f"{socket.gethostname()}/{child.pid}/")  # held for the next hour, but ...
        mine = new_holder("parent")
        taken = book.lease(record(), mine, 60)  # ... its process is gone
        assert taken is not None
        assert taken.lease == mine
        assert book.lease(record(), new_holder("sibling"), 60) is None  # this process is alive: its lease holds
        book.release(CHANNEL, mine)
        elsewhere = "another-machine/123/456#x402pay-0"
        assert book.lease(record(), elsewhere, 60) is not None
        assert book.lease(record(), new_holder("here"), 60) is None  # another machine's process cannot be asked


def test_changes_need_the_lease_and_outlive_the_ledger_object(backend: Backend) -> None:
    with backend.ledger() as ledger:
        book = ledger.channels
        with pytest.raises(LookupError):
            book.update(CHANNEL, "nobody", charged=1)  # no such channel either
        assert book.lease(record(), "holder", 60) is not None
        book.update(CHANNEL, "holder", charged=3, signed_max=10, deposited=100, chain_balance=100)
        with pytest.raises(ValueError, match="changeable"):
            book.update(CHANNEL, "holder", lease="someone else")
        book.release(CHANNEL, "holder")
        with pytest.raises(LookupError):
            book.update(CHANNEL, "holder", charged=4)
    with backend.ledger() as reopened:
        kept = reopened.channels.get(CHANNEL)
        assert kept is not None
        assert (kept.charged, kept.signed_max, kept.escrow, kept.committed) == (3, 10, 100, 7)
        assert kept.config["withdrawDelay"] == 900
        assert [each.channel_id for each in reopened.channels.all()] == [CHANNEL]
        assert reopened.channels.forget(CHANNEL)
        assert reopened.channels.get(CHANNEL) is None


async def test_an_async_ledgers_lease_keeps_every_other_holder_out_sync_ones_too(backend: Backend) -> None:
    async with await backend.aledger() as ledger:
        with backend.ledger() as beside:  # another connection
            book = ledger.channels
            first = await book.lease(record(), "async-a", 60)
            assert first is not None
            assert first.lease == "async-a"
            assert await book.lease(record(), "async-b", 60) is None
            assert beside.channels.lease(record(), "sync-c", 60) is None  # the same lease
            with pytest.raises(LookupError):
                await book.update(CHANNEL, "async-b", charged=1)
            changed = await book.update(CHANNEL, "async-a", charged=3, signed_max=10)
            assert (changed.charged, changed.signed_max) == (3, 10)
            await book.release(CHANNEL, "async-a")
            with pytest.raises(LookupError):
                await book.update(CHANNEL, "async-a", charged=4)  # released: no longer its to change
            taken = beside.channels.lease(record(), "sync-c", 60)
            assert taken is not None
            assert (taken.lease, taken.charged) == ("sync-c", 3)
            assert await book.lease(record(), "async-b", 60) is None
            assert [each.channel_id for each in await book.all()] == [CHANNEL]


async def _asign_in_turn(book: AsyncChannelBook, holder: str, rounds: int, ceilings: list[int]) -> None:
    """`_sign_in_turn` for an async book, yielding to the loop while the lease is busy."""
    done = 0
    while done < rounds:
        held = await book.lease(record(), holder, 30)
        if held is None:
            await asyncio.sleep(0.001)
            continue
        ceiling = held.signed_max + STEP
        ceilings.append(ceiling)
        await book.update(CHANNEL, holder, signed_max=ceiling, charged=ceiling)
        await book.release(CHANNEL, holder)
        done += 1


async def test_async_tasks_with_their_own_connections_sign_every_ceiling_once(backend: Backend) -> None:
    ledgers = [await backend.aledger() for _ in range(3)]
    ceilings: list[int] = []
    await asyncio.gather(*(_asign_in_turn(each.channels, f"task-{n}", 10, ceilings) for n, each in enumerate(ledgers)))
    assert sorted(ceilings) == [STEP * n for n in range(1, 31)]
    final = await ledgers[0].channels.get(CHANNEL)
    assert final is not None
    assert (final.signed_max, final.lease) == (30 * STEP, None)
    for each in ledgers:
        await each.aclose()


def _sign_in_turn(book: ChannelBook, holder: str, rounds: int, ceilings: list[int]) -> None:
    """Take the lease, sign the next ceiling from what the record says, record it, let go: as a payer does."""
    done = 0
    while done < rounds:
        held = book.lease(record(), holder, 30)
        if held is None:
            continue
        ceiling = held.signed_max + STEP
        ceilings.append(ceiling)
        book.update(CHANNEL, holder, signed_max=ceiling, charged=ceiling)
        book.release(CHANNEL, holder)
        done += 1


def test_threads_with_their_own_connections_sign_every_ceiling_once(backend: Backend) -> None:
    ledgers = [backend.ledger() for _ in range(4)]
    ceilings: list[int] = []
    threads = [
        threading.Thread(target=_sign_in_turn, args=(ledger.channels, f"thread-{n}", 15, ceilings))
        for n, ledger in enumerate(ledgers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(ceilings) == [STEP * n for n in range(1, 61)]
    final = ledgers[0].channels.get(CHANNEL)
    assert final is not None
    assert final.signed_max == 60 * STEP
    for ledger in ledgers:
        ledger.close()


def _process(backend: Backend, holder: str, rounds: int, out: multiprocessing.Queue[list[int]]) -> None:
    ceilings: list[int] = []
    if holder.startswith("async"):
        asyncio.run(_aprocess(backend, holder, rounds, ceilings))
    else:
        with backend.ledger() as ledger:
            _sign_in_turn(ledger.channels, holder, rounds, ceilings)
    out.put(ceilings)


async def _aprocess(backend: Backend, holder: str, rounds: int, ceilings: list[int]) -> None:
    async with await backend.aledger() as ledger:
        await _asign_in_turn(ledger.channels, holder, rounds, ceilings)


def test_processes_sharing_the_ledger_sign_every_ceiling_once(backend: Backend) -> None:
    Ledger.open(backend.target, schema=backend.schema).close()  # migrated before the racers start
    context = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[list[int]] = context.Queue()
    holders = ["sync-0", "sync-1", "async-2"]  # an AsyncLedger's process queues on the same lease
    processes = [context.Process(target=_process, args=(backend, holder, 10, out)) for holder in holders]
    for process in processes:
        process.start()
    ceilings = [ceiling for _ in processes for ceiling in out.get(timeout=120)]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert sorted(ceilings) == [STEP * n for n in range(1, 31)]


def test_escrow_that_came_back_is_no_longer_held_by_the_budgets(backend: Backend) -> None:
    budget = Budget(ASSET, 100_000)
    with backend.ledger((budget,)) as ledger:
        for number, amount in enumerate((10_000, 5_000)):  # two settled deposits into the channel contract
            entry = reserve(ledger, f"deposit-{number}", amount, scheme="batch-settlement",
                            pay_to=BATCH_SETTLEMENT_ADDRESS)  # fmt: skip
            authorize(ledger, entry.id, nonce=f"0x{number:064x}")
            ledger.settle(entry.id, amount=amount, tx_hash=f"0x{number:064x}")
        reserve(ledger, "an exact payment", 700)  # not escrow: untouched
        assert ledger.remaining(ASSET, network=NETWORK, origin=ORIGIN) == 100_000 - 15_700
        channel = ChannelRecord(CHANNEL, NETWORK, ORIGIN, ASSET.lower(), PAY_TO, {})
        assert ledger.channels.return_escrow(channel, 12_000) == 12_000  # the oldest first, then the next
        assert sorted(entry.held for entry in ledger.entries()) == [0, 700, 3_000]
        assert ledger.remaining(ASSET, network=NETWORK, origin=ORIGIN) == 100_000 - 3_700
        assert ledger.channels.return_escrow(channel, 10_000) == 3_000  # no more than was held
        other = ChannelRecord(CHANNEL, NETWORK, "https://elsewhere", ASSET, PAY_TO, {})
        assert ledger.channels.return_escrow(other, 1) == 0
