"""Paid request latency and throughput: plain httpx (unpaid, the floor) vs x402pay's transports vs the official SDK.

A stub server (`bench.stub_server`, a subprocess on loopback) issues a real x402 v2 challenge and accepts any
well-formed payment whose EIP-712 signature recovers to its payer; settlement is a made-up receipt, so what is timed
is the client's work: the HTTP exchanges (two when paying reactively, one with pre-payment), choosing, signing,
reading the receipt. Every contender keeps one client
(and its connection pool) for the whole run. Two measurements, each in interleaved rounds:

- sequential: one request at a time; median latency per request (sync and async clients);
- concurrent: `--concurrency` requests in flight at once on one event loop; requests per second (async clients).

Besides wall time, the script records the CPU each request costs the client process and the server process, and
ends with a cProfile of x402pay's concurrent batch. It prints the table and writes the "transport" section of
BENCHMARKS.md. Run from the repository root: ``.venv/bin/python -m bench.bench_transport`` (``--help``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import json
import pstats
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from x402 import x402Client
from x402.http.clients.httpx import x402HttpxClient
from x402.mechanisms.evm.exact.register import register_exact_evm_client
from x402.mechanisms.evm.signers import EthAccountSigner

from bench.harness import interleaved_rates, machine, median, paired_ratio, today, versions, write_section
from bench.stub_server import REQUIREMENT, StubServer, running
from x402pay import AsyncPaymentTransport, PaymentTransport, SpendPolicy, Wallet, payment_of
from x402pay._protocol.models import PaymentRequirements
from x402pay._schemes.exact import sign_exact

TARGET_VS_UNPAID = 0.8  # issue 9, target 3
TARGET_VS_OFFICIAL = 3.0
TARGET_PREPAID_LATENCY = 1.15  # issue 9, target 2

FLOOR_SYNC = "httpx.Client, unpaid route"
FLOOR_ASYNC = "httpx.AsyncClient, unpaid route"
PRESIGNED = "httpx.AsyncClient + a pre-signed PAYMENT-SIGNATURE (reference)"
X402PAY_SYNC = "x402pay PaymentTransport, paid route"
X402PAY_ASYNC = "x402pay AsyncPaymentTransport, paid route"
PREPAY_SYNC = "x402pay PaymentTransport(prepay=True), paid route"
PREPAY_ASYNC = "x402pay AsyncPaymentTransport(prepay=True), paid route"
OFFICIAL = "official x402 SDK (x402HttpxClient), paid route"


@dataclass
class Cost:
    """CPU seconds per request of the client (this process) and of the server, one entry per timed batch."""

    client: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)


@dataclass
class Clients:
    """One client per contender, kept for the whole run (keep-alive pools warm)."""

    free_sync: httpx.Client
    paid_sync: httpx.Client
    free_async: httpx.AsyncClient
    presigned_async: httpx.AsyncClient
    paid_async: httpx.AsyncClient
    official: httpx.AsyncClient
    prepay_sync: httpx.Client
    prepay_async: httpx.AsyncClient

    async def aclose(self) -> None:
        """Close every client."""
        for sync in (self.free_sync, self.paid_sync, self.prepay_sync):
            sync.close()
        for client in (self.free_async, self.presigned_async, self.paid_async, self.official, self.prepay_async):
            await client.aclose()


def presigned_header(wallet: Wallet) -> str:
    """A PAYMENT-SIGNATURE for the stub's requirement, valid for an hour (the stub checks no nonce or time)."""
    requirement = PaymentRequirements.model_validate(REQUIREMENT)
    signed = sign_exact(wallet, requirement, now=int(time.time()), max_lifetime=3600)
    payload = {"x402Version": 2, "accepted": REQUIREMENT, "payload": signed.payload}
    return base64.b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()


