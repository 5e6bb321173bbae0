"""Paid calls over a network with latency: what each way of paying costs when a round trip takes 20 or 100 ms.

The stub paywall of `bench.bench_transport` (`bench.stub_server`, a subprocess on loopback) sits behind
`bench.latency_proxy`, which delays each direction by half the round trip, so every contender pays the same round
trips a real network would charge. Contenders, with the clients of `bench.bench_transport` (async, one client each,
kept for the whole run): plain httpx on the unpaid route (the floor), x402pay paying reactively (two round trips),
x402pay with ``prepay=True`` (one round trip once the route is known), the same with ``presign=True`` (the next
payment signed while a request is in flight), the official x402 SDK. Measured at each
round trip:

- sequential, in interleaved rounds of batches: one request at a time, latency per request and its ratio to unpaid,
  and CPU per request; besides, the first call to a route with ``prepay=True`` (a fresh transport on a warm
  connection: it must pay reactively);
- concurrent, in interleaved rounds: `--concurrency` requests in flight on one event loop, requests per second and
  the ratio to unpaid;
- taking turns request by request (`bench.latency_split.cycles`), for the 2% goal: unpaid, a fixed payment header,
  both pre-paying clients, each request split into the client's work and the wait (the median of the paired ratios
  to unpaid, with its 95% interval, judges the goal); and streamed, a short SSE answer's time to its first byte
  (which holds the first event): unpaid, reactive, pre-paid.

Prints the tables and writes the "latency" section of BENCHMARKS.md. Run from the repository root:
``.venv/bin/python -m bench.bench_latency`` (``--help``).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount

from bench.bench_transport import (
    FLOOR_ASYNC,
    OFFICIAL,
    PREPAY_ASYNC,
    X402PAY_ASYNC,
    Clients,
    Cost,
    async_gets,
    check,
    make_clients,
    run_concurrent,
    run_sequential,
    with_cost,
)
from bench.harness import Batch, interleaved_rates, machine, median, paired_ratio, today, versions, write_section
from bench.latency_proxy import proxied
from bench.latency_split import (
    PRESIGN_ASYNC,
    Split,
    cycles,
    ratio_interval,
    remaining,
    server_check_seconds,
    split_rows,
    splitting,
)
from bench.stub_server import StubServer, running
from x402pay import AsyncPaymentTransport, SpendPolicy, Wallet, payment_of
from x402pay.ledger import Ledger

TARGET_PREPAID = 1.02  # issue 18: pre-paid latency (and time to first byte) within 1.02x of unpaid
ROUND_TRIPS_MS = (20, 100)
CONTENDERS = (FLOOR_ASYNC, X402PAY_ASYNC, PREPAY_ASYNC, PRESIGN_ASYNC, OFFICIAL)
PREPAID = (PREPAY_ASYNC, PRESIGN_ASYNC)
FIRST_CALL = "x402pay AsyncPaymentTransport(prepay=True), first call to the route"
RESTARTED = "x402pay AsyncPaymentTransport(prepay=True, ledger=SQLite), first call after a restart"
STREAM_PATH = "stream?size=9000&chunk=1024"  # ten ~1 KB frames, the first one whole in the first piece
STREAMED = {
    FLOOR_ASYNC: "/" + STREAM_PATH,
    X402PAY_ASYNC: "/paid-" + STREAM_PATH,
    PREPAY_ASYNC: "/paid-" + STREAM_PATH,
    PRESIGN_ASYNC: "/paid-" + STREAM_PATH,
}


@dataclass
class Timed:
    """A contender that times its own requests (what the harness's batch rate cannot isolate): seconds per request,
    the median of each batch."""

    requests: Callable[[], list[float]]
    medians: list[float] = field(default_factory=list)

    def batch(self) -> int:
        """One batch; notes its median."""
        seconds = self.requests()
        self.medians.append(median(seconds))
        return len(seconds)


@dataclass
class AtRoundTrip:
    """The figures at one round trip: rates per contender, and the self-timed seconds of the others."""

    sequential: dict[str, list[float]]
    costs: dict[str, Cost]
    concurrent: dict[str, list[float]]
    first_call: list[float]
    restarted: list[float]
    ttfb: dict[str, list[float]]
    split: dict[str, Split] = field(default_factory=dict)
    server_check: tuple[float, float] = (0.0, 0.0)


async def first_call(account: LocalAccount, url: str, ledger: Path | None = None, prepaid: bool = False) -> float:
    """Seconds of the first paid call through a fresh pre-paying transport (with `ledger`, if given), its connection
    opened beforehand; it must pre-pay if `prepaid`, else pay reactively."""
    books = {"ledger": Ledger.sqlite(ledger)} if ledger is not None else {}
    policy = SpendPolicy(max_per_request=10_000)
    transport = AsyncPaymentTransport(wallet=Wallet(account), policy=policy, prepay=True, **books)
    try:
        async with httpx.AsyncClient(transport=transport) as client:
            (await client.get(url + "/free")).raise_for_status()
            start = time.perf_counter()
            response = await client.get(url + "/paid")
            elapsed = time.perf_counter() - start
    finally:
        for opened in books.values():
            opened.close()
    payment = payment_of(response)
    if response.status_code != 200 or payment is None or payment.prepaid is not prepaid:
        raise SystemExit(f"first call: HTTP {response.status_code}, payment {payment}")
    return elapsed


async def first_byte(client: httpx.AsyncClient, url: str, prepaid: bool | None) -> float:
    """Seconds to the first byte of a streamed answer, read to its end; `prepaid` is None for the unpaid route."""
    start = time.perf_counter()
    async with client.stream("GET", url) as response:
        elapsed = 0.0
        async for _ in response.aiter_bytes():
            elapsed = elapsed or time.perf_counter() - start
    payment = payment_of(response)
    if response.status_code != 200 or (prepaid is not None and (payment is None or payment.prepaid is not prepaid)):
        raise SystemExit(f"{url}: HTTP {response.status_code}, payment {payment}, expected prepaid {prepaid}")
    if prepaid is not None and payment is not None and payment.receipt is None:
        raise SystemExit(f"{url}: no in-band receipt found")
    return elapsed


def presigning(account: LocalAccount) -> httpx.AsyncClient:
    """The client of the `PRESIGN_ASYNC` contender (the others are `bench.bench_transport`'s)."""
    policy = SpendPolicy(max_per_request=10_000)
    return httpx.AsyncClient(
        transport=AsyncPaymentTransport(wallet=Wallet(account), policy=policy, prepay=True, presign=True)
    )


def stream_firsts(
    clients: Clients, presign: httpx.AsyncClient, url: str, loop: asyncio.AbstractEventLoop, count: int
) -> dict[str, list[float]]:
    """Seconds to the first byte of `count` streamed answers each, taking turns (`cycles`): unpaid, reactive,
    pre-paid (without and with payments signed ahead)."""
    by_name = {FLOOR_ASYNC: clients.free_async, X402PAY_ASYNC: clients.paid_async, PREPAY_ASYNC: clients.prepay_async,
               PRESIGN_ASYNC: presign}  # fmt: skip
    prepaid = {FLOOR_ASYNC: None, X402PAY_ASYNC: False, PREPAY_ASYNC: True, PRESIGN_ASYNC: True}
    requests = {name: partial(first_byte, by_name[name], url + STREAMED[name], prepaid[name]) for name in STREAMED}
    return cycles(loop, requests, count)


def _on(loop: asyncio.AbstractEventLoop, batch: Callable[[], Coroutine[object, object, int]]) -> Batch:
    """`batch`, a coroutine function, as a harness batch run on `loop`."""
    return lambda: loop.run_until_complete(batch())


def measure(url: str, server: StubServer, args: argparse.Namespace, ledger: Path, turns: int) -> AtRoundTrip:
    """Every measurement against `url` (the proxy in front of `server`), with clients of its own; `ledger` is a
    file for the restarted transports to share; `turns`: cycles of the contenders taking turns."""
    loop = asyncio.new_event_loop()
    account = Account.create()
    clients = make_clients(account)
    presign = presigning(account)
    split = splitting(account)
    try:
        loop.run_until_complete(check(clients, url))
        loop.run_until_complete(first_call(account, url, ledger))  # reactive: the ledger learns the route
        for client in (clients.prepay_async, presign):
            loop.run_until_complete(first_byte(client, url + STREAMED[PREPAY_ASYNC], prepaid=False))
        gets = {name: get for name, get in async_gets(clients, url).items() if name in CONTENDERS}
        gets[PRESIGN_ASYNC] = lambda: presign.get(url + "/paid")
        first = Timed(lambda: [loop.run_until_complete(first_call(account, url)) for _ in range(args.first_calls)])
        restart = partial(first_call, account, url, ledger, prepaid=True)
        restarted = Timed(lambda: [loop.run_until_complete(restart()) for _ in range(args.first_calls)])
        costs = {name: Cost() for name in gets}
        sequential = {
            name: with_cost(_on(loop, partial(run_sequential, get, args.sequential)), costs[name], server)
            for name, get in gets.items()
        }
        sequential[FIRST_CALL] = first.batch
        sequential[RESTARTED] = restarted.batch
        seq = interleaved_rates(sequential, args.rounds)
        in_flight = partial(run_concurrent, count=args.concurrent, concurrency=args.concurrency)
        conc = interleaved_rates({name: _on(loop, partial(in_flight, get)) for name, get in gets.items()}, args.rounds)
        ttfb = stream_firsts(clients, presign, url, loop, turns)
        loop.run_until_complete(split.warm(url))
        split.run(url, loop, turns)
    finally:
        loop.run_until_complete(clients.aclose())
        loop.run_until_complete(presign.aclose())
        loop.run_until_complete(split.aclose())
        loop.close()
    del seq[FIRST_CALL], seq[RESTARTED]
    return AtRoundTrip(seq, costs, conc, first.medians[1:], restarted.medians[1:], ttfb, split.splits,
                       server_check_seconds(account))  # fmt: skip


def _verdict(ratio: float, low: float, high: float) -> str:
    """A ratio to unpaid against the goal, with its 95% interval; said so when the interval straddles the goal."""
    verdict = "met" if ratio <= TARGET_PREPAID else "NOT met"
    close = ", within the noise of the goal" if low <= TARGET_PREPAID < high else ""
    return f"{ratio:.3f}x (95% interval {low:.3f}-{high:.3f}x), {verdict}{close}"


def _turns(result: AtRoundTrip, name: str) -> list[float] | None:
    """The seconds of `name`'s requests taking turns with the others (see `bench.latency_split`), if it took any."""
    split = result.split.get(name)
    return split.total if split is not None and split.total else None


def rows(rtt: int, result: AtRoundTrip) -> tuple[list[str], list[str], list[str]]:
    """The table rows at one round trip (requests, streams) and its goal verdicts. A contender that took turns with
    unpaid request by request is shown by those requests (median, paired ratio), the others by their batches."""
    seq, conc, unpaid = result.sequential, result.concurrent, result.sequential[FLOOR_ASYNC]
    unpaid_seconds = [1 / rate for rate in unpaid]
    floor_turns = _turns(result, FLOOR_ASYNC)

    def latency(name: str) -> str:
        turns = _turns(result, name)
        if turns is None or floor_turns is None:
            return f"{1000 / median(seq[name]):.1f} | {paired_ratio(unpaid, seq[name]):.3f}x"
        return f"{median(turns) * 1000:.1f} | {ratio_interval(turns, floor_turns)[0]:.3f}x"

    requests = [
        f"| {rtt} | {name} | {latency(name)} |"
        f" {median(result.costs[name].client) * 1e6:,.0f} | {median(result.costs[name].server) * 1e6:,.0f} |"
        f" {median(conc[name]):,.0f} | {paired_ratio(conc[name], conc[FLOOR_ASYNC]):.2f}x |"
        for name in CONTENDERS
    ]
    requests += [
        f"| {rtt} | {name} | {median(seconds) * 1000:.1f} | {paired_ratio(seconds, unpaid_seconds):.3f}x |"
        " - | - | - | - |"
        for name, seconds in ((FIRST_CALL, result.first_call), (RESTARTED, result.restarted))
    ]
    ttfb, floor = result.ttfb, result.ttfb[FLOOR_ASYNC]
    streams = [
        f"| {rtt} | {name} | {median(ttfb[name]) * 1000:.1f} | {paired_ratio(ttfb[name], floor):.3f}x |"
        for name in STREAMED
    ]
    verdicts = [_verdicts(rtt, result, name) for name in PREPAID]
    return requests, streams, verdicts


def _verdicts(rtt: int, result: AtRoundTrip, name: str) -> str:
    """The goal's verdicts at `rtt` for the pre-paying contender `name`, from the requests that took turns."""
    mine, floor, ttfb = result.split[name].total, result.split[FLOOR_ASYNC].total, result.ttfb
    extra_ms = median([(each - theirs) * 1000 for each, theirs in zip(mine, floor, strict=True)])
    extra_cpu = median(result.costs[name].client) - median(result.costs[FLOOR_ASYNC].client)
    how = "`prepay=True, presign=True`" if name == PRESIGN_ASYNC else "`prepay=True`"
    return (
        f"  - {rtt} ms round trip, {how}: pre-paid latency {_verdict(*ratio_interval(mine, floor))}"
        f" ({extra_ms:+.2f} ms per request; client CPU {extra_cpu * 1e6:+,.0f} µs per request); pre-paid time to"
        f" first byte of a stream {_verdict(*ratio_interval(ttfb[name], ttfb[FLOOR_ASYNC]))}."
    )


def report(results: dict[int, AtRoundTrip], args: argparse.Namespace) -> str:
    """The BENCHMARKS.md section."""
    turns = [len(result.split[FLOOR_ASYNC].total) for result in results.values()]
    requests, streams, verdicts, splits, left = [], [], [], [], []
    for rtt, result in results.items():
        more = rows(rtt, result)
        requests += more[0]
        streams += more[1]
        verdicts += more[2]
        splits += split_rows(rtt, result.split)
        left.append(remaining(rtt, result.split, median(result.split[FLOOR_ASYNC].total), TARGET_PREPAID))
    server_check = [median([result.server_check[hot_or_not] for result in results.values()]) for hot_or_not in (0, 1)]
    command = (
        f".venv/bin/python -m bench.bench_latency --sequential {args.sequential} --first-calls {args.first_calls}"
        f" --concurrent {args.concurrent} --concurrency {args.concurrency} --turns {args.turns}"
        f" --rounds {args.rounds}"
    )
    return "\n".join(
        [
            "## Latency: paid calls over a network with 20 and 100 ms round trips",
            "",
            f"Run `{today()}` with `{command}`.",
            "",
            f"- Machine: {machine()}",
            f"- Versions: {versions('x402pay', 'x402', 'httpx', 'uvicorn', 'h11')}",
            "- Network: `bench/latency_proxy.py` between the clients and `bench/stub_server.py` (the stub paywall of",
            "  the transport section, uvicorn in a subprocess on 127.0.0.1): each direction of every connection is",
            "  delayed by half the round trip, chunk by chunk in order. It runs in a process of its own, as a real",
            "  network costs the client no CPU. Connection setup is not delayed; every client keeps its",
            "  connections alive, so a request pays only its own round trips.",
            "- Contenders (async, one client each for the whole run, as in the transport section): httpx on the",
            "  unpaid route; x402pay paying reactively (request, 402, paid retry: two round trips); x402pay with",
            "  `prepay=True` (pays on the first send: one round trip); the same with `presign=True` (the next",
            "  payment reserved and signed while a request is in flight, so a request only stores and sends one);",
            "  the official x402 SDK (`x402HttpxClient`).",
            "  First call to a route: a fresh `prepay=True` transport whose connection an unpaid request opened",
            "  first; the call must pay reactively (it has no challenge to pay from yet). First call after a",
            "  restart: the same, with a SQLite ledger (a file in a temporary directory, default durability) that",
            "  an earlier transport taught the route: the call pre-pays (one round trip) and pays the ledger's",
            "  commits besides.",
            "- Method: at each round trip, the contenders the goal must tell apart at 2% take turns request by",
            f"  request: {turns[0]} cycles at {ROUND_TRIPS_MS[0]} ms, {turns[1]} at {ROUND_TRIPS_MS[1]} ms (the noise",
            "  is about the same in µs, so a longer round trip needs fewer), one request of each per cycle, the order",
            "  rotating, after warm-up requests not counted: unpaid, the fixed payment header, both pre-paying",
            '  clients (table "where the time goes"), and for streams unpaid, reactive and both pre-paying',
            "  clients. Latency: the median over their requests; ratio to unpaid: the median of the ratios of",
            "  requests of the same cycle, with the 95% confidence interval of that median (order statistics).",
            "  The goal is judged on those. The interval covers the noise within one run, not the drift between",
            "  runs at different times on a shared machine (other work on its 2 cores: see the load average).",
            "  The other contenders (reactive, the SDK, first calls) and the CPU costs:",
            f"  {args.rounds} interleaved rounds of batches (order rotating, one warm-up round not counted),",
            f"  {args.sequential} requests one after another per batch ({args.first_calls} first calls), median ms",
            "  per request, ratio to unpaid = median of the per-round ratios; CPU µs per request of this process",
            "  (the client) and of the server (`/proc`, 10 ms ticks), medians over the sequential batches.",
            f"  Concurrent: {args.concurrent} requests per batch, {args.concurrency} in flight on one event loop,",
            "  median requests/s and per-round ratios. Streamed: short SSE answers (ten ~1 KB `data:` frames and",
            "  the in-band receipt, `/stream` unpaid, `/paid-stream` paid), time to the first body chunk (it holds",
            "  the first event).",
            f"- Goal (issue 18): pre-paid within {TARGET_PREPAID}x of unpaid, per request and to the first byte:",
            *verdicts,
            "- Reading: a pre-paid request waits one round trip, as an unpaid one does; what it adds is the client's",
            "  own work for each payment (choose, reserve, sign a fresh authorization, store and encode it, read the",
            "  receipt) and the server's check of it, which a caller making one request at a time waits for in",
            "  full, about the same at both round trips, so the ratio to unpaid shrinks as the round trip grows.",
            "  `presign=True` moves the reservation and the signature of the next payment into the wait for the",
            "  current answer; what stays on the request's path is the choice, storing and sending, the server's",
            "  check and the receipt. It may cost a little more client CPU per request (the task that signs ahead;",
            "  a payment signed ahead and released unused when the transport closes). With 16 in flight at 20 ms",
            "  the client runs short of CPU before the network is the limit (the proxy and the server share the",
            "  same 2 cores), so those requests/s measure CPU per request as much as round trips.",
            "- Where a pre-payment's extra time goes (table below; `bench/latency_split.py`): each request of the",
            "  unpaid client, of httpx sending one fixed payment header signed beforehand (the floor of any",
            "  payment in one round trip: no client work), and of the two pre-paying clients, split into the",
            "  client's work before its request reaches the connection, the wait for the answer (network, proxy,",
            "  server) and the client's work after the answer; the requests that took turns, the median of each",
            "  part over them; in brackets, the extra over unpaid. The wait's extra is mostly the server's check of",
            "  the payment: the stub paywall's decode, EIP-712 digest and signer recovery (what any server that",
            f"  checks signatures must do) cost {server_check[0] * 1e6:,.0f} µs in a tight loop and"
            f" {server_check[1] * 1e6:,.0f} µs after 20 ms",
            "  of sleep, timed alone: work done after an idle wait runs slower (caches and branch predictors cold),",
            "  and a caller making one request at a time leaves the server idle a round trip between requests.",
            "  The fixed payment header pays that with no client work at all. The same holds in the client:",
            "  measured apart on loopback, x402pay's own work on a pre-signed request's path (program, headers,",
            "  receipt) took about 0.15 ms in a tight loop and 0.3 ms with 20 ms of idle between requests. The",
            "  pre-paying clients wait about 0.1 ms longer than the fixed header, though their request is no",
            "  harder for the server (plain httpx sending the same headers waits as long as the fixed header,",
            "  measured apart): the difference is the client's, most likely httpcore writing the request with",
            "  caches that x402pay's work before the send has cooled.",
            *left,
            "",
            "Where the time goes, µs per request (extra over unpaid in brackets):",
            "",
            "| round trip ms | contender | client, before the send | send to answer | client, after the answer |",
            "|---:|---|---:|---:|---:|",
            *splits,
            "",
            "Requests (ratio > 1: slower than unpaid; requests/s ratio < 1: fewer than unpaid):",
            "",
            f"| round trip ms | contender | ms per request | latency vs unpaid | client CPU µs/req | server CPU"
            f" µs/req | requests/s, {args.concurrency} in flight | vs unpaid |",
            "|---:|---|---:|---:|---:|---:|---:|---:|",
            *requests,
            "",
            "Streamed answers, time to first byte:",
            "",
            "| round trip ms | contender | first byte ms | vs unpaid |",
            "|---:|---|---:|---:|",
            *streams,
        ]
    )


def main() -> None:
    """Start the stub server, and at each round trip a proxy; time everything; print, write BENCHMARKS.md."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequential", type=int, default=20, help="requests per sequential batch (default 20)")
    parser.add_argument("--first-calls", type=int, default=5, help="first calls per batch (default 5)")
    parser.add_argument("--concurrent", type=int, default=160, help="requests per concurrent batch (default 160)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    parser.add_argument("--turns", type=int, default=200,
                        help="cycles of the contenders taking turns request by request at a 20 ms round trip, two"
                             " fifths as many at 100 ms (default 200)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    results = {}
    with running() as server, tempfile.TemporaryDirectory() as scratch:
        host, port = server.url.removeprefix("http://").split(":")
        for rtt in ROUND_TRIPS_MS:
            with proxied((host, int(port)), delay=rtt / 2000) as url:
                turns = args.turns if rtt == ROUND_TRIPS_MS[0] else max(10, args.turns * 2 // 5)
                results[rtt] = measure(url, server, args, Path(scratch) / f"ledger-{rtt}.db", turns)
    section = report(results, args)
    print(section)
    if not args.no_write:
        write_section("latency", section)


if __name__ == "__main__":
    main()
