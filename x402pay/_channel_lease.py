"""A channel as one request holds it: its identity, and its lease in the channel book, without I/O.

Every change to a channel's record happens under its lease (`x402pay.ledger._channels`), so that requests of any
thread, process or machine sharing the ledger take turns and no two vouchers are signed from the same cumulative
charge. A request holds the lease for as long as its client lets it wait for its answers (`lease_seconds`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from x402pay._channel_terms import ChannelTerms
from x402pay._effects import ChannelOp, Pause, Program
from x402pay._protocol.models import PaymentRequirements
from x402pay._schemes.channel import ChannelConfig
from x402pay.errors import PaymentInFlight
from x402pay.ledger._channels import ChannelRecord

T = TypeVar("T")

#: How long one request may hold a channel's lease (a holder that died frees it after this), unless its client's
#: timeouts let it wait longer for its answers (`lease_seconds`).
LEASE_SECONDS: Final = 120
#: The longest lease: a request whose client set no timeout. A holder that died blocks its channel this long.
LONGEST_LEASE: Final = 3_600
#: What a lease adds to the request's own waits: the books, the chain reads, the signature.
LEASE_MARGIN: Final = 60
#: How long a request waits for a channel's lease before it gives up (`PaymentInFlight`).
LEASE_PATIENCE: Final = 60.0
#: The longest pause between two tries for a busy lease: requests on one channel follow each other closely.
LEASE_POLL: Final = 0.05


def lease_seconds(timeout: float | None) -> int:
    """How long a request holds its channel's lease: long enough for two sends (a corrective 402 asks for a second)
    within its client's timeouts, and `LEASE_MARGIN`; at least `LEASE_SECONDS`, at most `LONGEST_LEASE`."""
    if timeout is None:
        return LEASE_SECONDS
    return int(min(max(LEASE_SECONDS, 2 * timeout + LEASE_MARGIN), LONGEST_LEASE))


@dataclass(frozen=True)
class Channel:
    """The channel one request pays through: its terms, config, id, and the lease `holder`'s name."""

    terms: ChannelTerms
    config: ChannelConfig
    id: bytes
    chain_id: int
    holder: str

    @property
    def key(self) -> str:
        """The channel id as the channel book keys it."""
        return "0x" + self.id.hex()


def leased(
    channel: Channel, origin: str, requirement: PaymentRequirements, body: Callable[[ChannelRecord], Program[T]],
    *, timeout: float | None = None, patience: float = LEASE_PATIENCE,
) -> Program[T]:  # fmt: skip
    """Run `body` with the channel's record (created if unknown), holding its lease for `lease_seconds(timeout)`;
    the lease is given back however it ends. `PaymentInFlight` when another holds it for more than `patience`
    seconds (0: one try)."""
    record = yield from _lease(channel, origin, requirement, lease_seconds(timeout), patience)
    try:
        result = yield from body(record)
    except GeneratorExit:  # nothing can be yielded: the lease expires on its own
        raise
    except BaseException:
        yield ChannelOp("release", (channel.key, channel.holder))
        raise
    yield ChannelOp("release", (channel.key, channel.holder))
    return result


def _lease(
    channel: Channel, origin: str, requirement: PaymentRequirements, seconds: int, patience: float
) -> Program[ChannelRecord]:
    new = ChannelRecord(channel.key, requirement.network, origin, channel.config.token,
                        channel.config.receiver, channel.config.as_wire())  # fmt: skip
    waited, step = 0.0, 0.005
    while True:
        record = yield ChannelOp("lease", (new, channel.holder, seconds))
        if record is not None:
            return record  # type: ignore[no-any-return]
        if waited >= patience:
            raise PaymentInFlight(None, f"channel {channel.key[:18]}... (its lease)")
        step = min(step * 2, LEASE_POLL)
        yield Pause(step)
        waited += step
