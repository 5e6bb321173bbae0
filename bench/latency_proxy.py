"""A TCP proxy that adds network latency: each direction of every connection is a delay line.

Placed between the clients and a server on loopback, it makes every contender of a benchmark pay the same round
trips of a real network: a byte sent either way arrives `delay` seconds later (the one-way delay, half the round
trip). Each chunk read is released `delay` after it arrived, in order, while the next chunks are already being read,
so throughput does not collapse to one chunk per delay. Connection setup is not delayed (the proxy accepts at once
and connects upstream at once): with keep-alive connections, that cost is paid once per connection, not per request.

It runs in a thread with its own event loop, started and stopped as an object::

    with LatencyProxy(("127.0.0.1", 8000), delay=0.010) as proxy:
        httpx.get(proxy.url + "/free")

or, as a real network would, outside the client's process (its work then costs the client neither CPU nor the
GIL)::

    with proxied(("127.0.0.1", 8000), delay=0.010) as url:
        httpx.get(url + "/free")
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
from collections.abc import Iterator
from types import TracebackType

from bench.harness import serving

_CHUNK = 65_536
_EOF = b""


class LatencyProxy:
    """Forward 127.0.0.1:`port` to `target`, delaying each direction by `delay` seconds (see the module docstring)."""

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        if delay < 0:
            raise ValueError(f"delay must be >= 0 seconds, not {delay}")
        self.target, self.delay = target, delay
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:port``, the address clients should use instead of the target's."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> LatencyProxy:
        """Listen on a free loopback port (``self.port``) and forward from a thread of its own; returns self."""
        if self._thread is not None:
            raise RuntimeError("this proxy is already started")
        ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(ready),), name="latency-proxy")
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"the latency proxy did not start within {timeout} s")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close the listening socket and every forwarded connection, and end the thread."""
        if self._thread is None or self._loop is None or self._stopping is None:
            return
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    async def _serve(self, ready: threading.Event) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        await self._stopping.wait()
        server.close()
        for writer in self._writers:  # each forwarding direction then reads the end, passes it on and returns
            writer.close()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - a stream server runs each connection in a task
        self._connections.add(task)
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            self._connections.discard(task)
            return
        self._writers.update((client_writer, server_writer))
        try:
            await asyncio.gather(
                self._forward(client_reader, server_writer), self._forward(server_reader, client_writer)
            )
        except OSError:
            pass  # a write to a side that went away: close both, as a router would drop the connection
        finally:
            for writer in (client_writer, server_writer):
                writer.close()
                self._writers.discard(writer)
            self._connections.discard(task)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One direction: read chunks as they come, write each `delay` after it arrived; EOF travels the same way."""
        loop = asyncio.get_running_loop()
        line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            chunk = None
            while chunk != _EOF:
                try:
                    chunk = await reader.read(_CHUNK)
                except OSError:  # reset by the peer: what was read still goes through, then the end
                    chunk = _EOF
                line.put_nowait((loop.time() + self.delay, chunk))

        reading = asyncio.create_task(read())
        try:
            while True:
                due, chunk = await line.get()
                await asyncio.sleep(due - loop.time())
                if chunk == _EOF:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                writer.write(chunk)
                await writer.drain()
        finally:
            reading.cancel()


@contextlib.contextmanager
def proxied(target: tuple[str, int], delay: float, timeout: float = 20.0) -> Iterator[str]:
    """A `LatencyProxy` in a subprocess of its own, for the block: its URL; stopped by its PID at the end."""
    with serving("bench.latency_proxy", f"{target[0]}:{target[1]}", str(delay), timeout=timeout) as (url, _):
        yield url


def main() -> None:
    """Forward to TARGET (host:port) with DELAY seconds each way, printing ``port N``, until stdin closes or a
    signal ends the process."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("target")
    parser.add_argument("delay", type=float)
    args = parser.parse_args()
    host, port = args.target.rsplit(":", 1)
    with LatencyProxy((host, int(port)), delay=args.delay) as proxy:
        print(f"port {proxy.port}", flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
