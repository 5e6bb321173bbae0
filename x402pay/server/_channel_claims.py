"""`ChannelClaims`: turn the vouchers a paid side holds into money, in time.

A voucher reserves nothing on chain: a payer may ``initiateWithdraw`` and, ``withdrawDelay`` later, take back
whatever is unclaimed then. So the receiver must claim well inside the delay. This manager claims the store's
unclaimed vouchers in batches (one ``claimWithSignature`` per batch), sweeps what was claimed to the receiver
(``settle``), refunds channels left idle, and claims at once any channel whose on-chain withdrawal has begun.

    claims = ChannelClaims(middleware.channels.store, facilitator, network="eip155:8453", web3=rpc_url)
    await claims.start()     # timers: claim every delay/3 at most, watch withdrawals, sweep
    ...
    await claims.stop()

Every step is also a plain coroutine (`claim`, `sweep`, `refund_idle`, `watch`), for tests and for callers that
keep their own schedule. The receiverAuthorizer's signatures come from `authorizer` when given, else from the
facilitator (a `LocalFacilitator` built with ``channel_authorizer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Final

import anyio.to_thread
from eth_account.signers.base import BaseAccount
from web3 import Web3

from x402pay._protocol.addresses import BATCH_SETTLEMENT_ADDRESS
from x402pay._protocol.channel_wire import Voucher
from x402pay._protocol.models import PaymentRequirements, SettleResponse
from x402pay._protocol.networks import chain_id_of
from x402pay._rpc import web3_for
from x402pay.server._channel_abi import BATCH_SETTLEMENT_ABI
from x402pay.server._channel_actions import Action, ClaimAction, RefundAction, SweepAction, VoucherClaim, signed_by
from x402pay.server._channel_desk import synthetic
from x402pay.server._channel_rules import CHANNEL_SCHEME
from x402pay.server._channel_store import ChannelRecord, ChannelStore
from x402pay.server._facilitator import Facilitator

logger = logging.getLogger("x402pay.server")

#: Rows per claim transaction (the official SDKs' default).
MAX_CLAIMS_PER_BATCH: Final = 100
#: The longest a timer waits between claims, whatever the delays, and between looks at pending withdrawals.
_CLAIM_EVERY_AT_MOST: Final = 60.0
_WATCH_EVERY: Final = 15.0
#: How long an idle refund holds a channel's reservation at most (the paid side's longest request hold).
_REFUND_HOLD: Final = 600.0


class ChannelClaims:
    """Claims, sweeps and refunds the channels in `store` through `facilitator`, on `network`.

    `web3` (a ``Web3`` or an RPC URL) lets `watch` and `refund_idle` read the chain; `authorizer` is the
    receiverAuthorizer key, when this side holds it rather than the facilitator.
    """

    def __init__(
        self,
        store: ChannelStore,
        facilitator: Facilitator,
        *,
        network: str,
        web3: Web3 | str | None = None,
        authorizer: BaseAccount | None = None,
        batch_size: int = MAX_CLAIMS_PER_BATCH,
    ) -> None:
        if not 0 < batch_size <= MAX_CLAIMS_PER_BATCH:
            raise ValueError(f"batch_size is 1 to {MAX_CLAIMS_PER_BATCH}, not {batch_size}")
        self.store = store
        self._facilitator = facilitator
        self._network = network
        self._chain_id = chain_id_of(network)
        self._web3 = web3_for(web3) if isinstance(web3, str) else web3
        self._authorizer = authorizer
        self._batch_size = batch_size
        self._tasks: list[asyncio.Task[None]] = []

    # -- one step each -----------------------------------------------------------------------------------------

    async def claim(self, records: list[ChannelRecord] | None = None) -> list[SettleResponse]:
        """Claim every unclaimed voucher (or those of `records`), a batch per receiverAuthorizer and token."""
        due = [record for record in (records if records is not None else self.store.all()) if record.unclaimed > 0]
        groups: dict[tuple[str, str, str], list[ChannelRecord]] = {}
        for record in due:
            config = record.config
            groups.setdefault((config.receiver_authorizer, config.receiver, config.token), []).append(record)
        results = []
        for (_, receiver, token), members in groups.items():
            for start in range(0, len(members), self._batch_size):
                results.append(await self._claim_batch(members[start : start + self._batch_size], receiver, token))
        return results

    async def sweep(self) -> list[SettleResponse]:
        """Move what was claimed to each receiver (one ``settle`` per receiver and token the store has seen)."""
        results = []
        for receiver, token in sorted(self.store.receivers()):
            settled = await self._settle(SweepAction(receiver, token), receiver, token)
            if settled.success or settled.error_reason != "invalid_batch_settlement_evm_nothing_to_settle":
                results.append(settled)
        return results

    async def refund_idle(self, idle_for: float) -> list[SettleResponse]:
        """Refund the unclaimed escrow of every channel unused for `idle_for` seconds (claiming what it owes)."""
        cutoff = time.time() - idle_for
        results = []
        for record in self.store.all():
            if record.last_used <= cutoff:
                refunded = await self._refund(record)
                if refunded is not None:
                    results.append(refunded)
        return results

    async def watch(self) -> list[SettleResponse]:
        """Claim at once every channel with unclaimed vouchers whose payer has begun a withdrawal on chain."""
        if self._web3 is None:
            raise ValueError("watch needs web3 (the chain to read pending withdrawals from)")
        due = [record for record in self.store.all() if record.unclaimed > 0]
        pending = [record for record in due if await self._withdrawing(record.channel_id)]
        if pending:
            logger.info("claiming %d channel(s) with a pending withdrawal", len(pending))
        return await self.claim(pending) if pending else []

    # -- timers ------------------------------------------------------------------------------------------------

    async def start(
        self,
        *,
        claim_every: float | None = None,
        sweep_every: float | None = None,
        refund_idle_after: float | None = None,
    ) -> None:
        """Run the steps on timers until `stop`: claims every `claim_every` s (default: a third of the shortest
        withdraw delay in the store, at most 60 s), withdrawals watched every 15 s when `web3` is known, sweeps
        every `sweep_every` s, refunds of channels idle for `refund_idle_after` s (both off unless given)."""
        if self._tasks:
            raise RuntimeError("ChannelClaims is already started")
        claim_period = claim_every if claim_every is not None else self._claim_period()
        self._tasks.append(asyncio.create_task(_every(claim_period, self.claim)))
        if self._web3 is not None:
            self._tasks.append(asyncio.create_task(_every(min(_WATCH_EVERY, claim_period), self.watch)))
        if sweep_every is not None:
            self._tasks.append(asyncio.create_task(_every(sweep_every, self.sweep)))
        if refund_idle_after is not None:
            idle = refund_idle_after
            self._tasks.append(asyncio.create_task(_every(idle / 2, lambda: self.refund_idle(idle))))

    async def stop(self) -> None:
        """Stop the timers (a step under way is cancelled; a transaction it sent is in the facilitator's books)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _claim_period(self) -> float:
        delays = [record.config.withdraw_delay for record in self.store.all()]
        return min([_CLAIM_EVERY_AT_MOST, *(delay / 3 for delay in delays)])

    # -- the transactions ----------------------------------------------------------------------------------------

    async def _claim_batch(self, records: list[ChannelRecord], receiver: str, token: str) -> SettleResponse:
        rows = tuple(VoucherClaim(r.config, r.signed_max, r.signature, r.charged) for r in records)
        settled = await self._settle(ClaimAction(rows), receiver, token)
        if settled.success:
            for record in records:  # the chain now counts the charge as claimed (a stale row is a no-op)
                self.store.mark_claimed(record.channel_id, record.charged)
        return settled

    async def _refund(self, record: ChannelRecord) -> SettleResponse | None:
        """Refund `record`'s channel under its reservation: a request using it is left alone (its charge would
        be stranded), and the record is read again once reserved."""
        token = self.store.reserve(record.channel_id, _REFUND_HOLD)
        if token is None:
            return None
        try:
            current = self.store.get(record.channel_id)
            return None if current is None else await self._refund_reserved(current)
        finally:
            self.store.release(record.channel_id, token)

    async def _refund_reserved(self, record: ChannelRecord) -> SettleResponse | None:
        if self._web3 is not None:
            record = await self._refreshed(record)
        claimed = max(record.charged, record.total_claimed)
        amount = record.balance - claimed
        if amount <= 0:
            return None
        claims: tuple[VoucherClaim, ...] = ()
        if record.charged > record.total_claimed:
            claims = (VoucherClaim(record.config, record.signed_max, record.signature, record.charged),)
        voucher = Voucher(record.channel_id, record.signed_max, record.signature)
        action = RefundAction(record.config, voucher, amount, record.refund_nonce, claims)
        settled = await self._settle(action, record.config.receiver, record.config.token)
        if settled.success:
            self.store.delete(record.channel_id)
        return settled

    async def _settle(self, action: Action, receiver: str, token: str) -> SettleResponse:
        requirement = PaymentRequirements(
            scheme=CHANNEL_SCHEME, network=self._network, amount=0, asset=token, pay_to=receiver,
            max_timeout_seconds=0, extra={},
        )  # fmt: skip
        signed = signed_by(action, self._authorizer, self._chain_id)
        settled = await self._facilitator.settle(*synthetic(signed, requirement))
        logger.debug("channel %s: success=%s %s", action.as_wire()["type"], settled.success, settled.error_reason)
        return settled

    # -- reading the chain -------------------------------------------------------------------------------------

    def _contract(self) -> Any:
        assert self._web3 is not None  # noqa: S101 -- callers check
        return self._web3.eth.contract(address=BATCH_SETTLEMENT_ADDRESS, abi=BATCH_SETTLEMENT_ABI)

    async def _withdrawing(self, channel_id: bytes) -> bool:
        def read() -> bool:
            _, initiated = self._contract().functions.pendingWithdrawals(channel_id).call()
            return int(initiated) > 0

        return await anyio.to_thread.run_sync(read)

    async def _refreshed(self, record: ChannelRecord) -> ChannelRecord:
        def read() -> ChannelRecord:
            functions = self._contract().functions
            balance, claimed = functions.channels(record.channel_id).call()
            nonce = functions.refundNonce(record.channel_id).call()
            return replace(record, balance=int(balance), total_claimed=int(claimed), refund_nonce=int(nonce))

        return await anyio.to_thread.run_sync(read)


async def _every(period: float, step: Callable[[], Awaitable[object]]) -> None:
    """Run `step` every `period` seconds until cancelled; a failed step is logged and tried again next time."""
    while True:
        await asyncio.sleep(period)
        try:
            await step()
        except Exception:
            logger.info("a channel claims step failed; retrying in %s s", period, exc_info=True)
