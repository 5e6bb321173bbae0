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
from x402pay.errors import PaymentError, ReceiptMismatch, SettlementFailed
from x402pay.payment import Payment
from x402pay.protocol.codec import MAX_BODY_BYTES
from x402pay.sse import SSETap

OnReceipt = Callable[[Payment], None]


class ReceiptTap:
    """Watches one paid response body for its receipt: SSE frames, or a JSON body's ``receipt`` object.

    Frames are applied as soon as they arrive (SDKs stop reading at ``data: [DONE]``, before the stream ends);
    `on_receipt` fires once, when the receipt lands.
    """

    def __init__(self, payment: Payment, *, sse: bool, keep_frames: bool, on_receipt: OnReceipt | None) -> None:
        self.payment = payment
        self._sse = SSETap(keep_frames=keep_frames) if sse else None
        self._body: bytearray | None = None if sse else bytearray()
        self._on_receipt = on_receipt
        self._applied = 0

    def feed(self, chunk: bytes) -> bytes:
        """Pass `chunk` through the tap; returns what goes to the caller now."""
        if self._sse is not None:
            return self._sse.feed(chunk)
        if self._body is not None:
            self._body += chunk
            if len(self._body) > MAX_BODY_BYTES:
                self._body = None  # too large to be a receipt-bearing JSON answer: stop copying
        return chunk

    def apply(self) -> PaymentError | None:
        """Apply the frames that arrived since the last call; return (not raise) a `SettlementFailed` or
        `ReceiptMismatch`, so the bytes before the frame still reach the caller before it is raised."""
        frames = self._sse.frames if self._sse is not None else []
        try:
            while self._applied < len(frames):
                self._applied += 1
                self._landing(flow.apply_frame, frames[self._applied - 1])
        except (SettlementFailed, ReceiptMismatch) as exc:
            return exc
        return None

    def finish(self) -> bytes:
        """The stream ended: flush what the tap held and apply what is left (may raise)."""
        if self._sse is None:
            if self._body:
                self._landing(flow.conclude_body, bytes(self._body))
            return b""
        rest = self._sse.finish()
        failure = self.apply()
        if failure is not None:
            raise failure
        return rest

    def _landing(self, step: Callable[[Payment, Any], None], argument: Any) -> None:
        had_receipt = self.payment.receipt is not None
        try:
            step(self.payment, argument)
        finally:
            if not had_receipt and self.payment.receipt is not None and self._on_receipt is not None:
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
                failure = self._tap.apply()  # before yielding: a reader may stop at [DONE] and never come back
                if out:
                    yield out
                if failure is not None:
                    raise failure
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
                failure = self._tap.apply()  # before yielding: a reader may stop at [DONE] and never come back
                if out:
                    yield out
                if failure is not None:
                    raise failure
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
