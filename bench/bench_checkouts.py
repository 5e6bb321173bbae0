"""The client's own CPU per paid request, this checkout against another one (a baseline), side by side.

Each measurement is a fresh process that imports x402pay from one checkout (``PYTHONPATH``), pays `--requests`
requests through an in-memory x402 peer (`httpx.MockTransport`: no sockets, so only the client's work counts) and
reports its CPU time per request; the two checkouts alternate, `--rounds` times, for each of sync/async and
reactive/pre-paid. Uses only the public API, so any checkout with the same names can be the baseline:

    git worktree add /tmp/baseline <commit>
    .venv/bin/python -m bench.bench_checkouts --baseline /tmp/baseline
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench.harness import machine, today, write_section

_HERE = Path(__file__).resolve().parents[1]

#: The measured program, run with ``python -c`` in each checkout: prints CPU microseconds per request.
_MEASURE = """
import asyncio, base64, json, sys, time
import httpx, x402pay
mode, prepay, count = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
b64 = lambda data: base64.b64encode(json.dumps(data).encode()).decode()
requirement = {"scheme": "exact", "network": "eip155:8453", "amount": "10000",
               "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
               "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "maxTimeoutSeconds": 60,
               "extra": {"name": "USD Coin", "version": "2"}}
challenge = {"PAYMENT-REQUIRED": b64({"x402Version": 2, "accepts": [requirement], "resource": {"url": "https://a/p"}})}
settled = {"PAYMENT-RESPONSE": b64({"success": True, "transaction": "0x" + "ab" * 32, "network": "eip155:8453"})}
def peer(request):
    if "PAYMENT-SIGNATURE" not in request.headers:
        return httpx.Response(402, headers=challenge)
    return httpx.Response(200, headers=settled, content=b"ok")
async def apeer(request):
    return peer(request)
options = {"wallet": x402pay.Wallet.from_key("0x" + "11" * 32), "policy": x402pay.SpendPolicy(max_per_request=50_000),
           "prepay": prepay}
if mode == "async":
    async def run():
        transport = x402pay.AsyncPaymentTransport(inner=httpx.MockTransport(apeer), **options)
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(50):
                await client.get("https://a/p")
            start = time.process_time()
            for _ in range(count):
                await client.get("https://a/p")
            return time.process_time() - start
    spent = asyncio.run(run())
else:
    transport = x402pay.PaymentTransport(inner=httpx.MockTransport(peer), **options)
    with httpx.Client(transport=transport) as client:
        for _ in range(50):
            client.get("https://a/p")
        start = time.process_time()
        for _ in range(count):
            client.get("https://a/p")
        spent = time.process_time() - start
print(spent / count * 1e6)
"""


def measure(checkout: Path, mode: str, prepay: bool, requests: int) -> float:
    """CPU microseconds per request of `checkout`'s transport in a fresh process."""
    environment = {**os.environ, "PYTHONPATH": str(checkout)}
    argv = [sys.executable, "-c", _MEASURE, mode, "1" if prepay else "0", str(requests)]
    done = subprocess.run(argv, cwd=checkout, env=environment, capture_output=True, text=True, check=True)  # noqa: S603 - our own interpreter and program
    return float(done.stdout.strip())


def main(argv: list[str] | None = None) -> None:
    """Print, per kind of request, both checkouts' CPU per request (min and median of the rounds) and the ratio;
    write the table to BENCHMARKS.md unless ``--no-write``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="the other checkout (a git worktree)")
    parser.add_argument("--label", default="", help="what the baseline is, for the report (e.g. a commit)")
    parser.add_argument("--requests", type=int, default=3000, help="paid requests per measurement")
    parser.add_argument("--rounds", type=int, default=7, help="alternating measurements per checkout")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    header = (
        "| request | baseline µs (min / median) | this checkout µs (min / median) | ratio of minimums | of medians |"
    )
    rows = [header, "|---|---:|---:|---:|---:|"]
    for mode in ("sync", "async"):
        for prepay in (False, True):
            ours: list[float] = []
            theirs: list[float] = []
            for _ in range(args.rounds):
                theirs.append(measure(args.baseline.resolve(), mode, prepay, args.requests))
                ours.append(measure(_HERE, mode, prepay, args.requests))
            name = f"{mode}, {'pre-paid' if prepay else 'reactive'}"
            base, this = statistics.median(theirs), statistics.median(ours)
            figures = f"{min(theirs):,.0f} / {base:,.0f} | {min(ours):,.0f} / {this:,.0f}"
            rows.append(f"| {name} | {figures} | {min(ours) / min(theirs):.2f}x | {this / base:.2f}x |")
            print(rows[-1])
    if not args.no_write:
        write_section("checkouts", _report(args, rows))


def _report(args: argparse.Namespace, rows: list[str]) -> str:
    command = f"python -m bench.bench_checkouts --baseline BASELINE --requests {args.requests} --rounds {args.rounds}"
    return "\n".join([
        "## Client CPU per paid request: this checkout against a baseline checkout",
        "",
        f"Run `{today()}` with `{command}`; baseline: {args.label or args.baseline}.",
        "",
        f"- Machine: {machine()}",
        "- Method: a fresh process per measurement imports x402pay from one checkout and pays "
        f"{args.requests:,} requests through an in-memory x402 peer (`httpx.MockTransport`: no sockets, so only "
        "the client's own work counts), after 50 warm-up requests; CPU time per request. The two checkouts "
        f"alternate, {args.rounds} rounds each. The minimum is the run least disturbed by the machine's other work "
        "(a shared VM: medians move by a fifth between runs); below 1: this checkout is cheaper.",
        "",
        *rows,
    ])  # fmt: skip


if __name__ == "__main__":
    main()
