# ruff: noqa: S603  -- the child processes are this interpreter running this file
"""Where one paid cycle's CPU goes on PostgreSQL: each step's CPU in the worker and in its server backend.

One process, one connection, the fleet benchmark's cycle (`bench.bench_fleet`: reserve -> authorize -> settle
through the public `Ledger` API, default durability, budgets with room). Each step runs `--cycles` times in a row
(all reservations, then all authorizations, then all settlements), and the CPU that the worker process and its
PostgreSQL backend spent on them is read from /proc (user + system, so the backend's WAL flush counts too). The
statements and round trips of one cycle are counted on the connection (psycopg's ``execute`` calls, and each
pipeline sync, pipeline exit (which syncs too) or statement sent alone), and a third as many cycles run again
under cProfile (process clock) to say which code the worker's CPU goes to: psycopg, x402pay, json, the benchmark
itself, or the rest (the standard library, the interpreter).

With ``--baseline PATH`` (a checkout of another version of x402pay, e.g. a git worktree of the previous commit),
the same measurement runs there too, in interleaved rounds, each contender in a child process that imports its
own tree; the ratios are per round, median over the rounds. Prints the table and writes the "cycle" section of
BENCHMARKS.md. Run from the repository root: ``.venv/bin/python -m bench.bench_cycle`` (``--help``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STEPS = ("reserve", "authorize", "settle")
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def measure(conninfo: str, cycles: int) -> dict[str, Any]:
    """In this process: CPU µs per call of each step (worker, server), and one cycle's statements and round trips."""
    from bench.bench_fleet import ORIGINS, Plan, prepare
    from bench.bench_ledger import AMOUNT, NETWORK, PAY_TO, PAYER, USDC, drop_schemas, stored_payment
    from x402pay.ledger import Ledger

    schema = f"bench_cycle_{os.getpid()}"
    plan = Plan(conninfo, schema, 1, 1, cycles * 10)  # budgets with room for every cycle
    prepare(plan)
    try:
        with Ledger.postgres(conninfo, schema=schema, budgets=plan.budgets()) as ledger:

            def reserve(number: int) -> Any:
                return ledger.reserve(f"k{number}", origin=ORIGINS[number % 4], asset=USDC, network=NETWORK,
                                      amount=AMOUNT, pay_to=PAY_TO)  # fmt: skip

            def authorize(entry: Any) -> Any:
                nonce = "0x" + secrets.token_hex(32)
                return ledger.authorize(entry.id, payment=stored_payment(nonce), payer=PAYER, nonce=nonce,
                                        valid_before=1764000300, method="eip3009", amount=AMOUNT)  # fmt: skip

            def settle(entry: Any) -> Any:
                return ledger.settle(entry.id, amount=AMOUNT, tx_hash="0x" + secrets.token_hex(32))

            warm = [reserve(-1 - number) for number in range(20)]
            for entry in warm:
                settle(authorize(entry))
            connection = ledger._db._conn  # type: ignore[attr-defined]
            backend = connection.info.backend_pid
            figures: dict[str, Any] = {}
            entries = _timed(figures, "reserve", backend, reserve, list(range(cycles)))
            _timed(figures, "authorize", backend, authorize, entries)
            _timed(figures, "settle", backend, settle, entries)
            figures["statements"], figures["round trips"] = _counted(connection, reserve, authorize, settle)
            figures["profile"] = _profiled(lambda number: settle(authorize(reserve(100_000 + number))), cycles // 3)
        return figures
    finally:
        drop_schemas(conninfo, [schema])


def _timed(figures: dict[str, Any], step: str, backend: int, call: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    from bench.harness import cpu_seconds

    server, worker = cpu_seconds(backend), time.process_time()
    results = [call(item) for item in items]
    figures[step] = ((time.process_time() - worker) * 1e6 / len(items),
                     (cpu_seconds(backend) - server) * 1e6 / len(items))  # fmt: skip
    return results


#: Where a profiled function's own CPU time is counted, by the path of its file (the first that matches).
PLACES = (("psycopg", "/psycopg/"), ("x402pay", "/x402pay/"), ("json", "/json/"), ("benchmark", "/bench/"))


def _profiled(cycle: Callable[[int], Any], cycles: int) -> dict[str, float]:
    """The share of the worker's CPU (cProfile's own time on the process clock) spent in each of `PLACES`."""
    import cProfile
    import pstats

    profile = cProfile.Profile(time.process_time)
    profile.enable()
    for number in range(cycles):
        cycle(number)
    profile.disable()
    spent: dict[str, float] = {name: 0.0 for name, _ in PLACES} | {"other": 0.0}
    for (path, _, _), (_, _, own, _, _) in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
        spent[next((name for name, part in PLACES if part in path), "other")] += own
    total = sum(spent.values()) or 1.0
    return {name: seconds / total for name, seconds in spent.items()}


def _counted(connection: Any, *steps: Callable[[Any], Any]) -> tuple[dict[str, int], dict[str, int]]:
    """Statements and round trips of each step of one cycle, counted on the connection's calls (a statement: any
    cursor's ``execute``, whether the connection's ``execute`` made the cursor or the ledger keeps its own)."""
    import psycopg

    counts = {"statements": 0, "round trips": 0}
    execute, sync, leave = psycopg.Cursor.execute, psycopg.Pipeline.sync, psycopg.Pipeline.__exit__

    def counted_execute(cursor: Any, *args: Any, **kwargs: Any) -> Any:
        counts["statements"] += 1
        if connection._pipeline is None:  # sent alone: its own round trip
            counts["round trips"] += 1
        return execute(cursor, *args, **kwargs)

    def counted_sync(pipeline: Any) -> None:
        counts["round trips"] += 1
        sync(pipeline)

    def counted_exit(pipeline: Any, *exc_info: Any) -> None:  # leaving pipeline mode syncs once more
        counts["round trips"] += 1
        leave(pipeline, *exc_info)

    statements: dict[str, int] = {}
    trips: dict[str, int] = {}
    psycopg.Cursor.execute = counted_execute  # type: ignore[method-assign]
    psycopg.Pipeline.sync, psycopg.Pipeline.__exit__ = counted_sync, counted_exit  # type: ignore[method-assign]
    try:
        argument: Any = -100_000
        for name, step in zip(STEPS, steps, strict=True):
            before = dict(counts)
            argument = step(argument)
            statements[name] = counts["statements"] - before["statements"]
            trips[name] = counts["round trips"] - before["round trips"]
    finally:
        psycopg.Cursor.execute, psycopg.Pipeline.sync = execute, sync  # type: ignore[method-assign]
        psycopg.Pipeline.__exit__ = leave  # type: ignore[method-assign]
    return statements, trips


def child(tree: Path, conninfo: str, cycles: int) -> dict[str, Any]:
    """`measure` in a child process that imports x402pay and bench from `tree`."""
    environment = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--postgres", conninfo,
               "--cycles", str(cycles)]  # fmt: skip
    output = subprocess.run(command, cwd=tree, env=environment, capture_output=True, text=True, check=True).stdout
    figures: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return figures


def _commit_of(tree: str) -> str:
    """The commit checked out in `tree`, by its short hash and subject (a path does not outlive its checkout)."""
    output = subprocess.run(["git", "-C", tree, "log", "-1", "--format=%h %s"], capture_output=True, text=True,  # noqa: S607
                            check=False).stdout.strip()  # fmt: skip
    short, _, subject = output.partition(" ")
    shown = subject if len(subject) <= 80 else subject[:79].rstrip() + "…"
    return f"commit {short} (“{shown}”)" if short else f"the tree at {tree}"


def report(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    """The BENCHMARKS.md section."""
    from bench.harness import machine, today, versions

    rows = []
    for name, contender in runs.items():
        for step in STEPS:
            worker = statistics.median(run[step][0] for run in contender)
            server = statistics.median(run[step][1] for run in contender)
            rows.append(f"| {name} | {step} | {contender[0]['statements'][step]} | "
                        f"{contender[0]['round trips'][step]} | {worker:,.0f} | {server:,.0f} |")  # fmt: skip
        totals = [sum(run[step][side] for step in STEPS) for run in contender for side in (0, 1)]
        worker, server = statistics.median(totals[0::2]), statistics.median(totals[1::2])
        counts = [sum(contender[0][kind].values()) for kind in ("statements", "round trips")]
        rows.append(f"| {name} | **cycle** | {counts[0]} | {counts[1]} | **{worker:,.0f}** | **{server:,.0f}** |")
    shares = {tree: {name: statistics.median(run["profile"][name] for run in contender)
                     for name in contender[0]["profile"]} for tree, contender in runs.items()}  # fmt: skip
    profile = ("- Worker CPU by where the profiler counts it (cProfile on the process clock, a third as many cycles, "
               "own time per function by its file): " + "; ".join(
                   f"{tree}: " + ", ".join(f"{name} {share:.0%}" for name, share in places.items())
                   for tree, places in shares.items()) + ".")  # fmt: skip
    ratios = ""
    if "baseline" in runs:
        ratio = {side: statistics.median(
            sum(mine[step][index] for step in STEPS) / sum(base[step][index] for step in STEPS)
            for mine, base in zip(runs["this tree"], runs["baseline"], strict=True)) for index, side in
            enumerate(("worker", "server"))}  # fmt: skip
        ratios = (f"- This tree vs the baseline, CPU per cycle (median of the per-round ratios): worker "
                  f"{ratio['worker']:.2f}x, server {ratio['server']:.2f}x.")  # fmt: skip
    baseline = (
        [f"- Baseline: {_commit_of(args.baseline)}, checked out apart (the command's `--baseline`)."]
        if args.baseline
        else []
    )
    command = f".venv/bin/python -m bench.bench_cycle --cycles {args.cycles} --rounds {args.rounds}" + (
        f" --baseline {args.baseline}" if args.baseline else "")  # fmt: skip
    return "\n".join(
        [
            "## Ledger cycle: where one paid cycle's CPU goes on PostgreSQL",
            "",
            f"Run `{today()}` with `{command}`.",
            "",
            f"- Machine: {machine()}; the PostgreSQL server runs on the same machine",
            f"- Versions: {versions('x402pay', 'psycopg')}",
            "- One process, one connection, the fleet benchmark's cycle with budgets that have room; each step runs",
            f"  {args.cycles} times in a row; CPU µs per call read from /proc (user + system) for the worker and for",
            "  its PostgreSQL backend (which flushes the WAL itself for the durable `authorize`); median over rounds.",
            "  Statements and round trips of one cycle counted on the connection.",
            *baseline,
            *([ratios] if ratios else []),
            profile,
            "",
            "| tree | step | statements | round trips | worker CPU µs | server CPU µs |",
            "|---|---|---:|---:|---:|---:|",
            *rows,
        ]
    )


def main() -> None:
    """Run the rounds, print the section, write BENCHMARKS.md (unless ``--no-write``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=1_000, help="calls of each step per round (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--baseline", type=Path, help="a checkout of another x402pay to measure side by side")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help=f"libpq URL (default {DEFAULT_POSTGRES})")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.postgres, args.cycles)))
        return
    from bench.harness import write_section

    here = Path(__file__).resolve().parent.parent
    trees = {"this tree": here, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for number in range(args.rounds):
        for name in list(trees)[:: 1 if number % 2 == 0 else -1]:
            runs[name].append(child(trees[name], args.postgres, args.cycles))
    section = report(runs, args)
    print(section)
    if not args.no_write:
        write_section("cycle", section)


if __name__ == "__main__":
    main()
