"""A hostile paid server for the adversarial suite, and the helpers its tests share.

`Hostile` is a small ASGI app served on loopback (`x402pay.server._serving.serve_app`) in front of the anvil devnet.
It records every request it receives (method, path, every header as received), then answers with whatever the
test's `script` says: a challenge of any shape, a real settlement through a `LocalFacilitator` followed by any
lie, a stream cut mid-frame, an answer that never comes. "No signature left the process" is asserted on what the
server saw: no request carried ``PAYMENT-SIGNATURE`` or ``X-PAYMENT``.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import httpx
import pytest
import requests
from starlette.types import Message, Receive, Scope, Send

from x402pay import (
    AsyncPaymentTransport,
    Payment,
    PaymentAdapter,
    PaymentStatus,
    PaymentTransport,
    SpendPolicy,
    Wallet,
    payment_of,
)
from x402pay._protocol.codec import decode_header, parse_model
from x402pay._protocol.models import PaymentPayload, PaymentRequirements, SettleResponse
from x402pay.errors import X402PayError
from x402pay.ledger import EntryState, Ledger
from x402pay.server import LocalFacilitator
from x402pay.testing import Devnet
from x402pay.verify import Claim

PRICE = 10_000
CAP = 50_000
PAYMENT_HEADERS = ("payment-signature", "x-payment")
#: A well-formed address that is neither the devnet's payee nor any payer.
STRANGER = "0x000000000000000000000000000000000000dEaD"


class HostileError(X402PayError):
    """What the hostile server raises to cut a connection (never seen by the client as such)."""


def b64(data: Any) -> str:
    """Standard base64 of compact JSON, as x402 headers carry it."""
    return base64.b64encode(json.dumps(data, separators=(",", ":")).encode()).decode()


def unb64(text: str) -> Any:
    """The JSON inside a base64 header."""
    return json.loads(base64.b64decode(text + "=" * (-len(text) % 4)))


@dataclass(frozen=True)
class Seen:
    """One request as the server received it: every header, names lower-cased, in order."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        """The first value of header `name`, or None."""
        return next((value for key, value in self.headers if key == name.lower()), None)

    @property
    def payment(self) -> str | None:
        """The payment header this request carried (``PAYMENT-SIGNATURE`` or ``X-PAYMENT``), if any."""
        return next((value for key, value in self.headers if key in PAYMENT_HEADERS), None)


@dataclass
class Reply:
    """What the hostile server answers.

    `body` is one byte string or chunks sent one by one (`pause` seconds apart). After the chunks, `cut` drops
    the connection mid-body and `hang` keeps the response open until the test ends.
    """

    status: int = 200
    headers: Sequence[tuple[str | bytes, str | bytes]] = ()
    body: bytes | Sequence[bytes] = b""
    pause: float = 0.0
    cut: bool = False
    hang: bool = False


@dataclass
class Call:
    """One request handed to a script: what was seen, its number in this test, and the server (to settle)."""

    seen: Seen
    index: int
    server: Hostile

    @property
    def paid(self) -> bool:
        """Whether this request carries a payment header."""
        return self.seen.payment is not None

    def payload(self) -> PaymentPayload:
        """The payment this request carries, decoded."""
        assert self.seen.payment is not None
        data = decode_header(self.seen.payment, what="payment", error=HostileError)
        return parse_model(data, PaymentPayload, what="payment", error=HostileError)

    def settle(self, v1_requirement: dict[str, Any] | None = None) -> SettleResponse:
        """Settle the carried payment for real on the devnet: v2 as `accepted` says, v1 per `v1_requirement`."""
        payload = self.payload()
        requirement = PaymentRequirements.model_validate(payload.accepted or v1_requirement)
        settlement = self.server.facilitator.settle_blocking(payload, requirement)
        self.server.settlements.append(settlement)
        return settlement


Script = Callable[[Call], Reply]


class Hostile:
    """The hostile paid server: records every request, answers as `script` says (run in a worker thread)."""

    def __init__(self, devnet: Devnet) -> None:
        self.devnet = devnet
        self.facilitator = LocalFacilitator(devnet.rpc_url, devnet.facilitator)
        self.url = ""
        self.reset()

    def reset(self) -> None:
        """Forget the previous test: no requests seen, the default script, hanging answers released."""
        stop = getattr(self, "stop", None)
        if stop is not None:
            stop.set()
        self.seen: list[Seen] = []
        self.settlements: list[SettleResponse] = []
        self.script: Script = lambda call: Reply(404)
        self.stop = threading.Event()

    @property
    def signatures(self) -> list[str]:
        """Every payment header the server received, in order."""
        return [seen.payment for seen in self.seen if seen.payment is not None]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = tuple((key.decode("latin-1").lower(), value.decode("latin-1")) for key, value in scope["headers"])
        seen = Seen(scope["method"], scope["path"], headers)
        self.seen.append(seen)
        call = Call(seen, len(self.seen) - 1, self)
        reply = await anyio.to_thread.run_sync(self.script, call)
        await self._answer(reply, send)

    async def _answer(self, reply: Reply, send: Send) -> None:
        raw = [(_bytes(name), _bytes(value)) for name, value in reply.headers]
        start: Message = {"type": "http.response.start", "status": reply.status, "headers": raw}
        await send(start)
        chunks = [reply.body] if isinstance(reply.body, bytes) else list(reply.body)
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if reply.pause:
                await anyio.sleep(reply.pause)
        if reply.cut:
            raise HostileError("the hostile server cuts the connection mid-body")
        stop = self.stop
        while reply.hang and not stop.is_set():
            await anyio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


# -- challenges -------------------------------------------------------------------------------------------------


def requirement(devnet: Devnet, **changes: Any) -> dict[str, Any]:
    """An honest exact (EIP-3009) requirement on the devnet, with `changes` applied (None removes a field)."""
    option: dict[str, Any] = {
        "scheme": "exact",
        "network": devnet.network,
        "amount": str(PRICE),
        "asset": devnet.usdc,
        "payTo": devnet.payee.address,
        "maxTimeoutSeconds": 60,
        "extra": {"name": "USD Coin", "version": "2"},
    }
    option.update(changes)
    return {key: value for key, value in option.items() if value is not None}


def challenge(*accepts: dict[str, Any], version: int = 2, **top: Any) -> dict[str, Any]:
    """A PaymentRequired envelope around `accepts`."""
    data: dict[str, Any] = {"x402Version": version, "error": "payment required", "accepts": list(accepts)}
    if version == 2:
        data["resource"] = {"url": "http://hostile.invalid/report", "mimeType": "application/json"}
    data.update(top)
    return data


def challenge_reply(header: str | dict[str, Any], *extra_headers: tuple[str, str]) -> Reply:
    """A v2 402: `header` (a dict is encoded; a str goes out as is) in ``PAYMENT-REQUIRED``."""
    value = b64(header) if isinstance(header, dict) else header
    headers = [("content-type", "application/json"), ("payment-required", value), *extra_headers]
    return Reply(402, headers, b"{}")


def v1_reply(body: dict[str, Any] | bytes) -> Reply:
    """A v1 402: the challenge in the JSON body."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Reply(402, [("content-type", "application/json")], raw)


