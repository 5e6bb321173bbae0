"""`PaymentMiddleware`: pure ASGI, in front of any app (Starlette, FastAPI, bare ASGI).

Theory of operation, per request to a priced route:

1. Build the ``accepts`` list from the route's prices (an upto maximum is lowered to the client's
   ``x-x402-max-amount-wei`` when that is smaller); a route paid by Permit2 also offers the
   ``eip2612GasSponsoring`` extension when the facilitator supports it. No payment header (or an empty one):
   402 with ``PAYMENT-REQUIRED`` and the same JSON as the body. A payment header that does not decode (base64,
   JSON, shape) is answered as the official servers do, with a fresh challenge whose ``error`` is
   ``invalid_payload`` (a 402, not the transport spec's 400: the official clients know only the 402). Every 402
   says ``Cache-Control: no-store``.
2. Pick the advertised requirement the payment is for (scheme, network, transfer method, asset) and verify the
   payment against *that* requirement, never against the client's copy. A payment already in use or spent on this
   server is refused before the facilitator is asked. Refusals: 402 with the reason code in ``error``.
3. Run the app with a `PaidRequest` in ``scope["state"]["x402pay"]``; settle after its response
   (see `x402pay.server._responses`). Nothing reaches the app unpaid. A settlement the facilitator sent but
   could not confirm in time is answered ``settlement_pending`` with the transaction hash, never as a failure,
   and a plain answer's payment may be presented again: the facilitator follows its transaction instead of
   sending another (a streamed answer went out already: its payment is spent here).
   A stream the client left before its end is settled all the same, for what the app reported.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from eth_account.signers.base import BaseAccount
from starlette.datastructures import URL, Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from x402pay._allowance import GAS_SPONSORING
from x402pay._protocol import headers as wire
from x402pay._protocol.codec import decode_header, parse_model
from x402pay._protocol.models import PaymentPayload, PaymentRequired, PaymentRequirements, ResourceInfo, SettleResponse
from x402pay._protocol.networks import chain_id_of
from x402pay.errors import FacilitatorError, MalformedPayment
from x402pay.server._channel_desk import ChannelDesk
from x402pay.server._channel_rules import CHANNEL_SCHEME
from x402pay.server._channel_store import ChannelStore
from x402pay.server._evm import payload_method, required_method, same_address
from x402pay.server._facilitator import Facilitator, SupportedResponse
from x402pay.server._pricing import Price, Route, client_ceiling, compile_routes, match_route
from x402pay.server._receipts import PaidRequest, attach
from x402pay.server._responses import SettlingSend, send_challenge, send_json
from x402pay.server._settlements import SETTLEMENT_PENDING
from x402pay.server._sponsoring import offer

logger = logging.getLogger("x402pay.server")

_PAYMENT_HEADERS: Final = (wire.PAYMENT_SIGNATURE, wire.X_PAYMENT)
_PURGE_ABOVE: Final = 1024
_OFFERS_KEPT: Final = 256
_REPLAY_REASONS: Final = {"eip3009": "invalid_exact_evm_nonce_already_used", "permit2": "permit2_invalid_nonce"}


_Key = tuple[str, str, str]  # (transfer method, payer, nonce)
_Offer = tuple[list[PaymentRequirements], dict[str, Any] | None]  # (requirements, challenge extensions)
_Challenge = Callable[[], PaymentRequired]


class PaymentMiddleware:
    """Charges for the routes in `routes` through `facilitator`, on one `network` (CAIP-2, e.g. ``eip155:8453``).

        app = PaymentMiddleware(
            app,
            facilitator=LocalFacilitator(rpc_url, account),
            network="eip155:31337",
            pay_to=merchant,
            routes={"GET /paid": Price.exact(10_000, asset=usdc), "POST /v1/chat": Price.upto(50_000, asset=usdc)},
        )

    Other requests (and websocket / lifespan traffic) pass through untouched. An upto app reports what it used
    with ``paid_request(scope).charge(amount)`` or a ``Settlement-Overrides: {"amount": "..."}`` response header.
    Routes paid by Permit2 offer gas-free approval (``eip2612GasSponsoring``) when the facilitator lists it in
    ``/supported``; ``gas_sponsoring=False`` withdraws the offer. Routes priced with `Price.channel` are paid from
    payment channels, whose vouchers this server keeps in `channels` (a `ChannelStore`, or the path of its SQLite
    file; in memory by default, which a restart forgets: unclaimed vouchers are money). `ChannelClaims` claims them.
    A refund's signatures come from `channel_authorizer` (the receiverAuthorizer key) when this side holds it, else
    from the facilitator.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        facilitator: Facilitator,
        routes: Mapping[str, Price | Sequence[Price]],
        network: str,
        pay_to: str | None = None,
        gas_sponsoring: bool = True,
        channels: ChannelStore | str | Path | None = None,
        channel_authorizer: BaseAccount | None = None,
    ) -> None:
        self.app = app
        self._facilitator = facilitator
        self._routes = compile_routes(routes)
        self._network = network
        self._chain_id = chain_id_of(network)
        self._pay_to = pay_to
        self._claims = _Claims()
        self._gas_sponsoring = gas_sponsoring
        self._supported: SupportedResponse | None = None
        store = channels if isinstance(channels, ChannelStore) else ChannelStore(channels or ":memory:")
        self.channels = ChannelDesk(facilitator, store, self._chain_id, channel_authorizer)
        # A route's requirements and challenge extensions, by (route, client ceiling): built once, not per request
        # (they depend on the facilitator's `/supported` only, which is asked once).
        self._offers: dict[tuple[str, int | None], _Offer] = {}
        for route in self._routes:  # fail at startup, not on the first paying request
            for price in route.prices:
                if price.pay_to is None and pay_to is None:
                    raise ValueError(f"route {route.key!r}: pass pay_to to the price or to the middleware")
                self._requirement(price, ceiling=None, facilitator="0x" + "00" * 20)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Charge for a priced route; pass anything else to the app."""
        route = match_route(self._routes, scope["method"], scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
        else:
            await self._paid(route, scope, receive, send)

    async def _paid(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        try:
            offered, extensions = await self._offer(route, headers)
        except FacilitatorError as exc:
            await send_json(send, 502, {"error": "facilitator_unavailable", "errorMessage": str(exc)})
            return
        challenge = functools.partial(_challenge, route, scope, offered, extensions)  # built for a 402 only
        try:
            payload = _read_payment(headers)
        except MalformedPayment as exc:
            logger.debug("malformed payment header: %s", exc)
            await send_challenge(send, challenge(), "invalid_payload", str(exc))
            return
        if payload is None:
            await send_challenge(send, challenge(), f"{wire.PAYMENT_SIGNATURE} header is required")
            return
        if (payload.accepted or {}).get("scheme") == CHANNEL_SCHEME:
            await self.channels.serve(self.app, route, payload, challenge(), scope, receive, send)
            return
        verified = await self._verified(payload, offered, challenge, send)
        if verified is not None:
            await self._serve(*verified, scope, receive, send)

    async def _verified(
        self, payload: PaymentPayload, offered: list[PaymentRequirements], challenge: _Challenge, send: Send
    ) -> tuple[PaidRequest, _Key] | None:
        """Verify `payload` against the advertised requirement; on refusal answer the client and return None."""
        requirement = _select(payload, offered)
        if requirement is None:
            await send_challenge(send, challenge(), "invalid_payment_requirements", "no offered requirement matches")
            return None
        claim = self._claims.claim(payload)
        if claim is None:
            method = payload_method(payload.payload)
            await send_challenge(send, challenge(), _REPLAY_REASONS[method], "this payment was already presented")
            return None
        try:
            verdict = await self._facilitator.verify(payload, requirement)
        except FacilitatorError as exc:
            self._claims.release(claim)
            await send_json(send, 502, {"error": "facilitator_unavailable", "errorMessage": str(exc)})
            return None
        if not verdict.is_valid:
            self._claims.release(claim)
            logger.debug("payment refused: %s (%s)", verdict.invalid_reason, verdict.invalid_message)
            await send_challenge(
                send, challenge(), verdict.invalid_reason or "invalid_payload", verdict.invalid_message
            )
            return None
        return PaidRequest(requirement=requirement, payload=payload, payer=verdict.payer or ""), claim

    async def _serve(self, paid: PaidRequest, claim: _Key, scope: Scope, receive: Receive, send: Send) -> None:
        attach(scope, paid)
        responder = SettlingSend(send, paid, self._settle, version=paid.payload.x402_version)
        try:
            await self.app(scope, receive, responder)
        finally:
            await responder.settle_cut()
            if not responder.keeps_claim:
                self._claims.release(claim)

    async def _settle(self, paid: PaidRequest) -> SettleResponse:
        requirement = paid.requirement
        if requirement.scheme == "upto":
            requirement = requirement.model_copy(update={"amount": paid.amount_due})
        try:
            settlement = await self._facilitator.settle(paid.payload, requirement)
        except FacilitatorError as exc:  # no verdict: it may have sent the transaction, so never "not charged"
            settlement = SettleResponse(
                success=False, network=requirement.network, payer=paid.payer, error_reason=SETTLEMENT_PENDING,
                error_message=f"the facilitator gave no verdict, the payment may still settle: {exc}",
            )  # fmt: skip
        logger.debug("settled %s: success=%s tx=%s", paid.payer, settlement.success, settlement.transaction)
        if paid.payload.x402_version == 1:
            settlement = settlement.model_copy(update={"network": paid.payload.network or settlement.network})
        return settlement

    async def _offer(self, route: Route, headers: Headers) -> _Offer:
        """The route's requirements for this request, and the challenge's extensions."""
        key = (route.key, client_ceiling(headers.get(wire.MAX_AMOUNT)))
        offer = self._offers.get(key)
        if offer is None:
            facilitator = await self._upto_facilitator() if any(p.scheme == "upto" for p in route.prices) else None
            offered = [self._requirement(price, key[1], facilitator) for price in route.prices]
            offer = (offered, await self._extensions(route))
            if len(self._offers) >= _OFFERS_KEPT:  # clients choose their ceilings: keep a bounded few
                self._offers.clear()
            self._offers[key] = offer
        return offer

    async def _extensions(self, route: Route) -> dict[str, Any] | None:
        """The offer of gas-free Permit2 approval, for a route paid by Permit2 through a facilitator that can."""
        if not self._gas_sponsoring or all(price.transfer != "permit2" for price in route.prices):
            return None
        supported = await self._supported_once()
        return {GAS_SPONSORING: offer()} if GAS_SPONSORING in supported.extensions else None

    def _requirement(self, price: Price, ceiling: int | None, facilitator: str | None) -> PaymentRequirements:
        pay_to = price.pay_to or self._pay_to or ""
        return price.requirement(
            network=self._network, chain_id=self._chain_id, pay_to=pay_to, ceiling=ceiling, facilitator=facilitator
        )

    async def _upto_facilitator(self) -> str:
        """The address upto witnesses must name, from the facilitator's ``/supported``."""
        supported = await self._supported_once()
        kind = supported.kind("upto", self._network)
        address = (kind.extra or {}).get("facilitatorAddress") if kind else None
        signers = supported.signers.get("eip155:*") or supported.signers.get(self._network) or []
        if not isinstance(address, str) and not signers:
            raise FacilitatorError(f"the facilitator names no upto signer for {self._network}")
        return address if isinstance(address, str) else signers[0]

    async def _supported_once(self) -> SupportedResponse:
        """The facilitator's ``/supported``, asked once (a failure is not remembered)."""
        if self._supported is None:
            self._supported = await self._facilitator.supported()
        return self._supported


