"""How a paid response leaves: settled after the app has produced it, with the receipt attached.

- A plain response is held until the app's last body chunk, then settled: on success it goes out with
  ``PAYMENT-RESPONSE`` (v1: ``X-PAYMENT-RESPONSE``) and ``X-Receipt``; on failure the client gets a 402 instead.
- An SSE response (``text/event-stream``) streams as it is produced; the ``data: [DONE]`` frame (and anything
  after it) is held back, the payment settles, and ``event: compose.receipt`` (or ``compose.error``) goes first.
- An error response (status >= 400) passes through and nothing is charged.
- A settlement sent but not confirmed within the facilitator's wait (``settlement_pending``): a plain response
  becomes a 402 whose ``PAYMENT-RESPONSE`` carries the hash in ``transaction`` (the official facilitators'
  form: the payer may still be charged); a stream, whose content went out, ends with a ``compose.receipt`` that
  says ``settlementStatus: pending``. A settlement, once begun, runs to its end even if the client leaves.
- A stream the app stops before its end (the client left, or the app failed) is still settled, deliberately
  (`SettlingSend.settle_cut`): what an upto app reported (nothing reported: 0, no transaction), an exact price
  in full, since its content had begun.

Paid answers say ``Cache-Control: private``; the 402s, ``no-store`` (as the official servers do).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, Literal

import anyio
from starlette.datastructures import MutableHeaders
from starlette.types import Message, Send

from x402pay._protocol.codec import encode_header
from x402pay._protocol.headers import PAYMENT_REQUIRED, PAYMENT_RESPONSE, X_PAYMENT_RESPONSE
from x402pay._protocol.models import PaymentRequired, SettleResponse
from x402pay.server._receipts import (
    METERED,
    PaidRequest,
    make_compose_receipt,
    settlement_error,
    sse_event,
    x_receipt_header,
)
from x402pay.server._settlements import SETTLEMENT_PENDING

logger = logging.getLogger("x402pay.server")

#: Response header by which an app that does not use `PaidRequest.charge` reports an upto amount (stripped).
OVERRIDES_HEADER: Final = "settlement-overrides"
_FRAME_ENDS: Final = (b"\r\n\r\n", b"\n\n", b"\r\r")
_OVERRIDES: Final = OVERRIDES_HEADER.encode()
_REPLACED_WHEN_STREAMED: Final = (b"content-length", b"cache-control")
#: ``Cache-Control`` of every 402: a challenge or a refusal is for one request, never to be reused.
NO_STORE: Final = "no-store"

Settle = Callable[[PaidRequest], Awaitable[SettleResponse]]


class DoneHoldback:
    """Splits an SSE byte stream into whole frames and holds back the ``data: [DONE]`` frame and what follows."""

    def __init__(self) -> None:
        self._pending = b""
        self._done: bytes | None = None

    def feed(self, chunk: bytes) -> bytes:
        """The complete frames of `chunk` (with what was pending) that may go out now."""
        if self._done is not None:
            self._done += chunk
            return b""
        if not self._pending and _one_frame(chunk):  # what most servers write: one whole frame per chunk
            return chunk
        data, ready = self._pending + chunk, []
        while (end := _frame_end(data)) > 0:
            frame, data = data[:end], data[end:]
            if frame.strip() in (b"data: [DONE]", b"data:[DONE]"):
                self._done, data = frame + data, b""
                break
            ready.append(frame)
        self._pending = data
        return b"".join(ready)

    def finish(self, inserted: bytes) -> bytes:
        """The rest of the stream with `inserted` placed before ``[DONE]`` (or at the end, if there was none)."""
        pending = self._pending
        if pending.strip() and _frame_end(pending) < 0:
            pending += b"\n\n"
        return pending + inserted + (self._done or b"")


def _one_frame(chunk: bytes) -> bool:
    """Whether `chunk` is exactly one frame (ended by its first blank line, ``\\n\\n``) and not ``[DONE]``."""
    return (
        chunk.find(b"\n\n") == len(chunk) - 2 > 0
        and b"\r" not in chunk
        and chunk.strip() not in (b"data: [DONE]", b"data:[DONE]")
    )


def _frame_end(data: bytes) -> int:
    ends = [index + len(end) for end in _FRAME_ENDS if (index := data.find(end)) >= 0]
    return min(ends) if ends else -1


class SettlingSend:
    """The `send` the app gets: it settles the payment once the app's response is complete, then delivers it."""

    def __init__(self, send: Send, paid: PaidRequest, settle: Settle, *, version: int) -> None:
        self._send = send
        self._paid = paid
        self._settle = settle
        self._version = version
        self._mode: Literal["pending", "buffer", "stream", "passthrough"] = "pending"
        self._start: Message = {}
        self._body: list[bytes] = []
        self._tap = DoneHoldback()
        self.settlement: SettleResponse | None = None

    @property
    def keeps_claim(self) -> bool:
        """Whether the payment is spent for this server: content was streamed (settled, pending or not), or it
        settled. A plain answer withheld for a pending settlement is not: the payment may be presented again, to
        learn how its transaction ended and get what it paid for; a stream already went out, and is not served
        twice for one payment.
        """
        return self._mode == "stream" or bool(self.settlement and self.settlement.success)

    async def settle_cut(self) -> None:
        """Settle a stream that stopped before its end, if one did (see the module docstring)."""
        if self._mode != "stream" or self.settlement is not None:
            return
        if self._paid.scheme in METERED and self._paid.charged is None:
            self._paid.charged = 0
        settlement = await self._settle_once()
        logger.info("a paid stream stopped before its end; settled %s: %s", self._paid.amount_due, settlement.success)

    async def __call__(self, message: Message) -> None:
        """Take one ASGI message from the app."""
        if message["type"] == "http.response.start":
            await self._on_start(message)
        elif message["type"] == "http.response.body" and self._mode in ("buffer", "stream"):
            await self._on_body(message)
        else:
            await self._send(message)

    async def _on_start(self, message: Message) -> None:
        start = _Start(message.get("headers", ()))
        self._apply_overrides(start.overrides)
        message = {**message, "headers": start.headers}
        if message["status"] >= 400:
            self._mode = "passthrough"
            logger.debug("the app answered %s: passing through, nothing charged", message["status"])
        elif start.streams:
            self._mode = "stream"
            message["headers"] = start.streamed()
        else:
            self._mode, self._start = "buffer", message
            return
        await self._send(message)

    async def _on_body(self, message: Message) -> None:
        chunk, more = message.get("body", b""), message.get("more_body", False)
        if self._mode == "buffer":
            self._body.append(chunk)
            if not more:
                await self._finish_buffered()
            return
        ready = self._tap.feed(chunk)
        if ready:
            await self._send({"type": "http.response.body", "body": ready, "more_body": True})
        if not more:
            await self._finish_stream()

    async def _finish_buffered(self) -> None:
        settlement = await self._settle_once()
        if not settlement.success:
            await self._send_failure(settlement)
            return
        headers = MutableHeaders(raw=self._start["headers"])
        headers[self._response_header] = encode_header(_response_form(settlement, self._paid))
        _private(headers)
        headers["x-receipt"] = x_receipt_header(make_compose_receipt(self._paid, settlement))
        if settlement.transaction:
            headers["x-transaction-hash"] = settlement.transaction
        await self._send(self._start)
        await self._send({"type": "http.response.body", "body": b"".join(self._body)})

    async def _finish_stream(self) -> None:
        settlement = await self._settle_once()
        if settlement.success or settlement.error_reason == SETTLEMENT_PENDING:
            frame = sse_event("compose.receipt", make_compose_receipt(self._paid, settlement))
        else:
            frame = sse_event("compose.error", settlement_error(settlement))
        await self._send({"type": "http.response.body", "body": self._tap.finish(frame)})

    async def _send_failure(self, settlement: SettleResponse) -> None:
        body = json.dumps(
            {"x402Version": self._version, "error": settlement.error_reason, "errorMessage": settlement.error_message}
        ).encode()
        headers = MutableHeaders()
        headers["content-type"] = "application/json"
        headers["content-length"] = str(len(body))
        headers["cache-control"] = NO_STORE
        headers[self._response_header] = encode_header(settlement)
        await self._send({"type": "http.response.start", "status": 402, "headers": headers.raw})
        await self._send({"type": "http.response.body", "body": body})

    async def _settle_once(self) -> SettleResponse:
        if self.settlement is None:  # shielded: a client that leaves must not cut a settlement half-way
            self.settlement = await _shielded(self._settle, self._paid)
        return self.settlement

    def _apply_overrides(self, value: str | None) -> None:
        if value is None or self._paid.scheme not in METERED or self._paid.charged is not None:
            return
        amount = _override_amount(value)
        if amount is None:
            logger.info("ignoring a malformed Settlement-Overrides header from the app")
        else:
            self._paid.charged = amount  # not clamped: more than the maximum fails settlement, visibly

    @property
    def _response_header(self) -> str:
        return PAYMENT_RESPONSE if self._version == 2 else X_PAYMENT_RESPONSE