def make_clients(account: LocalAccount) -> Clients:
    """The contenders' clients: x402pay with its defaults (no ledger, no verification), the SDK as documented."""
    wallet, policy = Wallet(account), SpendPolicy(max_per_request=10_000)
    official = x402Client()
    register_exact_evm_client(official, EthAccountSigner(account))
    return Clients(
        free_sync=httpx.Client(),
        paid_sync=httpx.Client(transport=PaymentTransport(wallet=wallet, policy=policy)),
        free_async=httpx.AsyncClient(),
        presigned_async=httpx.AsyncClient(headers={"PAYMENT-SIGNATURE": presigned_header(wallet)}),
        paid_async=httpx.AsyncClient(transport=AsyncPaymentTransport(wallet=wallet, policy=policy)),
        official=x402HttpxClient(official),
        prepay_sync=httpx.Client(transport=PaymentTransport(wallet=wallet, policy=policy, prepay=True)),
        prepay_async=httpx.AsyncClient(transport=AsyncPaymentTransport(wallet=wallet, policy=policy, prepay=True)),
    )


def _check(response: httpx.Response, paid: bool) -> None:
    if response.status_code != 200:
        raise SystemExit(f"{response.request.url}: HTTP {response.status_code}")
    if paid and "payment-response" not in response.headers:
        raise SystemExit(f"{response.request.url}: paid, but no PAYMENT-RESPONSE")


def _check_payment(response: httpx.Response, prepaid: bool = False) -> None:
    _check(response, paid=True)
    payment = payment_of(response)
    if payment is None or payment.receipt is None:
        raise SystemExit(f"{response.request.url}: no payment recorded")
    if payment.prepaid is not prepaid:
        raise SystemExit(f"{response.request.url}: prepaid is {payment.prepaid}, expected {prepaid}")


async def check(clients: Clients, url: str) -> None:
    """Each contender gets a 200 (and the paid ones a receipt) before anything is timed."""
    _check(clients.free_sync.get(url + "/free"), paid=False)
    _check_payment(clients.paid_sync.get(url + "/paid"))
    _check_payment(clients.prepay_sync.get(url + "/paid"))  # the first payment to a route is reactive
    _check_payment(clients.prepay_sync.get(url + "/paid"), prepaid=True)
    _check(await clients.free_async.get(url + "/free"), paid=False)
    _check(await clients.presigned_async.get(url + "/paid"), paid=True)
    _check_payment(await clients.paid_async.get(url + "/paid"))
    _check_payment(await clients.prepay_async.get(url + "/paid"))
    _check_payment(await clients.prepay_async.get(url + "/paid"), prepaid=True)
    _check(await clients.official.get(url + "/paid"), paid=True)


AsyncGet = Callable[[], Awaitable[httpx.Response]]


async def run_sequential(get: AsyncGet, count: int) -> int:
    """`count` requests with `get`, one after another."""
    for _ in range(count):
        (await get()).raise_for_status()
    return count


