"""Paid MCP tool calls: what x402pay's PaymentSession and PaidTools cost against a plain mcp client's free call.

One process, mcp 2.x's in-memory transport (``mcp.Client(server)``), so each figure is the client's and the
server's CPU together, with no network: a paid call is two ``tools/call`` round trips (the payment-required result,
then the paid call), choosing and signing (EIP-3009), and, on the server, the call through `PaymentMiddleware` in
process. The facilitator is a stub that approves and "settles" at once (no chain): what is timed is x402pay's work.
Contenders, in interleaved rounds (`bench.harness`):

- the floor: ``mcp.Client.call_tool`` of a free tool;
- ``PaymentSession.call_tool`` of the same free tool (what the wrapper costs a call that is not paid);
- ``PaymentSession.call_tool`` of a paid tool (exact, 0.01 USDC);
- for reference, ``mcp.Client.call_tool`` of the paid tool with a payment signed before the timing: one round trip
  and the server's share of the work (its difference to the paid call is the client's program and signing, and
  the unpaid first round trip).

Run from the repository root: ``.venv/bin/python -m bench.bench_mcp`` (``--help``); it writes the "mcp" section
of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from typing import Any

from mcp import Client
from mcp.server.mcpserver import MCPServer

from bench.harness import interleaved_rates, machine, median, paired_ratio, today, versions, write_section
from x402pay import SpendPolicy, Wallet, payment_of
from x402pay._flow import decode_challenge, sign
from x402pay._protocol.codec import encode_header
from x402pay._protocol.headers import PAYMENT_REQUIRED
from x402pay._protocol.models import PaymentPayload, PaymentRequirements, SettleResponse
from x402pay.mcp import PaidTools, PaymentSession
from x402pay.mcp._wire import payment_meta
from x402pay.server import Price, SupportedResponse, VerifyResponse
from x402pay.testing import anvil_account

USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"  # Base's USDC: a known asset, so the default policy pays it
NETWORK = "eip155:8453"
PRICE = 10_000
FLOOR = "mcp.Client, free tool (floor)"
FREE = "x402pay PaymentSession, free tool"
PAID = "x402pay PaymentSession, paid tool (exact)"
PRESIGNED = "mcp.Client + a payment signed beforehand, paid tool (reference)"


class StubFacilitator:
    """Approves every payment and settles it at once with a made-up transaction: no chain in the timing."""

    async def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse:
        """Valid, paid by the payload's signer."""
        return VerifyResponse(is_valid=True, payer=payload.payload["authorization"]["from"])

    async def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse:
        """Settled, in a transaction that does not exist."""
        payer = payload.payload["authorization"]["from"]
        return SettleResponse(success=True, transaction="0x" + "ab" * 32, network=NETWORK, payer=payer)

    async def supported(self) -> SupportedResponse:
        """Exact on Base."""
        return SupportedResponse.model_validate({"kinds": [{"x402Version": 2, "scheme": "exact", "network": NETWORK}]})


def weather() -> MCPServer:
    """The bench's server: ``free_weather`` and ``paid_weather`` (exact, through the stub facilitator)."""
    paid = PaidTools(facilitator=StubFacilitator(), network=NETWORK, pay_to=anvil_account(2).address,
                     tools={"paid_weather": Price.exact(PRICE, asset=USDC)})  # fmt: skip
    server = MCPServer("bench", extensions=[paid.extension()], log_level="WARNING")

    @server.tool(structured_output=False)
    async def free_weather(city: str) -> str:
        return f"sunny in {city}"

    @server.tool(structured_output=False)
    async def paid_weather(city: str) -> str:
        return f"sunny in {city}"

    return server


