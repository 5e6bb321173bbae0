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
from x402pay._schemes.fast712 import domain_separator, encode_type, keccak256

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
# What a server checking payments to itself in one token keeps from its start: the token's EIP-712 domain separator,
# the type hash, and the words of its own address and price. Each payment then costs one base64 and JSON decode,
# two Keccak-256 hashes and one public key recovery, as on any server that checks signatures itself.
_DOMAIN_SEPARATOR: Final = domain_separator(REQUIREMENT["extra"]["name"], REQUIREMENT["extra"]["version"], CHAIN_ID,
                                            USDC)  # fmt: skip
_AUTHORIZATION_TYPEHASH: Final = keccak256(encode_type("TransferWithAuthorization", transfer_with_authorization(
    token_name="", token_version="", chain_id=0, token="", authorization={})["types"]).encode())  # fmt: skip
_PAY_TO_WORD: Final = bytes.fromhex(PAY_TO[2:]).rjust(32, b"\0")
_AMOUNT_WORD: Final = AMOUNT.to_bytes(32, "big")

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
    """The payer (lower case) of a well-formed exact EIP-3009 payment for `REQUIREMENT` whose signature recovers to
    the authorization's ``from``, else None."""
    try:
        payment = json.loads(base64.b64decode(header, validate=True))
        accepted, inner = payment["accepted"], payment["payload"]
        authorization, signature = inner["authorization"], bytes.fromhex(inner["signature"].removeprefix("0x"))
        if payment["x402Version"] != 2 or any(accepted[key] != REQUIREMENT[key] for key in _MATCHED):
            return None
        if _word(authorization["to"], 20) != _PAY_TO_WORD or int(authorization["value"]) != AMOUNT:
            return None
        payer = _word(authorization["from"], 20)
        words = (_AUTHORIZATION_TYPEHASH, payer, _PAY_TO_WORD, _AMOUNT_WORD, _uint(authorization["validAfter"]),
                 _uint(authorization["validBefore"]), _word(authorization["nonce"], 32))  # fmt: skip
        digest = keccak256(b"\x19\x01" + _DOMAIN_SEPARATOR + keccak256(b"".join(words)))
        signer = _recover(digest, signature)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, binascii.Error):
        return None
    return "0x" + signer.hex() if signer == payer[12:] else None


def _word(value: str, size: int) -> bytes:
    """The 32-byte ABI word of a ``0x`` hex value of `size` bytes (an address, a bytes32); ValueError if it is not."""
    raw = bytes.fromhex(value.removeprefix("0x")) if value.startswith("0x") else b""
    if len(raw) != size:
        raise ValueError(f"not {size} bytes of 0x hex")
    return raw.rjust(32, b"\0")


def _uint(value: str) -> bytes:
    """The ABI word of a uint256 given as a decimal string (OverflowError out of range)."""
    if not value.isdigit():
        raise ValueError("not a decimal uint")
    return int(value).to_bytes(32, "big")


def _recover(digest: bytes, signature: bytes) -> bytes | None:
    """The address (20 bytes) whose key signed `digest`, or None (coincurve: eth-account would cost the server
    1.2 ms per request, more than any client spends, and every client would wait on it)."""
    if len(signature) != 65 or signature[64] not in (27, 28):
        return None
    public = PublicKey.from_signature_and_message(signature[:64] + bytes((signature[64] - 27,)), digest, hasher=None)
    return keccak256(public.format(compressed=False)[1:])[-20:]


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