def settled_header(settlement: SettleResponse, **lies: Any) -> tuple[str, str]:
    """``PAYMENT-RESPONSE`` for `settlement`, with fields replaced by `lies`."""
    return ("payment-response", b64({**settlement.to_wire(), **lies}))


def challenge_then(first: Reply, then: Script) -> Script:
    """A script: `first` to any unpaid request, `then` to a paid one."""
    return lambda call: then(call) if call.paid else first


def settle_honestly(call: Call) -> Reply:
    """Settle for real and say so in ``PAYMENT-RESPONSE`` (what an honest server does)."""
    settlement = call.settle()
    status = 200 if settlement.success else 402
    return Reply(status, [settled_header(settlement), ("content-type", "application/json")], b'{"report":"paid"}')


def honest(hostile: Hostile) -> None:
    """Script `hostile` as an honest paid server: challenge, then settle for real."""
    hostile.script = challenge_then(challenge_reply(challenge(requirement(hostile.devnet))), settle_honestly)


def sse(event: str | None, data: Any) -> bytes:
    """One SSE frame (`event` None: a plain data frame)."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return (f"event: {event}\n" if event else "").encode() + f"data: {text}\n\n".encode()


def compose(settlement: SettleResponse, payer: str, **lies: Any) -> dict[str, Any]:
    """A Compose receipt object for `settlement`, with fields replaced by `lies`."""
    receipt = {
        "finalAmountWei": str(settlement.amount),
        "network": settlement.network,
        "txHash": settlement.transaction,
        "userAddress": payer,
        "settlementStatus": "settled",
    }
    return {**receipt, **lies}


# -- clients ----------------------------------------------------------------------------------------------------


def policy(devnet: Devnet, cap: int = CAP, **fields: Any) -> SpendPolicy:
    """The policy of the suite's client: the devnet only, `cap` per request."""
    return SpendPolicy(max_per_request=cap, networks=(devnet.network,), **fields)


