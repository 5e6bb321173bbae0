"""``x402pay demo``: a bot with a budget pays a Compose-compatible API on a local chain, until the budget refuses.

Everything is real: anvil with the x402 contracts, the paid API behind the payment middleware and a local
facilitator that settles on chain, and the bot's OpenAI SDK on an httpx2 client with the x402pay transport,
a spend ledger and inline verification of every receipt. As an agent, the bot also calls a paid MCP tool (over
streamable HTTP) with the same wallet, policy and ledger: one budget for both, and pays a run of calls through a
payment channel (x402 ``batch-settlement``): one deposit into an on-chain escrow, then an off-chain voucher a call.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

from x402pay._amounts import usdc
from x402pay._payment import Payment
from x402pay.cli.common import EXIT_ERROR, EXIT_OK, refusal_text, usdc_text
from x402pay.cli.demo_channel import ChannelRun, describe_channel, pay_channel
from x402pay.errors import SpendCapExceeded

PER_REQUEST = usdc("0.05")
BUDGET = usdc("0.10")
TOOL_PRICE = usdc("0.01")
CHANNEL_DEPOSIT = usdc("0.01")  # the most one channel deposit may put in escrow: ten calls of the channel route
MESSAGES: Any = [{"role": "user", "content": "what does a paid echo cost"}]


def register(commands: Any) -> None:
    """Add the ``demo`` sub-command."""
    demo = commands.add_parser(
        "demo",
        help="watch a bot with a budget pay a metered API on a local chain, until its budget refuses",
        description="Starts anvil with the x402 contracts, the paid demo API and a bot (the OpenAI SDK on an "
        "httpx2 client with the x402pay transport, a ledger with a budget and inline verification), makes paid "
        "calls (a run paid through one payment channel deposit, chat, streamed chat, Responses, an exact-priced "
        "call, a paid MCP tool call on the same budget), then keeps calling until the budget refuses.",
    )
    demo.set_defaults(run=run_demo)


@dataclass
class Call:
    """One paid call as the demo shows it."""

    name: str
    payment: Payment | None
    budget_left: int


class Screen:
    """Progress and results for people: a spinner on a terminal, plain lines in a log (no escape codes)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()

    @contextmanager
    def waiting(self, what: str) -> Iterator[None]:
        """Show `what` while the block runs (a spinner on a terminal), then how long it took."""
        stop, started = threading.Event(), time.monotonic()
        spinner = threading.Thread(target=self._spin, args=(what, stop), daemon=True) if self.tty else None
        if spinner is not None:
            spinner.start()
        else:
            print(f"... {what}", file=self.out, flush=True)
        done = False
        try:
            yield
            done = True
        finally:
            stop.set()
            if spinner is not None:
                spinner.join()
            mark = ("✓" if self.tty else "ok") if done else ("✗" if self.tty else "failed")
            print(f"{mark} {what} ({time.monotonic() - started:.1f} s)", file=self.out, flush=True)

    def _spin(self, what: str, stop: threading.Event) -> None:
        frames = "|/-\\"
        tick = 0
        while not stop.wait(0.1):
            self.out.write(f"\r{frames[tick % 4]} {what}")
            self.out.flush()
            tick += 1
        self.out.write("\r\x1b[2K")

    def line(self, text: str = "") -> None:
        """Print one line."""
        print(text, file=self.out, flush=True)


def describe_call(number: int, call: Call) -> str:
    """One row: the call, its signed maximum, what was charged, the tx, the verdict, the budget left."""
    payment = call.payment
    if payment is None:
        return f"{number:>2}  {call.name:<22} no payment"
    verdict = payment.verification.verdict if payment.verification is not None else payment.status.value
    tx = (payment.transaction or "-")[:14]
    return (
        f"{number:>2}  {call.name:<22} {payment.scheme:<5} max {usdc_text(payment.signed_amount)}  "
        f"charged {usdc_text(payment.settled_amount)}  tx {tx:<14}  {verdict:<9} left {usdc_text(call.budget_left)}"
    )


