"""PaymentAdapter: a `requests` transport adapter that pays x402 challenges, a driver of the one payment program.

    session = requests.Session()
    session.mount("https://", x402pay.PaymentAdapter(wallet=wallet, policy=policy))

The request body is made replayable (a generator or file body is read once) so the paid retry sends it byte for
byte; the answer's body stays unread (``stream=True`` works) and passes through the receipt tap when it may carry
one. `x402pay.payment_of(response)` tells what was paid.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any, Final
from urllib.parse import urlsplit

from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter

from x402pay._attempt import Call
from x402pay._books import IDEMPOTENCY_KEY
from x402pay._effects import Answer, Close, Delivery, Effect, ReadBody, Send, drive
from x402pay._engine import Engine, TransportOptions
from x402pay._payment import PAYMENT_ATTRIBUTE
from x402pay._protocol.headers import MAX_AMOUNT
from x402pay._repeats import RETRY_MARK, fingerprint
from x402pay._streams import ReceiptTap, tapped

_CHUNK: Final = 64 * 1024


class PaymentAdapter(HTTPAdapter):
    """A requests adapter that pays x402 challenges within `policy`, signing with `wallet` (a `Wallet`, or any
    eth-account signer). Other keyword arguments are the `TransportOptions`, checked here. Mount it on a
    ``requests.Session`` for the URL prefixes it should pay."""

    def __init__(self, *, wallet: Any, policy: Any, **options: Any) -> None:
        super().__init__()
        self._engine = Engine(wallet=wallet, policy=policy, options=options, asynchronous=False)

    @property
    def options(self) -> TransportOptions:
        """The options this adapter was built with."""
        return self._engine.options

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._engine!r}>"

    def send(self, request: PreparedRequest, *args: Any, **kwargs: Any) -> Response:
        """Send `request`; on an x402 challenge, pay once and return the paid response."""
        _make_replayable(request)
        perform = partial(self._perform, request, args, kwargs)
        delivery: Delivery = drive(self._engine.program.run(_call_of(request)), perform)
        response: Response = delivery.answer.raw
        if delivery.body is not None:  # read while looking for a challenge: handed over as read
            response._content, response._content_consumed = delivery.body, True
        if delivery.payment is not None:
            setattr(response, PAYMENT_ATTRIBUTE, delivery.payment)
        if delivery.tap is not None:
            record = self._engine.program.record
            response.raw = _TappedRaw(response.raw, delivery.tap, lambda p: drive(record(p), self._engine.perform))
        return response

    def _perform(self, request: PreparedRequest, args: tuple[Any, ...], kwargs: dict[str, Any], effect: Effect) -> Any:
        if isinstance(effect, Send):
            request.headers.update(effect.headers)  # kept on the request: a redirect carries them
            for name in effect.strip:
                request.headers.pop(name, None)
            sent = request
            if effect.payment is not None:
                sent = request.copy()
                sent.headers[effect.payment[0]] = effect.payment[1]
            response = super().send(sent, *args, **kwargs)
            return Answer(response.status_code, response.headers, response)
        if isinstance(effect, Close):
            return _drain_and_close(effect.answer.raw, _CHUNK)
        if isinstance(effect, ReadBody):
            return _read(effect.answer.raw, effect.limit)
        return self._engine.perform(effect)

    def close(self) -> None:
        """Close the connection pools and finish background verifications."""
        super().close()
        self._engine.close()


def _call_of(request: PreparedRequest) -> Call:
    parts = urlsplit(str(request.url))
    host = parts.netloc.rpartition("@")[2]  # never the userinfo
    # The program reads only these of the caller's headers; requests allows bytes values, it wants text.
    given = {name: request.headers.get(name) for name in (IDEMPOTENCY_KEY, MAX_AMOUNT, RETRY_MARK)}
    headers = {name: _as_text(value) for name, value in given.items() if value is not None}
    method = str(request.method)
    body = _as_bytes(request.body) if isinstance(request.body, bytes | str) else b""
    print_ = fingerprint(method, str(request.url), body)
    return Call(method, f"{parts.scheme}://{host}", parts.path or "/", headers, print_)


def _make_replayable(request: PreparedRequest) -> None:
    """Read a streamed body (generator, file) into bytes, so that the paid retry can send it again."""
    body = request.body
    if body is None or isinstance(body, bytes | str):
        return
    data = body.read() if hasattr(body, "read") else b"".join(_as_bytes(part) for part in body)
    request.body = _as_bytes(data)
    request.headers.pop("Transfer-Encoding", None)
    request.headers["Content-Length"] = str(len(request.body))


def _as_text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _as_bytes(part: bytes | str) -> bytes:
    return part.encode() if isinstance(part, str) else part


def _read(response: Response, limit: int) -> bytes:
    """Up to `limit` + 1 bytes of the (decoded) body; a longer body is closed unread past that."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.raw.stream(_CHUNK, decode_content=True):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            response.close()
            break
    return b"".join(chunks)[: limit + 1]


def _drain_and_close(response: Response, limit: int) -> None:
    """Read a little of what is left, so that the connection can serve the retry, then release it."""
    raw = response.raw
    if raw is not None and not raw.closed:
        raw.read(limit, decode_content=False)
    response.close()


class _TappedRaw:
    """A paid response's raw body, read through a `ReceiptTap` (``Response.iter_content`` reads `stream`)."""

    def __init__(self, raw: Any, tap: ReceiptTap, hook: Any) -> None:
        self._raw = raw
        self._chunks = tapped(raw.stream(_CHUNK, decode_content=True), tap, hook)
        self._left = b""

    def stream(self, amt: int = _CHUNK, decode_content: bool | None = None) -> Iterator[bytes]:
        """The tapped body (already decoded; `amt` and `decode_content` as in urllib3, for requests' calls)."""
        if self._left:
            left, self._left = self._left, b""
            yield left
        yield from self._chunks

    def read(self, amt: int | None = None, decode_content: bool | None = None) -> bytes:
        """Up to `amt` bytes of the tapped body (all of it for None)."""
        data = self._left
        for chunk in self._chunks:
            data += chunk
            if amt is not None and len(data) >= amt:
                break
        if amt is None:
            self._left = b""
            return data
        data, self._left = data[:amt], data[amt:]
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)  # close, release_conn, headers, ... as the raw response has them
