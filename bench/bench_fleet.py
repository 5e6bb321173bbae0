# ruff: noqa: S608  -- the only names formatted into SQL are the benchmark's own generated schema names
"""A fleet sharing one budget in PostgreSQL: 8 processes on 2 "machines" paying against one ledger.

Each machine is a process group of its own (a launcher and its worker processes, each worker with its own
connection: a machine's pool is its workers' connections); nothing is shared between them but the PostgreSQL
server, as with two hosts. Every worker runs `--cycles` reserve -> authorize -> settle cycles through the public
`Ledger` API, with the library's default durability (`signed`) against a server with ``synchronous_commit=on``. The
ledger has a total budget and a per-origin daily one, set so that the run hits both: half the attempts go to one
origin, which runs out of its daily budget, and the total runs out before the attempts do, so some reservations
are refused with `BudgetExceeded`. After every run the entries are summed (held + settled, in total and per
origin) and checked against both limits, and the ledger's running totals against the entries.

Contenders, in interleaved rounds, each run on a fresh schema: one process (the baseline, as in
`bench.bench_ledger`) and the fleet. Figures: completed cycles per second of the whole fleet (first start to last
end), the ratio to one process, p50/p99 of `reserve` (every call, refusals included), the CPU that the workers and
the whole machine spent per cycle (the rest of the machine's CPU is the PostgreSQL server's, and other work).
Prints the table and writes the "fleet" section of BENCHMARKS.md. Run from the repository root:
``.venv/bin/python -m bench.bench_fleet`` (``--help``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.bench_ledger import AMOUNT, NETWORK, PAY_TO, PAYER, USDC, drop_schemas, stored_payment
from bench.harness import cpu_seconds, machine, median, paired_ratio, today, versions, write_section
from x402pay.ledger import DAY, EACH_ORIGIN, Budget, BudgetExceeded, Ledger

TARGET_RATE = 1_000  # issue 18: cycles/s for the 8-process fleet
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
ORIGINS = tuple(f"https://api{number}.example" for number in range(4))
TOTAL_SHARE, ORIGIN_SHARE = 0.75, 0.35  # of all attempts' amounts; half the attempts go to ORIGINS[0]
ONE, FLEET = "one process, one connection (baseline)", "fleet: 8 processes on 2 machines"


#: What a cycle costs in the fleet beyond its cost in one process (measured outside this script, on this code).
BEYOND_ONE_PROCESS = (
    "- Contention: `pg_stat_activity` sampled every 20 ms during fleet runs of 2 machines x 8 workers (1,000",
    "  attempts each) found on average 4.2 backends waiting for the advisory lock on the code before (reservations",
    "  serialize on it, and its holder waited for the rest of its transaction from a client process that was not",
    "  running: psycopg sends each pipelined statement as it is executed, and the sync after them) and 0.36 on",
    "  this code. A reservation's statements (the lock, the conditional insert, the totals, the checks) and a",
    "  COMMIT now leave in one write over TCP (TCP_CORK), and the COMMIT frees the lock as soon as the server has",
    "  run it, whatever the client does next. A refused reservation is answered by that same round trip (the",
    "  checks statement, which runs its sums only when the insert stored nothing), where it cost a second one.",
    "  The backends still waiting on their clients are between transactions, holding nothing.",
    "- Left: a cycle's 8 statements and 3 round trips, each statement through psycopg's per-statement path in the",
    '  worker (the "Ledger cycle" section); fewer totals rows per write than 10 is not tried. The machine is',
    "  shared with other work: its CPU per cycle counts that too, the workers' and their backends' columns do not.",
)


@dataclass(frozen=True)
class Plan:
    """One run: where, how many machines and workers, how many cycles each."""

    conninfo: str
    schema: str
    machines: int
    workers: int
    cycles: int

    @property
    def attempts(self) -> int:
        """Reservations tried in the whole run."""
        return self.machines * self.workers * self.cycles

    def budgets(self) -> tuple[Budget, ...]:
        """A total and a per-origin daily budget that the run's attempts exceed."""
        total = Budget(USDC, int(self.attempts * TOTAL_SHARE) * AMOUNT, name="total")
        daily = Budget(USDC, int(self.attempts * ORIGIN_SHARE) * AMOUNT, window=DAY, origin=EACH_ORIGIN,
                       name="per origin per day")  # fmt: skip
        return total, daily


@dataclass
class Worker:
    """What one worker did: cycles completed, reservations refused (by budget), reserve latencies, times."""

    done: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    reserve: list[float] = field(default_factory=list)
    start: float = 0.0
    end: float = 0.0
    cpu: float = 0.0
    server: float = 0.0  # CPU seconds of this worker's PostgreSQL backend over its cycles
    busy: tuple[float, float] = (0.0, 0.0)  # the machine's CPU seconds at this worker's start and end


