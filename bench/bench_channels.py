"""N paid calls, x402pay's client paying x402pay's server on anvil: `exact` vs `upto` vs a payment channel.

A fresh anvil (automine: a block per transaction) gets the devnet; `bench.channel_server` (a subprocess) serves one
tiny app at the same price three ways (`exact` EIP-3009, `upto` Permit2 charging all of its maximum, and
``batch-settlement`` with EIP-3009 deposits of the SDKs' hint, ten times the price). Each contender is a bot of its
own: x402pay's `PaymentTransport` on an httpx client with ``prepay=True`` (a bot calling one route again and again:
one round trip a call after its first), its own payer, a SQLite ledger and the chain's RPC URL (the channel's
deposits are checked there). Calls run in interleaved rounds (one untimed warm-up round of
`WARM_UP` calls each, then `--rounds` rounds of ``calls / rounds`` calls each, the order rotating), every answer
checked (200, charged the price). Measured for the timed calls:

- latency per call (the client's wall clock around one request: median and p99), ratio against `exact`;
- off-chain signatures: the payer's (counted as its wallet signs: transfer authorizations, permits, vouchers,
  deposit authorizations) and the receiver side's (one ClaimBatch per claim transaction);
- on-chain transactions, read from the blocks each batch mined, by kind and by who sent them, and their gas
  (``gasUsed`` x the price paid), so who pays for what is counted, not assumed.

The receiver side claims the channel's vouchers after each round (a claims manager's timer, `ChannelClaims`, sending
from an account of its own) and sweeps once at the end; those transactions are the channel's. The payer's Permit2
approval for `upto` (one transaction, its own gas) is counted too. Writes the "channels" section of BENCHMARKS.md.

Run from the repository root: ``.venv/bin/python -m bench.bench_channels`` (``--help``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
from eth_account import Account
from eth_typing import HexStr

from bench import channel_server as server
from bench.harness import machine, serving, today, versions, write_section
from x402pay import PaymentTransport, SpendPolicy, Wallet, payment_of
from x402pay.ledger import Ledger
from x402pay.testing import Anvil, Devnet, anvil_account, deploy_devnet

EXACT, UPTO, CHANNEL = "exact", "upto", "channel"
NAMES: Final = {
    EXACT: "exact (EIP-3009)",
    UPTO: "upto (Permit2), all of the maximum charged",
    CHANNEL: "channel (batch-settlement), deposits of 10 x price",
}
WARM_UP: Final = 10  # calls per contender before timing (the channel's first deposit covers exactly these)
CLAIMS_SENDER_INDEX: Final = 9  # the claims manager's own account (anvil's last dev account)


class CountingWallet(Wallet):
    """A wallet that counts what it signs, by EIP-712 primary type."""

    __slots__ = ("signed",)
    signed: Counter[str]

    def sign_typed_data(self, typed_data: dict[str, Any]) -> bytes:
        """Sign, and count one more of this primary type."""
        self.signed[str(typed_data.get("primaryType"))] += 1
        return super().sign_typed_data(typed_data)


@dataclass
class Chain:
    """Transactions of a set of blocks, by kind and by who sent (and paid for) them."""

    count: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, payer|receiver side) -> transactions
    gas: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add_blocks(self, web3: Any, blocks: list[tuple[int, int]], kinds: Callable[[Any], str], payer: str) -> None:
        """Count every transaction mined in `blocks` (inclusive ranges)."""
        for first, last in blocks:
            for number in range(first, last + 1):
                for tx in web3.eth.get_block(number, full_transactions=True)["transactions"]:
                    self.add(web3, tx, kinds(tx), payer)

    def add(self, web3: Any, tx: Any, kind: str, payer: str) -> None:
        """Count one transaction (it must have succeeded)."""
        receipt = web3.eth.get_transaction_receipt(tx["hash"])
        if receipt["status"] != 1:
            raise SystemExit(f"a {kind} transaction failed: {tx['hash'].hex()}")
        who = "payer" if tx["from"] == payer else "receiver side"
        self.count[kind, who] += 1
        self.gas[kind, who] += int(receipt["gasUsed"])


@dataclass
class Contender:
    """One bot: its client, wallet, the path it calls, and what its timed calls did."""

    name: str
    path: str
    wallet: CountingWallet
    client: httpx.Client
    latencies: list[list[float]] = field(default_factory=list)  # per timed round
    deposit_latencies: list[float] = field(default_factory=list)  # the timed channel calls that carried a deposit
    voucher_latencies: list[float] = field(default_factory=list)  # and those that did not
    blocks: list[tuple[int, int]] = field(default_factory=list)  # (first, last) block of each timed batch
    signed: Counter[str] = field(default_factory=Counter)
    chain: Chain = field(default_factory=Chain)

    def batch(self, url: str, calls: int, web3: Any, *, timed: bool) -> None:
        """`calls` paid calls, each checked; when `timed`, their latencies, signatures and blocks are kept."""
        before, first = Counter[str](self.wallet.signed), web3.eth.block_number + 1
        if timed:
            self.latencies.append([])
        for _ in range(calls):
            started = time.perf_counter()
            response = self.client.get(url + self.path)
            elapsed = time.perf_counter() - started
            payment = payment_of(response)
            if response.status_code != 200 or payment is None or payment.settled_amount != server.PRICE:
                raise SystemExit(f"{self.name}: {response.status_code} {response.text[:200]}, payment {payment}")
            if timed:
                self.latencies[-1].append(elapsed)
                if self.name == CHANNEL:
                    (self.deposit_latencies if payment.transaction else self.voucher_latencies).append(elapsed)
        if timed:
            self.signed += self.wallet.signed - before
            self.blocks.append((first, web3.eth.block_number))


def kinds_of(devnet: Devnet) -> Callable[[Any], str]:
    """Name a transaction by the contract it calls (and, on the settlement contract, the function)."""
    settlement = devnet.contract("X402BatchSettlement", devnet.batch_settlement)
    names = {devnet.usdc: "token", devnet.upto_proxy: "upto settle", devnet.exact_proxy: "exact proxy settle"}

    def kind(tx: Any) -> str:
        if tx["to"] == devnet.batch_settlement:
            function, _ = settlement.decode_function_input(tx["input"])
            return str(function.fn_name)
        name = names.get(tx["to"], str(tx["to"]))
        if name == "token":
            selector = bytes(tx["input"][:4]).hex()
            return "approve (Permit2)" if selector == "095ea7b3" else "transferWithAuthorization"
        return name

    return kind


def bot(devnet: Devnet, index: int, ledger: Ledger) -> tuple[CountingWallet, httpx.Client]:
    """Payer `index`'s wallet and paying client."""
    wallet = CountingWallet.from_key(bytes(devnet.payers[index].key))
    assert isinstance(wallet, CountingWallet)  # noqa: S101 - from_key builds cls
    wallet.signed = Counter()
    policy = SpendPolicy(max_per_request=server.PRICE, assets=frozenset({devnet.usdc}), schemes=("exact", "upto",
                         "batch-settlement"))  # fmt: skip
    transport = PaymentTransport(wallet=wallet, policy=policy, ledger=ledger, rpc_url=devnet.rpc_url, prepay=True)
    return wallet, httpx.Client(transport=transport, timeout=60)


