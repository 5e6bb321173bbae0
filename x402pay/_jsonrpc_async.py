"""JSON-RPC batches from async code, on the running event loop: `AsyncHttpJsonRpc`.

The paid side verifies a payer's first payment with one batch of chain reads. Sent from a worker thread, the batch
pays the hop to the thread and back on the path of the request; sent here, it is awaited like any other I/O.
Plain HTTP/1.1 over anyio streams (asyncio or trio), on kept-alive connections of the running event loop.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import anyio
import anyio.abc
from anyio.lowlevel import current_token
from anyio.streams.buffered import BufferedByteReceiveStream

from x402pay._jsonrpc import MAX_ANSWER_BYTES, Call, Endpoint, batch_body, decoded, in_order, too_large
from x402pay._rpc import RPC_TIMEOUT

#: Awaits calls as one batch; returns each call's response object (``result`` or ``error``), in the calls' order.
AsyncBatchSender = Callable[[Sequence[Call]], Awaitable[list[dict[str, Any]]]]

_IDLE_KEPT: Final = 8
_READ_SIZE: Final = 65536
_MAX_HEAD: Final = 64 * 1024  # an answer's status line and headers, at most
# What a connection that broke raises through anyio and h11 (anyio's own errors are not OSErrors).
_BROKEN: Final = (
    OSError,
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.IncompleteRead,
    anyio.DelimiterNotFound,
)


class AsyncHttpJsonRpc:
    """`HttpJsonRpc` for async callers: each batch is one POST on an idle kept-alive connection of the running loop.

    The same contract: a connection that fails is closed, a batch sent on a reused connection that the node had
    closed meanwhile is sent once more on a new one, failures are OSErrors (a timeout: `TimeoutError`) or
    `RpcAnswerError`, and none names the URL. Connections belong to the event loop that opened them; one left
    from another loop is dropped, never used.
    """

    def __init__(self, url: str, *, timeout: float = RPC_TIMEOUT) -> None:
        self._endpoint = Endpoint.of(url)
        self._timeout = timeout
        self._idle: list[_Connection] = []

    def __repr__(self) -> str:
        return "AsyncHttpJsonRpc(<url>)"

    async def batch(self, calls: Sequence[Call]) -> list[dict[str, Any]]:
        """Each call's response object, in order."""
        return in_order(await self._post(batch_body(calls)), len(calls))

    async def aclose(self) -> None:
        """Close the idle connections of the running loop (others are dropped)."""
        idle, self._idle = self._idle, []
        loop = current_token()
        for connection in idle:
            if connection.loop == loop:
                await connection.stream.aclose()

    async def _post(self, body: bytes) -> Any:
        connection, reused = await self._take()
        try:
            answer = await self._exchange(connection, body)
        except TimeoutError:
            raise
        except _BROKEN as exc:
            if not reused:
                raise ConnectionError(f"the RPC request failed ({type(exc).__name__})") from None
            return await self._post(body)  # the node closed a kept-alive connection: once more on a fresh one
        return decoded(*answer)

    async def _exchange(self, connection: _Connection, body: bytes) -> tuple[int, bytes]:
        """One exchange on `connection`, which is then kept idle if it may serve again, else closed."""
        kept = False
        try:
            with anyio.fail_after(self._timeout):
                answer = await connection.exchange(self._endpoint, body)
            kept = connection.reusable and len(self._idle) < _IDLE_KEPT
        except TimeoutError:
            raise TimeoutError("the RPC request timed out") from None
        finally:
            if kept:
                self._idle.append(connection)
            else:
                await anyio.aclose_forcefully(connection.stream)
        return answer

    async def _take(self) -> tuple[_Connection, bool]:
        loop = current_token()
        while self._idle:
            connection = self._idle.pop()
            if connection.loop == loop:
                return connection, True
        endpoint = self._endpoint
        port = endpoint.port or (443 if endpoint.https else 80)
        try:
            with anyio.fail_after(self._timeout):
                if endpoint.https:
                    stream: anyio.abc.ByteStream = await anyio.connect_tcp(
                        endpoint.host, port, tls=True, ssl_context=ssl.create_default_context()
                    )
                else:
                    stream = await anyio.connect_tcp(endpoint.host, port)
        except TimeoutError:
            raise TimeoutError("connecting to the RPC endpoint timed out") from None
        except OSError as exc:
            raise ConnectionError(f"the RPC request failed ({type(exc).__name__})") from None
        return _Connection(stream, loop), False


class _Connection:
    """One HTTP/1.1 connection to the node, on the event loop `loop`: a request written whole, an answer read by
    ``Content-Length``, chunks, or the connection's end (the node's JSON-RPC answers are small and plain)."""

    def __init__(self, stream: anyio.abc.ByteStream, loop: object) -> None:
        self.stream = stream
        self.loop = loop
        self.reusable = False
        self._reader = BufferedByteReceiveStream(stream)

    async def exchange(self, endpoint: Endpoint, body: bytes) -> tuple[int, bytes]:
        """POST `body`; the answer's status and body (`reusable` says whether the connection may serve again)."""
        self.reusable = False
        fields = [("host", endpoint.host_header), ("content-length", str(len(body))), *endpoint.headers.items()]
        head = f"POST {endpoint.target} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in fields)
        await self.stream.send(head.encode("latin-1") + b"\r\n" + body)
        status, version, headers = await self._head()
        while 100 <= status < 200:  # an interim answer: the real one follows
            status, version, headers = await self._head()
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            data = await self._chunks()
        elif (length := headers.get(b"content-length")) is not None:
            data = await self._reader.receive_exactly(_bounded(_length(length)))
        else:  # the answer ends with the connection
            return status, await self._rest()
        self.reusable = version == b"HTTP/1.1" and headers.get(b"connection", b"").lower() != b"close"
        return status, data

    async def _head(self) -> tuple[int, bytes, dict[bytes, bytes]]:
        lines = (await self._reader.receive_until(b"\r\n\r\n", _MAX_HEAD)).split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise _NotHttp("the RPC endpoint's answer is not HTTP/1.1")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return int(code), version, headers

    async def _chunks(self) -> bytes:
        parts, total = [], 0
        while size := _length(((await self._reader.receive_until(b"\r\n", _MAX_HEAD)).split(b";")[0]), base=16):
            total = _bounded(total + size)
            parts.append(await self._reader.receive_exactly(size))
            await self._reader.receive_exactly(2)  # the CRLF after each chunk
        while await self._reader.receive_until(b"\r\n", _MAX_HEAD):  # trailers, up to the empty line
            pass
        return b"".join(parts)

    async def _rest(self) -> bytes:
        parts = [self._reader.buffer]
        total = _bounded(len(parts[0]))
        try:
            while True:
                parts.append(await self.stream.receive(_READ_SIZE))
                total = _bounded(total + len(parts[-1]))
        except anyio.EndOfStream:
            return b"".join(parts)


class _NotHttp(OSError):
    """What the node sent is not an HTTP/1.1 answer (the connection is of no further use)."""


def _bounded(size: int) -> int:
    """`size`, an answer's length so far; `RpcAnswerError` past `MAX_ANSWER_BYTES` (the connection is then closed)."""
    if size > MAX_ANSWER_BYTES:
        raise too_large()
    return size


def _length(text: bytes, base: int = 10) -> int:
    try:
        value = int(text.strip(), base)
    except ValueError:
        raise _NotHttp("the RPC endpoint's answer has a malformed length") from None
    if value < 0:
        raise _NotHttp("the RPC endpoint's answer has a negative length")
    return value
