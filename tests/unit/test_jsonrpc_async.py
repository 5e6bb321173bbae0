"""`AsyncHttpJsonRpc`'s HTTP/1.1 against a scripted node on loopback: the answer's framings, keep-alive, failures.

(The facilitator's use of it against anvil is in tests/server/test_verify_mirror.py.)
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable

import anyio
import anyio.abc
import pytest

from x402pay import _jsonrpc, _jsonrpc_async
from x402pay._jsonrpc import HttpJsonRpc, RpcAnswerError
from x402pay._jsonrpc_async import AsyncHttpJsonRpc

ANSWER = json.dumps([{"jsonrpc": "2.0", "id": 0, "result": "0x1"}]).encode()
Framing = Callable[[bytes], bytes]


def by_length(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


def chunked(body: bytes) -> bytes:
    half = len(body) // 2
    chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:]))
    return (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        + chunks
        + (b"0\r\nx-trailer: 1\r\n\r\n")
    )


def until_closed(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + body


class Node:
    """A loopback server that answers every request it reads with `framing(ANSWER)`; counts its connections."""

    def __init__(self, framing: Framing) -> None:
        self.framing = framing
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, client: anyio.abc.SocketStream) -> None:
        self.connections += 1
        async with client:
            buffer = b""
            while True:
                try:
                    buffer += await client.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
                head, separator, rest = buffer.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]) if separator else -1
                if length < 0 or len(rest) < length:
                    continue
                self.requests.append(head + separator + rest[:length])
                buffer = rest[length:]
                await client.send(self.framing(ANSWER))
                if self.framing is until_closed:
                    return


@contextlib.asynccontextmanager
async def serving(node: Node) -> AsyncIterator[str]:
    """`node` listening on loopback for the block; its URL (with a query that stands for an API key)."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - anyio's typed attributes
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, node.handle)
        yield f"http://127.0.0.1:{port}/rpc?key=secret"
        tasks.cancel_scope.cancel()


@pytest.mark.parametrize("framing", [by_length, chunked, until_closed], ids=["length", "chunked", "until closed"])
async def test_every_framing_of_the_answer_is_read_and_kept_alive_when_it_may_be(framing: Framing) -> None:
    node = Node(framing)
    async with serving(node) as url:
        rpc = AsyncHttpJsonRpc(url, timeout=5)
        for _ in range(2):
            assert await rpc.batch([("eth_blockNumber", [])]) == [{"jsonrpc": "2.0", "id": 0, "result": "0x1"}]
        await rpc.aclose()
    assert node.connections == (2 if framing is until_closed else 1)
    assert node.requests[0].startswith(b"POST /rpc?key=secret HTTP/1.1\r\nhost: 127.0.0.1:")
    assert node.requests[0].endswith(b'"method":"eth_blockNumber","params":[]}]')


BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n"


@pytest.mark.parametrize(
    ("answer", "error"),
    [(b"SSH-2.0-OpenSSH\r\n\r\n", ConnectionError), (BAD_GATEWAY, RpcAnswerError)],
    ids=["not HTTP", "HTTP 502"],
)
async def test_an_answer_that_is_not_http_or_not_200_fails_without_naming_the_url(
    answer: bytes, error: type[Exception]
) -> None:
    async with serving(Node(lambda body: answer)) as url:
        with pytest.raises(error) as raised:
            await AsyncHttpJsonRpc(url, timeout=5).batch([("eth_blockNumber", [])])
        assert "secret" not in str(raised.value)


async def test_a_node_that_does_not_answer_in_time_is_a_timeout() -> None:
    async with serving(Node(lambda body: b"")) as url:
        with pytest.raises(TimeoutError, match="timed out"):
            await AsyncHttpJsonRpc(url, timeout=0.2).batch([("eth_blockNumber", [])])


@pytest.mark.parametrize("framing", [by_length, chunked, until_closed], ids=["length", "chunked", "until closed"])
async def test_an_answer_over_the_size_limit_is_refused_sync_and_async(
    framing: Framing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_jsonrpc, "MAX_ANSWER_BYTES", len(ANSWER) - 1)
    monkeypatch.setattr(_jsonrpc_async, "MAX_ANSWER_BYTES", len(ANSWER) - 1)
    async with serving(Node(framing)) as url:
        rpc = AsyncHttpJsonRpc(url, timeout=5)
        with pytest.raises(RpcAnswerError, match=f"over {len(ANSWER) - 1} bytes"):
            await rpc.batch([("eth_blockNumber", [])])
        assert rpc._idle == []  # the connection is not kept: the rest of the answer was never read
        blocking = HttpJsonRpc(url, timeout=5)
        with pytest.raises(RpcAnswerError, match=f"over {len(ANSWER) - 1} bytes"):
            await anyio.to_thread.run_sync(blocking.batch, [("eth_blockNumber", [])])
        blocking.close()