@dataclass
class Claims:
    """The receiver side's claims manager, sending from an account of its own, and the blocks its work mined."""

    devnet: Devnet
    store_path: Path
    authorizer: Any
    blocks: list[tuple[int, int]] = field(default_factory=list)
    claim_batches: int = 0

    def __post_init__(self) -> None:
        from x402pay.server import ChannelClaims, ChannelStore, LocalFacilitator

        sender = anvil_account(CLAIMS_SENDER_INDEX)
        facilitator = LocalFacilitator(self.devnet.rpc_url, sender, channel_authorizer=self.authorizer)
        self.manager = ChannelClaims(ChannelStore(self.store_path), facilitator, network=self.devnet.network)
        self.loop = asyncio.new_event_loop()

    def run(self, step: str) -> None:
        """``claim`` (one ClaimBatch signed per transaction) or ``sweep``; each must succeed."""
        web3 = self.devnet.web3()
        first = web3.eth.block_number + 1
        results = self.loop.run_until_complete(getattr(self.manager, step)())
        if not all(result.success for result in results):
            raise SystemExit(f"a {step} failed: {results}")
        self.claim_batches += len(results) if step == "claim" else 0
        self.blocks.append((first, web3.eth.block_number))


def run(devnet: Devnet, url: str, claims: Claims, ledgers: Path, calls: int, rounds: int) -> list[Contender]:
    """The contenders' calls in interleaved rounds, each with the chain's transactions of its calls."""
    web3, kinds = devnet.web3(), kinds_of(devnet)
    with contextlib.ExitStack() as stack:
        contenders = []
        for index, (name, path) in enumerate([(EXACT, "/exact"), (UPTO, "/upto"), (CHANNEL, "/channel")]):
            ledger = stack.enter_context(Ledger.sqlite(ledgers / f"{name}.db"))
            wallet, client = bot(devnet, index, ledger)
            contenders.append(Contender(name, path, wallet, stack.enter_context(client)))
        approve = web3.eth.get_transaction(HexStr(contenders[1].wallet.approve_permit2(web3, devnet.usdc)))
        contenders[1].chain.add(web3, approve, kinds(approve), contenders[1].wallet.address)
        for round_number in range(rounds + 1):
            shift = round_number % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                contender.batch(url, calls // rounds if round_number else WARM_UP, web3, timed=bool(round_number))
            if round_number:
                claims.run("claim")
        claims.run("sweep")
    for contender in contenders:
        contender.chain.add_blocks(web3, contender.blocks, kinds, contender.wallet.address)
    contenders[2].chain.add_blocks(web3, claims.blocks, kinds, "")
    return contenders


def percentile(values: list[float], fraction: float) -> float:
    """The `fraction` quantile of `values` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def _gas(contender: Contender) -> dict[str, int]:
    gas = contender.chain.gas
    return {who: sum(used for (_, side), used in gas.items() if side == who) for who in ("payer", "receiver side")}


def _row(contender: Contender, baseline: Contender, claims: Claims) -> str:
    chain, calls = contender.chain, sum(len(batch) for batch in contender.latencies)
    signed = " + ".join(f"{count:,} {kind}" for kind, count in contender.signed.most_common())
    receiver = claims.claim_batches if contender.name == CHANNEL else 0
    txs = ", ".join(f"{count:,} {kind} ({who})" for (kind, who), count in chain.count.most_common())
    gas, total = _gas(contender), sum(_gas(contender).values())
    latency = [value for batch in contender.latencies for value in batch]
    per_round = [statistics.median(mine) / statistics.median(theirs)
                 for mine, theirs in zip(contender.latencies, baseline.latencies, strict=True)]  # fmt: skip
    return (
        f"| {NAMES[contender.name]} | {signed} | {receiver:,} | {txs} | {gas['payer']:,} | {gas['receiver side']:,} "
        f"| {total / calls:,.0f} | {total / sum(_gas(baseline).values()):.3f} "
        f"| {statistics.median(latency) * 1000:.1f} | {percentile(latency, 0.99) * 1000:.1f} "
        f"| {statistics.median(per_round):.3f} |"
    )


def _split(channel: Contender) -> str:
    deposits, vouchers = channel.deposit_latencies, channel.voucher_latencies
    return (
        f"Channel calls that carried a deposit ({len(deposits):,}): median "
        f"{statistics.median(deposits) * 1000:.1f} ms (the deposit is settled on chain before the "
        f"answer); voucher-only calls ({len(vouchers):,}): median {statistics.median(vouchers) * 1000:.1f} ms, p99 "
        f"{percentile(vouchers, 0.99) * 1000:.1f} ms (no transaction)."
    )


def markdown(contenders: list[Contender], claims: Claims, calls: int, rounds: int, started: str) -> str:
    """The section: one row per contender, ratios against `exact`."""
    rows = [_row(contender, contenders[0], claims) for contender in contenders]
    return "\n".join([
        f"## {calls:,} paid calls, x402pay to x402pay on anvil: exact vs upto vs payment channel "
        "(`bench/bench_channels.py`)",
        "",
        f"Each contender is a bot of its own (x402pay's `PaymentTransport` with `prepay=True`, so one round trip a "
        "call after its first; a SQLite ledger, the chain's RPC URL; "
        "receipts not verified, the default, but the channel payer reads `channels(id)` after each deposit) "
        f"paying `bench/channel_server.py` (x402pay's `PaymentMiddleware` + `LocalFacilitator`, a subprocess) "
        f"{server.PRICE:,} atomic units a call, {rounds} interleaved rounds of {calls // rounds:,} calls after "
        f"{WARM_UP} untimed calls each. Signatures are counted as they are made; transactions are read from the "
        "blocks each contender's calls mined, with who sent them (and so paid their gas): the receiver side is the "
        "server's facilitator and, for the channel, its claims manager (a claim after each round, one sweep at "
        "the end; vouchers claimed but unspent escrow left in the channel). The latency ratio is the median of the "
        "per-round ratios of median latencies against `exact`.",
        "",
        "| contender | payer signatures | receiver-side signatures (ClaimBatch) | transactions (sender) "
        "| gas, payer | gas, receiver side | gas per call | gas ratio | median ms | p99 ms | latency ratio |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        _split(contenders[2]),
        "",
        f"Run {today()} on {started}; {versions('web3', 'httpx', 'uvicorn')}, anvil from "
        f"node_modules. Command: `python -m bench.bench_channels --calls {calls} --rounds {rounds}`.",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Run the three contenders on one fresh chain, print and write the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="timed paid calls per contender (default 1000)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    if args.calls % args.rounds or (args.calls // args.rounds) % 10:
        parser.error("calls / rounds must be a multiple of 10 (a deposit covers ten calls)")
    started = machine()
    with Anvil() as anvil, tempfile.TemporaryDirectory() as scratch:
        devnet = deploy_devnet(anvil.rpc_url, payers=3, payer_usdc=100 * (args.calls + WARM_UP) * server.PRICE)
        authorizer, store = Account.create(), Path(scratch) / "channels.sqlite3"
        command = ("bench.channel_server", devnet.rpc_url, devnet.usdc, str(store), authorizer.key.to_0x_hex())
        with serving(*command) as (url, _):
            claims = Claims(devnet, store, authorizer)
            contenders = run(devnet, url, claims, Path(scratch), args.calls, args.rounds)
    text = markdown(contenders, claims, args.calls, args.rounds, started)
    print(text)
    if not args.no_write:
        write_section("channels", text)


if __name__ == "__main__":
    main()
