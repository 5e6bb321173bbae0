"""Helpers the ledger tests share with the processes they spawn: backends, a settable clock, worker functions."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from x402pay.ledger import AsyncLedger, Budget, BudgetExceeded, Ledger

ASSET = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
NETWORK = "eip155:31337"
ORIGIN = "https://api.example"
PAY_TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
POSTGRES_ENV = "X402PAY_TEST_POSTGRES_DSN"
DEFAULT_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"


class Clock:
    """A clock that moves only when told (seconds since the epoch)."""

    def __init__(self, now: float = 1_800_000_000) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Backend:
    """Where a test's ledger lives: an SQLite file, or a fresh PostgreSQL schema (picklable, for child processes)."""

    name: str
    target: str
    schema: str | None = None

    def ledger(self, budgets: tuple[Budget, ...] = (), **options: Any) -> Ledger:
        return Ledger.open(self.target, schema=self.schema, budgets=budgets, **options)

    async def aledger(self, budgets: tuple[Budget, ...] = (), **options: Any) -> AsyncLedger:
        return await AsyncLedger.open(self.target, schema=self.schema, budgets=budgets, **options)


def postgres_dsn() -> str:
    return os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES_DSN)


def reserve(ledger: Ledger, key: str, amount: int, **fields: Any) -> Any:
    values = {"origin": ORIGIN, "asset": ASSET, "network": NETWORK, "pay_to": PAY_TO, **fields}
    return ledger.reserve(key, amount=amount, **values)


async def areserve(ledger: AsyncLedger, key: str, amount: int, **fields: Any) -> Any:
    values = {"origin": ORIGIN, "asset": ASSET, "network": NETWORK, "pay_to": PAY_TO, **fields}
    return await ledger.reserve(key, amount=amount, **values)


def authorize(ledger: Ledger, entry_id: str, nonce: str = "0x" + "11" * 32, **fields: Any) -> Any:
    values = {"payment": {"header": "PAYMENT-SIGNATURE", "value": "eyJ4NDAy"}, "payer": PAY_TO,
              "valid_before": 1_900_000_000, "method": "eip3009", **fields}  # fmt: skip
    return ledger.authorize(entry_id, nonce=nonce, **values)


def cycles(ledger: Ledger, prefix: str, attempts: int, amount: int) -> int:
    """Reserve, authorize and settle `attempts` payments; return how many the budgets took."""
    paid = 0
    for number in range(attempts):
        try:
            entry = reserve(ledger, f"{prefix}-{number}", amount)
        except BudgetExceeded:
            continue
        authorize(ledger, entry.id, nonce=f"{prefix}-{number}")
        ledger.settle(entry.id, amount=amount, tx_hash=f"0x{prefix}{number}")
        paid += 1
    return paid


def racing_cycles(backend: Backend, budgets: tuple[Budget, ...], prefix: str, attempts: int, amount: int,
                  start: Any) -> int:  # fmt: skip
    """`cycles` on a ledger (a connection) of its own, opened before `start` (a barrier) lets every racer go."""
    with backend.ledger(budgets) as ledger:
        start.wait(60)
        return cycles(ledger, prefix, attempts, amount)


def process_worker(backend: Backend, budgets: tuple[Budget, ...], prefix: str, attempts: int, amount: int,
                   start: Any, results: Any) -> None:  # fmt: skip
    """`racing_cycles` in a child process; the count goes to `results`."""
    results.put(racing_cycles(backend, budgets, prefix, attempts, amount, start))


def refusing_worker(backend: Backend, budgets: tuple[Budget, ...], prefix: str, origins: list[str], amount: int,
                    start: Any, results: Any) -> None:  # fmt: skip
    """In a child process: a reserve -> authorize -> settle cycle to each of `origins` in turn, once `start` lets every
    racer go; (entries paid per origin, (budget name, room it said it had) per refusal) go to `results`."""
    paid: dict[str, int] = {}
    refusals: list[tuple[str | None, int]] = []
    with backend.ledger(budgets) as ledger:
        start.wait(60)
        for number, origin in enumerate(origins):
            try:
                entry = reserve(ledger, f"{prefix}-{number}", amount, origin=origin)
            except BudgetExceeded as refused:
                refusals.append((refused.budget.name, refused.remaining))
                continue
            authorize(ledger, entry.id, nonce=f"{prefix}-{number}")
            ledger.settle(entry.id, amount=amount, tx_hash=f"0x{prefix}{number}")
            paid[origin] = paid.get(origin, 0) + 1
    results.put((paid, refusals))


def run_threads(count: int, target: Any, *args: Any) -> list[Any]:
    """Run `target(index, *args)` in `count` threads released together; return results in order."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait(30)
        results[index] = target(index, *args)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results
