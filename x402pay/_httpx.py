"""The HTTP effects on httpx and httpx2 (the same API, separate types): what the transports' drivers share.

Nothing here knows the order of a payment; it turns requests and responses into the program's terms and back.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from functools import cache
from typing import Any, Final

from x402pay._attempt import Call
from x402pay._effects import Answer, Delivery, Send
from x402pay._payment import PAYMENT_EXTENSION
from x402pay._repeats import fingerprint

#: How much of a challenge's body is read before closing it, so that the connection can be reused for the retry.
_DRAIN_LIMIT: Final = 64 * 1024
_DROPPED_ON_REBUILD: Final = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def library_of(message: Any) -> str:
    """``"httpx"`` or ``"httpx2"``: the library a request or response belongs to."""
    return type(message).__module__.split(".", 1)[0]


def default_inner(request: Any, factory: str) -> Any:
    """A new default transport (`factory`: ``HTTPTransport`` or ``AsyncHTTPTransport``) of `request`'s library."""
    return getattr(importlib.import_module(library_of(request)), factory)()


def call_of(request: Any) -> Call:
    """The program's view of an httpx or httpx2 request."""
    url = request.url
    origin = f"{url.scheme}://{url.netloc.decode('ascii')}"
    print_ = fingerprint(request.method, origin.encode() + url.raw_path, request.content)
    return Call(request.method, origin, url.path, request.headers, print_, timeout_of(request))


def timeout_of(request: Any) -> float | None:
    """The longest `request` may take to be sent and answered, in seconds, from the timeouts its client set (httpx's
    ``timeout`` extension: connect, write, read and pool, summed); ``inf`` when one of them is unlimited, None when
    the request says nothing."""
    timeouts = request.extensions.get("timeout")
    if not isinstance(timeouts, Mapping):
        return None
    limits = [timeouts.get(name) for name in ("connect", "write", "read", "pool")]
    seconds = [float(limit) for limit in limits if limit is not None]
    return sum(seconds) if len(seconds) == len(limits) else math.inf


class Outgoing:
    """One request on its way through a driver; the headers the program keeps on it are set once per change.
    `ahead`: work to start once the next paid send is on the wire (`x402pay._effects.Ahead`)."""

    def __init__(self, request: Any) -> None:
        self.request = request
        self.ahead: Callable[[], None] | None = None
        self._applied: Mapping[str, str] | None = None

    def prepared(self, send: Send) -> Any:
        """The request with `send`'s headers set on it (redirects carry them) and those it strips removed, or a copy
        that also carries its payment."""
        request, headers, payment = self.request, send.headers, send.payment
        if headers is not self._applied:  # the same mapping for every send of an attempt: set it once
            for name, value in headers.items():
                request.headers[name] = value
            for name in send.strip:
                request.headers.pop(name, None)
            self._applied = headers
        if payment is None:
            return request
        copied = request.headers.copy()
        copied[payment[0]] = payment[1]
        stream = request.stream if self.ahead is None else _then(request, self.ahead)
        self.ahead = None
        return type(request)(request.method, request.url, headers=copied, stream=stream, extensions=request.extensions)


def _then(request: Any, start: Callable[[], None]) -> Any:
    """`request`'s body, calling `start` once it has all been handed to the connection (the request is written: the
    wait for the answer begins, and work started then does not delay the request)."""
    return _body_type(library_of(request))(request.stream, start)


def _nothing() -> None:
    """What a body whose work has started starts when it is read again."""


@cache
def _body_type(library: str) -> type:
    module = importlib.import_module(library)

    class ThenStart(module.SyncByteStream, module.AsyncByteStream):  # type: ignore[name-defined, misc]
        def __init__(self, stream: Any, start: Callable[[], None]) -> None:
            self._stream, self._start = stream, start

        def __iter__(self) -> Iterator[bytes]:
            yield from self._stream
            self._started()

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in self._stream:
                yield chunk
            self._started()

        def _started(self) -> None:
            start, self._start = self._start, _nothing
            start()

    return ThenStart


def answer_of(response: Any) -> Answer:
    """The program's view of a response."""
    return Answer(response.status_code, response.headers, response)


def read_body(response: Any, limit: int) -> bytes:
    """Up to `limit` + 1 bytes of a response's body (decoded); a longer body is closed unread past that."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            response.close()
            break
    return b"".join(chunks)[: limit + 1]


async def aread_body(response: Any, limit: int) -> bytes:
    """The async `read_body`."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            await response.aclose()
            break
    return b"".join(chunks)[: limit + 1]


def drain_and_close(response: Any) -> None:
    """Read a little of what is left of a body, then close: the connection can serve the retry."""
    if not response.is_closed:
        drained = 0
        for chunk in () if response.is_stream_consumed else response.iter_raw():
            drained += len(chunk)
            if drained > _DRAIN_LIMIT:
                break
    response.close()


async def adrain_and_close(response: Any) -> None:
    """The async `drain_and_close`."""
    if not response.is_closed:
        drained = 0
        if not response.is_stream_consumed:
            async for chunk in response.aiter_raw():
                drained += len(chunk)
                if drained > _DRAIN_LIMIT:
                    break
    await response.aclose()


def delivered(delivery: Delivery) -> Any:
    """The response to hand to the caller: rebuilt if its body was read, carrying its payment."""
    response = delivery.answer.raw
    if delivery.body is not None:
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _DROPPED_ON_REBUILD]
        response = type(response)(
            response.status_code, headers=headers, content=delivery.body, extensions=response.extensions
        )
    if delivery.payment is not None:
        response.extensions[PAYMENT_EXTENSION] = delivery.payment
    return response
