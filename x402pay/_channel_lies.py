"""A ``batch-settlement`` server caught lying, in a report or in a stream's receipt: the whole voucher it holds stays
booked as charged, it is marked untrusted (no further payment goes to it), and, when the transport reads the chain,
the escrow it has not claimed starts to come back (``initiateWithdraw``, the payer's own transaction).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from x402pay._books import Books
from x402pay._channel_chain import OnChain
from x402pay._channel_lease import Channel, leased
from x402pay._effects import ChannelChain, ChannelOp, Program
from x402pay._payment import Payment, PaymentStatus
from x402pay.errors import ReceiptMismatch
from x402pay.ledger._channels import ChannelRecord

logger = logging.getLogger(__name__)


def caught(
    books: Books, origin: str, channel: Channel, record: ChannelRecord, payment: Payment, problem: str, *,
    withdraw: bool,
) -> Program[None]:  # fmt: skip
    """`payment`'s answer from `origin` lied (`problem`): book the whole voucher the server holds as charged, stop
    paying it, start taking the escrow back (`withdraw`: the transport reads the chain), and raise
    `ReceiptMismatch`. Runs under the channel's lease (`record` is the channel's)."""
    payment.mismatch = problem
    payment.status = PaymentStatus.SETTLED
    changes: dict[str, Any] = {"charged": max(record.signed_max, payment.signed.amount + record.charged)}
    if withdraw:
        changes |= yield from _withdraw(channel)
    yield ChannelOp("update", (channel.key, channel.holder), changes)
    yield from books.caught(payment, problem)
    raise ReceiptMismatch(f"the channel server {origin} lied: {problem}", payment)


def lied_in_stream(books: Books, channel: Channel | None, payment: Payment, problem: str) -> Program[None]:
    """A stream's receipt contradicts its `payment`: as for a lying report (`caught`), the whole voucher stays
    booked as charged (as it was since the headers), the server is marked untrusted and, given the `channel` (the
    transport reads the chain), the escrow it has not claimed starts to come back. The stream raises
    `ReceiptMismatch` (its tap does)."""
    if channel is not None:
        requirement = payment.signed.requirement
        yield from leased(channel, payment.origin, requirement, partial(_withdrawn, channel))
    yield from books.caught(payment, problem)


def _withdrawn(channel: Channel, record: ChannelRecord) -> Program[None]:
    changes = yield from _withdraw(channel)
    if changes:
        yield ChannelOp("update", (channel.key, channel.holder), changes)


def _withdraw(channel: Channel) -> Program[dict[str, Any]]:
    """Start the withdrawal of whatever the server has not claimed (the payer's own transaction)."""
    chain: OnChain = yield ChannelChain("read", (channel.id, channel.config.withdraw_delay))
    if chain.available == 0 or chain.withdrawing:
        return {"state": "withdrawing" if chain.withdrawing else "closed"}
    try:
        yield ChannelChain("initiate_withdraw", (channel.config, chain.available))
    except Exception:  # the lie is raised either way; the CLI can start the withdrawal again
        logger.info("channel %s: the withdrawal could not be started", channel.key[:18], exc_info=True)
        return {}
    after = yield ChannelChain("read", (channel.id, channel.config.withdraw_delay))
    return {"state": "withdrawing", "withdraw_after": after.withdraw_after}
