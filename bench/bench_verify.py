"""Receipt verification throughput on anvil: one claim at a time against batched JSON-RPC (sync and async).

A fresh anvil gets the devnet and `--receipts` payments (two in three EIP-3009, one in three Permit2 exact, from three
payers), each settled by its own transaction. Every contender verifies the same claims in interleaved rounds, after
a check that each finds every claim verified; the script prints receipts verified per second of wall time, HTTP
requests per run and the ratios to one-by-one, then writes the "verify" section of BENCHMARKS.md.

Run from the repository root: ``.venv/bin/python -m bench.bench_verify`` (``--help`` for sizes).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

from web3 import AsyncHTTPProvider, AsyncWeb3, HTTPProvider, Web3

from bench.harness import interleaved_rates, machine, median, paired_ratio, today, versions, write_section
from x402pay._protocol.abi import EXACT_PROXY_ABI, TOKEN_ABI
from x402pay._protocol.models import PaymentRequirements
from x402pay._schemes.exact import SignedPayment, sign_exact
from x402pay._wallet import Wallet
from x402pay.testing import Anvil, Devnet, deploy_devnet
from x402pay.verify import Claim, averify_claims, verify_claim, verify_claims

TARGET_RATE = 300  # batched receipts/s (issue 9)
AMOUNT = 10_000


class Counting(HTTPProvider):
    """An HTTPProvider that counts its HTTP requests (a batch is one)."""

    posts = 0

    def make_request(self, method: Any, params: Any) -> Any:
        """Count, then send one request."""
        self.posts += 1
        return super().make_request(method, params)

    def make_batch_request(self, requests: Any) -> Any:
        """Count, then send one batch."""
        self.posts += 1
        return super().make_batch_request(requests)


def settle(devnet: Devnet, count: int) -> list[Claim]:
    """Sign and settle `count` payments (one transaction each); the claims an honest server would make."""
    web3, account = devnet.web3(), devnet.facilitator
    nonce, now = web3.eth.get_transaction_count(account.address), devnet.chain_time()
    claims, hashes = [], []
    for index in range(count):
        extra = {"assetTransferMethod": "permit2"} if index % 3 == 2 else None
        wire = {"scheme": "exact", "network": devnet.network, "amount": str(AMOUNT), "asset": devnet.usdc}
        requirement = PaymentRequirements.model_validate(
            {**wire, "payTo": devnet.payee.address, "maxTimeoutSeconds": 3600, "extra": extra}
        )
        signed = sign_exact(Wallet(devnet.payers[index % 3]), requirement, now=now, max_lifetime=3600)
        fees = {"gas": 300_000, "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9, "chainId": devnet.chain_id}
        tx = _settle_call(web3, devnet, signed).build_transaction(
            {"from": account.address, "nonce": nonce + index, **fees}
        )
        hashes.append(web3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction))
        claims.append(Claim.from_signed(signed, None, hashes[-1].to_0x_hex()))
    web3.eth.wait_for_transaction_receipt(hashes[-1])
    return claims


def _settle_call(web3: Web3, devnet: Devnet, signed: SignedPayment) -> Any:
    signature = bytes.fromhex(signed.payload["signature"][2:])
    if signed.method == "eip3009":
        auth = signed.payload["authorization"]
        values = [int(auth[key]) for key in ("value", "validAfter", "validBefore")]
        token = web3.eth.contract(address=devnet.usdc, abi=TOKEN_ABI)
        nonce = bytes.fromhex(auth["nonce"][2:])
        return token.functions.transferWithAuthorization(auth["from"], auth["to"], *values, nonce, signature)
    auth = signed.payload["permit2Authorization"]
    permit = ((devnet.usdc, int(auth["permitted"]["amount"])), int(auth["nonce"]), int(auth["deadline"]))
    witness = (auth["witness"]["to"], int(auth["witness"]["validAfter"]))
    proxy = web3.eth.contract(address=devnet.exact_proxy, abi=EXACT_PROXY_ABI)
    return proxy.functions.settle(permit, auth["from"], witness, signature)


def contenders(
    rpc_url: str, claims: list[Claim], loop: asyncio.AbstractEventLoop, aweb3: AsyncWeb3[Any]
) -> tuple[dict[str, Callable[[], int]], dict[str, Counting]]:
    """One-by-one, batched and batched async, each verifying every claim; the HTTP counters of the sync ones."""
    single, batched = Counting(rpc_url), Counting(rpc_url)
    single_web3, batched_web3 = Web3(single), Web3(batched)
    runs = {
        "one-by-one (verify_claim)": lambda: [verify_claim(single_web3, claim) for claim in claims],
        "batched (verify_claims)": lambda: verify_claims(batched_web3, claims),
        "batched async (averify_claims)": lambda: loop.run_until_complete(averify_claims(aweb3, claims)),
    }
    for name, run in runs.items():
        if not all(verification.verified for verification in run()):
            raise SystemExit(f"{name} did not verify every honest claim")
    counters = {"one-by-one (verify_claim)": single, "batched (verify_claims)": batched}
    return {name: _counted(run) for name, run in runs.items()}, counters


def _counted(run: Callable[[], list[Any]]) -> Callable[[], int]:
    return lambda: len(run())


def report(rates: dict[str, list[float]], posts: dict[str, float], receipts: int, rounds: int) -> str:
    """The markdown section: setup, method, one row per contender."""
    baseline = rates["one-by-one (verify_claim)"]
    rows = [
        f"| {name} | {median(values):,.0f} | {posts[name]:,.0f} | {paired_ratio(values, baseline):.1f}x |"
        if name in posts
        else f"| {name} | {median(values):,.0f} | - | {paired_ratio(values, baseline):.1f}x |"
        for name, values in rates.items()
    ]
    batched = median(rates["batched (verify_claims)"])
    return "\n".join(
        [
            "## Receipt verification: batched JSON-RPC vs one claim at a time",
            "",
            f"Run `{today()}` with `.venv/bin/python -m bench.bench_verify --receipts {receipts} --rounds {rounds}`.",
            "",
            f"- Machine: {machine()}",
            f"- Versions: {versions('x402pay', 'web3', 'aiohttp')}, anvil on loopback",
            f"- Method: {receipts} settled payments (2/3 EIP-3009, 1/3 Permit2 exact), each claim with its tx hash;",
            f"  {rounds} interleaved rounds (one warm-up not counted), median receipts verified per second of wall",
            "  time, ratio = median of per-round ratios to one-by-one. Default batch size (500 requests per POST).",
            f"- Target: >= {TARGET_RATE} receipts/s batched: {'met' if batched >= TARGET_RATE else 'NOT met'}.",
            "",
            "| contender | receipts/s | HTTP requests per run | vs one-by-one |",
            "|---|---:|---:|---:|",
            *rows,
        ]
    )


def main() -> None:
    """Start anvil, settle the payments, time the contenders, print the table, write BENCHMARKS.md."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--receipts", type=int, default=1_000, help="settled payments to verify (default 1000)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    with Anvil() as anvil:
        devnet = deploy_devnet(anvil.rpc_url)
        claims = settle(devnet, args.receipts)
        aweb3: AsyncWeb3[Any] = AsyncWeb3(AsyncHTTPProvider(anvil.rpc_url))
        runs, counters = contenders(anvil.rpc_url, claims, loop, aweb3)
        before = {name: counter.posts for name, counter in counters.items()}
        rates = interleaved_rates(runs, args.rounds)
        posts = {name: (counter.posts - before[name]) / (args.rounds + 1) for name, counter in counters.items()}
        loop.run_until_complete(aweb3.provider.disconnect())
    loop.close()
    section = report(rates, posts, args.receipts, args.rounds)
    print(section)
    if not args.no_write:
        write_section("verify", section)


if __name__ == "__main__":
    main()
