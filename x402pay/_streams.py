"""Response streams that read the receipt as the bytes pass: the I/O edge of `x402pay._sse` and JSON bodies.

A paid response's stream is wrapped, never buffered: each chunk goes to the caller as soon as the tap lets it
(vendor frames are held and, by default, removed), frames are applied to the Payment as soon as they arrive
(SDKs stop reading at ``data: [DONE]``, before the stream ends), and the transport's bookkeeping hook runs
whenever the Payment learned something. The wrappers subclass the byte-stream types of the response's own
library (httpx or httpx2), which their clients insist on.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from functools import cache
from typing import Any

from x402pay import _flow
from x402pay._payment import Payment
from x402pay._protocol.codec import MAX_BODY_BYTES
from x402pay._sse import SSETap
from x402pay.errors import PaymentError, ReceiptMismatch, SettlementFailed

Hook = Callable[[Payment], None]
AsyncHook = Callable[[Payment], Awaitable[None]]


class ReceiptTap:
    """Watches one paid response body for its receipt: SSE frames, or a JSON body's ``receipt`` object."""

    def __init__(self, payment: Payment, *, sse: bool, keep_frames: bool) -> None:
        self.payment = payment
        self._sse = SSETap(keep_frames=keep_frames) if sse else None
        self._body: bytearray | None = None if sse else bytearray()
        self._applied = 0
        self._ended = False

    def feed(self, chunk: bytes) -> bytes:
        """Pass `chunk` through the tap; returns what goes to the caller now."""
        if self._sse is not None:
            return self._sse.feed(chunk)
        if self._body is not None:
            self._body += chunk
            if len(self._body) > MAX_BODY_BYTES:
                self._body = None  # too large to be a receipt-bearing JSON answer: stop copying
        return chunk

    @property
    def pending(self) -> bool:
        """Whether vendor frames arrived that `apply` has not applied yet (a body is applied at its end, always)."""
        return self._sse is not None and self._applied < len(self._sse.frames)

    def end(self) -> bytes:
        """The stream ended: what the tap still held (apply() then reads what the end revealed)."""
        self._ended = True
        return self._sse.finish() if self._sse is not None else b""

    def apply(self) -> PaymentError | None:
        """Apply what arrived since the last call; return (not raise) a `SettlementFailed` or `ReceiptMismatch`,
        so the bytes before the frame still reach the caller before it is raised."""
        try:
            if self._sse is not None:
                frames = self._sse.frames
                while self._applied < len(frames):
                    self._applied += 1
                    _flow.apply_frame(self.payment, frames[self._applied - 1])
            elif self._ended and self._body:
                body, self._body = bytes(self._body), None
                _flow.conclude_body(self.payment, body)
        except (SettlementFailed, ReceiptMismatch) as exc:
            return exc
        return None


def receipt_tap(payment: Payment, headers: Mapping[str, str], *, keep_frames: bool) -> ReceiptTap | None:
    """A tap for a paid answer's body (its `headers` say what it is) when a receipt may be inside it: an SSE
    stream, or JSON when the headers carried none; never a compressed body."""
    content_type = headers.get("content-type", "").lower()
    sse = "text/event-stream" in content_type
    wants_body = "json" in content_type and payment.receipt is None
    if not (sse or wants_body) or headers.get("content-encoding", "identity").lower() not in ("identity", ""):
        return None
    return ReceiptTap(payment, sse=sse, keep_frames=keep_frames)


def tapped(chunks: Iterable[bytes], tap: ReceiptTap, hook: Hook) -> Iterator[bytes]:
    """`chunks` through `tap`, calling `hook` as the Payment learns things; a failure is raised after the bytes
    that came before it went out."""
    for chunk in chunks:
        out = tap.feed(chunk)
        # Before yielding: a reader may stop at [DONE] and never come back. Only a captured frame can have taught
        # the Payment something, so most chunks skip the step.
        failure = _step(tap, hook) if tap.pending else None
        if out:
            yield out
        if failure is not None:
            raise failure
    rest = tap.end()
    failure = _step(tap, hook)
    if rest:
        yield rest
    if failure is not None:
        raise failure


async def atapped(chunks: AsyncIterable[bytes], tap: ReceiptTap, hook: AsyncHook) -> AsyncIterator[bytes]:
    """The async `tapped`."""
    async for chunk in chunks:
        out = tap.feed(chunk)
        failure = await _astep(tap, hook) if tap.pending else None  # before yielding (see `tapped`)
        if out:
            yield out
        if failure is not None:
            raise failure
    rest = tap.end()
    failure = await _astep(tap, hook)
    if rest:
        yield rest
    if failure is not None:
        raise failure


def _step(tap: ReceiptTap, hook: Hook) -> PaymentError | None:
    failure = tap.apply()
    try:
        hook(tap.payment)
    except PaymentError as exc:  # e.g. inline verification found fraud: raised after the bytes went out
        return exc
    return failure


async def _astep(tap: ReceiptTap, hook: AsyncHook) -> PaymentError | None:
    failure = tap.apply()
    try:
        await hook(tap.payment)
    except PaymentError as exc:
        return exc
    return failure


@cache
def _sync_stream_type(library: str) -> type[Any]:
    base = importlib.import_module(library).SyncByteStream

    class TappedStream(base):  # type: ignore[misc, valid-type]
        """A sync byte stream that passes through a `ReceiptTap`."""

        def __init__(self, inner: Any, tap: ReceiptTap, hook: Hook) -> None:
            self._inner, self._tap, self._hook = inner, tap, hook

        def __iter__(self) -> Iterator[bytes]:
            return tapped(self._inner, self._tap, self._hook)

        def close(self) -> None:
            self._inner.close()

    return TappedStream


@cache
def _async_stream_type(library: str) -> type[Any]:
    base = importlib.import_module(library).AsyncByteStream

    class TappedAsyncStream(base):  # type: ignore[misc, valid-type]
        """An async byte stream that passes through a `ReceiptTap`."""

        def __init__(self, inner: Any, tap: ReceiptTap, hook: AsyncHook) -> None:
            self._inner, self._tap, self._hook = inner, tap, hook

        def __aiter__(self) -> AsyncIterator[bytes]:
            return atapped(self._inner, self._tap, self._hook)

        async def aclose(self) -> None:
            await self._inner.aclose()

    return TappedAsyncStream


def tap_response(response: Any, tap: ReceiptTap, hook: Hook) -> None:
    """Route a sync `response`'s body through `tap`, calling `hook` as the Payment learns things."""
    library = type(response).__module__.split(".", 1)[0]
    response.stream = _sync_stream_type(library)(response.stream, tap, hook)


def atap_response(response: Any, tap: ReceiptTap, hook: AsyncHook) -> None:
    """Route an async `response`'s body through `tap`, awaiting `hook` as the Payment learns things."""
    library = type(response).__module__.split(".", 1)[0]
    response.stream = _async_stream_type(library)(response.stream, tap, hook)
