"""`PaymentSession`: an MCP client session whose ``call_tool`` pays for paid tools, as one more driver of the
payment program (`x402pay._program`).

The program is the HTTP transports' own: policy, budgets and the ledger, one signature per logical call, receipts
as claims checked on chain, fraud marks. This driver performs its ``Send`` as a ``tools/call`` (the payment, when
there is one, at ``params._meta["x402/payment"]``) and turns the result into the program's `Answer` (see
`x402pay.mcp._wire`). A tool call is identified by the tool's name and its arguments: a call repeated after it ended
without an answer (the connection failed, or the tool reported an error), within ``retry_window``, re-sends the
payment it signed rather than signing again; ``idempotency_key`` ties calls together explicitly.

The program's headers (``Idempotency-Key``, the upto ceiling) have no place on MCP and are not sent; the ceiling is
not announced (``announce_ceiling`` is off), so an upto tool asks for its own maximum and the policy's cap decides.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from x402pay._attempt import Call
from x402pay._books import IDEMPOTENCY_KEY
from x402pay._effects import Answer, Close, Delivery, Effect, ReadBody, Send, adrive
from x402pay._engine import Engine, TransportOptions
from x402pay._payment import attach_payment
from x402pay._repeats import fingerprint
from x402pay.mcp._wire import ChallengeBody, answer_of, error_answer, payment_meta

#: The method the program's calls are named by (their route: ``tools/call``, origin, tool name).
TOOLS_CALL = "tools/call"


class PaymentSession:
    """Wraps an MCP client (``mcp.ClientSession`` on mcp 1.x or 2.x, or mcp 2.x's ``mcp.Client``) so that
    `call_tool` pays for paid tools within `policy`, signing with `wallet`.

    `origin` is the name the policy (``SpendPolicy(origins=...)``), the ledger and the trust marks know the server
    by: ``scheme://host[:port]`` of its URL over HTTP, a name of yours such as ``stdio://weather`` over stdio. Other
    keyword arguments are the transports' `TransportOptions` (``ledger``, ``rpc_url``, ``verify``, ...). Every
    other attribute is the wrapped client's (``list_tools``, ``initialize``, ...).
    """

    def __init__(self, client: Any, *, wallet: Any, policy: Any, origin: str, **options: Any) -> None:
        if not callable(getattr(client, "call_tool", None)):
            raise TypeError(f"client must be an MCP ClientSession or Client, not {type(client).__name__}")
        if not isinstance(origin, str) or "://" not in origin:
            raise ValueError(f"origin names the server as scheme://name (e.g. 'https://tools.example'), not {origin!r}")
        if options.get("announce_ceiling"):
            raise ValueError("announce_ceiling: MCP has no place for the upto ceiling; the policy's cap applies")
        self.client = client
        self.origin = origin.rstrip("/")
        self._engine = Engine(wallet=wallet, policy=policy, options={**options, "announce_ceiling": False},
                              asynchronous=True)  # fmt: skip

    @property
    def options(self) -> TransportOptions:
        """The options this session was built with."""
        return self._engine.options

    def __getattr__(self, name: str) -> Any:
        if name == "client":  # not set yet: __init__ failed
            raise AttributeError(name)
        return getattr(self.client, name)

    def __repr__(self) -> str:
        return f"<PaymentSession {self.origin} {self._engine!r}>"

    async def call_tool(
        self, name: str, arguments: dict[str, Any] | None = None, *args: Any, idempotency_key: str | None = None,
        meta: Mapping[str, Any] | None = None, **kwargs: Any,
    ) -> Any:  # fmt: skip
        """Call tool `name`; if it must be paid for, pay once within the policy and call it again with the payment.

        Returns the client's ``CallToolResult``; `x402pay.payment_of(result)` tells how it was paid. Positional and
        other keyword arguments go to the client's ``call_tool`` as they are. Refusals raise as over HTTP
        (`x402pay.SpendCapExceeded`, `x402pay.PaymentRejected`, `x402pay.ReceiptMismatch`, ...).
        """
        headers = {IDEMPOTENCY_KEY: idempotency_key} if idempotency_key else {}
        body = json.dumps(arguments or {}, sort_keys=True, separators=(",", ":"), default=str).encode()
        call = Call(TOOLS_CALL, self.origin, name, headers, fingerprint(TOOLS_CALL, f"{self.origin}/{name}", body))

        async def perform(effect: Effect) -> Any:
            if isinstance(effect, Send):
                given = dict(meta or {})
                paid = given | payment_meta(effect.payment) if effect.payment is not None else given
                return await self._send(name, arguments, args, kwargs, paid or None)
            if isinstance(effect, ReadBody):
                return effect.answer.raw.body if isinstance(effect.answer.raw, ChallengeBody) else b""
            if isinstance(effect, Close):
                return None
            return await self._engine.aperform(effect)

        delivery: Delivery = await adrive(self._engine.program.run(call), perform)
        return _delivered(delivery)

    async def _send(
        self, name: str, arguments: dict[str, Any] | None, args: tuple[Any, ...], kwargs: dict[str, Any],
        meta: dict[str, Any] | None,
    ) -> Answer:  # fmt: skip
        try:
            result = await self.client.call_tool(name, arguments, *args, meta=meta, **kwargs)
        except Exception as exc:
            answer = error_answer(exc)
            if answer is None:
                raise
            return answer
        return answer_of(result)

    async def aclose(self) -> None:
        """Finish background verifications (the wrapped client is yours to close)."""
        await self._engine.aclose()

    async def __aenter__(self) -> PaymentSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _delivered(delivery: Delivery) -> Any:
    raw = delivery.answer.raw
    result = raw.source if isinstance(raw, ChallengeBody) else raw
    if isinstance(result, BaseException):  # a JSON-RPC 402 the program passed through (not x402 after all)
        raise result
    if delivery.payment is not None:
        attach_payment(result, delivery.payment)
    return result
