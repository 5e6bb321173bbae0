"""Lost updates would show here: threads, processes and 1,000 async tasks race for a budget that fits exactly N."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from collections.abc import Callable
from typing import Any

from ledger_support import (
    ASSET,
    NETWORK,
    ORIGIN,
    Backend,
    areserve,
    authorize,
    process_worker,
    racing_cycles,
    refusing_worker,
    reserve,
    run_threads,
)

from x402pay.ledger import EACH_ORIGIN, Budget, BudgetExceeded, EntryState, PaymentInFlight

AMOUNT = 7


def budget_for(payments: int) -> tuple[Budget, ...]:
    return (Budget(ASSET, AMOUNT * payments),)


def assert_exactly(backend: Backend, payments: int) -> None:
    with backend.ledger(budget_for(payments)) as ledger:
        assert ledger.remaining(ASSET, network=NETWORK, origin=ORIGIN) == 0
        held = [entry.held for entry in ledger.entries(limit=10_000) if entry.held]
        assert held == [AMOUNT] * payments


def test_eight_threads_with_a_connection_each_pay_exactly_n(backend: Backend) -> None:
    budgets = budget_for(13)
    backend.ledger(budgets).close()  # create the schema before the race
    start = threading.Barrier(8)
    paid = run_threads(8, lambda index: racing_cycles(backend, budgets, f"t{index}", 4, AMOUNT, start))
    assert sum(paid) == 13
    assert_exactly(backend, 13)


def test_eight_threads_sharing_one_ledger_pay_exactly_n(backend: Backend) -> None:
    with backend.ledger(budget_for(11)) as ledger:

        def pay(index: int) -> int:
            paid = 0
            for number in range(4):
                try:
                    entry = reserve(ledger, f"{index}-{number}", AMOUNT)
                except BudgetExceeded:
                    continue
                ledger.settle(authorize(ledger, entry.id, nonce=entry.key).id, amount=AMOUNT, tx_hash="0x")
                paid += 1
            return paid

        assert sum(run_threads(8, pay)) == 11
    assert_exactly(backend, 11)


def in_processes(count: int, worker: Callable[..., None], args_of: Callable[[int], tuple[Any, ...]]) -> list[Any]:
    """Run `worker` in `count` spawned processes, each given ``args_of(index)`` then a shared start barrier and a
    results queue; what each put on the queue, once all have exited cleanly."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(count), context.Queue()
    processes = [context.Process(target=worker, args=(*args_of(index), start, results)) for index in range(count)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    return outcomes


def test_four_processes_pay_exactly_n(backend: Backend) -> None:
    """On PostgreSQL these are four "machines": separate processes, separate connections, one budget."""
    budgets = budget_for(30)
    backend.ledger(budgets).close()
    paid = in_processes(4, process_worker, lambda index: (backend, budgets, f"p{index}", 15, AMOUNT))
    assert sum(paid) == 30
    assert_exactly(backend, 30)


def test_eight_processes_fill_a_total_and_a_per_origin_budget_exactly_and_each_refusal_says_why(
    backend: Backend,
) -> None:
    """Three attempts in four go to one origin, whose budget may run out before the total does. Every refusal is
    read in the transaction that tried to reserve, so the room it reports is the room there was: less than one
    payment."""
    busy, other = "https://busy.example", "https://other.example"
    budgets = (Budget(ASSET, AMOUNT * 30, name="total"), Budget(ASSET, AMOUNT * 20, origin=EACH_ORIGIN, name="each"))
    backend.ledger(budgets).close()
    origins = [busy, busy, busy, other] * 3
    outcomes = in_processes(8, refusing_worker, lambda index: (backend, budgets, f"p{index}", origins, AMOUNT))
    paid = {origin: sum(done.get(origin, 0) for done, _ in outcomes) for origin in (busy, other)}
    refusals = [refusal for _, refused in outcomes for refusal in refused]
    assert (sum(paid.values()), len(refusals)) == (30, 96 - 30)
    assert max(paid.values()) <= 20
    assert "total" in {name for name, _ in refusals} <= {"total", "each"}
    assert all(0 <= room < AMOUNT for _, room in refusals)
    with backend.ledger(budgets) as ledger:
        assert sum(entry.held for entry in ledger.entries(limit=10_000)) == AMOUNT * 30


async def test_a_thousand_async_tasks_reserve_exactly_n(backend: Backend) -> None:
    budgets = budget_for(137)
    ledgers = [await backend.aledger(budgets), await backend.aledger(budgets)]

    async def attempt(number: int) -> bool:
        try:
            await areserve(ledgers[number % 2], f"a{number}", AMOUNT)
        except BudgetExceeded:
            return False
        return True

    try:
        outcomes = await asyncio.gather(*(attempt(number) for number in range(1_000)))
    finally:
        for ledger in ledgers:
            await ledger.aclose()
    assert sum(outcomes) == 137
    assert_exactly(backend, 137)


def test_one_key_raced_by_eight_threads_is_reserved_once(backend: Backend) -> None:
    backend.ledger().close()

    def race(index: int) -> str:
        with backend.ledger() as ledger:
            try:
                return reserve(ledger, "the-one-request", AMOUNT).state
            except PaymentInFlight:
                return "in flight"

    outcomes = run_threads(8, race)
    assert sorted(outcomes) == ["in flight"] * 7 + [EntryState.RESERVED]
    with backend.ledger() as ledger:
        assert len(ledger.entries()) == 1


def test_retries_racing_after_authorization_all_get_the_same_payment(backend: Backend) -> None:
    with backend.ledger() as ledger:
        entry = authorize(ledger, reserve(ledger, "k", AMOUNT).id)
    outcomes = run_threads(8, lambda index: _reserve_in_own_ledger(backend, "k").id)
    assert set(outcomes) == {entry.id}


def _reserve_in_own_ledger(backend: Backend, key: str):  # type: ignore[no-untyped-def]
    with backend.ledger() as ledger:
        return reserve(ledger, key, AMOUNT)