def run_demo(args: argparse.Namespace) -> int:
    """Run the whole demo; 0 when every payment verified and the budget refused in the end."""
    from x402pay._extras import require_extra
    from x402pay.testing._anvil import find_anvil

    require_extra("demo", "demo")
    find_anvil()  # AnvilNotFound now, in one line, rather than after "starting a local chain"
    screen = Screen(sys.stdout)
    with ExitStack() as stack:
        devnet = _start_chain(screen, stack)
        url = _start_api(screen, stack, devnet)
        tools = _start_tools(screen, stack, devnet)
        bot = _Bot(devnet, url, stack, tools)
        screen.line(
            f"\nbot {bot.address}: {usdc_text(PER_REQUEST)} USDC per request, budget {usdc_text(BUDGET)} USDC\n"
        )
        channel = bot.pay_channel()
        screen.line(f"payment channel: {len(channel.payments)} calls of GET /v1/fortune/channel, one deposit")
        for line in describe_channel(channel):
            screen.line(line)
        screen.line()
        calls, refusal = bot.run(lambda number, call: screen.line(describe_call(number, call)))
    return _summary(screen, calls, refusal, channel)


def _start_chain(screen: Screen, stack: ExitStack) -> Any:
    from x402pay.testing import Anvil, deploy_devnet

    with screen.waiting("starting a local chain (anvil) and deploying USDC, Permit2 and the x402 proxies"):
        anvil = stack.enter_context(Anvil())
        devnet = deploy_devnet(anvil.rpc_url, payers=1)
    screen.line(f"   chain {devnet.network} at {devnet.rpc_url}; USDC {devnet.usdc}")
    return devnet


def _start_api(screen: Screen, stack: ExitStack, devnet: Any) -> str:
    from x402pay.server._demo import DemoConfig, Meter, running_demo

    config = DemoConfig(upto_max=usdc("0.1"), exact_price=usdc("0.01"), meter=Meter(input_price=150, output_price=300))
    with screen.waiting("starting the paid API (payment middleware + on-chain facilitator) on loopback"):
        url: str = stack.enter_context(running_demo(devnet, config=config))
    screen.line(f"   API at {url}/v1: chat and Responses priced by tokens (upto), /v1/fortune at 0.01 USDC (exact)")
    return url


def _start_tools(screen: Screen, stack: ExitStack, devnet: Any) -> str:
    from x402pay.server._demo.tools import running_tools

    with screen.waiting("starting a paid MCP tool (PaidTools, the same facilitator) over streamable HTTP"):
        url: str = stack.enter_context(running_tools(devnet, price=TOOL_PRICE))
    screen.line(f"   MCP tools at {url}: fortune at {usdc_text(TOOL_PRICE)} USDC (exact)")
    return url


