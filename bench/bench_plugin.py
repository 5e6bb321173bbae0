"""What installing x402pay adds to every pytest session, in any project, when no x402pay fixture is used.

pytest loads the plugin of every installed distribution (x402pay's: ``x402pay.testing.pytest_plugin``) before it
collects anything. In a throwaway project holding one trivial test, ``python -m pytest -q`` runs in a fresh
process with the plugin and with ``-p no:x402pay`` (the same session without it), alternating, the order swapped
every round, one warm-up pair not counted. The figure is the wall time of the whole command; the cost of the plugin
is the median of the per-round differences (paired, so that load drifting across rounds cancels out). A whole
session takes seconds and wanders by more than the target, so the section also times what the plugin adds alone:
importing its module in a fresh interpreter that has already imported pytest. Run from the repository root:
``.venv/bin/python -m bench.bench_plugin`` (``--help``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import machine, median, today, versions, write_section

#: The target: what a session that uses no fixture may pay for x402pay being installed.
TARGET_MS = 50
CONTENDERS = {"with the plugin": (), "without it (-p no:x402pay)": ("-p", "no:x402pay")}


def run_once(project: Path, extra: tuple[str, ...]) -> float:
    """Wall seconds of one ``python -m pytest -q`` in `project` (a fresh interpreter)."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra]
    start = time.perf_counter()
    subprocess.run(command, cwd=project, capture_output=True, check=True)  # noqa: S603 - our interpreter, our flags
    return time.perf_counter() - start


_CHILD = """
import time, pytest
start = time.perf_counter()
import x402pay.testing.pytest_plugin
print(time.perf_counter() - start)
"""


def plugin_import(rounds: int) -> list[float]:
    """Seconds the plugin's import takes after pytest's, in `rounds` fresh interpreters."""
    command = [sys.executable, "-c", _CHILD]
    runs = [subprocess.run(command, capture_output=True, text=True, check=True) for _ in range(rounds)]  # noqa: S603
    return [float(run.stdout) for run in runs]


def measure(project: Path, rounds: int) -> dict[str, list[float]]:
    """Seconds per contender per round (order swapped every round; round 0 warms the disk cache, not counted)."""
    names = list(CONTENDERS)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(rounds + 1):
        order = names if round_number % 2 else names[::-1]
        for name in order:
            elapsed = run_once(project, CONTENDERS[name])
            if round_number:
                seconds[name].append(elapsed)
    return seconds


def throwaway_project(root: Path) -> Path:
    """A project of one trivial test, with its own (empty) configuration so that no repository's applies."""
    (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (root / "test_trivial.py").write_text("def test_trivial():\n    assert True\n", encoding="utf-8")
    return root


def report(seconds: dict[str, list[float]], imports: list[float], rounds: int) -> str:
    """The BENCHMARKS.md section."""
    with_it, without = (seconds[name] for name in CONTENDERS)
    differences = [(a - b) * 1000 for a, b in zip(with_it, without, strict=True)]
    added = statistics.median(differences)
    low, _, high = statistics.quantiles(differences, n=4)
    rows = [
        f"| {name} | {min(values) * 1000:,.0f} | {median(values) * 1000:,.0f} |" for name, values in seconds.items()
    ]
    verdict = "met" if added < TARGET_MS else "NOT met"
    return "\n".join(
        [
            "## What the pytest plugin adds to a session that uses no fixture",
            "",
            f"Run `{today()}` with `.venv/bin/python -m bench.bench_plugin --rounds {rounds}`.",
            "",
            f"- Machine: {machine()}",
            f"- Versions: {versions('x402pay', 'pytest', 'web3')}",
            "- Method: `python -m pytest -q` on a project of one trivial test, each run a fresh process, with the",
            f"  plugin and with `-p no:x402pay`, alternating ({rounds} pairs, order swapped every pair, one warm-up",
            "  pair not counted); wall time of the whole command. Added: the median of the per-pair differences.",
            f"- Added by the plugin: {added:,.0f} ms (target < {TARGET_MS} ms: {verdict}); the quartiles of the",
            f"  per-pair differences, {low:,.0f} and {high:,.0f} ms, say how much of that is noise. Its import alone,",
            f"  after pytest's: median {median(imports) * 1000:,.1f} ms, max {max(imports) * 1000:,.1f} ms ({rounds}"
            " fresh interpreters).",
            "",
            "| session | min ms | median ms |",
            "|---|---:|---:|",
            *rows,
        ]
    )


def main() -> None:
    """Time the sessions, print the section, write BENCHMARKS.md (unless ``--no-write``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15, help="timed pairs of sessions (default 15)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        seconds = measure(throwaway_project(Path(root)), args.rounds)
    section = report(seconds, plugin_import(args.rounds), args.rounds)
    print(section)
    if not args.no_write:
        write_section("plugin", section)


if __name__ == "__main__":
    main()
