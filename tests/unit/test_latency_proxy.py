"""The benchmarks' latency proxy is a delay line: bytes go through intact and in order, each direction about `delay`
late, and chunks in flight overlap (a delay does not hold back the chunks behind it). Bounds are generous: this
checks behaviour, not timing precision."""

from __future__ import annotations

import os
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from bench.latency_proxy import LatencyProxy, proxied


class Echo(socketserver.BaseRequestHandler):
    """Echo what arrives, noting when each piece arrived."""

    arrivals: list[float]

    def handle(self) -> None:
        while data := self.request.recv(65_536):
            self.arrivals.append(time.monotonic())
            self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[tuple[tuple[str, int], list[float]]]:
    arrivals: list[float] = []
    handler = type("RecordingEcho", (Echo,), {"arrivals": arrivals})
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler) as server:
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, args=(0.05,))
        thread.start()
        yield ("127.0.0.1", server.socket.getsockname()[1]), arrivals
        server.shutdown()
        thread.join()


def connect(proxy: LatencyProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size and (piece := sock.recv(65_536)):
        data += piece
    return data


def test_bytes_arrive_intact_and_in_order(echo: tuple[tuple[str, int], list[float]]) -> None:
    payload = os.urandom(1_000_000)
    with LatencyProxy(echo[0], delay=0.01) as proxy, connect(proxy) as sock:
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        assert receive(sock, len(payload)) == payload
        sender.join()


def test_each_direction_is_delayed_by_about_the_delay(echo: tuple[tuple[str, int], list[float]]) -> None:
    target, arrivals = echo
    delay = 0.05
    with LatencyProxy(target, delay=delay) as proxy, connect(proxy) as sock:
        sent = time.monotonic()
        sock.sendall(b"ping")
        assert receive(sock, 4) == b"ping"
        back = time.monotonic()
    assert delay <= arrivals[0] - sent < delay + 1
    assert delay <= back - arrivals[0] < delay + 1


def test_chunks_in_flight_overlap(echo: tuple[tuple[str, int], list[float]]) -> None:
    delay, pieces = 0.3, 10
    with LatencyProxy(echo[0], delay=delay) as proxy, connect(proxy) as sock:
        start = time.monotonic()
        for index in range(pieces):
            sock.sendall(bytes([index]) * 100)
            time.sleep(0.02)
        assert receive(sock, 100 * pieces) == b"".join(bytes([index]) * 100 for index in range(pieces))
        elapsed = time.monotonic() - start
    assert 2 * delay <= elapsed < 2 * delay + 0.02 * pieces + 1  # one delay per piece would take pieces * delay


def test_a_closed_connection_is_passed_on(echo: tuple[tuple[str, int], list[float]]) -> None:
    with LatencyProxy(echo[0], delay=0.01) as proxy, connect(proxy) as sock:
        sock.sendall(b"bye")
        sock.shutdown(socket.SHUT_WR)
        assert receive(sock, 1_000) == b"bye"  # the echo server saw the end and closed: so do we


def test_a_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="delay"):
        LatencyProxy(("127.0.0.1", 1), delay=-0.1)


def test_the_proxy_in_a_process_of_its_own_delays_the_same_way(echo: tuple[tuple[str, int], list[float]]) -> None:
    target, arrivals = echo
    delay = 0.05
    with proxied(target, delay=delay) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sent = time.monotonic()
            sock.sendall(b"ping")
            assert receive(sock, 4) == b"ping"
            back = time.monotonic()
    assert delay <= arrivals[0] - sent < delay + 1
    assert delay <= back - arrivals[0] < delay + 1
