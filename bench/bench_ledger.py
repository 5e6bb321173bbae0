"""Spend-ledger throughput: reserve + authorize + settle cycles per second, SQLite and PostgreSQL, one process.

One cycle is what the transport asks of the ledger for one paid request: `Ledger.reserve` (the budget check and
the reservation, under the write lock), `Ledger.authorize` (the signed payment stored before it is sent) and
`Ledger.settle` (the receipt). Each is its own durable transaction, as in the transport.

Contenders, timed in interleaved rounds: SQLite in a file on disk (WAL) under each `Durability` (the library's
default, ``signed``, also with budgets); ``full`` on tmpfs (``/dev/shm``: the fsyncs cost nothing, so the difference
is what they cost); SQLite ``:memory:`` (no file at all: the CPU floor); PostgreSQL on 127.0.0.1 (skipped, with a
note, when unreachable) under the default, with budgets, and under ``full``. Besides wall time the script records
CPU time per cycle (the gap is waiting: fsync, or the PostgreSQL round trips and commit flush) and the wall time of
each of the three steps, then profiles the default on-disk cycle twice: by SQL statement (wall time) and with
cProfile (by function). Prints the tables and writes the "ledger" section of BENCHMARKS.md. Run from the
repository root: ``.venv/bin/python -m bench.bench_ledger`` (``--help``).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import pstats
import secrets
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import interleaved_rates, machine, median, paired_ratio, today, versions, write_section
from x402pay.ledger import DAY, EACH_ORIGIN, Budget, Durability, Ledger
from x402pay.ledger._backends import SQLiteDatabase

TARGET_RATE = 2_000  # issue 9, target 5 (SQLite)
USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
NETWORK = "eip155:84532"
PAY_TO = "0x2096ae4E2Ae1B5D6c7B1D5a8B0A7A08B6C1c287c"
PAYER = "0xF11656b1E8242437ba5b0FF48aE5318A33BaA66F"
AMOUNT = 1_000
BUDGETS = (Budget(USDC, 10**15, name="total"), Budget(USDC, 10**14, window=DAY, origin=EACH_ORIGIN, name="per day"))
STEPS = ("reserve", "authorize", "settle")
DEFAULT = "SQLite file, durability=signed (library default)"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
POSTGRES_ROWS = (
    ("durability=signed (library default)", (), Durability.SIGNED),
    ("durability=signed (library default), 2 budgets", BUDGETS, Durability.SIGNED),
    ("durability=full", (), Durability.FULL),
)


@dataclass
class Contender:
    """A ledger and what its batches measured: CPU seconds per cycle, wall seconds per step per cycle."""

    ledger: Ledger
    cycles: int
    cpu: list[float] = field(default_factory=list)
    steps: dict[str, list[float]] = field(default_factory=lambda: {step: [] for step in STEPS})

    def batch(self) -> int:
        """`cycles` reserve + authorize + settle cycles, each on a fresh idempotency key."""
        spent = dict.fromkeys(STEPS, 0.0)
        cpu_start = time.process_time()
        for _ in range(self.cycles):
            spent_now = cycle(self.ledger)
            for step in STEPS:
                spent[step] += spent_now[step]
        self.cpu.append((time.process_time() - cpu_start) / self.cycles)
        for step in STEPS:
            self.steps[step].append(spent[step] / self.cycles)
        return self.cycles


def stored_payment(nonce: str) -> dict[str, Any]:
    """A stored payment of the size the transport keeps (header, requirement, payload), made up."""
    authorization = {"from": PAYER, "to": PAY_TO, "value": str(AMOUNT), "validAfter": "1764000000",
                     "validBefore": "1764000300", "nonce": nonce}  # fmt: skip
    requirement = {"scheme": "exact", "network": NETWORK, "amount": str(AMOUNT), "asset": USDC, "payTo": PAY_TO,
                   "maxTimeoutSeconds": 60, "extra": {"name": "USDC", "version": "2"}}  # fmt: skip
    return {
        "header": ["PAYMENT-SIGNATURE", "e" * 900], "origin": "http://127.0.0.1:8000", "x402Version": 2,
        "requirement": requirement, "payload": {"signature": "0x" + "5" * 130, "authorization": authorization},
        "payer": PAYER, "amount": AMOUNT, "nonce": nonce, "validAfter": 1764000000, "validBefore": 1764000300,
        "method": "eip3009",
    }  # fmt: skip


def cycle(ledger: Ledger) -> dict[str, float]:
    """One reserve + authorize + settle; the wall seconds of each step."""
    nonce = "0x" + secrets.token_hex(32)
    start = time.perf_counter()
    entry = ledger.reserve(secrets.token_hex(16), origin="http://127.0.0.1:8000", asset=USDC, network=NETWORK,
                           amount=AMOUNT, pay_to=PAY_TO)  # fmt: skip
    reserved = time.perf_counter()
    ledger.authorize(entry.id, payment=stored_payment(nonce), payer=PAYER, nonce=nonce, valid_before=1764000300,
                     method="eip3009", amount=AMOUNT)  # fmt: skip
    authorized = time.perf_counter()
    ledger.settle(entry.id, amount=AMOUNT, tx_hash="0x" + secrets.token_hex(32))
    settled = time.perf_counter()
    return {"reserve": reserved - start, "authorize": authorized - reserved, "settle": settled - authorized}


def postgres_ledger(
    conninfo: str, schema: str, budgets: tuple[Budget, ...], durability: Durability
) -> tuple[Ledger | None, str]:
    """A PostgreSQL ledger in `schema`, or None and why not."""
    try:
        return Ledger.postgres(conninfo, schema=schema, budgets=budgets, durability=durability), ""
    except Exception as exc:  # unreachable, no driver, no database: recorded, not fatal
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"


def drop_schemas(conninfo: str, schemas: list[str]) -> None:
    """Remove the benchmark's PostgreSQL schemas."""
    import psycopg

    with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
        for schema in schemas:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')  # our own generated name