def wallet(devnet: Devnet) -> Wallet:
    """The suite's payer."""
    return Wallet(devnet.payers[1])


def transport(devnet: Devnet, *, cap: int = CAP, rules: SpendPolicy | None = None, **options: Any) -> PaymentTransport:
    """A sync paying transport for the suite's payer."""
    return PaymentTransport(wallet=wallet(devnet), policy=rules or policy(devnet, cap), **options)


def client(devnet: Devnet, *, cap: int = CAP, rules: SpendPolicy | None = None, **options: Any) -> httpx.Client:
    """A sync paying client (60 s timeout unless `timeout` is given)."""
    timeout = options.pop("timeout", 60)
    follow = options.pop("follow_redirects", False)
    paying = transport(devnet, cap=cap, rules=rules, **options)
    return httpx.Client(transport=paying, timeout=timeout, follow_redirects=follow)


def async_client(
    devnet: Devnet, *, cap: int = CAP, rules: SpendPolicy | None = None, **options: Any
) -> httpx.AsyncClient:
    """The async twin of `client`."""
    timeout = options.pop("timeout", 60)
    follow = options.pop("follow_redirects", False)
    paying = AsyncPaymentTransport(wallet=wallet(devnet), policy=rules or policy(devnet, cap), **options)
    return httpx.AsyncClient(transport=paying, timeout=timeout, follow_redirects=follow)


def fetch(flavour: str, devnet: Devnet, url: str, **options: Any) -> Any:
    """GET `url` (read) through a paying client of the given flavour (``sync``, ``async``: httpx; ``requests``;
    ``mcp``: the tool named by the path, through `hostile_mcp`); errors propagate."""
    if flavour == "mcp":
        from hostile_mcp import mcp_fetch

        return mcp_fetch(devnet, url, **options)
    headers = options.pop("headers", None)
    if flavour == "async":

        async def go() -> httpx.Response:
            async with async_client(devnet, **options) as http:
                return await http.get(url, headers=headers)

        return anyio.run(go)
    if flavour == "requests":
        timeout, follow = options.pop("timeout", 60), options.pop("follow_redirects", False)
        with requests.Session() as session:
            session.mount("http://", PaymentAdapter(wallet=wallet(devnet), policy=policy(devnet), **options))
            return session.get(url, headers=headers, timeout=timeout, allow_redirects=follow)
    with client(devnet, **options) as http:
        return http.get(url, headers=headers)


#: The HTTP drivers of the payment program that `fetch` can run.
HTTP_FLAVOURS = ["sync", "async", "requests"]
#: Every driver `fetch` can run: the HTTP ones, and the MCP client (tool calls to the hostile server over MCP).
FLAVOURS = [*HTTP_FLAVOURS, "mcp"]


@dataclass
class Balances:
    """USDC balances of the suite's payer and the payee, to show that nothing moved (or exactly what did)."""

    devnet: Devnet
    before: tuple[int, int] = field(init=False)

    def __post_init__(self) -> None:
        self.before = self.now()

    def now(self) -> tuple[int, int]:
        """(payer, payee) balances now."""
        usdc = self.devnet.contract("TestUSDC", self.devnet.usdc)
        payer, payee = wallet(self.devnet).address, self.devnet.payee.address
        return int(usdc.functions.balanceOf(payer).call()), int(usdc.functions.balanceOf(payee).call())

    def moved(self) -> int:
        """How much went from the payer to the payee since this object was made."""
        payer, payee = self.now()
        assert self.before[0] - payer == payee - self.before[1]
        return payee - self.before[1]


