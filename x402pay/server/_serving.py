"""Run an ASGI app with uvicorn on loopback in a background thread, for tests and demos.

with serve_app(app) as base_url:          # e.g. "http://127.0.0.1:40123"
    httpx.get(base_url + "/paid")
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from x402pay.errors import ServerStartError


class _Server(uvicorn.Server):
    """A uvicorn server that says when it has started (or given up)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.ready.set()


@contextlib.contextmanager
def serve_app(
    app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0, timeout: float = 10.0, lifespan: bool = False
) -> Iterator[str]:
    """Serve `app` on `host`:`port` (0: a free port) until the block exits; yield its base URL. `lifespan`: run
    the app's startup and shutdown (an MCP server's streamable HTTP app starts its session manager there).

    The socket is bound before the thread starts, so the port is known without a race; the server is stopped
    with ``should_exit`` and its thread joined, so nothing outlives the block.
    """
    # IPPROTO_TCP, not 0: asyncio turns TCP_NODELAY on only for sockets that say so (else a 40 ms delayed-ACK stall).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, log_level="warning", lifespan="on" if lifespan else "off", timeout_graceful_shutdown=5)
    server = _Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="x402pay-uvicorn", daemon=True)
    thread.start()
    try:
        if not server.ready.wait(timeout) or not server.started:
            raise ServerStartError(f"uvicorn did not start on {host}:{sock.getsockname()[1]} within {timeout}s")
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout + 5)
        sock.close()