def work(plan: Plan, name: str) -> Worker:
    """One worker: open the ledger, warm up, wait for every worker of every machine, run the cycles."""
    result = Worker()
    with Ledger.postgres(plan.conninfo, schema=plan.schema, budgets=plan.budgets()) as ledger:
        for number in range(10):  # zero amounts: the statements get prepared, no budget is used
            cycle(ledger, f"{name}-warm-{number}", ORIGINS[number % 4], 0, result)
        result.reserve.clear()
        barrier(plan, name)
        backend = ledger._db._conn.info.backend_pid  # type: ignore[attr-defined]
        server = cpu_seconds(backend)
        busy, cpu, result.start = machine_busy(), time.process_time(), time.time()
        for number in range(plan.cycles):
            origin = ORIGINS[0] if number % 2 == 0 else ORIGINS[1 + number // 2 % 3]
            cycle(ledger, f"{name}-{number}", origin, AMOUNT, result)
        result.end, result.cpu, result.busy = time.time(), time.process_time() - cpu, (busy, machine_busy())
        result.server = cpu_seconds(backend) - server
    return result


def cycle(ledger: Ledger, key: str, origin: str, amount: int, result: Worker) -> None:
    """reserve -> authorize -> settle, as the transport does for one paid request; a refusal is counted."""
    nonce = "0x" + secrets.token_hex(32)
    start = time.perf_counter()
    try:
        entry = ledger.reserve(key, origin=origin, asset=USDC, network=NETWORK, amount=amount, pay_to=PAY_TO)
    except BudgetExceeded as refused:
        result.reserve.append(time.perf_counter() - start)
        result.refused[refused.budget.name or "?"] += 1
        return
    result.reserve.append(time.perf_counter() - start)
    ledger.authorize(entry.id, payment=stored_payment(nonce), payer=PAYER, nonce=nonce, valid_before=1764000300,
                     method="eip3009", amount=amount)  # fmt: skip
    ledger.settle(entry.id, amount=amount, tx_hash="0x" + secrets.token_hex(32))
    result.done += 1


def barrier(plan: Plan, name: str) -> None:
    """Wait until every worker of the run is ready, through the database the machines share."""
    import psycopg

    total = plan.machines * plan.workers
    with psycopg.connect(plan.conninfo, autocommit=True) as conn:
        conn.execute(f'INSERT INTO "{plan.schema}".bench_ready (name) VALUES (%s)', (name,))
        while conn.execute(f'SELECT count(*) FROM "{plan.schema}".bench_ready').fetchone() != (total,):
            time.sleep(0.002)


def run_machine(plan: Plan, number: int) -> list[Worker]:
    """One machine: its own process group, `plan.workers` worker processes, each with its own connection."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(plan.workers) as pool:
        return pool.starmap(work, [(plan, f"m{number}-w{worker}") for worker in range(plan.workers)])


def run(plan: Plan) -> Run:
    """Every machine at once, then the checks of the budgets against the entries."""
    prepare(plan)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    launchers = [context.Process(target=launch, args=(plan, number, results)) for number in range(plan.machines)]
    for launcher in launchers:
        launcher.start()
    workers = [worker for _ in launchers for worker in results.get(timeout=600)]
    for launcher in launchers:
        launcher.join()
    busy = max(worker.busy[1] for worker in workers) - min(worker.busy[0] for worker in workers)
    return Run(plan, workers, check(plan), busy)


def launch(plan: Plan, number: int, results: Any) -> None:
    """A machine's launcher process: its workers' results go back to the benchmark."""
    results.put(run_machine(plan, number))


def prepare(plan: Plan) -> None:
    """A fresh schema with the ledger's tables and the start barrier's."""
    import psycopg

    Ledger.postgres(plan.conninfo, schema=plan.schema).close()
    with psycopg.connect(plan.conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE TABLE "{plan.schema}".bench_ready (name TEXT PRIMARY KEY)')


def machine_busy() -> float:
    """Seconds of CPU the whole machine has spent (all cores, all processes) since boot."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class Checked:
    """The entries summed after a run, and whether the ledger's own view agrees."""

    total: int
    by_origin: dict[str, int]
    ledger_agrees: bool


def check(plan: Plan) -> Checked:
    """Held + settled over the entries, in total and per origin (within the day), and the ledger's budget view."""
    import psycopg

    now = int(time.time())
    with psycopg.connect(plan.conninfo, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{plan.schema}"')
        rows = conn.execute(
            "SELECT origin, SUM(CASE WHEN state = 'settled' THEN settled_amount ELSE held END), "
            "SUM(held) FILTER (WHERE created_at > %s) FROM x402pay_entries WHERE asset = %s GROUP BY origin",
            (now - DAY, USDC.lower()),
        ).fetchall()
    with Ledger.postgres(plan.conninfo, schema=plan.schema, budgets=plan.budgets()) as ledger:
        view = {(s.budget.name, s.origin): s.held for s in ledger.budget_status()}
    by_origin = {str(origin): int(day) for origin, _, day in rows}
    total = sum(int(held) for _, held, _ in rows)
    agrees = view.get(("total", None)) == total and all(
        view.get(("per origin per day", origin), 0) == held for origin, held in by_origin.items()
    )
    return Checked(total, by_origin, agrees)


@dataclass
class Run:
    """One run's workers, its checks, and the machine's CPU seconds while the workers ran."""

    plan: Plan
    workers: list[Worker]
    checked: Checked
    busy: float

    @property
    def done(self) -> int:
        """Cycles completed."""
        return sum(worker.done for worker in self.workers)

    @property
    def rate(self) -> float:
        """Completed cycles per second, first worker's start to last worker's end."""
        return self.done / (max(w.end for w in self.workers) - min(w.start for w in self.workers))

    @property
    def refused(self) -> Counter[str]:
        """Reservations refused, by budget."""
        return sum((worker.refused for worker in self.workers), Counter())

    def within_budgets(self) -> bool:
        """Whether the entries stayed within both budgets."""
        total, daily = self.plan.budgets()
        return self.checked.total <= total.limit and all(v <= daily.limit for v in self.checked.by_origin.values())


def rounds(args: argparse.Namespace) -> dict[str, list[Run]]:
    """`args.rounds` rounds of each contender, in an order that alternates, each on a fresh schema."""
    shapes = {ONE: (1, 1), FLEET: (args.machines, args.workers)}
    runs: dict[str, list[Run]] = {name: [] for name in shapes}
    schemas: list[str] = []
    try:
        for number in range(args.rounds):
            for name in list(shapes)[:: 1 if number % 2 == 0 else -1]:
                schemas.append(f"bench_fleet_{os.getpid()}_{len(schemas)}")
                machines, workers = shapes[name]
                runs[name].append(run(Plan(args.postgres, schemas[-1], machines, workers, args.cycles)))
    finally:
        drop_schemas(args.postgres, schemas)
    return runs


def percentile(values: list[float], share: float) -> float:
    """The `share` quantile of `values` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def report(runs: dict[str, list[Run]], args: argparse.Namespace, server: str) -> str:
    """The BENCHMARKS.md section."""
    rates = {name: [one_run.rate for one_run in contender] for name, contender in runs.items()}
    fleet_rate = median(rates[FLEET])
    rows = [_row(name, contender, paired_ratio(rates[name], rates[ONE])) for name, contender in runs.items()]
    proofs = [_proof(name, number, one_run) for name, contender in runs.items()
              for number, one_run in enumerate(contender, 1)]  # fmt: skip
    every_run_within = all(one_run.within_budgets() and one_run.checked.ledger_agrees
                           for contender in runs.values() for one_run in contender)  # fmt: skip
    command = (f".venv/bin/python -m bench.bench_fleet --machines {args.machines} --workers {args.workers} "
               f"--cycles {args.cycles} --rounds {args.rounds}")  # fmt: skip
    verdict = "met" if fleet_rate >= TARGET_RATE else "NOT met"
    return "\n".join(
        [
            "## Fleet: processes on two machines sharing one PostgreSQL budget",
            "",
            f"Run `{today()}` with `{command}`.",
            "",
            f"- Machine: {machine()}; the PostgreSQL server runs on the same machine",
            f"- Versions: {versions('x402pay', 'psycopg')}, {server}",
            f"- Fleet: {args.machines} machines (process groups) x {args.workers} worker processes, each with its own",
            "  connection; one cycle is `reserve` -> `authorize` -> `settle` through the public `Ledger` API, default",
            f"  durability (`signed`). {args.cycles} attempts per worker; a total budget of {TOTAL_SHARE:.0%} and",
            f"  a per-origin daily budget of {ORIGIN_SHARE:.0%} of all attempts' amounts, half the attempts to one",
            "  origin: every run hits both. Rounds alternate the contenders; each run has a fresh schema.",
            "- Figures: completed cycles per second (first worker's start to last worker's end, refusals included in",
            "  the time), median over the rounds; the ratio to one process is the median of the per-round ratios;",
            "  `reserve` p50/p99 over every call of every round (refusals included); CPU per completed cycle: the",
            "  workers' own, their PostgreSQL backends' (from /proc), and the whole machine's (the PostgreSQL server's",
            "  other processes, such as the WAL writer, and any other work on the machine).",
            f"- Goal: >= {TARGET_RATE:,} cycles/s for the fleet: {fleet_rate:,.0f}/s ({verdict}). Never over budget:"
            f" {'met' if every_run_within else 'NOT met'} (every run checked below).",
            f"- Where the fleet's time goes: {_where(runs[FLEET])} One cycle's statements, round trips and CPU per"
            ' step, in the worker and in the server: the "Ledger cycle" section.',
            *BEYOND_ONE_PROCESS,
            "",
            "| contender | cycles/s | vs one process | reserve p50 ms | reserve p99 ms | refused | worker CPU µs/cycle"
            " | their backends' CPU µs/cycle | machine CPU µs/cycle |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            "Each run's check, after it ended: held + settled summed over the entries, in total and for the origin",
            "that holds the most within the day, against the limits; refusals by budget; whether the ledger's running",
            "totals (`budget_status`) give the same sums as the entries.",
            "",
            "| run | total held + settled / limit | busiest origin, day / limit | refused by budget | totals agree |",
            "|---|---:|---:|---|---|",
            *proofs,
        ]
    )


def _where(fleet: list[Run]) -> str:
    """The fleet's CPU per cycle: its workers', the rest of the machine's, and how busy the machine was."""
    done = sum(one_run.done for one_run in fleet)
    workers = sum(worker.cpu for one_run in fleet for worker in one_run.workers) / done
    busy = sum(one_run.busy for one_run in fleet) / done
    seconds = sum(max(w.end for w in r.workers) - min(w.start for w in r.workers) for r in fleet)
    share = sum(one_run.busy for one_run in fleet) / (seconds * (os.cpu_count() or 1))
    return (f"the machine's cores were {share:.0%} busy; per completed cycle the workers (Python, psycopg) spent "
            f"{workers * 1e6:,.0f} µs of CPU and the rest of the machine (the PostgreSQL server's backends, and any "
            f"other work on the machine) {(busy - workers) * 1e6:,.0f} µs. At {TARGET_RATE:,} cycles/s the whole "
            f"cycle must cost at most {(os.cpu_count() or 1) * 1e6 / TARGET_RATE:,.0f} µs of CPU.")  # fmt: skip


def _row(name: str, contender: list[Run], ratio: float) -> str:
    reserve = [latency for one_run in contender for worker in one_run.workers for latency in worker.reserve]
    done = sum(one_run.done for one_run in contender)
    cpu = sum(worker.cpu for one_run in contender for worker in one_run.workers) / done
    server = sum(worker.server for one_run in contender for worker in one_run.workers) / done
    busy = sum(one_run.busy for one_run in contender) / done
    refused = sum(sum(one_run.refused.values()) for one_run in contender) / len(contender)
    return (f"| {name} | {median([r.rate for r in contender]):,.0f} | {ratio:.2f}x | "
            f"{statistics.median(reserve) * 1e3:.2f} | {percentile(reserve, 0.99) * 1e3:.2f} | {refused:,.0f} | "
            f"{cpu * 1e6:,.0f} | {server * 1e6:,.0f} | {busy * 1e6:,.0f} |")  # fmt: skip


def _proof(name: str, number: int, one_run: Run) -> str:
    total, daily = one_run.plan.budgets()
    checked = one_run.checked
    busiest = max(checked.by_origin.values(), default=0)
    refused = ", ".join(f"{budget}: {count}" for budget, count in sorted(one_run.refused.items())) or "none"
    mark = "" if one_run.within_budgets() else " **OVER**"
    agrees = "yes" if checked.ledger_agrees else "**no**"
    return (f"| {name.split(',')[0].split(':')[0]} #{number} | {checked.total:,} / {total.limit:,}{mark} | "
            f"{busiest:,} / {daily.limit:,} | {refused} | {agrees} |")  # fmt: skip


def server_settings(conninfo: str) -> str:
    """The server's version and commit durability."""
    import psycopg

    with psycopg.connect(conninfo, connect_timeout=5) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        sync = conn.execute("SHOW synchronous_commit").fetchone()
    return f"PostgreSQL {version[0] if version else '?'} (synchronous_commit={sync[0] if sync else '?'})"


def main() -> None:
    """Run the rounds, print the section, write BENCHMARKS.md (unless ``--no-write``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=2, help="process groups (default 2)")
    parser.add_argument("--workers", type=int, default=4, help="worker processes per machine (default 4)")
    parser.add_argument("--cycles", type=int, default=1_000, help="attempts per worker (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help=f"libpq URL (default {DEFAULT_POSTGRES})")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    section = report(rounds(args), args, server_settings(args.postgres))
    print(section)
    if not args.no_write:
        write_section("fleet", section)


if __name__ == "__main__":
    main()
