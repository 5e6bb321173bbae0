"""PaymentTransport and AsyncPaymentTransport: httpx (and httpx2) transports that answer x402 challenges.

Both are drivers of the one payment program (`x402pay._program`): they carry out its HTTP effects with the inner
transport and hand the rest to the engine. The request body is buffered before the first send so the paid retry
replays it byte for byte; responses other than the challenge are returned as the inner transport produced them,
streaming intact. With httpx2 installed, each is an httpx2 transport as well as an httpx one (httpx2's clients
type-check their transport), answering each library's requests with that library's responses.
"""

from __future__ import annotations

import threading
from functools import partial
from typing import TYPE_CHECKING, Any, overload

import httpx

from x402pay import _httpx as io
from x402pay._effects import Ahead, Close, Delivery, Effect, ReadBody, Send, adrive, drive
from x402pay._engine import Engine, TransportOptions
from x402pay._streams import atap_response, tap_response

if TYPE_CHECKING:
    import httpx2
    from httpx2 import AsyncBaseTransport as _AsyncBaseTransport2
    from httpx2 import BaseTransport as _BaseTransport2
else:
    try:
        from httpx2 import AsyncBaseTransport as _AsyncBaseTransport2
        from httpx2 import BaseTransport as _BaseTransport2
    except ImportError:  # httpx2 is optional: without it, the transports are httpx's alone
        _BaseTransport2 = _AsyncBaseTransport2 = object

__all__ = ["AsyncPaymentTransport", "PaymentTransport", "TransportOptions"]


class _Driver:
    """What both transports hold: the engine, and the inner transport (given, or one per HTTP library)."""

    def __init__(self, engine: Engine, inner: Any, factory: str) -> None:
        self._engine = engine
        self._inner = inner
        self._factory = factory
        self._defaults: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def options(self) -> TransportOptions:
        """The options this transport was built with."""
        return self._engine.options

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._engine!r}>"

    def _inner_for(self, request: Any) -> Any:
        if self._inner is not None:
            return self._inner
        with self._lock:
            library = io.library_of(request)
            if library not in self._defaults:
                self._defaults[library] = io.default_inner(request, self._factory)
            return self._defaults[library]

    def _inners(self) -> list[Any]:
        return [self._inner] if self._inner is not None else list(self._defaults.values())


class PaymentTransport(_Driver, httpx.BaseTransport, _BaseTransport2):
    """A sync transport that pays x402 challenges within `policy`, signing with `wallet` (a `Wallet`, or any
    eth-account signer).

    `inner` does the HTTP (default: ``httpx.HTTPTransport()``, or ``httpx2.HTTPTransport()`` when an httpx2 client
    uses it). Other keyword arguments are the `TransportOptions` (ledger, verification, pre-payment, callbacks,
    ...), checked here. Each request is paid at most once (with ``prepay=True``, a pre-payment the server refused
    with new terms is followed by one reactive payment; see `x402pay._prepay`); `x402pay.payment_of(response)`
    tells how.
    """

    def __init__(self, *, wallet: Any, policy: Any, inner: Any = None, **options: Any) -> None:
        super().__init__(Engine(wallet=wallet, policy=policy, options=options, asynchronous=False), inner,
                         "HTTPTransport")  # fmt: skip

    @overload
    def handle_request(self, request: httpx.Request) -> httpx.Response: ...
    @overload
    def handle_request(self, request: httpx2.Request) -> httpx2.Response: ...
    def handle_request(self, request: Any) -> Any:
        """Send `request` (httpx's or httpx2's); on an x402 challenge, pay once and return the paid response."""
        request.read()
        perform = partial(self._perform, self._inner_for(request), io.Outgoing(request))
        delivery: Delivery = drive(self._engine.program.run(io.call_of(request)), perform)
        response = io.delivered(delivery)
        if delivery.tap is not None:
            record = self._engine.program.record
            tap_response(response, delivery.tap, lambda payment: drive(record(payment), self._engine.perform))
        return response

    def _perform(self, inner: Any, outgoing: io.Outgoing, effect: Effect) -> Any:
        if isinstance(effect, Send):
            return io.answer_of(inner.handle_request(outgoing.prepared(effect)))
        if isinstance(effect, Ahead):  # started once the paid request is written (see `io.Outgoing`)
            outgoing.ahead = partial(self._engine.perform, effect)
            return None
        if isinstance(effect, Close):
            return io.drain_and_close(effect.answer.raw)
        if isinstance(effect, ReadBody):
            return io.read_body(effect.answer.raw, effect.limit)
        return self._engine.perform(effect)

    def close(self) -> None:
        """Close the inner transport(s) and finish background verifications."""
        for inner in self._inners():
            inner.close()
        self._engine.close()


class AsyncPaymentTransport(_Driver, httpx.AsyncBaseTransport, _AsyncBaseTransport2):
    """The async twin of `PaymentTransport`, for ``httpx.AsyncClient`` and ``httpx2.AsyncClient``.

    Its `ledger` may be an `x402pay.ledger.AsyncLedger` (awaited) or a `Ledger` (called in a worker thread).
    Background verification runs as asyncio tasks, awaited by `aclose`.
    """

    def __init__(self, *, wallet: Any, policy: Any, inner: Any = None, **options: Any) -> None:
        super().__init__(Engine(wallet=wallet, policy=policy, options=options, asynchronous=True), inner,
                         "AsyncHTTPTransport")  # fmt: skip

    @overload
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response: ...
    @overload
    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response: ...
    async def handle_async_request(self, request: Any) -> Any:
        """Send `request` (httpx's or httpx2's); on an x402 challenge, pay once and return the paid response."""
        await request.aread()
        perform = partial(self._perform, self._inner_for(request), io.Outgoing(request))
        delivery: Delivery = await adrive(self._engine.program.run(io.call_of(request)), perform)
        response = io.delivered(delivery)
        if delivery.tap is not None:
            record = self._engine.program.record
            atap_response(response, delivery.tap, lambda payment: adrive(record(payment), self._engine.aperform))
        return response

    async def _perform(self, inner: Any, outgoing: io.Outgoing, effect: Effect) -> Any:
        if isinstance(effect, Send):
            return io.answer_of(await inner.handle_async_request(outgoing.prepared(effect)))
        if isinstance(effect, Ahead):  # started once the paid request is written (see `io.Outgoing`)
            outgoing.ahead = partial(self._engine.start_task, effect.program)
            return None
        if isinstance(effect, Close):
            return await io.adrain_and_close(effect.answer.raw)
        if isinstance(effect, ReadBody):
            return await io.aread_body(effect.answer.raw, effect.limit)
        return await self._engine.aperform(effect)

    async def aclose(self) -> None:
        """Close the inner transport(s) and finish background verifications."""
        for inner in self._inners():
            await inner.aclose()
        await self._engine.aclose()
