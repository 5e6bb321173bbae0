"""Where a request's time goes behind the latency proxy: the client's work before the request reaches the
connection, the wait for its answer (the network, the proxy and the server), and the client's work once the answer
is back. Part of `bench.bench_latency`.

Each contender's client has an inner transport (`Marked`, httpx's own) that notes when a request is handed to it and
when its answer comes back; the request is timed around ``client.get`` as a caller sees it. Before = hand-over minus
start (httpx's client, and for x402pay the payment program up to the send: choose, reserve, sign, store, encode);
wire = answer minus hand-over (httpcore, the proxy's delays, the server, which checks the payment's signature);
after = end minus answer (x402pay: the receipt read and booked). Contenders: unpaid; httpx sending one fixed
payment header signed beforehand (what any payment in one round trip costs on the wire and at the server, with no
client work at all); ``prepay=True``; and ``prepay=True, presign=True``, each paying on its first send.

The contenders take turns request by request (`cycles`), so that the i-th request of each ran under the same load;
the median of the paired ratios of their whole times to unpaid's is what the latency goal is judged on, with its
confidence interval (`ratio_interval`).
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
import timeit
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount

from bench.bench_transport import FLOOR_ASYNC, PREPAY_ASYNC, PRESIGNED, presigned_header
from bench.harness import median, median_interval
from bench.stub_server import payer_of
from x402pay import AsyncPaymentTransport, SpendPolicy, Wallet, payment_of

PRESIGN_ASYNC = "x402pay AsyncPaymentTransport(prepay=True, presign=True), paid route"
SPLIT = (FLOOR_ASYNC, PRESIGNED, PREPAY_ASYNC, PRESIGN_ASYNC)


class Marked(httpx.AsyncHTTPTransport):
    """httpx's transport, noting when the last request was handed to it and when its answer came back."""

    def __init__(self) -> None:
        super().__init__()
        self.last = (0.0, 0.0)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`, noting the times."""
        handed = time.perf_counter()
        response = await super().handle_async_request(request)
        self.last = (handed, time.perf_counter())
        return response


@dataclass
class Split:
    """Seconds before the hand-over, on the wire, after the answer, and in all, of each request (one per cycle)."""

    before: list[float] = field(default_factory=list)
    wire: list[float] = field(default_factory=list)
    after: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)


def cycles(
    loop: asyncio.AbstractEventLoop, requests: Mapping[str, Callable[[], Awaitable[float]]], count: int
) -> dict[str, list[float]]:
    """`count` cycles of one request of each contender (each returns its own seconds), the order rotating from cycle
    to cycle, the garbage collector off as in the harness: the i-th figure of every contender comes from the same
    cycle, so that load drifting across the run cancels out of the ratio of two contenders' i-th figures."""
    names = list(requests)
    seconds: dict[str, list[float]] = {name: [] for name in names}

    async def run() -> None:
        for cycle in range(count):
            shift = cycle % len(names)
            for name in names[shift:] + names[:shift]:
                seconds[name].append(await requests[name]())

    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        loop.run_until_complete(run())
    finally:
        if gc_was_enabled:
            gc.enable()
    return seconds


def ratio_interval(numerator: list[float], denominator: list[float]) -> tuple[float, float, float]:
    """The median of the paired ratios ``numerator[i] / denominator[i]``, and the 95% confidence interval of that
    median (see `median_interval`)."""
    return median_interval([top / bottom for top, bottom in zip(numerator, denominator, strict=True)])


@dataclass
class Splitting:
    """The split contenders' clients, their requests and what they measured."""

    clients: dict[str, httpx.AsyncClient]
    inners: dict[str, Marked]
    paths: dict[str, str]
    splits: dict[str, Split] = field(default_factory=dict)

    async def warm(self, url: str) -> None:
        """Teach the paying clients the route (the first payment is reactive) and check each pays on its first
        send from then on."""
        for name, client in self.clients.items():
            for _ in range(3):
                response = await client.get(url + self.paths[name])
                response.raise_for_status()
            payment = payment_of(response)
            if name in (PREPAY_ASYNC, PRESIGN_ASYNC) and (payment is None or not payment.prepaid):
                raise SystemExit(f"{name}: not pre-paid after warming up")

    def run(self, url: str, loop: asyncio.AbstractEventLoop, count: int) -> None:
        """`count` cycles of one request per contender (see `cycles`), each request split."""
        cycles(loop, {name: partial(self._request, name, url) for name in self.clients}, count)

    async def _request(self, name: str, url: str) -> float:
        split = self.splits.setdefault(name, Split())
        start = time.perf_counter()
        (await self.clients[name].get(url + self.paths[name])).raise_for_status()
        end = time.perf_counter()
        handed, answered = self.inners[name].last
        split.before.append(handed - start)
        split.wire.append(answered - handed)
        split.after.append(end - answered)
        split.total.append(end - start)
        return end - start

    async def aclose(self) -> None:
        """Close every client (a pre-signing one releases what it signed ahead)."""
        for client in self.clients.values():
            await client.aclose()


def splitting(account: LocalAccount) -> Splitting:
    """The clients of the split: unpaid, a fixed payment header, pre-paying, pre-paying and pre-signing, each on its
    own `Marked`."""
    inners = {name: Marked() for name in SPLIT}
    policy = SpendPolicy(max_per_request=10_000)

    def paying(name: str, **options: Any) -> httpx.AsyncClient:
        transport = AsyncPaymentTransport(wallet=Wallet(account), policy=policy, inner=inners[name], **options)
        return httpx.AsyncClient(transport=transport)

    clients = {
        FLOOR_ASYNC: httpx.AsyncClient(transport=inners[FLOOR_ASYNC]),
        PRESIGNED: httpx.AsyncClient(
            transport=inners[PRESIGNED], headers={"PAYMENT-SIGNATURE": presigned_header(Wallet(account))}
        ),
        PREPAY_ASYNC: paying(PREPAY_ASYNC, prepay=True),
        PRESIGN_ASYNC: paying(PRESIGN_ASYNC, prepay=True, presign=True),
    }
    paths = {FLOOR_ASYNC: "/free", PRESIGNED: "/paid", PREPAY_ASYNC: "/paid", PRESIGN_ASYNC: "/paid"}
    return Splitting(clients, inners, paths)


def server_check_seconds(account: LocalAccount, idle: float = 0.02, samples: int = 50) -> tuple[float, float]:
    """What the stub paywall's check of one payment costs it (decode, EIP-712 digest, recovery), timed alone: in a
    tight loop, and after `idle` seconds of sleep each time (as a server between the requests of one caller)."""
    header = presigned_header(Wallet(account)).encode()
    if payer_of(header) is None:
        raise SystemExit("the stub paywall does not accept the timed payment")
    hot = statistics.median(timeit.repeat(lambda: payer_of(header), number=200, repeat=5)) / 200
    after_idle = []
    for _ in range(samples):
        time.sleep(idle)
        start = time.perf_counter()
        payer_of(header)
        after_idle.append(time.perf_counter() - start)
    return hot, statistics.median(after_idle)


def split_rows(rtt: int, splits: dict[str, Split]) -> list[str]:
    """Table rows at one round trip: µs before, on the wire, after, and each one's extra over unpaid."""
    floor = splits[FLOOR_ASYNC]
    rows = []
    for name in SPLIT:
        split = splits[name]
        parts = [(median(split.before), median(floor.before)), (median(split.wire), median(floor.wire)),
                 (median(split.after), median(floor.after))]  # fmt: skip
        cells = " | ".join(f"{mine * 1e6:,.0f} ({(mine - theirs) * 1e6:+,.0f})" for mine, theirs in parts)
        rows.append(f"| {rtt} | {name} | {cells} |")
    return rows


def remaining(rtt: int, splits: dict[str, Split], unpaid: float, target: float) -> str:
    """Where `presign=True`'s extra time goes at `rtt` (`unpaid`: seconds per unpaid request), against what the
    goal (`target` times unpaid) allows."""
    floor, mine, fixed = splits[FLOOR_ASYNC], splits[PRESIGN_ASYNC], splits[PRESIGNED]

    def extra(split: Split, part: str) -> float:
        return (median(getattr(split, part)) - median(getattr(floor, part))) * 1e6

    return (
        f"  - {rtt} ms: the goal allows {(target - 1) * unpaid * 1e6:,.0f} µs over unpaid; with `presign=True` the"
        f" client adds {extra(mine, 'before'):+,.0f} µs before the send and {extra(mine, 'after'):+,.0f} µs after"
        f" the answer, the wait {extra(mine, 'wire'):+,.0f} µs (the fixed payment header alone:"
        f" {extra(fixed, 'wire'):+,.0f} µs on the wait, {extra(fixed, 'before') + extra(fixed, 'after'):+,.0f} µs"
        " in the client)."
    )
