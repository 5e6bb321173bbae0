"""The long fuzz run of issue 10: at least 100,000 hypothesis inputs per decoder a hostile peer feeds.

It runs the properties of ``tests/adversarial/test_hostile_fuzz.py`` (one source of truth for the strategies and
the assertions) with ``--examples`` examples each, one property per worker process, and counts the inputs each
property really ran (its `INPUTS` counter). A property passes when every input ended in a typed x402pay error or a
value, never another exception, and no signature went out beyond the policy (the whole-client property). The
falsifying input of a failure is printed (hypothesis shrinks it). Results are printed as a markdown table; they
are recorded by hand in SECURITY.md (this script writes no file).

Run from the repository root::

    .venv/bin/python -m bench.fuzz_decoders --examples 100000 --jobs 2
    .venv/bin/python -m bench.fuzz_decoders --examples 2000 --only decode_header,sse_tap   # a quick look
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.harness import machine, today, versions

SUITE: Final = Path(__file__).resolve().parent.parent / "tests" / "adversarial"
#: Property name (its `INPUTS` key) -> the test function in test_hostile_fuzz.py, and what it feeds.
PROPERTIES: Final = {
    "decode_header": ("test_decode_header_raises_only_the_named_error", "base64 JSON header codec"),
    "decode_challenge": ("test_decode_challenge_raises_only_challenge_errors", "402 challenge: v2 header, v1 body"),
    "settlement_headers": (
        "test_settlement_headers_raise_only_settlement_errors",
        "PAYMENT-RESPONSE / X-PAYMENT-RESPONSE / X-Receipt / X-Compose-Receipt",
    ),
    "compose_receipt": ("test_compose_receipt_returns_a_receipt_or_a_settlement_error", "receipt objects"),
    "paid_answer": (
        "test_a_fuzzed_paid_answer_is_read_with_only_typed_errors_and_never_above_the_signed_amount",
        "a paid answer: status, settlement headers, JSON body, SSE receipt/error frames",
    ),
    "sse_tap": ("test_the_sse_tap_never_raises_and_never_loses_bytes", "SSE streams split anywhere"),
    "hostile_rpc": (
        "test_any_answer_of_a_hostile_rpc_ends_in_a_verdict_for_every_claim",
        "JSON-RPC batch answers to verification (x402pay.verify._steps)",
    ),
    "whole_client": (
        "test_a_fuzzed_challenge_is_signed_only_within_the_policy",
        "the sync transport against fuzzed challenges (signature only within the policy)",
    ),
}


@dataclass(frozen=True)
class Outcome:
    """How one property's run ended."""

    name: str
    inputs: int
    seconds: float
    failure: str | None


def run_property(name: str, examples: int) -> Outcome:
    """Run property `name` with `examples` examples in this (fresh) process."""
    os.environ["X402PAY_FUZZ_EXAMPLES"] = str(examples)
    os.environ["X402PAY_FUZZ_CLIENT_EXAMPLES"] = str(examples)
    sys.path.insert(0, str(SUITE))
    import test_hostile_fuzz as suite  # imported after the environment is set

    test = getattr(suite, PROPERTIES[name][0])
    started = time.monotonic()
    failure = None
    try:
        test()
    except Exception as exc:  # every way a property fails is a finding to report
        failure = "".join(traceback.format_exception(exc))
    return Outcome(name, suite.INPUTS[name], time.monotonic() - started, failure)


def main() -> int:
    """Run the chosen properties; print a markdown table and every failure; exit 1 if any failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100_000, help="examples per property (default 100000)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--only", default="", help="comma-separated property names: " + ", ".join(PROPERTIES))
    args = parser.parse_args()
    names = [name for name in args.only.split(",") if name] or list(PROPERTIES)
    unknown = set(names) - set(PROPERTIES)
    if unknown:
        parser.error(f"unknown properties: {', '.join(sorted(unknown))}")
    print(f"{today()}; {machine()}; {versions('hypothesis')}", flush=True)
    print(f"{args.examples} examples per property, {args.jobs} worker(s)", flush=True)
    started = time.monotonic()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
        futures = [pool.submit(run_property, name, args.examples) for name in names]
        for future in as_completed(futures):  # a line per property as it ends: a long run shows its progress
            done = future.result()
            print(f"{done.name}: {done.inputs:,} inputs, {done.seconds:,.0f} s, {_verdict(done)}", flush=True)
        outcomes = [future.result() for future in futures]
    print("\n| decoder | feeds | inputs | seconds | outcome |\n|---|---|---:|---:|---|")
    for outcome in outcomes:
        feeds = PROPERTIES[outcome.name][1]
        print(f"| `{outcome.name}` | {feeds} | {outcome.inputs:,} | {outcome.seconds:,.0f} | {_verdict(outcome)} |")
    print(f"\nwall time {time.monotonic() - started:,.0f} s")
    for outcome in outcomes:
        if outcome.failure is not None:
            print(f"\n--- {outcome.name} ---\n{outcome.failure}")
    return 1 if any(outcome.failure for outcome in outcomes) else 0


def _verdict(outcome: Outcome) -> str:
    return "only typed errors" if outcome.failure is None else "FAILED (below)"


if __name__ == "__main__":
    raise SystemExit(main())
