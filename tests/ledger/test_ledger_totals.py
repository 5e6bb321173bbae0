"""The running totals behind budget checks: always the sums over the entries, and built by the migration alike."""

from __future__ import annotations

import contextlib
import random
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from ledger_support import PAY_TO, Backend, Clock

from x402pay.errors import BudgetExceeded, InvalidTransition, PaymentInFlight
from x402pay.ledger import DAY, EACH_ORIGIN, HOUR, Budget, Entry, EntryState, Ledger, Transfer
from x402pay.ledger._chain import Resolution
from x402pay.ledger._channels import CHANNELS
from x402pay.ledger._model import MAXIMUM_STATES
from x402pay.ledger._sql import ROUTES, Program, Query, take_over
from x402pay.ledger._totals import ALL_ORIGINS, ALL_TIME, SPANS, TOTALS, held, window_ranges

ASSETS = ("0x5FbDB2315678afecb367f032d93F642f64180aa3", "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512")
NETWORKS = ("eip155:84532", "base-sepolia", "eip155:31337")
ORIGINS = ("https://a.example", "https://B.example", "http://127.0.0.1:8000")
BUDGETS = (
    Budget(ASSETS[0], 10**9, name="total"),
    Budget(ASSETS[0], 60_000, window=DAY, origin=EACH_ORIGIN, name="per origin per day"),
    Budget({ASSETS[0], ASSETS[1]}, 90_000, window=HOUR, network="eip155:84532", name="base sepolia hourly"),
    Budget(ASSETS[1], 40_000, window=90, origin=ORIGINS[0], name="a, 90 s"),
    Budget(ASSETS[1], 10**9, window=7 * DAY + 13, name="a week and a bit"),
)


def _reserve(ledger: Ledger, rng: random.Random, number: int) -> None:
    with contextlib.suppress(BudgetExceeded, PaymentInFlight):
        ledger.reserve(f"k{number % 150}", origin=rng.choice(ORIGINS), asset=rng.choice(ASSETS),
                       network=rng.choice(NETWORKS), amount=rng.randint(1, 9_000), pay_to=PAY_TO)  # fmt: skip


def _step(ledger: Ledger, rng: random.Random, entry: Entry) -> None:
    """One transition of `entry`, chosen at random among those that write `held` (refusals are fine)."""
    choice = rng.randrange(8)
    amount = rng.randint(0, entry.amount)
    try:
        if choice == 0:
            ledger.authorize(entry.id, payment={"p": 1}, payer=PAY_TO, nonce=entry.id, valid_before=9,
                             method="permit2", amount=rng.choice([None, amount]))  # fmt: skip
        elif choice == 1:
            ledger.claim(entry.id, amount=amount, tx_hash="0x1")
        elif choice == 2:
            ledger.settle(entry.id, amount=amount, tx_hash=f"0x{amount}")
        elif choice == 3:
            ledger.release(entry.id, "refused")
        elif choice == 4:
            ledger.mark_mismatch(entry.id, "lies")
        elif choice == 5:
            verdict = Resolution(entry, rng.choice(["settle", "release"]), "chain", Transfer(amount, "0x2"))
            ledger._apply(verdict)
        elif choice == 6:
            ledger._db.run(take_over(entry, int(ledger._steps.now())), write=True)
        else:
            ledger.mark_unknown(entry.id)
    except InvalidTransition:
        pass


def _mix(ledger: Ledger, clock: Clock, seed: int, operations: int) -> None:
    """A random mix of every operation that writes `held`, the clock jumping across seconds, minutes, hours, days."""
    rng = random.Random(seed)  # noqa: S311  -- a reproducible mix, not a secret
    for number in range(operations):
        clock.advance(rng.choice([0, 1, 7, 59, 61, 3_599, 3_601, 40_000, DAY]))
        if rng.random() < 0.45:
            _reserve(ledger, rng, number)
        elif rng.random() < 0.05:
            ledger.release_stale(older_than=rng.choice([60, 4_000]))
        else:
            found = ledger.entries(limit=1_000, states=MAXIMUM_STATES | {EntryState.SETTLED})
            if found:
                _step(ledger, rng, rng.choice(found))
        for origin in ledger.untrusted():
            ledger.clear_untrusted(origin)


def _totals(ledger: Ledger) -> Counter[tuple[str, str, str, int, int]]:
    rows = ledger._db.run(_all_totals())
    return Counter({(origin, asset, network, span, bucket): held for origin, asset, network, span, bucket, held in rows
                    if held})  # fmt: skip


def _all_totals() -> Program[list[tuple[str, str, str, int, int, int]]]:
    rows = yield Query(f"SELECT origin, asset, network, span, bucket, held FROM {TOTALS}")  # noqa: S608
    return [(str(a), str(b), str(c), int(d), int(e), int(f)) for a, b, c, d, e, f in rows]


def _sums_over_entries(ledger: Ledger) -> Counter[tuple[str, str, str, int, int]]:
    """What the totals must be, summed in Python from every entry."""
    expected: Counter[tuple[str, str, str, int, int]] = Counter()
    for entry in ledger.entries(limit=100_000):
        for origin in (entry.origin, ALL_ORIGINS):
            for span in (ALL_TIME, *SPANS):
                bucket = entry.created_at // span * span if span else 0
                expected[(origin, entry.asset, entry.network, span, bucket)] += entry.held
    return Counter({key: value for key, value in expected.items() if value})


