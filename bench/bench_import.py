"""Import time: what importing x402pay costs before a program can pay, next to httpx and the official x402 SDK.

Each import runs in a fresh interpreter (``python -X importtime``-free: the child times the import statement itself
with ``perf_counter``, so interpreter start-up is not counted), in interleaved rounds. The section also lists which
heavy libraries each import pulls in, since those are what a lazy import can avoid. Run from the repository root:
``.venv/bin/python -m bench.bench_import`` (``--help``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from bench.harness import machine, median, paired_ratio, today, versions, write_section

#: What each contender imports: the statement a program needs before it can pay (or, for httpx, send).
CONTENDERS = {
    "httpx (floor)": "import httpx",
    "x402pay": "from x402pay import PaymentTransport, SpendPolicy, Wallet",
    "official x402 SDK (client + httpx)": (
        "import x402; from x402.http.clients.httpx import x402HttpxClient; "
        "from x402.mechanisms.evm.exact.register import register_exact_evm_client"
    ),
}
#: Libraries whose presence after the import is worth naming.
HEAVY = ("web3", "eth_account", "eth_keyfile", "py_ecc", "pydantic", "coincurve", "eth_abi", "anyio", "httpx")
_CHILD = """
import json, sys, time
start = time.perf_counter()
exec({statement!r})
elapsed = time.perf_counter() - start
print(json.dumps({{"seconds": elapsed, "loaded": [name for name in {heavy!r} if name in sys.modules]}}))
"""


def time_import(statement: str) -> tuple[float, list[str]]:
    """Seconds `statement` takes in a fresh interpreter, and which `HEAVY` libraries it loaded."""
    child = _CHILD.format(statement=statement, heavy=HEAVY)
    command = [sys.executable, "-c", child]  # our interpreter and our own statements
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout  # noqa: S603
    result = json.loads(output)
    return float(result["seconds"]), list(result["loaded"])


def measure(rounds: int) -> tuple[dict[str, list[float]], dict[str, list[str]]]:
    """Import seconds per contender per round (rotating order, one warm-up round), and what each loaded."""
    names = list(CONTENDERS)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    loaded: dict[str, list[str]] = {}
    for round_number in range(rounds + 1):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            elapsed, modules = time_import(CONTENDERS[name])
            loaded[name] = modules
            if round_number:
                seconds[name].append(elapsed)
    return seconds, loaded


def report(seconds: dict[str, list[float]], loaded: dict[str, list[str]], rounds: int) -> str:
    """The BENCHMARKS.md section."""
    floor, x402pay, official = list(CONTENDERS)
    rows = [
        f"| {name} | `{CONTENDERS[name][:60]}{'...' if len(CONTENDERS[name]) > 60 else ''}` |"
        f" {median(values) * 1000:,.0f} | {paired_ratio(values, seconds[floor]):.1f}x |"
        f" {paired_ratio(values, seconds[official]):.2f}x | {', '.join(loaded[name]) or '-'} |"
        for name, values in seconds.items()
    ]
    return "\n".join(
        [
            "## Import time",
            "",
            f"Run `{today()}` with `.venv/bin/python -m bench.bench_import --rounds {rounds}`.",
            "",
            f"- Machine: {machine()}",
            f"- Versions: {versions('x402pay', 'httpx', 'x402', 'web3', 'eth-account', 'pydantic')}",
            f"- Method: each import in a fresh interpreter, the import statement alone timed; {rounds} interleaved",
            "  rounds (order rotating, one warm-up round not counted); median ms, and median per-round ratios.",
            f"- x402pay / the official SDK: {paired_ratio(seconds[x402pay], seconds[official]):.2f}x (below 1:"
            " x402pay imports faster).",
            "",
            "| import | statement | ms | vs httpx | vs official SDK | heavy libraries loaded |",
            "|---|---|---:|---:|---:|---|",
            *rows,
        ]
    )


def main() -> None:
    """Time the imports, print the section, write BENCHMARKS.md (unless ``--no-write``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    seconds, loaded = measure(args.rounds)
    section = report(seconds, loaded, args.rounds)
    print(section)
    if not args.no_write:
        write_section("import", section)


if __name__ == "__main__":
    main()
