# ruff: noqa: S608  -- table and column names are constants of this module; every value is a bound parameter
"""Running totals of the money held, so that a budget check costs the same with a million entries as with none.

Budgets are configured per `Ledger`, not stored, so the totals are budget-agnostic: one row per (origin, asset,
network, span, bucket) holds the sum of `held` over the entries of that origin, asset and network created in the
bucket, a time slot of `span` seconds starting at `bucket`. Every span of `SPANS` is kept, for each origin and for
all origins together (origin ``''``), and span 0 is all time. Every write of an entry's `held` adjusts them in the
same transaction (`adjust`), so they always equal the sums over the entries.

A rolling window counts the entries created in (now - window, now] and after (a clock behind another process's):
that interval is cut into whole buckets, finest at its start (`window_ranges`). At each span the ragged head is
read from whichever side of the coarser bucket holding it is nearer: the fine buckets from the window's start up
to the coarser boundary, or that whole coarser bucket less the fine ones before the start. So at most 30
one-second buckets, 30 minutes, 12 hours and then the days, whatever the number of entries (a long history fills
every bucket; reading the nearer side halves what a check reads). A budget's check is one statement over them.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Collection, Sequence
from typing import Any, Final

from x402pay._protocol.networks import chain_id_of, network_names
from x402pay.ledger._model import EACH_ORIGIN, Budget, Entry
from x402pay.ledger._query import Program, Query

TOTALS: Final = "x402pay_held_totals"
ENTRIES: Final = "x402pay_entries"
#: The origin of the rows that count every origin together.
ALL_ORIGINS: Final = ""
#: Bucket lengths in seconds, finest first; each divides the next.
SPANS: Final = (1, 60, 3_600, 86_400)
#: The span of the all-time rows (bucket 0).
ALL_TIME: Final = 0
_KEY: Final = "origin, asset, network, span, bucket"


def _rebuild_from_entries() -> tuple[str, ...]:
    """Statements that recompute every total from the entries (the migration runs them; so may a bulk load)."""
    statements = [f"DELETE FROM {TOTALS}"]
    for origin in ("origin", f"'{ALL_ORIGINS}'"):
        for span in (ALL_TIME, *SPANS):
            bucket = "0" if span == ALL_TIME else _bucket_sql(span)
            groups = ["asset", "network"] + (["origin"] if origin == "origin" else []) + [bucket] * (span != ALL_TIME)
            statements.append(
                f"INSERT INTO {TOTALS} ({_KEY}, held) SELECT {origin}, asset, network, {span}, {bucket}, "
                f"CAST(SUM(held) AS BIGINT) FROM {ENTRIES} WHERE held <> 0 GROUP BY {', '.join(groups)}"
            )
    return tuple(statements)


def _bucket_sql(span: int) -> str:
    """``floor(created_at / span) * span`` in SQL (integer division truncates; no ``%``: psycopg reads it)."""
    return (
        f"(CASE WHEN created_at >= 0 THEN created_at / {span} ELSE -((-created_at + {span - 1}) / {span}) END) * {span}"
    )


#: Recomputes every total from the entries.
REBUILD: Final = _rebuild_from_entries()
#: Migration 5: the totals, built from the entries already stored.
SCHEMA: Final = (
    f"""CREATE TABLE {TOTALS} (
        origin TEXT NOT NULL, span BIGINT NOT NULL, asset TEXT NOT NULL, bucket BIGINT NOT NULL,
        network TEXT NOT NULL, held BIGINT NOT NULL, PRIMARY KEY (origin, span, asset, bucket, network))""",
    *REBUILD,
)


def rebuild() -> Program[None]:
    """Recompute every total from the entries (after rows were written around the ledger, e.g. a bulk load)."""
    for statement in REBUILD:
        yield Query(statement)


def adjust(entry: Entry, delta: int) -> Program[None]:
    """Add `delta` to the totals `entry` counts in: its write of `held` moved it by `delta` (same transaction)."""
    if delta != 0:
        yield Query(_ADJUST, (delta, *_keys(entry)), reads=False)


def add_if_stored(entry: Entry) -> Program[None]:
    """After a conditional insert of `entry`: add its `held` to its totals if it is in the table."""
    if entry.held != 0:
        yield Query(_ADJUST_STORED, (entry.held, *_keys(entry), entry.id), reads=False)


def _keys(entry: Entry) -> list[Any]:
    rows: list[Any] = []
    for origin in (entry.origin, ALL_ORIGINS):
        for span in (ALL_TIME, *SPANS):
            rows += [origin, entry.asset, entry.network, entry.created_at - entry.created_at % span if span else 0]
    return rows


def _adjust_sql(condition: str) -> str:
    # The delta is one parameter and the spans are written out: fewer than 50 parameters keep the statement in
    # psycopg's caches (parsed once, then prepared). The WHERE clause also tells SQLite's parser where ON CONFLICT
    # starts.
    rows = ", ".join(f"(?, ?, ?, {span}, ?)" for span in (ALL_TIME, *SPANS) * 2)
    return (
        f"INSERT INTO {TOTALS} ({_KEY}, held) SELECT column1, column2, column3, column4, column5, ? "
        f"FROM (VALUES {rows}) AS changed WHERE {condition} "
        f"ON CONFLICT ({_KEY}) DO UPDATE SET held = {TOTALS}.held + excluded.held"
    )


_ADJUST: Final = _adjust_sql("1 = 1")
_ADJUST_STORED: Final = _adjust_sql(f"EXISTS (SELECT 1 FROM {ENTRIES} WHERE id = ?)")


def window_ranges(window: int | None, now: int) -> list[tuple[int, int, int | None, int]]:
    """(span, first bucket, end bucket or None, sign) ranges whose sums, times their signs, add up to the money held
    by the entries a budget counts at `now`: created after ``now - window``, or ever when `window` is None. A range
    of sign -1 holds the fine buckets before the window's start within a coarser bucket that the next range counts
    whole. Always the same number of ranges for a window (some may be empty), so that a budget's statement keeps
    one text and stays prepared."""
    if window is None:
        return [(ALL_TIME, 0, None, 1)]
    start = now - window + 1
    ranges: list[tuple[int, int, int | None, int]] = []
    for span, coarser in itertools.pairwise(SPANS):
        up, down = -(-start // coarser) * coarser, start // coarser * coarser
        if start - down < up - start:  # fewer fine buckets before the start than after it
            ranges.append((span, down, start, -1))
            start = down
        else:
            ranges.append((span, start, up, 1))
            start = up
    ranges.append((SPANS[-1], start, None, 1))
    return ranges


def held(budgets: Sequence[Budget], origin: str | None, now: int) -> Program[list[int]]:
    """The money held against each of `budgets` (for `origin` where a budget is per origin) at `now`: one query."""
    if not budgets:
        return []
    columns, params = sums(budgets, origin, now)
    rows = yield Query(f"SELECT {', '.join(columns)}", tuple(params))
    return [int(value) for value in rows[0]]


def sums(budgets: Sequence[Budget], origin: str | None, now: int) -> tuple[list[str], list[Any]]:
    """One SQL expression per budget for the money held against it (see `held`), and their parameters."""
    columns: list[str] = []
    params: list[Any] = []
    for budget in budgets:
        column, values = budget_sum(budget, origin, now)
        columns.append(column)
        params += values
    return columns, params


def budget_sum(budget: Budget, origin: str | None, now: int) -> tuple[str, list[Any]]:
    """An SQL expression for the money held against `budget` (for `origin` if it is per origin) at `now`."""
    scoped = origin if budget.origin == EACH_ORIGIN else budget.origin
    terms, params = [], []
    for span, first, end, sign in window_ranges(budget.window, now):
        where, values = _range_filter(budget.covered, span, first, end)
        terms.append(f"? * COALESCE((SELECT SUM(held) FROM {TOTALS} WHERE origin = ? AND {where}), 0)")
        params += [sign, (scoped or ALL_ORIGINS).lower(), *values]
    return f"CAST({' + '.join(terms)} AS BIGINT)", params


def held_by_origin(budget: Budget, now: int) -> Program[list[tuple[str, int]]]:
    """(origin, held) for each origin holding money against `budget`, most held first."""
    parts, params = [], []
    for span, first, end, sign in window_ranges(budget.window, now):
        where, values = _range_filter(budget.covered, span, first, end)
        parts.append(f"SELECT origin, ? * held AS held FROM {TOTALS} WHERE origin <> ? AND {where}")
        params += [sign, ALL_ORIGINS, *values]
    rows = yield Query(
        f"SELECT origin, CAST(SUM(held) AS BIGINT) AS total FROM ({' UNION ALL '.join(parts)}) AS ranges "
        "GROUP BY origin HAVING SUM(held) > 0 ORDER BY total DESC, origin",
        tuple(params),
    )
    return [(str(origin), int(total)) for origin, total in rows]


def _range_filter(
    covered: tuple[tuple[str | None, str], ...], span: int, first: int, end: int | None
) -> tuple[str, list[Any]]:
    """The rows of one span and bucket range for the (network, asset) pairs a budget covers (a network under any
    of its names). The assets lead, so that each is a range of the primary key; the networks then filter."""
    where, assets, choices = _covered_filter(covered)
    if end is None:
        return where, [span, *assets, first, *choices]
    return f"{where} AND bucket < ?", [span, *assets, first, *choices, end]


@functools.lru_cache(maxsize=256)
def _covered_filter(covered: tuple[tuple[str | None, str], ...]) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """`_range_filter`'s condition without the range's end, its assets, and the parameters of its alternatives
    (the same for every reservation of a budget: kept, not rebuilt)."""
    assets = tuple(sorted({asset for _, asset in covered}))
    by_network: dict[str | None, list[str]] = {}
    for network, asset in covered:
        by_network.setdefault(network, []).append(asset)
    alternatives: list[str] = []
    choices: list[str] = []
    for network, group in by_network.items():
        if network is None:
            alternatives.append(f"asset IN ({_marks(group)})")
            choices += group
        else:
            names = network_names(chain_id_of(network))
            alternatives.append(f"(asset IN ({_marks(group)}) AND network IN ({_marks(names)}))")
            choices += [*group, *names]
    where = f"span = ? AND asset IN ({_marks(assets)}) AND bucket >= ? AND ({' OR '.join(alternatives)})"
    return where, assets, tuple(choices)


def _marks(values: Collection[Any]) -> str:
    return ", ".join("?" for _ in values)