class _Claims:
    """Payments in use or spent on this server, by (method, payer, nonce), kept until their authorization expires.

    This refuses a concurrent replay (which the chain cannot, before settlement) and an upto payment settled
    for 0 (which never touches the chain) presented again.
    """

    def __init__(self) -> None:
        self._expiry: dict[_Key, float] = {}

    def claim(self, payload: PaymentPayload) -> _Key | None:
        """Claim the payment's nonce; None if it is already claimed. Unreadable payloads get a unique key."""
        key, expiry = _claim_key(payload)
        now = time.time()
        if len(self._expiry) > _PURGE_ABOVE:
            self._expiry = {known: until for known, until in self._expiry.items() if until >= now}
        if self._expiry.get(key, 0.0) >= now:
            return None
        self._expiry[key] = expiry
        return key

    def release(self, key: _Key) -> None:
        """Forget a claim whose payment neither settled nor delivered anything (the client may present it again)."""
        self._expiry.pop(key, None)


def _claim_key(payload: PaymentPayload) -> tuple[_Key, float]:
    body = payload.payload
    auth = body.get("authorization") or body.get("permit2Authorization")
    if not isinstance(auth, dict):
        return (payload_method(body), "", str(id(payload))), time.time() + 60
    expiry = auth.get("validBefore") or auth.get("deadline")
    until = float(expiry) if isinstance(expiry, str) and expiry.isdigit() and len(expiry) < 20 else time.time() + 3600
    return (payload_method(body), str(auth.get("from", "")).lower(), str(auth.get("nonce", "")).lower()), until