# -- a client in a child process (for faults that would take the test process down with it) -------------------

CHILD_CLIENT = """
import sys, httpx
from x402pay import PaymentTransport, SpendPolicy, Wallet
from x402pay.errors import X402PayError
url, network = sys.argv[1:3]
paying = PaymentTransport(wallet=Wallet.from_env(), policy=SpendPolicy(max_per_request=50000, networks=(network,)))
try:
    with httpx.Client(transport=paying, timeout=30) as http:
        response = http.get(url)
    print("answer", response.status_code)
except X402PayError as exc:
    print("typed", type(exc).__name__)
except Exception as exc:
    print("untyped", type(exc).__name__)
"""


def run_child(devnet: Devnet, url: str) -> subprocess.CompletedProcess[str]:
    """GET `url` with a paying client in a child Python; its one line of output says how it ended."""
    env = {**os.environ, "X402PAY_PRIVATE_KEY": "0x" + bytes(devnet.payers[1].key).hex()}
    command = [sys.executable, "-c", CHILD_CLIENT, url, devnet.network]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, env=env)


# -- a slow JSON-RPC endpoint in front of anvil -----------------------------------------------------------------


async def read_body(receive: Receive) -> bytes:
    """The whole body of an ASGI request."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


class SlowRpc:
    """An ASGI JSON-RPC proxy to the devnet's anvil that answers late, or never (`delay` None: it stalls).

    Every POST is held `delay` seconds, then forwarded to anvil and anvil's answer returned. Stalled requests are
    released (with a 503) by `release`, so that the server can stop; `posts` counts the requests it received.
    """

    def __init__(self, upstream: str, delay: float | None) -> None:
        self.upstream = upstream
        self.delay = delay
        self.posts = 0
        self._released = threading.Event()

    def release(self) -> None:
        """Let every stalled request end."""
        self._released.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.posts += 1
        status, answer = await self._answer(await read_body(receive))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": answer})

    async def _answer(self, body: bytes) -> tuple[int, bytes]:
        waited, limit = 0.0, float("inf") if self.delay is None else self.delay
        while waited < limit and not self._released.is_set():
            await anyio.sleep(0.05)
            waited += 0.05
        if self._released.is_set():
            return 503, b'{"error": "released"}'
        async with httpx.AsyncClient() as upstream:
            forwarded = await upstream.post(self.upstream, content=body, headers={"content-type": "application/json"})
        return forwarded.status_code, forwarded.content


# -- helpers of the verification-fault tests ---------------------------------------------------------------------

T = TypeVar("T")


def bounded(work: Callable[[], T], seconds: float = 60.0) -> tuple[T, float]:
    """Run `work` on a thread; its result and how long it took, or a test failure if it takes over `seconds`."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(("value", work()))
        except BaseException as exc:  # handed to the test thread
            outcome.append(("error", exc))

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds} s: it hangs")
    kind, value = outcome[0]
    if kind == "error":
        raise value
    return value, time.monotonic() - started


def paid_claim(hostile: Hostile) -> Claim:
    """Pay the hostile server honestly (nothing verified) and return the claim its receipt makes."""
    hostile.script = challenge_then(challenge_reply(challenge(requirement(hostile.devnet))), settle_honestly)
    with client(hostile.devnet) as http:
        payment = payment_of(http.get(hostile.url + "/report"))
    assert payment is not None
    assert payment.status is PaymentStatus.SETTLED
    return Claim.from_signed(payment.signed, payment.settled_amount, payment.transaction)


def assert_pending_and_booked(payment: Payment | None, ledger: Ledger) -> None:
    """Paid and settled, the verdict pending on an RPC failure: a claim, neither verified nor fraud."""
    assert payment is not None
    assert payment.status is PaymentStatus.SETTLED
    assert payment.settled_amount == PRICE
    assert payment.verification is not None
    assert payment.verification.verdict == "pending"
    assert payment.verification.check == "rpc"
    assert payment.mismatch is None
    (entry,) = ledger.entries()
    assert (entry.state, entry.held) == (EntryState.CLAIMED, PRICE)  # the server's word, the maximum held; not fraud
