"""An inner transport for the integration tests that keeps every request it sent on the wire."""

from __future__ import annotations

import httpx


class Recording(httpx.BaseTransport):
    """The inner transport, keeping every request that went out on the wire (retries included)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return self.inner.handle_request(request)
