"""PaymentTransport and AsyncPaymentTransport: httpx (and httpx2) transports that answer x402 challenges.

Both drive the same I/O-free steps (`x402pay.flow`, `x402pay.transport_core`); this module only moves bytes and
calls the bookkeeping. The request body is buffered before the first send so the paid retry replays it byte for
byte; responses other than the challenge are returned as the inner transport produced them, streaming intact.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio.to_thread
import httpx

from x402pay import flow
from x402pay.allowance import apermit2_allowance, atoken_nonce, permit2_allowance, token_nonce
from x402pay.bookkeeping import Replay, has_news
from x402pay.errors import PaymentRejected
from x402pay.payment import Payment
from x402pay.protocol.codec import MAX_BODY_BYTES
from x402pay.protocol.models import PaymentRequirements
from x402pay.streams import atap_response, tap_response
from x402pay.transport_core import (
    Attempt,
    PaymentCore,
    TransportOptions,
    chain_unavailable,
    origin_of,
    rebuilt,
    too_large,
)

__all__ = ["AsyncPaymentTransport", "PaymentTransport", "TransportOptions"]


def _web3(rpc_url: str | None, *, asynchronous: bool) -> Any:
    if rpc_url is None:
        return None
    from web3 import AsyncHTTPProvider, AsyncWeb3, HTTPProvider, Web3  # only when asked: web3 is slow to import

    return AsyncWeb3(AsyncHTTPProvider(rpc_url)) if asynchronous else Web3(HTTPProvider(rpc_url))


_DRAIN_LIMIT = 64 * 1024


def _drain(response: httpx.Response) -> None:
    """Read a small challenge body to its end before closing, so the connection can be reused for the retry."""
    drained = 0
    for chunk in () if response.is_stream_consumed else response.iter_raw():
        drained += len(chunk)
        if drained > _DRAIN_LIMIT:
            break
    response.close()


async def _adrain(response: httpx.Response) -> None:
    """The async `_drain`."""
    drained = 0
    if not response.is_stream_consumed:
        async for chunk in response.aiter_raw():
            drained += len(chunk)
            if drained > _DRAIN_LIMIT:
                break
    await response.aclose()


class PaymentTransport(httpx.BaseTransport, PaymentCore):
    """A sync transport that pays x402 challenges within `policy`, signing with `wallet`.

    `inner` does the HTTP (default: ``httpx.HTTPTransport()``, or ``httpx2.HTTPTransport()`` when an httpx2 client
    uses it). Other keyword arguments are the `TransportOptions` (ledger, verification, pre-payment, callbacks,
    ...). Each request is paid at most once (with ``prepay=True``, a pre-payment the server refused with new terms
    is followed by one reactive payment; see `x402pay.prepay`); `x402pay.payment_of(response)` tells how.
    """

    def __init__(self, *, wallet: Any, policy: Any, inner: Any = None, **options: Any) -> None:
        PaymentCore.__init__(self, wallet=wallet, policy=policy, inner=inner, **options)
        self._web3 = _web3(self.options.rpc_url, asynchronous=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`; on an x402 challenge, pay once and return the paid response."""
        inner = self._inner_for(request, "HTTPTransport")
        request.read()
        origin, books = origin_of(request.url), self.books
        key = books.key(request)
        replay = books.replay(key, origin)
        if replay is not None:
            return self._send_paid(inner, request, *replay)
        attempt = Attempt(key, origin, self._announce(request, books.room(origin)))
        prepaid = self._prepay(inner, request, attempt)
        if prepaid is not None:
            return prepaid
        response: httpx.Response = inner.handle_request(request)
        if response.status_code != 402:
            return response
        body = self._read_challenge_body(response)
        challenge = flow.decode_challenge(response.headers, body)
        if challenge is None:
            return response if body is None else rebuilt(response, body)
        if body is None:
            _drain(response)
        return self._pay(inner, request, attempt, challenge, self._choose(challenge, origin, attempt.ceiling))

    def _prepay(self, inner: Any, request: httpx.Request, attempt: Attempt) -> httpx.Response | None:
        """With pre-payment on: re-send this request's pre-payment, or pre-pay from its route's challenge."""
        if self.prepayments is None:
            return None
        replay = self.books.replay(attempt.prepay_key, attempt.origin)
        if replay is not None:
            return self._send_paid(inner, request, *replay, fallback=attempt)
        prepayable = self._prepayable(request, attempt)
        return None if prepayable is None else self._pay(inner, request, attempt, *prepayable, prepaid=True)

    def _pay(
        self, inner: Any, request: httpx.Request, attempt: Attempt, challenge: flow.Challenge,
        requirement: PaymentRequirements, prepaid: bool = False,
    ) -> httpx.Response:  # fmt: skip
        key, sibling, fallback = self._keys(attempt, prepaid)
        entry, replay = self.books.reserve(key, attempt.origin, requirement, sibling)
        if replay is not None:  # paid already (another attempt, or an earlier hop): re-send, never re-sign
            return self._send_paid(inner, request, *replay, fallback=fallback)
        payment, header = self._sign(challenge, requirement, attempt.origin, self._approval(challenge, requirement))
        payment.prepaid = prepaid
        self.books.authorize(entry, key, payment, header)
        paid = self._send_paid(inner, request, payment, header, fallback=fallback)
        self._remember(request, challenge, payment)
        return paid

    def _send_paid(
        self, inner: Any, request: Any, payment: Payment, header: tuple[str, str], fallback: Attempt | None = None
    ) -> httpx.Response:
        try:
            paid: httpx.Response = inner.handle_request(self._retry(request, header))
        except BaseException as exc:
            self.books.lost(payment, f"no answer: {type(exc).__name__}")
            raise
        paid_body = self._read_challenge_body(paid) if paid.status_code == 402 else None
        if paid.status_code == 402:
            paid.close()
        try:
            flow.conclude(payment, paid.status_code, paid.headers, paid_body)
        except PaymentRejected as rejected:
            if fallback is None:
                raise
            self.books.record(payment)
            challenge = self._after_refusal(rejected, payment, paid.headers, paid_body)
            requirement = self._choose(challenge, fallback.origin, fallback.ceiling)
            return self._pay(inner, request, fallback, challenge, requirement)
        finally:
            self.books.record(payment)
        tap = self._tap(payment, paid)
        if tap is not None:
            tap_response(paid, tap, self.books.record)
        return paid

    def _approval(self, challenge: flow.Challenge, requirement: PaymentRequirements) -> dict[str, Any]:
        """Check the Permit2 allowance on chain (when an RPC is configured): extensions to add, or a typed refusal."""
        if self._web3 is None or not flow.uses_permit2(requirement):
            return {}
        allowance = self._read_chain(permit2_allowance, requirement.asset)
        if not flow.approval_needed(challenge, requirement, allowance):
            return {}
        return self._sponsoring(challenge, requirement, self._read_chain(token_nonce, requirement.asset))

    def _read_chain(self, read: Any, token: str) -> int:
        """`read` (an allowance step) for this wallet and `token`; RPC failures as `ChainUnavailable`."""
        try:
            return int(read(self._web3, token, self.wallet.address))
        except Exception as exc:  # the RPC library's own errors: requests, web3, an answer that is not a number
            raise chain_unavailable(exc) from exc

    def close(self) -> None:
        """Close the inner transport(s) and finish background verifications."""
        for inner in self._inners():
            inner.close()
        if self.books.verifier is not None:
            self.books.verifier.close()

    @staticmethod
    def _read_challenge_body(response: httpx.Response) -> bytes | None:
        if not flow.challenge_needs_body(response.headers):
            return None
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                response.close()
                raise too_large()
            chunks.append(chunk)
        return b"".join(chunks)