@contextlib.contextmanager
def ledgers(args: argparse.Namespace, notes: list[str]) -> Iterator[dict[str, Ledger]]:
    """Every contender's ledger, closed (and its files and schemas removed) afterwards."""
    opened: dict[str, Ledger] = {}
    schemas: list[str] = []
    with tempfile.TemporaryDirectory(dir=args.disk_dir) as disk, tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        try:
            opened[DEFAULT] = Ledger.sqlite(Path(disk, "signed.db"))
            opened[f"{DEFAULT}, 2 budgets"] = Ledger.sqlite(Path(disk, "budgets.db"), budgets=BUDGETS)
            opened["SQLite file, durability=full"] = Ledger.sqlite(Path(disk, "full.db"), durability=Durability.FULL)
            opened["SQLite file, durability=unsafe_process"] = Ledger.sqlite(
                Path(disk, "process.db"), durability=Durability.UNSAFE_PROCESS
            )
            opened["SQLite file on tmpfs, durability=full (fsync free)"] = Ledger.sqlite(
                Path(shm, "t.db"), durability=Durability.FULL
            )
            opened["SQLite :memory: (no file: the CPU floor)"] = Ledger.sqlite(":memory:")
            if not args.no_postgres:
                for label, budgets, durability in POSTGRES_ROWS:
                    schema = f"bench_ledger_{os.getpid()}_{len(schemas)}"
                    ledger, why = postgres_ledger(args.postgres, schema, budgets, durability)
                    if ledger is None:
                        notes.append(f"PostgreSQL rows skipped: {args.postgres} unreachable ({why}).")
                        break
                    schemas.append(schema)
                    opened[f"PostgreSQL 127.0.0.1, one connection, {label}"] = ledger
            yield opened
        finally:
            for ledger in opened.values():
                ledger.close()
            if schemas:
                drop_schemas(args.postgres, schemas)


class TimedConnection:
    """An sqlite3 connection that adds up the wall time of each kind of statement (its first words; a commit is
    told apart by the sync level it ran under)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.seconds: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        level = conn.execute("PRAGMA synchronous").fetchone()[0]
        self.synchronous = f"PRAGMA synchronous={('OFF', 'NORMAL', 'FULL', 'EXTRA')[level]}"

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        """Run the statement and fetch its rows inside the timing, so that the statement's whole cost counts."""
        start = time.perf_counter()
        rows = self.conn.execute(sql, params).fetchall()
        kind = " ".join(sql.split()[:2])
        if sql.startswith("PRAGMA synchronous="):
            self.synchronous = sql
        elif kind == "COMMIT":
            kind = f"COMMIT after {self.synchronous}"
        self.seconds[kind] += time.perf_counter() - start
        self.calls[kind] += 1
        return TimedRows(rows)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


@dataclass
class TimedRows:
    """Rows already fetched, served as the cursor would."""

    rows: list[Any]

    def fetchall(self) -> list[Any]:
        """The rows."""
        return self.rows


