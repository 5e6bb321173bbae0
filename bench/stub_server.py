"""A paid HTTP server for benchmarks whose settlement is stubbed out: it measures clients, not a chain.

Routes (raw ASGI, no framework, so that the server's own cost stays small and the same for every client):

- ``GET /free``: 200 and a small JSON body; the unpaid floor.
- ``GET /paid``: a real x402 v2 challenge (``PAYMENT-REQUIRED``, exact, Base Sepolia USDC, EIP-3009), and for a
  well-formed ``PAYMENT-SIGNATURE`` whose EIP-712 signature recovers to the authorization's ``from``,
  200 with a ``PAYMENT-RESPONSE`` (success, a made-up transaction hash). No nonce, balance or time checks: nothing
  touches a chain.
- ``GET /stream?size=N&chunk=K`` and ``GET /paid-stream?...``: an SSE stream of about N bytes of OpenAI-like
  ``data:`` frames, then an ``event: compose.receipt`` frame and ``data: [DONE]``, sent in K-byte pieces that cut
  frames anywhere. The paid one is priced like ``/paid`` and, like Compose Market, carries its receipt in-band only.

Run it as a subprocess with `running()` (it prints its port, and is stopped by PID), or ``python -m
bench.stub_server`` by hand.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import subprocess
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Final
from urllib.parse import parse_qs

from coincurve import PublicKey

from bench.harness import cpu_seconds, serve_here, serving
from x402pay._schemes.eip712 import transfer_with_authorization
from x402pay._schemes.fast712 import keccak256, typed_data_digest

NETWORK: Final = "eip155:84532"  # Base Sepolia: an asset both x402pay and the official SDK know
CHAIN_ID: Final = 84532
USDC: Final = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
PAY_TO: Final = "0x2096ae4E2Ae1B5D6c7B1D5a8B0A7A08B6C1c287c"
AMOUNT: Final = 1_000  # 0.001 USDC
TRANSACTION: Final = "0x" + "ab" * 32

REQUIREMENT: Final[dict[str, Any]] = {
    "scheme": "exact",
    "network": NETWORK,
    "amount": str(AMOUNT),
    "asset": USDC,
    "payTo": PAY_TO,
    "maxTimeoutSeconds": 60,
    "extra": {"name": "USDC", "version": "2"},
}
_MATCHED: Final = ("scheme", "network", "amount", "asset", "payTo")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _b64json(value: object) -> bytes:
    return base64.b64encode(json.dumps(value, separators=(",", ":")).encode())


@cache
def _challenge(path: str) -> bytes:
    resource = {"url": f"http://127.0.0.1{path}", "description": "benchmark route", "mimeType": "application/json"}
    return _b64json({"x402Version": 2, "error": "PAYMENT-SIGNATURE header is required", "resource": resource,
                     "accepts": [REQUIREMENT], "extensions": {}})  # fmt: skip


def payer_of(header: bytes) -> str | None:
    """The payer of a well-formed exact EIP-3009 payment for `REQUIREMENT` whose signature recovers, else None."""
    try:
        payment = json.loads(base64.b64decode(header, validate=True))
        accepted, inner = payment["accepted"], payment["payload"]
        authorization, signature = inner["authorization"], inner["signature"]
        if payment["x402Version"] != 2 or any(accepted[key] != REQUIREMENT[key] for key in _MATCHED):
            return None
        if authorization["to"].lower() != PAY_TO.lower() or int(authorization["value"]) != AMOUNT:
            return None
        message = {key: authorization[key] for key in ("from", "to", "nonce")}
        message.update({key: int(authorization[key]) for key in ("value", "validAfter", "validBefore")})
        domain = REQUIREMENT["extra"]
        typed = transfer_with_authorization(
            token_name=domain["name"], token_version=domain["version"], chain_id=CHAIN_ID, token=USDC,
            authorization=message,
        )  # fmt: skip
        signer = _recover(typed, bytes.fromhex(signature.removeprefix("0x")))
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error):
        return None
    return signer if signer is not None and signer.lower() == str(authorization["from"]).lower() else None


def _recover(typed: dict[str, Any], signature: bytes) -> str | None:
    """The signer of `typed` (coincurve on x402pay's EIP-712 digest: the server stays cheap; eth-account would
    cost the server 1.2 ms per request, more than any client spends, and every client would wait on it)."""
    digest = typed_data_digest(typed)
    if digest is None or len(signature) != 65 or signature[64] not in (27, 28):
        return None
    public = PublicKey.from_signature_and_message(signature[:64] + bytes((signature[64] - 27,)), digest, hasher=None)
    return "0x" + keccak256(public.format(compressed=False)[1:])[-20:].hex()


@cache
def sse_body(size: int) -> bytes:
    """About `size` bytes of OpenAI-like chunk frames, then the in-band receipt frame and ``[DONE]``."""
    frame = b'data: {"object":"chat.completion.chunk","choices":[{"delta":{"content":"' + b"x" * 900 + b'"}}]}\n\n'
    receipt = {"finalAmountWei": str(AMOUNT), "network": NETWORK, "txHash": TRANSACTION, "settledAt": 1_764_000_000_000}
    tail = b"event: compose.receipt\ndata: " + json.dumps(receipt).encode() + b"\n\ndata: [DONE]\n\n"
    return frame * max(1, size // len(frame)) + tail


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _stream(send: Send, query: str, headers: list[tuple[bytes, bytes]]) -> None:
    params = parse_qs(query)
    body = sse_body(int(params.get("size", ["10000000"])[0]))
    chunk = int(params.get("chunk", ["16384"])[0])
    headers = [*headers, (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    view = memoryview(body)
    for start in range(0, len(body), chunk):
        await send({"type": "http.response.body", "body": bytes(view[start : start + chunk]), "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The benchmark server (see the module docstring)."""
    if scope["type"] != "http":
        return
    path, query = scope["path"], scope["query_string"].decode()
    json_type = (b"content-type", b"application/json")
    if path == "/free":
        await _send(send, 200, [json_type], b'{"ok":true}')
        return
    if path == "/stream":
        await _stream(send, query, [])
        return
    if path not in ("/paid", "/paid-stream"):
        await _send(send, 404, [json_type], b'{"error":"not found"}')
        return
    header = dict(scope["headers"]).get(b"payment-signature")
    payer = payer_of(header) if header is not None else None
    if payer is None:
        await _send(send, 402, [json_type, (b"payment-required", _challenge(path))], b"{}")
        return
    if path == "/paid-stream":
        await _stream(send, query, [])
        return
    settlement = _b64json({"success": True, "transaction": TRANSACTION, "network": NETWORK, "payer": payer})
    await _send(send, 200, [json_type, (b"payment-response", settlement)], b'{"ok":true,"paid":true}')


@dataclass
class StubServer:
    """A running stub server subprocess: its base URL, and its CPU time so far."""

    url: str
    process: subprocess.Popen[str]

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the server process has used (Linux ``/proc``; 0.0 elsewhere)."""
        return cpu_seconds(self.process.pid)


@contextlib.contextmanager
def running(timeout: float = 20.0) -> Iterator[StubServer]:
    """Start the stub server in a subprocess on a free loopback port; stop it (by its PID) when the block exits."""
    with serving("bench.stub_server", timeout=timeout) as (url, process):
        yield StubServer(url, process)


def main() -> None:
    """Serve on 127.0.0.1 (a free port, printed as ``port N``) until terminated."""
    serve_here(app, int(os.environ.get("STUB_PORT", "0")))


if __name__ == "__main__":
    main()