class _Start:
    """The app's response headers read in one pass: `headers` without ``Settlement-Overrides`` (whose first value
    is `overrides`), whether the answer `streams` (SSE), and the headers a stream goes out with (`streamed`)."""

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.overrides: str | None = None
        content_type: bytes | None = None
        self._cache_control: bytes | None = None
        for name, value in raw:
            lowered = name.lower()
            if lowered == _OVERRIDES:
                self.overrides = value.decode("latin-1") if self.overrides is None else self.overrides
                continue
            if lowered == b"content-type" and content_type is None:
                content_type = value
            elif lowered == b"cache-control" and self._cache_control is None:
                self._cache_control = value
            self.headers.append((name, value))
        self.streams = content_type is not None and content_type.startswith(b"text/event-stream")

    def streamed(self) -> list[tuple[bytes, bytes]]:
        """The headers without ``Content-Length`` (a stream is sent as it comes), and marked ``private``."""
        existing = self._cache_control
        if existing is not None and b"private" in (part.strip().lower() for part in existing.split(b",")):
            return [(name, value) for name, value in self.headers if name.lower() != b"content-length"]
        marked = b"private" if not existing else existing + b", private"
        headers = [(b"cache-control", marked)]  # in place of the app's (there is one at most, then)
        headers += [(name, value) for name, value in self.headers if name.lower() not in _REPLACED_WHEN_STREAMED]
        return headers