class AsyncPaymentTransport(httpx.AsyncBaseTransport, PaymentCore):
    """The async twin of `PaymentTransport`, for ``httpx.AsyncClient`` and ``httpx2.AsyncClient``.

    A `ledger` here is the same sync `x402pay.ledger.Ledger`; its calls run in a worker thread.
    """

    def __init__(self, *, wallet: Any, policy: Any, inner: Any = None, **options: Any) -> None:
        PaymentCore.__init__(self, wallet=wallet, policy=policy, inner=inner, **options)
        self._web3 = _web3(self.options.rpc_url, asynchronous=True)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`; on an x402 challenge, pay once and return the paid response."""
        inner = self._inner_for(request, "AsyncHTTPTransport")
        await request.aread()
        origin, books = origin_of(request.url), self.books
        key = books.key(request)
        replay = await self._books(books.replay, key, origin)
        if replay is not None:
            return await self._send_paid(inner, request, *replay)
        attempt = Attempt(key, origin, self._announce(request, await self._books(books.room, origin)))
        prepaid = await self._prepay(inner, request, attempt)
        if prepaid is not None:
            return prepaid
        response: httpx.Response = await inner.handle_async_request(request)
        if response.status_code != 402:
            return response
        body = await self._read_challenge_body(response)
        challenge = flow.decode_challenge(response.headers, body)
        if challenge is None:
            return response if body is None else rebuilt(response, body)
        if body is None:
            await _adrain(response)
        return await self._pay(inner, request, attempt, challenge, self._choose(challenge, origin, attempt.ceiling))

    async def _prepay(self, inner: Any, request: httpx.Request, attempt: Attempt) -> httpx.Response | None:
        """With pre-payment on: re-send this request's pre-payment, or pre-pay from its route's challenge."""
        if self.prepayments is None:
            return None
        replay: Replay | None = await self._books(self.books.replay, attempt.prepay_key, attempt.origin)
        if replay is not None:
            return await self._send_paid(inner, request, *replay, fallback=attempt)
        prepayable = self._prepayable(request, attempt)
        return None if prepayable is None else await self._pay(inner, request, attempt, *prepayable, prepaid=True)

    async def _pay(
        self, inner: Any, request: httpx.Request, attempt: Attempt, challenge: flow.Challenge,
        requirement: PaymentRequirements, prepaid: bool = False,
    ) -> httpx.Response:  # fmt: skip
        key, sibling, fallback = self._keys(attempt, prepaid)
        reserve = self.books.reserve
        reserved: tuple[Any, Replay | None] = await self._books(reserve, key, attempt.origin, requirement, sibling)
        entry, replay = reserved
        if replay is not None:  # paid already (another attempt, or an earlier hop): re-send, never re-sign
            return await self._send_paid(inner, request, *replay, fallback=fallback)
        approval = await self._approval(challenge, requirement)
        payment, header = self._sign(challenge, requirement, attempt.origin, approval)
        payment.prepaid = prepaid
        await self._books(self.books.authorize, entry, key, payment, header)
        paid = await self._send_paid(inner, request, payment, header, fallback=fallback)
        self._remember(request, challenge, payment)
        return paid

    async def _send_paid(
        self, inner: Any, request: Any, payment: Payment, header: tuple[str, str], fallback: Attempt | None = None
    ) -> httpx.Response:
        try:
            paid: httpx.Response = await inner.handle_async_request(self._retry(request, header))
        except BaseException as exc:
            await self._books(self.books.lost, payment, f"no answer: {type(exc).__name__}")
            raise
        paid_body = await self._read_challenge_body(paid) if paid.status_code == 402 else None
        if paid.status_code == 402:
            await paid.aclose()
        try:
            flow.conclude(payment, paid.status_code, paid.headers, paid_body)
        except PaymentRejected as rejected:
            if fallback is None:
                raise
            await self._record(payment)
            challenge = self._after_refusal(rejected, payment, paid.headers, paid_body)
            requirement = self._choose(challenge, fallback.origin, fallback.ceiling)
            return await self._pay(inner, request, fallback, challenge, requirement)
        finally:
            await self._record(payment)
        tap = self._tap(payment, paid)
        if tap is not None:
            atap_response(paid, tap, self._record)
        return paid

    async def _record(self, payment: Payment) -> None:
        if has_news(payment):  # most chunks bring none: no thread hop for them
            await self._books(self.books.record, payment)

    async def _books(self, step: Any, *args: Any) -> Any:
        """Run a bookkeeping step (ledger, chain) in a worker thread, when there is anything to do."""
        if self.books.ledger is None and self.books.verifier is None:
            return step(*args)
        return await anyio.to_thread.run_sync(partial(step, *args))

    async def _approval(self, challenge: flow.Challenge, requirement: PaymentRequirements) -> dict[str, Any]:
        """Check the Permit2 allowance on chain (when an RPC is configured): extensions to add, or a typed refusal."""
        if self._web3 is None or not flow.uses_permit2(requirement):
            return {}
        allowance = await self._read_chain(apermit2_allowance, requirement.asset)
        if not flow.approval_needed(challenge, requirement, allowance):
            return {}
        return self._sponsoring(challenge, requirement, await self._read_chain(atoken_nonce, requirement.asset))

    async def _read_chain(self, read: Any, token: str) -> int:
        """`read` (an async allowance step) for this wallet and `token`; RPC failures as `ChainUnavailable`."""
        try:
            return int(await read(self._web3, token, self.wallet.address))
        except Exception as exc:  # the RPC library's own errors: aiohttp, web3, an answer that is not a number
            raise chain_unavailable(exc) from exc

    async def aclose(self) -> None:
        """Close the inner transport(s) and finish background verifications."""
        for inner in self._inners():
            await inner.aclose()
        if self._web3 is not None:
            await self._web3.provider.disconnect()
        if self.books.verifier is not None:
            await anyio.to_thread.run_sync(self.books.verifier.close)

    @staticmethod
    async def _read_challenge_body(response: httpx.Response) -> bytes | None:
        if not flow.challenge_needs_body(response.headers):
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                await response.aclose()
                raise too_large()
            chunks.append(chunk)
        return b"".join(chunks)