def _budget_answers(ledger: Ledger) -> list[object]:
    answers: list[object] = [(s.budget.name, s.origin, s.held) for s in ledger.budget_status()]
    for origin in ORIGINS:
        answers += [(s.budget.name, s.origin, s.held) for s in ledger.budget_status(origin=origin)]
        for asset in ASSETS:
            answers += [ledger.remaining(asset, network=network, origin=origin) for network in NETWORKS]
    return answers


def _held_over_entries(ledger: Ledger, budget: Budget, origin: str | None) -> int:
    """The money held against `budget` as the ledger summed it before the totals: over the window's entries."""
    now = ledger._steps.now()
    scoped = origin if budget.origin == EACH_ORIGIN else budget.origin
    return sum(
        entry.held
        for entry in ledger.entries(limit=100_000)
        if budget.applies_to(entry.asset, entry.network, entry.origin)
        and (scoped is None or entry.origin == scoped.lower())
        and (budget.window is None or entry.created_at > now - budget.window)
    )


def test_the_totals_are_the_sums_over_the_entries_after_any_mix_of_operations(backend: Backend) -> None:
    clock = Clock()
    seen: set[EntryState] = set()
    with backend.ledger(BUDGETS, clock=clock) as ledger:
        for seed in range(3):
            _mix(ledger, clock, seed, 150)
            assert _totals(ledger) == _sums_over_entries(ledger)
            seen |= {entry.state for entry in ledger.entries(limit=100_000)}
            for budget in BUDGETS:
                for origin in (None, *ORIGINS):
                    [total] = ledger._db.run(held([budget], origin, ledger._steps.now()))
                    assert total == _held_over_entries(ledger, budget, origin), (budget.name, origin)
    assert seen >= {EntryState.SETTLED, EntryState.RELEASED, EntryState.MISMATCH}  # the mix moved money every way
    assert seen & MAXIMUM_STATES - {EntryState.MISMATCH}


def test_a_schema_4_ledger_with_entries_migrates_to_the_same_budget_answers(backend: Backend) -> None:
    clock = Clock()
    with backend.ledger(BUDGETS, clock=clock) as ledger:
        _mix(ledger, clock, 7, 250)
        before, totals = _budget_answers(ledger), _totals(ledger)
        assert any(isinstance(answer, int) and answer < 60_000 for answer in before)  # budgets partly used
        ledger._db.run(_back_to_schema_4(), write=True, exclusive=True)
    with backend.ledger(BUDGETS, clock=clock) as migrated:
        assert _totals(migrated) == totals
        assert _budget_answers(migrated) == before


def _back_to_schema_4() -> Program[None]:
    yield Query(f"DROP TABLE {TOTALS}")
    yield Query(f"DROP TABLE {ROUTES}")  # schema 6's, which a schema-4 ledger does not have either
    yield Query(f"DROP TABLE {CHANNELS}")  # and schema 7's
    yield Query("DROP INDEX x402pay_entries_unfinished")  # and schema 8's, and the indexes they replaced
    yield Query("DROP INDEX x402pay_entries_keys")
    yield Query("CREATE UNIQUE INDEX x402pay_entries_live_key ON x402pay_entries (key) WHERE state <> 'released'")
    yield Query("CREATE INDEX x402pay_entries_key ON x402pay_entries (key)")
    yield Query("CREATE INDEX x402pay_entries_state ON x402pay_entries (state, created_at)")
    yield Query("CREATE INDEX x402pay_entries_held ON x402pay_entries (asset, created_at, network, origin, held)")
    yield Query("UPDATE x402pay_schema SET version = 4")


@pytest.mark.parametrize("past_midnight", [0, 30, 31, 3_725, 3_779, 86_399])
@pytest.mark.parametrize("window", [1, 90, 3_631, DAY, 7 * DAY + 13])
def test_a_window_is_cut_into_whole_buckets_that_count_each_second_of_it_once(past_midnight: int, window: int) -> None:
    now = 1_800_000_000 - 1_800_000_000 % DAY + past_midnight
    ranges = window_ranges(window, now)
    for span, first, end, _sign in ranges:
        assert first % span == 0
        assert end is None or end % span == 0
    for span, first, end, _sign in ranges[:-1]:
        assert end is not None
        assert (end - first) // span <= 30  # the nearer side of each coarser bucket
    for created in range(now - window - DAY, now + HOUR, 7):  # every residue of 60 and of 3,600 (7 is prime)
        counted = sum(
            sign
            for span, first, end, sign in ranges
            if first <= created - created % span and (end is None or created - created % span < end)
        )
        assert counted == (created > now - window), created
    assert window_ranges(None, now) == [(ALL_TIME, 0, None, 1)]


def test_sqlite_checks_a_budget_from_the_totals_key_without_scanning(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    Ledger.sqlite(path).close()
    query = next(held([BUDGETS[1], BUDGETS[2]], ORIGINS[0], 1_800_000_000))
    with sqlite3.connect(path) as conn:
        plan = " ".join(str(row[-1]) for row in conn.execute(f"EXPLAIN QUERY PLAN {query.sql}", query.params))
    assert f"SCAN {TOTALS}" not in plan, plan
    assert plan.count("USING PRIMARY KEY") + plan.count("USING INDEX") >= 8, plan