def _response_form(settlement: SettleResponse, paid: PaidRequest) -> dict[str, Any]:
    """``PAYMENT-RESPONSE``'s JSON; a channel voucher, which moves nothing on chain, says ``amount: ""`` (the SDKs')."""
    form = settlement.to_wire()
    if paid.scheme == "batch-settlement" and settlement.amount is None and not settlement.transaction:
        form["amount"] = ""
    return form


async def _shielded(settle: Settle, paid: PaidRequest) -> SettleResponse:
    """`settle(paid)`, protected from the cancellation of the task that awaits it."""
    result: list[SettleResponse] = []
    with anyio.CancelScope(shield=True):
        result.append(await settle(paid))
    return result[0]


def _private(headers: MutableHeaders) -> None:
    """Mark a paid answer ``private``: a shared cache must never hand it to someone who did not pay."""
    existing = headers.get("cache-control")
    directives = [part.strip().lower() for part in (existing or "").split(",")]
    if "private" not in directives:
        headers["cache-control"] = f"{existing}, private" if existing else "private"


def _override_amount(value: str) -> int | None:
    try:
        data: Any = json.loads(value)
    except ValueError:
        return None
    amount = data.get("amount") if isinstance(data, dict) else None
    if isinstance(amount, str) and amount.isascii() and amount.isdigit() and len(amount) <= 78:
        return int(amount)
    return None


async def send_challenge(send: Send, challenge: PaymentRequired, error: str, message: str | None = None) -> None:
    """Refuse with a 402: `challenge` with `error` (and `message`), in the header and the JSON body."""
    refusal = challenge.model_copy(update={"error": error})
    body = refusal.to_wire() | ({"errorMessage": message} if message else {})
    await send_json(send, 402, body, {PAYMENT_REQUIRED: encode_header(refusal), "cache-control": NO_STORE})


async def send_json(send: Send, status: int, data: dict[str, Any], extra: Mapping[str, str] | None = None) -> None:
    """Answer `status` with the JSON `data` (and `extra` headers)."""
    body = json.dumps(data, separators=(",", ":")).encode()
    headers = MutableHeaders({"content-type": "application/json", "content-length": str(len(body)), **(extra or {})})
    await send({"type": "http.response.start", "status": status, "headers": headers.raw})
    await send({"type": "http.response.body", "body": body})