class Connected:
    """An event loop in a thread of its own holding one client connection, so that timed batches reuse it."""

    def __init__(self, server: MCPServer) -> None:
        self.loop = asyncio.new_event_loop()
        self.client: Any = None
        self._ready, self._stop = threading.Event(), asyncio.Event()
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._keep(server),), daemon=True)
        self._thread.start()
        self._ready.wait(30)

    async def _keep(self, server: MCPServer) -> None:
        async with Client(server) as client:
            self.client = client
            self._ready.set()
            await self._stop.wait()

    def run(self, work: Callable[[], Awaitable[int]]) -> int:
        """Run `work` on the loop; its result."""
        return int(self.run_one(work))

    def run_one(self, work: Callable[[], Awaitable[Any]]) -> Any:
        """Run `work` on the loop; whatever it returns."""
        future: Future[Any] = asyncio.run_coroutine_threadsafe(work(), self.loop)  # type: ignore[arg-type]
        return future.result()

    def close(self) -> None:
        """Close the connection and the loop's thread."""
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def presigned(connected: Connected, count: int) -> Iterator[dict[str, Any]]:
    """`count` payments for the paid tool, each with its own nonce, signed now (before any timing)."""
    unpaid = connected.run_one(lambda: connected.client.call_tool("paid_weather", {"city": "x"}))
    challenge = decode_challenge({PAYMENT_REQUIRED: encode_header(unpaid.structured_content)}, None)
    assert challenge is not None  # noqa: S101 - the paid tool asks to be paid
    wallet, policy = Wallet(anvil_account(3)), SpendPolicy(max_per_request=PRICE)
    for _ in range(count):
        _, header = sign(challenge, challenge.requirements[0], wallet=wallet, policy=policy, origin="memory://bench",
                         now=int(time.time()))  # fmt: skip
        yield payment_meta(header)


def contenders(connected: Connected, calls: int, rounds: int) -> dict[str, Callable[[], int]]:
    """Each contender's batch of `calls` tool calls, on `connected`'s one connection."""
    paying = PaymentSession(connected.client, wallet=Wallet(anvil_account(3)),
                            policy=SpendPolicy(max_per_request=PRICE), origin="memory://bench")  # fmt: skip
    payments = iter(list(presigned(connected, calls * (rounds + 1))))

    def batch(call: Callable[[int], Awaitable[Any]]) -> Callable[[], int]:
        async def work() -> int:
            for number in range(calls):
                await call(number)
            return calls

        return lambda: connected.run(work)

    async def paid(number: int) -> None:
        result = await paying.call_tool("paid_weather", {"city": f"city {number}"})
        assert payment_of(result) is not None  # noqa: S101 - a paid call that paid nothing would time nothing

    return {
        FLOOR: batch(lambda number: connected.client.call_tool("free_weather", {"city": f"city {number}"})),
        FREE: batch(lambda number: paying.call_tool("free_weather", {"city": f"city {number}"})),
        PAID: batch(paid),
        PRESIGNED: batch(
            lambda number: connected.client.call_tool("paid_weather", {"city": f"city {number}"}, meta=next(payments))
        ),
    }


def main() -> None:
    """Time the contenders, print the section and write it to BENCHMARKS.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50, help="tool calls per batch (default 50)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    connected = Connected(weather())
    try:
        rates = interleaved_rates(contenders(connected, args.calls, args.rounds), args.rounds)
    finally:
        connected.close()
    section = report(rates, args)
    print(section)
    if not args.no_write:
        write_section("mcp", section)


def report(rates: dict[str, list[float]], args: argparse.Namespace) -> str:
    """The BENCHMARKS.md section for `rates`."""
    rows = [f"| {name} | {1000 / median(rates[name]):.2f} ms | {paired_ratio(rates[name], rates[FLOOR]):.3f} |"
            for name in (FLOOR, FREE, PAID, PRESIGNED)]  # fmt: skip
    return "\n".join([
        "## Paid MCP tool calls (`bench/bench_mcp.py`)",
        "",
        f"{machine()}. {versions('mcp', 'httpx', 'eth-account')}. {today()}.",
        f"Command: `python -m bench.bench_mcp --calls {args.calls} --rounds {args.rounds}`. In memory, one process "
        "(client and server CPU together), a stub facilitator (no chain); median over the rounds, ratios paired "
        "per round against the floor (rate of the contender / rate of the floor: below 1 is slower).",
        "",
        "| contender | per call | rate vs floor |",
        "|---|---:|---:|",
        *rows,
        "",
        "A paid call is two round trips (the payment-required result, then the paid call), one EIP-3009 signature "
        "and the server's call through PaymentMiddleware in process; the wrapper alone (a free tool) adds the "
        "program's bookkeeping to one round trip.",
    ])  # fmt: skip


if __name__ == "__main__":
    main()
