"""How `PaymentMiddleware` serves a request paid from a payment channel (x402 ``batch-settlement``).

Per request: parse the client's deposit, voucher or refund; check its channel is the one the price opens; reserve
the channel (a concurrent request on it gets ``…_channel_busy``); check the cumulative rule (the voucher's ceiling
is exactly what was charged so far plus this request's maximum; a refund's, exactly what was charged), answering a
mismatch with a corrective 402 that carries ``channelState`` and ``voucherState``; verify the voucher locally
(its signer, the mirrored escrow) while the mirror of the chain is fresh, else through the facilitator; run the app,
which may charge less than the maximum; record the charge and the voucher, and answer with ``PAYMENT-RESPONSE``
(``extra.chargedAmount`` and ``channelState``). A deposit is sent by the facilitator before the app runs (a
streamed answer's headers leave before its end: its payer must find the deposit on chain by then). A
refund skips the app: it is claimed-and-refunded in one transaction, answered ``{"message": "Refund
acknowledged"}``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from eth_account.signers.base import BaseAccount
from starlette.types import Receive, Scope, Send

from x402pay._protocol.channel_extra import ChannelState, ResponseExtra
from x402pay._protocol.channel_wire import ChannelPayload, DepositPayload, RefundPayload, parse_payload
from x402pay._protocol.codec import encode_header
from x402pay._protocol.headers import PAYMENT_RESPONSE
from x402pay._protocol.models import PaymentPayload, PaymentRequired, PaymentRequirements, SettleResponse
from x402pay.errors import ChallengeError, FacilitatorError, MalformedPayment
from x402pay.server import _channel_rules as rules
from x402pay.server._channel_actions import Action, RefundAction, VoucherClaim, action_payload, signed_by
from x402pay.server._channel_store import ChannelRecord, ChannelStore
from x402pay.server._evm import Refusal, same_address
from x402pay.server._facilitator import Facilitator
from x402pay.server._pricing import Price, Route
from x402pay.server._receipts import PaidRequest, attach
from x402pay.server._responses import SettlingSend, send_challenge, send_json

logger = logging.getLogger("x402pay.server")

#: Bounds of a channel reservation, in seconds (the SDKs': the requirement's timeout, clamped).
_MIN_HOLD, _MAX_HOLD = 5.0, 600.0

App = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class _Request:
    """One channel-paid request: its payload as sent and parsed, the requirement and price it answers."""

    payload: PaymentPayload
    paid: ChannelPayload
    requirement: PaymentRequirements
    price: Price
    challenge: PaymentRequired

    @property
    def channel_id(self) -> bytes:
        return self.paid.voucher.channel_id


class ChannelDesk:
    """The channel side of a `PaymentMiddleware`: its store, its facilitator, its chain."""

    def __init__(
        self, facilitator: Facilitator, store: ChannelStore, chain_id: int, authorizer: BaseAccount | None = None
    ) -> None:
        self.store = store
        self._authorizer = authorizer
        self._facilitator = facilitator
        self._chain_id = chain_id

    async def serve(
        self, app: App, route: Route, payload: PaymentPayload, challenge: PaymentRequired, scope: Scope,
        receive: Receive, send: Send,
    ) -> None:  # fmt: skip
        """Serve one request whose payment is a channel's deposit, voucher or refund."""
        request = await self._read(route, payload, challenge, send)
        if request is None:
            return
        hold = min(_MAX_HOLD, max(_MIN_HOLD, float(request.requirement.max_timeout_seconds)))
        token = self.store.reserve(request.channel_id, hold)
        if token is None:
            await send_challenge(send, challenge, rules.CHANNEL_BUSY, "another request is using this channel")
            return
        try:
            record = await self._verified(request, send)
            if record is not None:
                await self._answer(app, request, record, scope, receive, send)
        finally:
            self.store.release(request.channel_id, token)

    async def _read(
        self, route: Route, payload: PaymentPayload, challenge: PaymentRequired, send: Send
    ) -> _Request | None:
        found = _pick(route, payload, challenge)
        if found is None:
            await send_challenge(send, challenge, "invalid_payment_requirements", "no offered channel price matches")
            return None
        requirement, price = found
        try:
            paid = parse_payload(payload.payload)
            rules.check_config(paid.config, paid.voucher.channel_id, requirement, self._chain_id)
        except MalformedPayment as exc:
            await send_challenge(send, challenge, "invalid_payload", str(exc))
            return None
        except Refusal as refusal:
            await send_challenge(send, challenge, refusal.reason, refusal.message)
            return None
        return _Request(payload, paid, requirement, price, challenge)

    # -- verification ----------------------------------------------------------------------------------------

    async def _verified(self, request: _Request, send: Send) -> ChannelRecord | None:
        """The channel's record, verified for this request (mirror refreshed if asked); None once refused."""
        paid, record = request.paid, self.store.get(request.channel_id)
        charged = record.charged if record else _inferred(paid, request.requirement.amount)
        expected = charged + (0 if isinstance(paid, RefundPayload) else request.requirement.amount)
        if paid.voucher.max_claimable_amount != expected:
            message = f"the voucher's ceiling must be {expected}, not {paid.voucher.max_claimable_amount}"
            await self._corrective(request, record, rules.CUMULATIVE_MISMATCH, message, send)
            return None
        if _below_minimum(paid, request.price):
            message = f"a deposit is at least {request.price.suggested_deposit}"
            await send_challenge(send, request.challenge, rules.DEPOSIT_BELOW_MIN, message)
            return None
        base = record or _new_record(paid, charged)
        try:
            if self._fresh(base) and not isinstance(paid, (DepositPayload, RefundPayload)):
                return self._verified_locally(paid, base)
            return await self._verified_by_facilitator(request, base)
        except Refusal as refusal:
            if refusal.reason == rules.CUMULATIVE_BELOW_CLAIMED:
                await self._corrective(request, record, refusal.reason, refusal.message, send)
            else:
                await send_challenge(send, request.challenge, refusal.reason, refusal.message)
        except FacilitatorError as exc:
            await send_json(send, 502, {"error": "facilitator_unavailable", "errorMessage": str(exc)})
        return None

    def _fresh(self, record: ChannelRecord) -> bool:
        ttl = rules.local_state_ttl(record.config.withdraw_delay)
        return int(record.config.payer_authorizer, 16) != 0 and time.time() - record.synced_at <= ttl

    def _verified_locally(self, paid: ChannelPayload, record: ChannelRecord) -> ChannelRecord:
        rules.check_voucher_signature(paid.config, paid.voucher, self._chain_id)
        rules.check_covered(paid.voucher, record.balance, record.total_claimed)
        return record

    async def _verified_by_facilitator(self, request: _Request, record: ChannelRecord) -> ChannelRecord:
        verdict = await self._facilitator.verify(request.payload, request.requirement)
        if not verdict.is_valid:
            raise Refusal(verdict.invalid_reason or rules.PAYLOAD, verdict.invalid_message or "refused")
        state = _state_of(verdict.extra)
        return record if state is None else record.mirrored(state, time.time())

    async def _corrective(
        self, request: _Request, record: ChannelRecord | None, reason: str, message: str, send: Send
    ) -> None:
        """A 402 whose requirement carries the channel as this server sees it, so that the client can resync."""
        challenge = request.challenge
        if record is not None:
            extra = (request.requirement.extra or {}) | {
                "channelState": record.state().as_wire(),
                "voucherState": record.voucher_state().as_wire(),
            }
            enriched = request.requirement.model_copy(update={"extra": extra}).to_wire()
            accepts = [enriched if _same_offer(entry, request.requirement) else entry for entry in challenge.accepts]
            challenge = challenge.model_copy(update={"accepts": accepts})
        await send_challenge(send, challenge, reason, message)

    # -- serving ---------------------------------------------------------------------------------------------

    async def _answer(
        self, app: App, request: _Request, record: ChannelRecord, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if isinstance(request.paid, RefundPayload):
            await self._refund(request, request.paid, record, send)
            return
        deposited = None
        if isinstance(request.paid, DepositPayload):  # on chain before the answer starts: a stream's payer sees it
            deposited = await self._send_deposit(request)
            if not deposited.success:
                reason = deposited.error_reason or rules.PAYLOAD
                await send_challenge(send, request.challenge, reason, deposited.error_message or "the deposit failed")
                return
        paid = PaidRequest(requirement=request.requirement, payload=request.payload, payer=request.paid.config.payer)
        attach(scope, paid)

        async def settle(done: PaidRequest) -> SettleResponse:
            return await self._settle(request, record, done.amount_due, deposited)

        responder = SettlingSend(send, paid, settle, version=2)
        try:
            await app(scope, receive, responder)
        finally:
            await responder.settle_cut()

    async def _settle(
        self, request: _Request, record: ChannelRecord, due: int, deposited: SettleResponse | None
    ) -> SettleResponse:
        """Record the charge (after the request's deposit, `deposited`, landed): the voucher's answer."""
        network, payer = request.requirement.network, request.paid.config.payer
        if due > request.requirement.amount:
            message = f"the app charged {due}, more than the voucher's increment {request.requirement.amount}"
            return SettleResponse(
                success=False, network=network, payer=payer, error_reason=rules.CHARGE_EXCEEDS_SIGNED,
                error_message=message,
            )  # fmt: skip
        transaction, amount = "", None
        if deposited is not None and isinstance(request.paid, DepositPayload):
            state = _state_of(_extra_of(deposited))
            record = record if state is None else record.mirrored(state, time.time())
            transaction, amount = deposited.transaction, request.paid.deposit.amount
        voucher = request.paid.voucher
        record = replace(
            record, charged=record.charged + due, signed_max=voucher.max_claimable_amount,
            signature=voucher.signature, last_used=time.time(),
        )  # fmt: skip
        self.store.save(record)
        extra = ResponseExtra(charged_amount=due, channel_state=record.state()).as_wire()
        return SettleResponse(
            success=True, transaction=transaction, network=network, payer=payer, amount=amount, extra=extra
        )  # fmt: skip

    async def _send_deposit(self, request: _Request) -> SettleResponse:
        try:
            return await self._facilitator.settle(request.payload, request.requirement)
        except FacilitatorError as exc:
            return SettleResponse(
                success=False, network=request.requirement.network, payer=request.paid.config.payer,
                error_reason="settlement_pending", error_message=f"the facilitator gave no verdict: {exc}",
            )  # fmt: skip

    async def _refund(self, request: _Request, paid: RefundPayload, record: ChannelRecord, send: Send) -> None:
        """Claim what was charged and return the rest (or the amount asked) in one transaction."""
        claimed = max(record.charged, record.total_claimed)
        available = record.balance - claimed
        amount = available if paid.amount is None else paid.amount
        if available <= 0 or not 0 < amount <= available:
            reason = rules.REFUND_NO_BALANCE if available <= 0 else rules.REFUND_AMOUNT
            await send_challenge(send, request.challenge, reason, f"{available} of the escrow is refundable")
            return
        claims: tuple[VoucherClaim, ...] = ()
        if record.charged > record.total_claimed:
            claims = (VoucherClaim(paid.config, paid.voucher.max_claimable_amount, paid.voucher.signature, claimed),)
        unsigned = RefundAction(paid.config, paid.voucher, amount, record.refund_nonce, claims)
        action = signed_by(unsigned, self._authorizer, self._chain_id)
        try:
            settled = await self._facilitator.settle(*synthetic(action, request.requirement))
        except FacilitatorError as exc:
            await send_json(send, 502, {"error": "facilitator_unavailable", "errorMessage": str(exc)})
            return
        if not settled.success:
            await send_challenge(send, request.challenge, settled.error_reason or rules.REFUND_PAYLOAD)
            return
        await self._refunded(request, record, settled, send)

    async def _refunded(self, request: _Request, record: ChannelRecord, settled: SettleResponse, send: Send) -> None:
        state = _state_of(_extra_of(settled))
        if state is not None:
            record = record.mirrored(state, time.time())
        if state is not None and state.balance <= state.total_claimed:
            self.store.delete(request.channel_id)
        else:
            self.store.save(record)
        extra = {"channelState": record.state(charged=False).as_wire()} if state is not None else None
        answer = settled.model_copy(update={"extra": extra, "payer": request.paid.config.payer})
        body = {"message": "Refund acknowledged", "channelId": "0x" + request.channel_id.hex()}
        await send_json(send, 200, body, {PAYMENT_RESPONSE: encode_header(answer), "cache-control": "private"})


def synthetic(action: Action, requirement: PaymentRequirements) -> tuple[PaymentPayload, PaymentRequirements]:
    """A claim, sweep or refund `action` with the synthetic requirements ``/settle`` gets for it (amount 0)."""
    accepted = requirement.model_copy(update={"amount": 0, "max_timeout_seconds": 0, "extra": {}})
    return action_payload(action, accepted.to_wire()), accepted


def _pick(
    route: Route, payload: PaymentPayload, challenge: PaymentRequired
) -> tuple[PaymentRequirements, Price] | None:
    """The advertised channel requirement (and its price) this payment is for: the asset it names, else the first."""
    accepted = payload.accepted or {}
    offers = [
        (PaymentRequirements.model_validate(entry), price)
        for entry, price in zip(challenge.accepts, route.prices, strict=True)
        if price.scheme == rules.CHANNEL_SCHEME
    ]
    asset = accepted.get("asset")
    named = [offer for offer in offers if isinstance(asset, str) and same_address(offer[0].asset, asset)]
    return next(iter(named or offers), None)


def _same_offer(entry: dict[str, Any], requirement: PaymentRequirements) -> bool:
    return entry.get("scheme") == requirement.scheme and same_address(str(entry.get("asset")), requirement.asset)


def _below_minimum(paid: ChannelPayload, price: Price) -> bool:
    """Whether `paid` deposits less than a price that enforces its suggested deposit asks."""
    return (
        isinstance(paid, DepositPayload) and price.enforce_min_deposit and paid.deposit.amount < price.suggested_deposit
    )


def _inferred(paid: ChannelPayload, amount: int) -> int:
    """What was charged before, for a channel this server has no record of: the voucher's ceiling less this request."""
    ceiling = paid.voucher.max_claimable_amount
    return ceiling if isinstance(paid, RefundPayload) else max(0, ceiling - amount)


def _new_record(paid: ChannelPayload, charged: int) -> ChannelRecord:
    return ChannelRecord(paid.voucher.channel_id, paid.config, charged, 0, b"", 0, 0)


def _extra_of(settled: SettleResponse) -> dict[str, Any] | None:
    """A settlement answer's ``extra`` (a field the wire model keeps among its unknown ones)."""
    extra = (settled.model_extra or {}).get("extra")
    return extra if isinstance(extra, dict) else None


def _state_of(extra: dict[str, Any] | None) -> ChannelState | None:
    """The ``channelState`` a facilitator reported, when it did (and it reads)."""
    if not extra or "channelState" not in extra:
        return None
    try:
        return ChannelState.from_wire(extra["channelState"])
    except ChallengeError:
        logger.info("the facilitator's channelState does not read; the mirror is left as it was")
        return None
