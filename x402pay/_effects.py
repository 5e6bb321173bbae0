"""The effects a payment program asks its driver for, and the loops that carry them out.

A program (`x402pay._program`, `x402pay._books`) is a generator: it yields an effect, the driver performs it and
sends back the result, or throws the exception it raised into the program at the same point, so that the program
can compensate (release a reservation, close a response) in its own code. The program never touches a socket, a
database or an RPC itself; the effects name what it needs, in terms of no HTTP library at all.

Effects and the values around them are made for every request and never changed once made; they are plain slotted
dataclasses, not frozen ones, because a frozen dataclass costs four times as much to build.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from x402pay._payment import Payment
    from x402pay._streams import ReceiptTap

T = TypeVar("T")
Program = Generator["Effect", Any, T]


@dataclass(slots=True)
class Answer:
    """A response as the program sees it: status and headers; `raw` is the driver's own response object."""

    status: int
    headers: Mapping[str, str]
    raw: Any = field(repr=False)


@dataclass(slots=True)
class Send:
    """Send the request. `headers` are set on the request itself (redirects carry them), and the headers named in
    `strip` removed from it (a redirect from a paid origin carried them here); `payment`, the one header that
    carries a signed payment, goes on this send only. Result: an `Answer`."""

    headers: Mapping[str, str]
    payment: tuple[str, str] | None = None
    strip: tuple[str, ...] = ()


@dataclass(slots=True)
class ReadBody:
    """Read `answer`'s body, at most `limit` + 1 bytes (more means too large: the driver then closes it). Result:
    the bytes read."""

    answer: Answer
    limit: int


@dataclass(slots=True)
class Close:
    """Close `answer` (after reading a little of a challenge's body, so that the connection can be reused)."""

    answer: Answer


@dataclass(slots=True)
class Book:
    """Call ``ledger.<operation>(*args, **kwargs)`` (awaited on an `AsyncLedger`). Result: what it returns."""

    operation: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ReadChain:
    """Read the wallet's ``"allowance"`` (for Permit2) or EIP-2612 ``"nonce"`` of `token` on chain. Result: int."""

    what: str
    token: str


@dataclass(slots=True)
class Sign:
    """Run `work` (signing: pure CPU for a local key, a remote call for a KMS or hardware signer). Result: its value."""

    work: Callable[[], Any]


@dataclass(slots=True)
class Verify:
    """Check `payment`'s receipt on chain. Result: an `x402pay.verify.Verification`."""

    payment: Payment


@dataclass(slots=True)
class Spawn:
    """Run `program` in the background (background verification); no result."""

    program: Program[None]


@dataclass(slots=True)
class Ahead:
    """Start `program` now, beside the rest of this one (work done while a request is in flight), and go on at once;
    no result. The program handles its own failures."""

    program: Program[None]


@dataclass(slots=True)
class Pause:
    """Wait `seconds` (for a twin request to finish signing); no result."""

    seconds: float


@dataclass(slots=True)
class ChannelOp:
    """Call ``<operation>(*args, **kwargs)`` on the transport's payment channels (`x402pay.ledger.ChannelBook`).
    Result: what it returns."""

    operation: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ChannelChain:
    """Ask the settlement contract about a channel (``"read"``: an `x402pay._channel_chain.OnChain`) or send the
    payer's ``"initiate_withdraw"`` (of `amount`) / ``"finalize_withdraw"`` transaction (result: its hash)."""

    operation: str
    args: tuple[Any, ...] = ()


Effect = Send | ReadBody | Close | Book | ReadChain | Sign | Verify | Spawn | Ahead | Pause | ChannelOp | ChannelChain


@dataclass(slots=True)
class Delivery:
    """What a program hands to the caller: `answer`, rebuilt with `body` if the program read it, carrying `payment`
    (if one was made), its body passed through `tap` (if a receipt may be inside)."""

    answer: Answer
    payment: Payment | None = None
    body: bytes | None = None
    tap: ReceiptTap | None = None


def drive(program: Program[T], perform: Callable[[Effect], Any]) -> T:
    """Run `program` to its end, performing each effect with `perform`."""
    reply: Any = None
    failure: BaseException | None = None
    while True:
        try:
            effect = program.send(reply) if failure is None else program.throw(failure)
        except StopIteration as done:
            result: T = done.value
            return result
        try:
            reply, failure = perform(effect), None
        except BaseException as exc:  # handed to the program, which compensates and re-raises
            reply, failure = None, exc


async def adrive(program: Program[T], perform: Callable[[Effect], Awaitable[Any]]) -> T:
    """Run `program` to its end, awaiting `perform` for each effect."""
    reply: Any = None
    failure: BaseException | None = None
    while True:
        try:
            effect = program.send(reply) if failure is None else program.throw(failure)
        except StopIteration as done:
            result: T = done.value
            return result
        try:
            reply, failure = await perform(effect), None
        except BaseException as exc:  # handed to the program, which compensates and re-raises
            reply, failure = None, exc