def _challenge(
    route: Route, scope: Scope, offered: list[PaymentRequirements], extensions: dict[str, Any] | None
) -> PaymentRequired:
    """The 402's challenge: what the route costs, for this request's URL."""
    first = route.prices[0]
    resource = ResourceInfo(url=str(URL(scope=scope)), description=first.description or None, mime_type=first.mime_type)
    accepts = [requirement.to_wire() for requirement in offered]
    return PaymentRequired(x402_version=2, resource=resource, accepts=accepts, extensions=extensions)


def _read_payment(headers: Headers) -> PaymentPayload | None:
    for name in _PAYMENT_HEADERS:
        value = headers.get(name)
        if value is not None and value.strip():
            data = decode_header(value, what=name, error=MalformedPayment)
            return parse_model(data, PaymentPayload, what=name, error=MalformedPayment)
    return None


def _select(payload: PaymentPayload, accepts: list[PaymentRequirements]) -> PaymentRequirements | None:
    """The advertised requirement this payment is for: same scheme, chain and transfer method; asset if named."""
    accepted: dict[str, Any] = payload.accepted or {}
    scheme = accepted.get("scheme") if payload.x402_version == 2 else payload.scheme
    network = accepted.get("network") if payload.x402_version == 2 else payload.network
    try:
        chain_id = chain_id_of(str(network))
    except ValueError:
        return None
    method = payload_method(payload.payload)
    candidates = [
        entry
        for entry in accepts
        if entry.scheme == scheme
        and (entry.network == network or entry.chain_id == chain_id)
        and required_method(entry) == method
    ]
    asset = accepted.get("asset")
    named = [entry for entry in candidates if isinstance(asset, str) and same_address(entry.asset, asset)]
    return next(iter(named or candidates), None)
