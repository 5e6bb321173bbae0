"""Response streams that read the receipt as the bytes pass: the I/O edge of `x402pay.sse` and JSON bodies.

A paid response's stream is wrapped, never buffered: each chunk goes to the caller as soon as the tap lets it
(vendor frames are held and, by default, removed), and the payment is concluded when the stream ends. The
wrappers subclass the byte-stream types of the response's own library (httpx or httpx2), which their clients
insist on.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable, Iterator
from functools import cache
from typing import Any

from x402pay import flow
from x402pay.payment import Payment
from x402pay.protocol.codec import MAX_BODY_BYTES
from x402pay.sse import ERROR_EVENTS, SSETap

OnReceipt = Callable[[Payment], None]


class ReceiptTap:
    """Watches one paid response body for its receipt: SSE frames, or a JSON body's ``receipt`` object."""

    def __init__(self, payment: Payment, *, sse: bool, keep_frames: bool, on_receipt: OnReceipt | None) -> None:
        self.payment = payment
        self._sse = SSETap(keep_frames=keep_frames) if sse else None
        self._body: bytearray | None = None if sse else bytearray()
        self._on_receipt = on_receipt
        self._concluded = False

    def feed(self, chunk: bytes) -> bytes:
        """Pass `chunk` through the tap; returns what goes to the caller now."""
        if self._sse is not None:
            return self._sse.feed(chunk)
        if self._body is not None:
            self._body += chunk
            if len(self._body) > MAX_BODY_BYTES:
                self._body = None  # too large to be a receipt-bearing JSON answer: stop copying
        return chunk

    def check(self) -> None:
        """Raise `SettlementFailed` as soon as an error frame has arrived (after the bytes before it went out)."""
        if self._sse is not None and any(frame.event in ERROR_EVENTS for frame in self._sse.frames):
            self._conclude()

    def finish(self) -> bytes:
        """The stream ended: flush what the tap held, and conclude the payment (may raise)."""
        rest = self._sse.finish() if self._sse is not None else b""
        self._conclude()
        return rest

    def _conclude(self) -> None:
        if self._concluded:
            return
        self._concluded = True
        try:
            if self._sse is not None:
                flow.conclude_stream(self.payment, self._sse.frames)
            elif self._body:
                flow.conclude_body(self.payment, bytes(self._body))
        finally:
            if self.payment.receipt is not None and self._on_receipt is not None:
                self._on_receipt(self.payment)


@cache
def _sync_stream_type(library: str) -> type[Any]:
    base = importlib.import_module(library).SyncByteStream

    class TappedStream(base):  # type: ignore[misc, valid-type]
        """A sync byte stream that passes through a `ReceiptTap`."""

        def __init__(self, inner: Any, tap: ReceiptTap) -> None:
            self._inner = inner
            self._tap = tap

        def __iter__(self) -> Iterator[bytes]:
            for chunk in self._inner:
                out = self._tap.feed(chunk)
                if out:
                    yield out
                self._tap.check()
            rest = self._tap.finish()
            if rest:
                yield rest

        def close(self) -> None:
            self._inner.close()

    return TappedStream


@cache
def _async_stream_type(library: str) -> type[Any]:
    base = importlib.import_module(library).AsyncByteStream

    class TappedAsyncStream(base):  # type: ignore[misc, valid-type]
        """An async byte stream that passes through a `ReceiptTap`."""

        def __init__(self, inner: Any, tap: ReceiptTap) -> None:
            self._inner = inner
            self._tap = tap

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in self._inner:
                out = self._tap.feed(chunk)
                if out:
                    yield out
                self._tap.check()
            rest = self._tap.finish()
            if rest:
                yield rest

        async def aclose(self) -> None:
            await self._inner.aclose()

    return TappedAsyncStream


def tap_response(response: Any, tap: ReceiptTap, *, asynchronous: bool) -> None:
    """Route `response`'s body through `tap` (in place: its stream is replaced by a wrapper)."""
    library = type(response).__module__.split(".", 1)[0]
    wrapper = _async_stream_type(library) if asynchronous else _sync_stream_type(library)
    response.stream = wrapper(response.stream, tap)