async def run_concurrent(get: AsyncGet, count: int, concurrency: int) -> int:
    """`count` requests with `get`, `concurrency` of them in flight at once."""

    async def worker(share: int) -> None:
        for _ in range(share):
            (await get()).raise_for_status()

    shares = [count // concurrency + (index < count % concurrency) for index in range(concurrency)]
    await asyncio.gather(*(worker(share) for share in shares))
    return count


def with_cost(batch: Callable[[], int], cost: Cost, server: StubServer) -> Callable[[], int]:
    """`batch`, also noting the client's and the server's CPU seconds per request."""

    def run() -> int:
        client_start, server_start = time.process_time(), server.cpu_seconds()
        count = batch()
        cost.client.append((time.process_time() - client_start) / count)
        cost.server.append((server.cpu_seconds() - server_start) / count)
        return count

    return run


def async_gets(clients: Clients, url: str) -> dict[str, AsyncGet]:
    """The async contenders: one GET each."""
    return {
        FLOOR_ASYNC: lambda: clients.free_async.get(url + "/free"),
        PRESIGNED: lambda: clients.presigned_async.get(url + "/paid"),
        X402PAY_ASYNC: lambda: clients.paid_async.get(url + "/paid"),
        PREPAY_ASYNC: lambda: clients.prepay_async.get(url + "/paid"),
        OFFICIAL: lambda: clients.official.get(url + "/paid"),
    }


def sequential_batches(
    clients: Clients, url: str, loop: asyncio.AbstractEventLoop, count: int
) -> dict[str, Callable[[], int]]:
    """One request at a time, `count` per batch."""

    def sync(client: httpx.Client, path: str) -> Callable[[], int]:
        def batch() -> int:
            for _ in range(count):
                client.get(url + path).raise_for_status()
            return count

        return batch

    batches = {
        FLOOR_SYNC: sync(clients.free_sync, "/free"),
        X402PAY_SYNC: sync(clients.paid_sync, "/paid"),
        PREPAY_SYNC: sync(clients.prepay_sync, "/paid"),
    }
    for name, get in async_gets(clients, url).items():
        batches[name] = lambda get=get: loop.run_until_complete(run_sequential(get, count))  # type: ignore[misc]
    return batches


def concurrent_batches(
    clients: Clients, url: str, loop: asyncio.AbstractEventLoop, count: int, concurrency: int
) -> dict[str, Callable[[], int]]:
    """`count` requests per batch, `concurrency` in flight at once."""
    return {
        name: lambda get=get: loop.run_until_complete(run_concurrent(get, count, concurrency))  # type: ignore[misc]
        for name, get in async_gets(clients, url).items()
        if name != PRESIGNED
    }


#: What a profile row is kept for: the client library's own functions, and opening/closing TCP connections.
PROFILED = {X402PAY_ASYNC: ("/x402pay/",), PREPAY_ASYNC: ("/x402pay/",), OFFICIAL: ("site-packages/x402/",)}
_SOCKET_CALLS = ("<method 'connect' of '_socket.socket' objects>", "<function socket.close")


ProfileRow = tuple[str, float, float, float]


def profile(batch: Callable[[], int], packages: tuple[str, ...], top: int) -> tuple[list[ProfileRow], float]:
    """The `top` functions of `packages` (and socket connects/closes) in `batch` by cumulative time:
    (function, calls per request, own µs per request, cumulative µs per request); and TCP connects per request."""
    profiler = cProfile.Profile()
    count = profiler.runcall(batch)
    stats = pstats.Stats(profiler)
    rows, connects = [], 0.0
    for (filename, line, function), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if function.startswith(_SOCKET_CALLS[0]):
            connects = calls / count
        if not any(package in filename for package in packages) and not function.startswith(_SOCKET_CALLS):
            continue
        where = filename.split("site-packages/")[-1].split("/work/main/")[-1]
        name = function if filename == "~" else f"{where}:{line} {function}"
        rows.append((name, calls / count, own * 1e6 / count, cumulative * 1e6 / count))
    return sorted(rows, key=lambda row: -row[3])[:top], connects


@dataclass
class Results:
    """Everything the section reports."""

    sequential: dict[str, list[float]]
    concurrent: dict[str, list[float]]
    costs: dict[str, Cost]
    profiles: dict[str, tuple[list[ProfileRow], float]]
    args: argparse.Namespace


def _ms(rates: list[float]) -> str:
    return f"{1000 / median(rates):.2f}"


def _cpu(cost: Cost) -> str:
    return f"{median(cost.client) * 1e6:,.0f} | {median(cost.server) * 1e6:,.0f}"


def report(results: Results) -> str:
    """The BENCHMARKS.md section."""
    seq, conc, costs, args = results.sequential, results.concurrent, results.costs, results.args
    floor_of = {FLOOR_SYNC: FLOOR_SYNC, X402PAY_SYNC: FLOOR_SYNC, PREPAY_SYNC: FLOOR_SYNC}
    seq_rows = [
        f"| {name} | {_ms(rates)} | {paired_ratio(seq[floor_of.get(name, FLOOR_ASYNC)], rates):.2f}x |"
        f" {_cpu(costs['seq ' + name])} |"
        for name, rates in seq.items()
    ]
    conc_rows = [
        f"| {name} | {median(rates):,.0f} | {paired_ratio(rates, conc[FLOOR_ASYNC]):.2f}x |"
        f" {paired_ratio(rates, conc[OFFICIAL]):.2f}x | {_cpu(costs['conc ' + name])} |"
        for name, rates in conc.items()
    ]
    vs_unpaid = paired_ratio(conc[PREPAY_ASYNC], conc[FLOOR_ASYNC])
    vs_official = paired_ratio(conc[PREPAY_ASYNC], conc[OFFICIAL])
    reactive_vs_unpaid = paired_ratio(conc[X402PAY_ASYNC], conc[FLOOR_ASYNC])
    reactive_vs_official = paired_ratio(conc[X402PAY_ASYNC], conc[OFFICIAL])
    seq_official = paired_ratio(seq[OFFICIAL], seq[X402PAY_ASYNC])  # latency ratio
    prepaid_latency = {
        "sync": paired_ratio(seq[FLOOR_SYNC], seq[PREPAY_SYNC]),
        "async": paired_ratio(seq[FLOOR_ASYNC], seq[PREPAY_ASYNC]),
    }

    def verdict(value: float, target: float) -> str:
        return f"{value:.2f}x, {'met' if value >= target else 'NOT met'}"

    def latency_verdict(kind: str) -> str:
        value = prepaid_latency[kind]
        return f"{kind} {value:.2f}x, {'met' if value <= TARGET_PREPAID_LATENCY else 'NOT met'}"

    profile_rows = [
        f"| {name.split(',')[0]} | `{function}` | {calls:.2g} | {own:,.0f} | {cumulative:,.0f} |"
        for name, (rows, _) in results.profiles.items()
        for function, calls, own, cumulative in rows
    ]
    connects = "; ".join(f"{name.split(',')[0]}: {per:.2f}" for name, (_, per) in results.profiles.items())
    command = (
        f".venv/bin/python -m bench.bench_transport --sequential {args.sequential} --concurrent {args.concurrent}"
        f" --concurrency {args.concurrency} --rounds {args.rounds}"
    )
    return "\n".join(
        [
            "## Transport: paid request latency and throughput against a stubbed-settlement server",
            "",
            f"Run `{today()}` with `{command}`.",
            "",
            f"- Machine: {machine()}",
            f"- Versions: {versions('x402pay', 'x402', 'httpx', 'uvicorn', 'h11', 'eth-account', 'coincurve')}",
            "- Server: `bench/stub_server.py`, raw ASGI on uvicorn (h11, asyncio) in a subprocess on 127.0.0.1.",
            "  `/paid` answers a real v2 challenge (exact, Base Sepolia USDC, EIP-3009) and accepts a payment whose",
            "  EIP-712 signature recovers to its payer (x402pay's EIP-712 digest and a coincurve recovery, about",
            "  0.1 ms; eth-account's recovery cost the server 1.2 ms per request, so every client waited on the",
            "  server); settlement is a made-up `PAYMENT-RESPONSE`.",
            "- Clients: one per contender for the whole run (keep-alive). x402pay with its defaults (no ledger, no",
            "  on-chain verification); the official SDK as its docs show (`x402Client` + `register_exact_evm_client`",
            "  + `x402HttpxClient`; it has no sync httpx client, so it appears only in the async rows). The",
            "  `prepay=True` rows pay each request on its first send (a fresh signature each time, from the",
            "  challenge the route answered before; one round trip). The pre-signed row sends one fixed payment",
            "  header with every request: the floor any one-round-trip payment could reach.",
            f"- Method: {args.rounds} interleaved rounds (order rotating, one warm-up round not counted). Sequential:",
            f"  {args.sequential} requests one after another per batch, median ms per request, ratio = median of the",
            "  per-round latency ratios to the unpaid floor of the same kind (sync or async). Concurrent:",
            f"  {args.concurrent} requests per batch with {args.concurrency} in flight on one event loop, median",
            "  requests/s and paired ratios. CPU µs per request: this process (the client) and the server process",
            "  (`/proc`, 10 ms ticks), medians over the batches.",
            f"- Target 3, throughput with pre-payment: x402pay >= {TARGET_VS_UNPAID}x unpaid:"
            f" {verdict(vs_unpaid, TARGET_VS_UNPAID)}; >= {TARGET_VS_OFFICIAL:.0f}x the official SDK:"
            f" {verdict(vs_official, TARGET_VS_OFFICIAL)}. Paying reactively (two round trips, the default):"
            f" {reactive_vs_unpaid:.2f}x unpaid, {reactive_vs_official:.2f}x the official SDK.",
            f"- Target 2, pre-paid latency <= {TARGET_PREPAID_LATENCY}x unpaid: {latency_verdict('sync')};"
            f" {latency_verdict('async')}.",
            f"  Sequential latency, x402pay async (reactive) / official SDK: {seq_official:.2f}x (below 1: x402pay"
            " is faster).",
            "",
            "Sequential (one request at a time):",
            "",
            "| contender | ms per request | latency vs unpaid | client CPU µs/req | server CPU µs/req |",
            "|---|---:|---:|---:|---:|",
            *seq_rows,
            "",
            f"Concurrent ({args.concurrency} in flight, async):",
            "",
            "| contender | requests/s | vs unpaid | vs official SDK | client CPU µs/req | server CPU µs/req |",
            "|---|---:|---:|---:|---:|---:|",
            *conc_rows,
            "",
            "Where the paid clients' own code spends time in the concurrent batch (cProfile of one batch each: the",
            "library's functions by cumulative time, and TCP connects/closes; per request; profiling inflates the",
            "figures, the proportions are what matters; a coroutine's calls count each of its resumptions):",
            "",
            f"TCP connections opened per paid request (same profile): {connects}.",
            "",
            "| client | function | calls/req | own µs/req | cumulative µs/req |",
            "|---|---|---:|---:|---:|",
            *profile_rows,
        ]
    )


def run(server: StubServer, args: argparse.Namespace) -> Results:
    """Build the clients, check them, time both measurements, profile the paid concurrent batches."""
    loop = asyncio.new_event_loop()
    clients = make_clients(Account.create())
    try:
        loop.run_until_complete(check(clients, server.url))
        costs: dict[str, Cost] = {}

        def costed(prefix: str, batches: dict[str, Callable[[], int]]) -> dict[str, Callable[[], int]]:
            return {name: with_cost(batch, costs.setdefault(f"{prefix} {name}", Cost()), server)
                    for name, batch in batches.items()}  # fmt: skip

        seq = sequential_batches(clients, server.url, loop, args.sequential)
        conc = concurrent_batches(clients, server.url, loop, args.concurrent, args.concurrency)
        sequential = interleaved_rates(costed("seq", seq), args.rounds)
        concurrent = interleaved_rates(costed("conc", conc), args.rounds)
        profiles = {name: profile(conc[name], PROFILED[name], args.top) for name in PROFILED}
    finally:
        loop.run_until_complete(clients.aclose())
        loop.close()
    return Results(sequential, concurrent, costs, profiles, args)


def main() -> None:
    """Start the stub server, run the contenders, print the section, write BENCHMARKS.md (unless ``--no-write``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequential", type=int, default=100, help="requests per sequential batch (default 100)")
    parser.add_argument("--concurrent", type=int, default=600, help="requests per concurrent batch (default 600)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds (default 9)")
    parser.add_argument("--top", type=int, default=12, help="profile rows per client (default 12)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    with running() as server:
        results = run(server, args)
    section = report(results)
    print(section)
    if not args.no_write:
        write_section("transport", section)


if __name__ == "__main__":
    main()
