"""PaymentTransport and AsyncPaymentTransport: httpx (and httpx2) transports that answer x402 challenges.

Both drive the same I/O-free steps in `x402pay.flow`; this module only moves bytes. The request body is
buffered before the first send so the paid retry replays it byte for byte; responses other than the challenge
are returned as the inner transport produced them, streaming intact.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from x402pay import flow
from x402pay.allowance import (
    GAS_SPONSORING,
    apermit2_allowance,
    atoken_nonce,
    gas_sponsoring_extension,
    permit2_allowance,
    token_nonce,
)
from x402pay.errors import ChallengeError
from x402pay.payment import PAYMENT_EXTENSION, Payment
from x402pay.policy import SpendPolicy
from x402pay.protocol.codec import MAX_BODY_BYTES
from x402pay.protocol.headers import MAX_AMOUNT
from x402pay.protocol.models import PaymentRequirements
from x402pay.streams import OnReceipt, ReceiptTap, tap_response
from x402pay.wallet import Wallet

_DROPPED_ON_REBUILD = frozenset({"content-encoding", "content-length", "transfer-encoding"})


@dataclass(frozen=True)
class TransportOptions:
    """How a payment transport behaves beyond its policy.

    - `announce_ceiling`: send ``x-x402-max-amount-wei`` (the policy's cap) so upto servers ask for no more.
    - `keep_receipt_frames`: leave vendor receipt/error frames in streams (by default they are removed, so standard
      SSE parsers such as the OpenAI SDK's see only their own frames).
    - `on_receipt`: called with the `Payment` when its receipt arrives (at the end of a stream for streams).
    - `rpc_url`: a JSON-RPC endpoint of the payment's chain, to check the Permit2 allowance before signing
      (without it, a missing allowance shows as the server's refusal instead of `Permit2AllowanceRequired`).
    - `clock`: the time source for authorization windows.
    """

    announce_ceiling: bool = True
    keep_receipt_frames: bool = False
    on_receipt: OnReceipt | None = None
    rpc_url: str | None = None
    clock: Callable[[], float] = time.time


def origin_of(url: Any) -> str:
    """``scheme://host[:port]`` of an httpx or httpx2 URL: the unit a payment header is bound to."""
    return f"{url.scheme}://{url.netloc.decode('ascii')}"


class _PaymentCore:
    """What both transports share: configuration, the inner transport per HTTP library, and the payment steps."""

    def __init__(self, wallet: Wallet, policy: SpendPolicy, inner: Any, options: TransportOptions) -> None:
        self.wallet = wallet
        self.policy = policy
        self.options = options
        self._clock = options.clock
        self._inner = inner
        self._default_inners: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} wallet={self.wallet.address} max_per_request={self.policy.max_per_request}>"

    def _inner_for(self, request: Any, factory: str) -> Any:
        if self._inner is not None:
            return self._inner
        library = type(request).__module__.split(".", 1)[0]  # "httpx" or "httpx2": same API, separate types
        with self._lock:
            if library not in self._default_inners:
                self._default_inners[library] = getattr(importlib.import_module(library), factory)()
            return self._default_inners[library]

    def _announce(self, request: Any) -> int | None:
        """Put the ceiling in ``x-x402-max-amount-wei`` (kept identical on the paid retry); None if not announced."""
        given = request.headers.get(MAX_AMOUNT)
        if not self.options.announce_ceiling and given is None:
            return None
        ceiling = flow.announced_ceiling(self.policy, given)
        request.headers[MAX_AMOUNT] = str(ceiling)
        return ceiling

    def _choose(self, challenge: flow.Challenge, request: Any, ceiling: int | None) -> PaymentRequirements:
        return flow.choose(challenge, policy=self.policy, origin=origin_of(request.url), ceiling=ceiling)

    def _sign(
        self, challenge: flow.Challenge, request: Any, requirement: PaymentRequirements, extensions: dict[str, Any]
    ) -> tuple[Payment, Any]:
        """Sign `requirement` and build the one paid retry: the same request, plus the payment header."""
        payment, (name, value) = flow.sign(
            challenge, requirement, wallet=self.wallet, policy=self.policy, origin=origin_of(request.url),
            now=int(self._clock()), extensions=extensions,
        )  # fmt: skip
        headers = request.headers.copy()
        headers[name] = value
        retry = type(request)(
            request.method, request.url, headers=headers, stream=request.stream, extensions=request.extensions
        )
        return payment, retry

    def _sponsoring(self, challenge: flow.Challenge, requirement: PaymentRequirements, nonce: int) -> dict[str, Any]:
        deadline = int(self._clock()) + min(requirement.max_timeout_seconds, self.policy.max_lifetime)
        extension = gas_sponsoring_extension(
            self.wallet, requirement, challenge.required.extensions or {}, nonce=nonce, deadline=deadline
        )
        return {GAS_SPONSORING: extension}

    def _deliver(self, payment: Payment, response: Any, *, asynchronous: bool) -> None:
        """Attach `payment` to the paid `response`, and tap its body for a receipt where one may be inside."""
        response.extensions[PAYMENT_EXTENSION] = payment
        content_type = response.headers.get("content-type", "").lower()
        sse = "text/event-stream" in content_type
        compressed = response.headers.get("content-encoding", "identity").lower() not in ("identity", "")
        wants_body = "json" in content_type and payment.receipt is None
        if compressed or not (sse or wants_body):
            if payment.receipt is not None and self.options.on_receipt is not None:
                self.options.on_receipt(payment)
            return
        tap = ReceiptTap(
            payment, sse=sse, keep_frames=self.options.keep_receipt_frames, on_receipt=self.options.on_receipt
        )
        tap_response(response, tap, asynchronous=asynchronous)

    def _inners(self) -> list[Any]:
        return [self._inner] if self._inner is not None else list(self._default_inners.values())


def _web3(rpc_url: str | None, *, asynchronous: bool) -> Any:
    if rpc_url is None:
        return None
    from web3 import AsyncHTTPProvider, AsyncWeb3, HTTPProvider, Web3  # only when asked: web3 is slow to import

    return AsyncWeb3(AsyncHTTPProvider(rpc_url)) if asynchronous else Web3(HTTPProvider(rpc_url))


def _rebuilt(response: Any, body: bytes) -> Any:
    """A copy of a response whose body was consumed while looking for a challenge, with that (decoded) body."""
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _DROPPED_ON_REBUILD]
    return type(response)(response.status_code, headers=headers, content=body, extensions=response.extensions)


def _too_large() -> ChallengeError:
    return ChallengeError(f"402 body is over the {MAX_BODY_BYTES} byte limit")


class PaymentTransport(httpx.BaseTransport, _PaymentCore):
    """A sync transport that pays x402 challenges within `policy`, signing with `wallet`.

    `inner` is the transport that does the HTTP (default: ``httpx.HTTPTransport()``, or ``httpx2.HTTPTransport()``
    when used by an httpx2 client). Each request is paid at most once; `x402pay.payment_of(response)` tells how.
    """

    def __init__(
        self,
        *,
        wallet: Wallet,
        policy: SpendPolicy,
        inner: Any = None,
        announce_ceiling: bool = True,
        keep_receipt_frames: bool = False,
        on_receipt: OnReceipt | None = None,
        rpc_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        options = TransportOptions(announce_ceiling, keep_receipt_frames, on_receipt, rpc_url, clock)
        _PaymentCore.__init__(self, wallet, policy, inner, options)
        self._web3 = _web3(rpc_url, asynchronous=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`; on an x402 challenge, pay once and return the paid response."""
        inner = self._inner_for(request, "HTTPTransport")
        request.read()
        ceiling = self._announce(request)
        response: httpx.Response = inner.handle_request(request)
        if response.status_code != 402:
            return response
        body = self._read_challenge_body(response)
        challenge = flow.decode_challenge(response.headers, body)
        if challenge is None:
            return response if body is None else _rebuilt(response, body)
        response.close()
        requirement = self._choose(challenge, request, ceiling)
        payment, retry = self._sign(challenge, request, requirement, self._approval(challenge, requirement))
        paid: httpx.Response = inner.handle_request(retry)
        paid_body = self._read_challenge_body(paid) if paid.status_code == 402 else None
        if paid.status_code == 402:
            paid.close()
        flow.conclude(payment, paid.status_code, paid.headers, paid_body)
        self._deliver(payment, paid, asynchronous=False)
        return paid

    def _approval(self, challenge: flow.Challenge, requirement: PaymentRequirements) -> dict[str, Any]:
        """Check the Permit2 allowance on chain (when an RPC is configured): extensions to add, or a typed refusal."""
        if self._web3 is None or not flow.uses_permit2(requirement):
            return {}
        allowance = permit2_allowance(self._web3, requirement.asset, self.wallet.address)
        if not flow.approval_needed(challenge, requirement, allowance):
            return {}
        nonce = token_nonce(self._web3, requirement.asset, self.wallet.address)
        return self._sponsoring(challenge, requirement, nonce)

    def close(self) -> None:
        """Close the inner transport(s)."""
        for inner in self._inners():
            inner.close()

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
                raise _too_large()
            chunks.append(chunk)
        return b"".join(chunks)


class AsyncPaymentTransport(httpx.AsyncBaseTransport, _PaymentCore):
    """The async twin of `PaymentTransport`, for ``httpx.AsyncClient`` and ``httpx2.AsyncClient``."""

    def __init__(
        self,
        *,
        wallet: Wallet,
        policy: SpendPolicy,
        inner: Any = None,
        announce_ceiling: bool = True,
        keep_receipt_frames: bool = False,
        on_receipt: OnReceipt | None = None,
        rpc_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        options = TransportOptions(announce_ceiling, keep_receipt_frames, on_receipt, rpc_url, clock)
        _PaymentCore.__init__(self, wallet, policy, inner, options)
        self._web3 = _web3(rpc_url, asynchronous=True)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`; on an x402 challenge, pay once and return the paid response."""
        inner = self._inner_for(request, "AsyncHTTPTransport")
        await request.aread()
        ceiling = self._announce(request)
        response: httpx.Response = await inner.handle_async_request(request)
        if response.status_code != 402:
            return response
        body = await self._read_challenge_body(response)
        challenge = flow.decode_challenge(response.headers, body)
        if challenge is None:
            return response if body is None else _rebuilt(response, body)
        await response.aclose()
        requirement = self._choose(challenge, request, ceiling)
        payment, retry = self._sign(challenge, request, requirement, await self._approval(challenge, requirement))
        paid: httpx.Response = await inner.handle_async_request(retry)
        paid_body = await self._read_challenge_body(paid) if paid.status_code == 402 else None
        if paid.status_code == 402:
            await paid.aclose()
        flow.conclude(payment, paid.status_code, paid.headers, paid_body)
        self._deliver(payment, paid, asynchronous=True)
        return paid

    async def _approval(self, challenge: flow.Challenge, requirement: PaymentRequirements) -> dict[str, Any]:
        """Check the Permit2 allowance on chain (when an RPC is configured): extensions to add, or a typed refusal."""
        if self._web3 is None or not flow.uses_permit2(requirement):
            return {}
        allowance = await apermit2_allowance(self._web3, requirement.asset, self.wallet.address)
        if not flow.approval_needed(challenge, requirement, allowance):
            return {}
        nonce = await atoken_nonce(self._web3, requirement.asset, self.wallet.address)
        return self._sponsoring(challenge, requirement, nonce)

    async def aclose(self) -> None:
        """Close the inner transport(s)."""
        for inner in self._inners():
            await inner.aclose()

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
                raise _too_large()
            chunks.append(chunk)
        return b"".join(chunks)
