"""A payer's channels outside any request: take the escrow back without the server, and keep the book true.

`withdraw` starts the contract's timed exit (``initiateWithdraw`` of everything the server has not claimed) and
`finalize` ends it once the channel's delay has passed (``finalizeWithdraw``): both are the payer's own
transactions, under the channel's lease so that no request signs a voucher meanwhile. After either, the channel
book holds what the chain shows (`sync`): a channel being withdrawn is paid through no more.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from x402pay._channel_chain import OnChain, finalize_withdraw, initiate_withdraw, read_channel
from x402pay._schemes.channel import ChannelConfig
from x402pay._wallet import Wallet
from x402pay.errors import PaymentInFlight, SigningError
from x402pay.ledger._channels import ChannelBook, ChannelRecord
from x402pay.ledger._holder import new_holder

_LEASE_SECONDS = 300


def config_of(record: ChannelRecord) -> ChannelConfig:
    """The channel's config, as the book keeps it (the payload's ``channelConfig``)."""
    wire = record.config
    return ChannelConfig(
        payer=wire["payer"], payer_authorizer=wire["payerAuthorizer"], receiver=wire["receiver"],
        receiver_authorizer=wire["receiverAuthorizer"], token=wire["token"], withdraw_delay=int(wire["withdrawDelay"]),
        salt=bytes.fromhex(str(wire["salt"]).removeprefix("0x")),
    )  # fmt: skip


def _leased(book: ChannelBook, channel_id: str, holder: str) -> ChannelRecord:
    record = book.get(channel_id)
    if record is None:
        raise LookupError(f"no channel {channel_id[:66]} in the book")
    leased = book.lease(record, holder, _LEASE_SECONDS)
    if leased is None:
        raise PaymentInFlight(None, f"channel {channel_id[:18]}... (a request holds it; try again)")
    return leased


def sync(book: ChannelBook, holder: str, record: ChannelRecord, chain: OnChain) -> ChannelRecord:
    """Write what the chain shows of the channel into the book: balance, claims, and what left by withdrawal."""
    left = (
        max(record.chain_balance - chain.balance, 0) if record.state == "withdrawing" and not chain.withdrawing else 0
    )
    state = "withdrawing" if chain.withdrawing else ("closed" if left or chain.balance == 0 else record.state)
    return book.update(
        record.channel_id, holder, chain_balance=chain.balance, chain_claimed=chain.total_claimed,
        charged=max(record.charged, chain.total_claimed), withdrawn=record.withdrawn + left, state=state,
        withdraw_after=chain.withdraw_after or None,
    )  # fmt: skip


def withdraw(book: ChannelBook, web3: Any, wallet: Wallet, channel_id: str) -> tuple[str | None, ChannelRecord]:
    """Start withdrawing everything unclaimed from `channel_id`: (the transaction hash or None, the record)."""
    with _held(book, web3, channel_id) as (holder, record, config, read):
        chain = read()
        tx_hash = None
        if chain.available and not chain.withdrawing:
            tx_hash = initiate_withdraw(web3, wallet, config, chain.available)
            chain = read()
        return tx_hash, sync(book, holder, record, chain)


def finalize(book: ChannelBook, web3: Any, wallet: Wallet, channel_id: str) -> tuple[str | None, ChannelRecord]:
    """Finish the withdrawal of `channel_id` (its delay must have passed): (the transaction hash, the record). A
    withdrawal the chain shows finalized but the book does not (a crash between the two) is booked, hash None."""
    with _held(book, web3, channel_id) as (holder, record, config, read):
        before = read()
        if not before.withdrawing and record.state == "withdrawing":
            after = sync(book, holder, record, before)
            book.return_escrow(after, after.withdrawn - record.withdrawn)
            return None, after
        if not before.withdrawing:
            raise SigningError(f"channel {channel_id[:18]}... has no withdrawal to finalize (start one first)")
        record = sync(book, holder, record, before)
        tx_hash = finalize_withdraw(web3, wallet, config)
        after = sync(book, holder, record, read())
        book.return_escrow(after, after.withdrawn - record.withdrawn)  # the budgets stop holding what came back
        return tx_hash, after


@contextlib.contextmanager
def _held(
    book: ChannelBook, web3: Any, channel_id: str
) -> Iterator[tuple[str, ChannelRecord, ChannelConfig, Callable[[], OnChain]]]:
    """The channel under a lease of this call's own for the block: its holder name, record, config, and a reader of
    its state on chain; the lease is given back however the block ends."""
    holder = new_holder("x402pay-admin")
    record = _leased(book, channel_id, holder)
    try:
        config = config_of(record)
        identity = bytes.fromhex(channel_id.removeprefix("0x"))
        yield holder, record, config, lambda: read_channel(web3, identity, config.withdraw_delay)
    finally:
        book.release(channel_id, holder)