def by_statement(disk_dir: str, cycles: int) -> list[tuple[str, float, float]]:
    """On a fresh default on-disk ledger: (statement, times per cycle, wall µs per cycle), most expensive first."""
    with tempfile.TemporaryDirectory(dir=disk_dir) as disk:
        database = SQLiteDatabase(Path(disk, "timed.db"))
        with Ledger(database) as ledger:
            for _ in range(cycles):  # the same warm start as the timed contenders
                cycle(ledger)
            timed = TimedConnection(database._conn)
            database._conn = timed  # type: ignore[assignment]  # a stand-in with the methods the backend calls
            for _ in range(cycles):
                cycle(ledger)
    rows = [(kind, timed.calls[kind] / cycles, seconds * 1e6 / cycles) for kind, seconds in timed.seconds.items()]
    return sorted(rows, key=lambda row: -row[2])


def profile(disk_dir: str, cycles: int, top: int) -> list[tuple[str, float, float]]:
    """On a fresh default on-disk ledger: (function, own µs per cycle, cumulative µs per cycle), `top` by own time."""
    with tempfile.TemporaryDirectory(dir=disk_dir) as disk, Ledger.sqlite(Path(disk, "profiled.db")) as ledger:
        for _ in range(cycles):
            cycle(ledger)
        profiler = cProfile.Profile()
        profiler.runcall(lambda: [cycle(ledger) for _ in range(cycles)])
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, function), (_, _, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = filename.split("site-packages/")[-1].split("/work/main/")[-1]
        name = function if filename == "~" else f"{where}:{line} {function}"
        rows.append((name, own * 1e6 / cycles, cumulative * 1e6 / cycles))
    return sorted(rows, key=lambda row: -row[1])[:top]


def growth(sizes: list[int], cycles: int) -> list[tuple[int, float, float]]:
    """On one fresh `:memory:` ledger: (entries already in it, cycles/s, reserve µs) at each of `sizes`."""
    results = []
    with Ledger.sqlite(":memory:") as ledger:
        entries = 0
        for size in sizes:
            while entries < size:
                cycle(ledger)
                entries += 1
            start, reserve = time.perf_counter(), 0.0
            for _ in range(cycles):
                reserve += cycle(ledger)["reserve"]
            results.append((size, cycles / (time.perf_counter() - start), reserve * 1e6 / cycles))
            entries += cycles
    return results


@dataclass
class Profiles:
    """Where the default on-disk cycle's time goes: by SQL statement, and by Python function (cProfile)."""

    statements: list[tuple[str, float, float]]
    functions: list[tuple[str, float, float]]


def report(contenders: dict[str, Contender], rates: dict[str, list[float]], profiles: Profiles,
           grown: list[tuple[int, float, float]], notes: list[str], args: argparse.Namespace) -> str:  # fmt: skip
    """The BENCHMARKS.md section."""
    baseline = rates[DEFAULT]
    rows = []
    for name, contender in contenders.items():
        wall_us = 1e6 / median(rates[name])
        steps = " | ".join(f"{median(contender.steps[step]) * 1e6:,.0f}" for step in STEPS)
        rows.append(
            f"| {name} | {median(rates[name]):,.0f} | {paired_ratio(rates[name], baseline):.2f}x | {wall_us:,.0f} |"
            f" {median(contender.cpu) * 1e6:,.0f} | {steps} |"
        )
    targets = [
        f"{name.removeprefix('SQLite file, ')} {median(rates[name]):,.0f}/s"
        f" ({'met' if median(rates[name]) >= TARGET_RATE else 'NOT met'})"
        for name in contenders
        if name.startswith("SQLite file, durability=") and "budgets" not in name
    ]
    growth_rows = [f"| {size:,} | {rate:,.0f} | {reserve:,.0f} |" for size, rate, reserve in grown]
    entries = (args.rounds + 1) * args.cycles
    statement_rows = [f"| `{kind}` | {calls:.0f} | {us:,.0f} |" for kind, calls, us in profiles.statements]
    profile_rows = [f"| `{name}` | {own:,.0f} | {cumulative:,.0f} |" for name, own, cumulative in profiles.functions]
    command = (
        f".venv/bin/python -m bench.bench_ledger --cycles {args.cycles} --rounds {args.rounds} --growth {args.growth}"
    )
    return "\n".join(
        [
            "## Ledger: reserve + authorize + settle cycles",
            "",
            f"Run `{today()}` with `{command}`.",
            "",
            f"- Machine: {machine()}; SQLite files in `{args.disk_dir}` and `/dev/shm` (tmpfs)",
            f"- Versions: {versions('x402pay', 'psycopg')}, SQLite {_sqlite_version()}, {_postgres_version(args)}",
            "- One cycle: `reserve` (budget check + reservation, `BEGIN IMMEDIATE`), `authorize` (the stored payment,",
            "  about 1.5 KB of JSON) and `settle`, three transactions through the public `Ledger` API, each cycle on a",
            "  fresh idempotency key, one process, one thread. Budgets, where named: a total budget and a per-origin",
            "  daily one (both checked in the reservation's one statement, from the running totals of schema 5).",
            "- Durability (`x402pay.ledger.Durability`, the `durability=` option of `Ledger.sqlite`/`postgres`):",
            "  `full` flushes every commit (3 fsyncs a cycle: SQLite `synchronous=FULL`, PostgreSQL",
            "  `synchronous_commit` as the server has it); `signed`, the default, flushes the commit that stores the",
            "  signed payment before it can leave the process, which carries the reservation with it (1 fsync a",
            "  cycle; the other commits are `synchronous=NORMAL` / `synchronous_commit=off`); `unsafe_process`",
            "  flushes none (survives the process being killed, not a power cut). Each row names its setting.",
            f"- Method: {args.cycles} cycles per batch, {args.rounds} interleaved rounds (one warm-up not counted);",
            "  median cycles/s of wall time and paired ratio to the SQLite default; µs per cycle of wall and of this",
            "  process's CPU, user + system (the difference is waiting: fsync, or PostgreSQL's round trips and commit",
            "  flush); median wall µs of each step.",
            f"- Target: >= {TARGET_RATE:,} cycles/s on SQLite (no budgets): {'; '.join(targets)}.",
            *[f"- {note}" for note in notes],
            "",
            "| ledger | cycles/s | vs SQLite default | wall µs/cycle | CPU µs/cycle | reserve µs | authorize µs |"
            " settle µs |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            f"Each ledger above holds up to {entries:,} entries by the end of the run. How a cycle's cost grows with",
            f"the entries already stored (one fresh `:memory:` ledger, no budgets, {args.cycles} cycles at each size):",
            "",
            "| entries already stored | cycles/s | reserve µs |",
            "|---:|---:|---:|",
            *growth_rows,
            "",
            f"Where the time goes in the default cycle (a fresh on-disk ledger, `signed`, {args.cycles} cycles after",
            "as many to warm up): by SQL statement, wall µs per cycle, fetching the rows included (`COMMIT` is where",
            "the write-ahead log is written and, for `authorize`, fsynced; `PRAGMA` switches the sync level):",
            "",
            "| statement | per cycle | wall µs/cycle |",
            "|---|---:|---:|",
            *statement_rows,
            "",
            "and by Python function (cProfile, top functions by own time, per cycle; profiling inflates the figures):",
            "",
            "| function | own µs/cycle | cumulative µs/cycle |",
            "|---|---:|---:|",
            *profile_rows,
        ]
    )


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def _postgres_version(args: argparse.Namespace) -> str:
    if args.no_postgres:
        return "PostgreSQL not asked for"
    try:
        import psycopg

        with psycopg.connect(args.postgres, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            sync = conn.execute("SHOW synchronous_commit").fetchone()
    except Exception:  # the row's note says why
        return "PostgreSQL unreachable"
    return f"PostgreSQL {row[0] if row else '?'} (synchronous_commit={sync[0] if sync else '?'})"


def main() -> None:
    """Open every ledger, time the cycles, profile, print the section, write BENCHMARKS.md (unless ``--no-write``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=200, help="cycles per batch (default 200)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help=f"libpq URL (default {DEFAULT_POSTGRES})")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL rows")
    parser.add_argument("--disk-dir", default=tempfile.gettempdir(), help="where the on-disk SQLite files go")
    parser.add_argument("--growth", default="0,2000,10000", help="entry counts for the growth table")
    parser.add_argument("--top", type=int, default=10, help="profile rows (default 10)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    notes: list[str] = []
    with ledgers(args, notes) as opened:
        contenders = {name: Contender(ledger, args.cycles) for name, ledger in opened.items()}
        batches: dict[str, Callable[[], int]] = {name: contender.batch for name, contender in contenders.items()}
        rates = interleaved_rates(batches, args.rounds)
        for contender in contenders.values():
            del contender.cpu[0]  # the warm-up round
            for step in STEPS:
                del contender.steps[step][0]
    profiles = Profiles(by_statement(args.disk_dir, args.cycles), profile(args.disk_dir, args.cycles, args.top))
    grown = growth([int(size) for size in args.growth.split(",")], args.cycles)
    section = report(contenders, rates, profiles, grown, notes, args)
    print(section)
    if not args.no_write:
        write_section("ledger", section)


if __name__ == "__main__":
    main()
