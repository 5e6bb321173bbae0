"""A loopback HTTP/1.1 proxy in front of a paid server that takes payments and drops the connection.

For the first `drops` requests that carry a payment it sends no answer at all: it closes the client's connection
either at once (the payment was taken, the server never saw it) or after the server answered (the server settled
it). Every payment it receives is counted by its nonce. One request per connection, answers relayed whole with
``Connection: close``: enough for the SDKs, httpx and requests, and small enough to trust.
"""

from __future__ import annotations

import base64
import json
import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

PAYMENT_HEADERS = (b"payment-signature", b"x-payment")


def nonce_of(header: bytes) -> str:
    """The nonce a payment header's authorization commits to (EIP-3009 or Permit2)."""
    payload: Any = json.loads(base64.b64decode(header))["payload"]
    for part in ("authorization", "permit2Authorization"):
        if isinstance(payload.get(part), dict):
            return str(payload[part]["nonce"])
    raise ValueError(f"no nonce in {sorted(payload)}")


class DroppingProxy:
    """Counts the payments it forwards (`nonces`, one per paid request received) and drops the first `drops`."""

    def __init__(self, upstream: str, *, drops: int, after_settling: bool) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.drops = drops
        self.after_settling = after_settling
        self.nonces: list[str] = []
        self.heads: list[bytes] = []  # the head of every request received, as received
        self.dropped = 0
        self._lock = threading.Lock()

    def handle(self, client: socket.socket) -> None:
        """Serve one request on `client`."""
        head, body = _read_request(client)
        if head is None:
            return
        payment = _header(head, PAYMENT_HEADERS)
        with self._lock:
            self.heads.append(head)
            if payment is not None:
                self.nonces.append(nonce_of(payment))
            dropping = payment is not None and self.dropped < self.drops
            self.dropped += dropping
        if dropping and not self.after_settling:
            return
        answer = self._forward(head, body)
        if not dropping:
            client.sendall(answer)

    def _forward(self, head: bytes, body: bytes) -> bytes:
        lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
        request = b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body
        with socket.create_connection(self.upstream, timeout=60) as server:
            server.sendall(request)
            chunks = []
            while chunk := server.recv(65536):
                chunks.append(chunk)
        answer = b"".join(chunks)
        answer_head, _, answer_body = answer.partition(b"\r\n\r\n")
        kept = [line for line in answer_head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
        return b"\r\n".join([*kept, b"Connection: close"]) + b"\r\n\r\n" + answer_body


def _read_request(client: socket.socket) -> tuple[bytes | None, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(_header(head, (b"content-length",)) or b"0")
    while len(body) < length:
        chunk = client.recv(65536)
        if not chunk:
            break
        body += chunk
    return head, body


def _header(head: bytes, names: tuple[bytes, ...]) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() in names:
            return value.strip()
    return None


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        proxy: DroppingProxy = self.server.proxy  # type: ignore[attr-defined]
        proxy.handle(self.request)


@contextmanager
def dropping_proxy(upstream: str, *, drops: int, after_settling: bool) -> Iterator[tuple[str, DroppingProxy]]:
    """Run a `DroppingProxy` in front of `upstream` on loopback; yield its URL and itself."""
    proxy = DroppingProxy(upstream, drops=drops, after_settling=after_settling)
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.proxy = proxy  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="dropping-proxy", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
