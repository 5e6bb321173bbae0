"""How long an honest upto payment holds its signed maximum before the chain lets the books settle it.

A receipt is a claim: the ledger keeps the signed maximum held until the chain shows what the authorization moved.
A fresh anvil (automine: a block per transaction) gets the devnet and the paid demo API; a client with a SQLite
ledger pays `--payments` metered chat completions (upto, Permit2) with inline verification, then as many with
background verification. For each payment the script records when the paid answer reached the caller and when
the ledger entry became `settled` at the metered amount, and reports the extra time the maximum stayed held,
beside the request's own latency. Writes the "hold" section of BENCHMARKS.md.

Run from the repository root: ``.venv/bin/python -m bench.bench_hold_time`` (``--help``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.harness import machine, today, versions, write_section
from x402pay import PaymentTransport, SpendPolicy, Wallet, payment_of
from x402pay.ledger import EntryState, Ledger
from x402pay.server._demo.app import running_demo
from x402pay.testing import Anvil, Devnet, deploy_devnet

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "say something metered"}]}


def hold_times(devnet: Devnet, url: str, mode: str, payments: int, folder: Path) -> tuple[list[float], list[float]]:
    """(request latency ms, extra ms the maximum stayed held after the answer) for `payments` upto payments."""
    ledger = Ledger.sqlite(folder / f"{mode}.db")
    transport = PaymentTransport(
        wallet=Wallet(devnet.payers[0]), policy=SpendPolicy(max_per_request=200_000), ledger=ledger,
        rpc_url=devnet.rpc_url, verify=mode,
    )  # fmt: skip
    latencies: list[float] = []
    holds: list[float] = []
    with httpx.Client(transport=transport, timeout=60) as client:
        for _ in range(payments):
            started = time.perf_counter()
            response = client.post(url + "/v1/chat/completions", json=CHAT)
            answered = time.perf_counter()
            payment = payment_of(response)
            assert payment is not None and payment.ledger_entry is not None, response.text  # noqa: PT018, S101
            while ledger.get(payment.ledger_entry).state is not EntryState.SETTLED:
                time.sleep(0.005)
            settled = ledger.get(payment.ledger_entry)
            assert settled.held == payment.settled_amount < payment.signed_amount  # noqa: S101 - metered, not max
            holds.append(max(0.0, time.perf_counter() - answered) * 1000)
            latencies.append((answered - started) * 1000)
    ledger.close()
    return latencies, holds


def main(argv: list[str] | None = None) -> None:
    """Measure both modes on one fresh chain, print and write the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--payments", type=int, default=30, help="upto payments per mode")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    rows = ["| verification | request latency ms (median) | maximum held after the answer, ms (median / max) |",
            "|---|---:|---:|"]  # fmt: skip
    with Anvil() as anvil, tempfile.TemporaryDirectory() as folder:
        devnet = deploy_devnet(anvil.rpc_url)
        with running_demo(devnet) as url:
            for mode in ("inline", "background"):
                latencies, holds = hold_times(devnet, url, mode, args.payments, Path(folder))
                rows.append(f"| {mode} | {statistics.median(latencies):.1f} | "
                            f"{statistics.median(holds):.1f} / {max(holds):.1f} |")  # fmt: skip
                print(rows[-1])
    if not args.no_write:
        write_section("hold", _report(args, rows))


def _report(args: argparse.Namespace, rows: list[str]) -> str:
    return "\n".join([
        "## How long an honest upto payment holds its maximum",
        "",
        f"Run `{today()}` with `python -m bench.bench_hold_time --payments {args.payments}`.",
        "",
        f"- Machine: {machine()}",
        f"- Versions: {versions('x402pay', 'web3', 'httpx')}",
        "- Method: anvil with automine (a block per transaction), the paid demo API on loopback (its local "
        "facilitator settles each payment before answering), metered chat completions paid with upto (Permit2), "
        f"{args.payments} per mode, one at a time. A receipt is a claim: the ledger entry holds the signed maximum "
        "until the chain shows what moved. Measured from the paid answer reaching the caller to the entry being "
        "`settled` at the metered amount: inline, verification runs before the answer is handed over, so the "
        "entry is settled when the caller gets it (0, the check's time being in the latency); in the background, "
        "the maximum stays held while the worker checks the chain. On a real chain add the wait for the block.",
        "",
        *rows,
    ])  # fmt: skip


if __name__ == "__main__":
    main()