class _Bot:
    """The paying bot: the OpenAI SDK on httpx2, with the x402pay transport, a ledger and inline verification;
    and, as an agent, an MCP client paying tool calls with the same wallet, policy and ledger."""

    def __init__(self, devnet: Any, url: str, stack: ExitStack, tools: str) -> None:
        import httpx2
        import openai

        from x402pay._policy import SpendPolicy
        from x402pay._transport import PaymentTransport
        from x402pay._wallet import Wallet
        from x402pay.ledger import Budget, Ledger

        wallet = Wallet(devnet.payers[0])
        self.address = wallet.address
        self.ledger = stack.enter_context(Ledger.sqlite(":memory:", budgets=[Budget(devnet.usdc, BUDGET)]))
        self.asset, self.network, self.url = devnet.usdc, devnet.network, url
        policy = SpendPolicy(max_per_request=PER_REQUEST, schemes=("exact", "upto", "batch-settlement"),
                             max_deposit=CHANNEL_DEPOSIT)  # fmt: skip
        self.paying: dict[str, Any] = dict(wallet=wallet, policy=policy, ledger=self.ledger, rpc_url=devnet.rpc_url,
                                           verify="inline", on_receipt=self._landed)  # fmt: skip
        self.tools = tools
        transport: Any = PaymentTransport(**self.paying)  # an httpx transport, which httpx2 clients take as they are
        self.http = stack.enter_context(httpx2.Client(transport=transport, timeout=60))
        self.openai = openai.OpenAI(base_url=url + "/v1", api_key="paid-by-x402", http_client=self.http, max_retries=0)
        self._last: Payment | None = None
        self.rpc_url = devnet.rpc_url

    def pay_channel(self) -> ChannelRun:
        """The channel route's calls, one deposit for them all, checked against the chain."""
        return pay_channel(self.http, self.url, self.ledger, self.rpc_url)

    def _landed(self, payment: Payment) -> None:
        self._last = payment

    def run(self, show: Callable[[int, Call], None]) -> tuple[list[Call], SpendCapExceeded | None]:
        """The scripted calls, then fortunes until the budget refuses."""
        steps: list[tuple[str, Callable[[], object]]] = [
            ("chat.completions", self._chat),
            ("chat.completions stream", self._stream),
            ("responses", self._responses),
            ("fortune (exact)", self._fortune),
            ("mcp tool fortune", self._tool),
        ]
        calls: list[Call] = []
        while True:
            name, step = steps[len(calls)] if len(calls) < len(steps) else ("fortune (exact)", self._fortune)
            self._last = None
            try:
                step()
            except SpendCapExceeded as refusal:
                return calls, refusal
            calls.append(Call(name, self._last, self._room()))
            show(len(calls), calls[-1])

    def _room(self) -> int:
        return min(status.remaining for status in self.ledger.budget_status())

    def _chat(self) -> object:
        return self.openai.chat.completions.create(model="demo", messages=MESSAGES)

    def _stream(self) -> object:
        stream = self.openai.chat.completions.create(model="demo", messages=MESSAGES, stream=True)
        return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    def _responses(self) -> object:
        return self.openai.responses.create(model="demo", input="what does a paid answer cost").output_text

    def _fortune(self) -> object:
        return self.http.get(self.url + "/v1/fortune").json()

    def _tool(self) -> object:
        import anyio

        return anyio.run(self._acall_tool)

    async def _acall_tool(self) -> object:
        from mcp import Client

        from x402pay.mcp import PaymentSession

        async with Client(self.tools) as client:  # what is raised inside would leave it in an ExceptionGroup
            try:
                async with PaymentSession(client, origin=self.tools.rsplit("/", 1)[0], **self.paying) as paying:
                    return (await paying.call_tool("fortune")).content[0].text
            except SpendCapExceeded as exc:
                refusal = exc
        raise refusal


def _summary(screen: Screen, calls: list[Call], refusal: SpendCapExceeded | None, channel: ChannelRun) -> int:
    payments = [call.payment for call in calls if call.payment is not None]
    verified = sum(1 for payment in payments if payment.verification is not None and payment.verification.verified)
    charged = sum(payment.settled_amount or 0 for payment in payments)
    screen.line("\nsummary")
    screen.line(f"  paid calls        {len(payments)} ({verified} verified on chain)")
    screen.line(
        f"  channel calls     {len(channel.payments)} (1 deposit, {'verified' if channel.verified else 'NOT verified'})"
    )
    screen.line(f"  charged in total  {usdc_text(charged + channel.charged)} USDC")
    screen.line(f"  budget left       {usdc_text(calls[-1].budget_left if calls else BUDGET)} USDC")
    screen.line(f"  refused           {refusal_text(refusal)}" if refusal else "  refused           never (unexpected)")
    ok = refusal is not None and verified == len(payments) == len(calls) > 0 and channel.verified
    screen.line("\ndemo finished: every payment verified, and the budget held." if ok else "\ndemo FAILED")
    return EXIT_OK if ok else EXIT_ERROR
