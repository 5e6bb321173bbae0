"""What the sync and async payment transports share: options, the inner transport per library, the I/O-free
steps around signing, and the bookkeeping hooks. `x402pay.transport` drives these with real I/O."""

from __future__ import annotations

import importlib
import inspect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from x402pay import flow
from x402pay.allowance import GAS_SPONSORING, gas_sponsoring_extension
from x402pay.bookkeeping import Books, Callback, Verifier, VerifyMode
from x402pay.errors import ChainUnavailable, ChallengeError, PaymentError, PaymentRejected
from x402pay.payment import PAYMENT_EXTENSION, Payment, PaymentStatus
from x402pay.policy import SpendPolicy
from x402pay.prepay import KEY_SUFFIX, Prepayments, asks_for_signed, route_of
from x402pay.protocol.codec import MAX_BODY_BYTES
from x402pay.protocol.headers import MAX_AMOUNT
from x402pay.protocol.models import PaymentRequirements
from x402pay.streams import ReceiptTap
from x402pay.trust import TrustStore
from x402pay.wallet import Wallet

_DROPPED_ON_REBUILD = frozenset({"content-encoding", "content-length", "transfer-encoding"})


@dataclass(frozen=True)
class TransportOptions:
    """How a payment transport behaves beyond its policy (the keyword arguments of both transports).

    - `announce_ceiling`: send ``x-x402-max-amount-wei`` (the cap, lowered by the budgets' room) so that upto
      servers ask for no more; the paid retry carries the identical value.
    - `keep_receipt_frames`: leave vendor receipt/error frames in streams (by default they are removed, so
      standard SSE parsers such as the OpenAI SDK's see only their own frames).
    - `on_receipt` / `on_verified`: called with the `Payment` when its receipt lands / when it was checked.
    - `rpc_url`: a JSON-RPC endpoint of the payment's chain: the Permit2 allowance is checked before signing, and
      receipts can be verified.
    - `ledger`: an `x402pay.ledger.Ledger`: budgets held before signing, one signature per ``Idempotency-Key``.
    - `trust`: where origins caught lying are marked (default: in memory).
    - `verify`: ``"off"``, ``"inline"`` (a receipt is checked on chain before the answer or the stream's end
      reaches you; fraud raises `ReceiptMismatch`) or ``"background"`` (a worker thread checks; see
      `on_verified`). Needs `rpc_url`. `confirmations`: how deep the settlement must be.
    - `clock`: the time source for authorization windows.
    - `prepay`: pay on the first request to a route this transport paid recently (one round trip instead of two;
      see `x402pay.prepay`). `prepay_ttl`: how many seconds a route's challenge stays usable for that.
    """

    announce_ceiling: bool = True
    keep_receipt_frames: bool = False
    on_receipt: Callback | None = None
    on_verified: Callback | None = None
    rpc_url: str | None = None
    ledger: Any = None
    trust: TrustStore | None = None
    verify: VerifyMode = "off"
    confirmations: int = 0
    clock: Callable[[], float] = time.time
    prepay: bool = False
    prepay_ttl: float = 300.0


@dataclass(frozen=True)
class Attempt:
    """One logical request on its way: its idempotency key, its origin and the ceiling it announced."""

    key: str
    origin: str
    ceiling: int | None

    @property
    def prepay_key(self) -> str:
        """The key its pre-payment is booked under (the reactive payment, if any, uses `key`)."""
        return self.key + KEY_SUFFIX


def origin_of(url: Any) -> str:
    """``scheme://host[:port]`` of an httpx or httpx2 URL: the unit a payment header is bound to."""
    return f"{url.scheme}://{url.netloc.decode('ascii')}"


class PaymentCore:
    """Configuration and the I/O-free steps that both transports share."""

    def __init__(self, *, wallet: Wallet, policy: SpendPolicy, inner: Any = None, **options: Any) -> None:
        self.wallet = wallet
        self.policy = policy
        self.options = TransportOptions(**options)
        if self.options.verify != "off" and self.options.rpc_url is None:
            raise ValueError(f"verify={self.options.verify!r} needs rpc_url: the chain to check receipts on")
        if inspect.iscoroutinefunction(getattr(self.options.ledger, "reserve", None)):
            raise TypeError(
                "ledger: pass a Ledger (both transports take the sync one; the async transport calls it in a worker "
                "thread), not an AsyncLedger"
            )
        self._inner = inner
        self._default_inners: dict[str, Any] = {}
        self._lock = threading.Lock()
        verifier = (
            Verifier(self.options.rpc_url, self.options.verify, self.options.confirmations)
            if self.options.verify != "off" and self.options.rpc_url is not None
            else None
        )
        trust = self.options.trust if self.options.trust is not None else TrustStore()
        self.books = Books(self.options.ledger, trust, verifier, self.options.on_receipt, self.options.on_verified)
        self.prepayments = Prepayments(self.options.prepay_ttl) if self.options.prepay else None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} wallet={self.wallet.address} max_per_request={self.policy.max_per_request}>"

    def _inner_for(self, request: Any, factory: str) -> Any:
        if self._inner is not None:
            return self._inner
        library = type(request).__module__.split(".", 1)[0]  # "httpx" or "httpx2": same API, separate types
        with self._lock:
            if library not in self._default_inners:
                self._default_inners[library] = getattr(importlib.import_module(library), factory)()
            return self._default_inners[library]

    def _inners(self) -> list[Any]:
        return [self._inner] if self._inner is not None else list(self._default_inners.values())

    def _announce(self, request: Any, room: int | None) -> int | None:
        """Put the ceiling in ``x-x402-max-amount-wei``; None when not announced (and the caller set none)."""
        given = request.headers.get(MAX_AMOUNT)
        if not self.options.announce_ceiling and given is None:
            return None  # the ledger's reservation still checks the budgets
        ceiling = flow.announced_ceiling(self.policy, given, room)
        request.headers[MAX_AMOUNT] = str(ceiling)
        return ceiling

    def _choose(self, challenge: flow.Challenge, origin: str, ceiling: int | None) -> PaymentRequirements:
        self.books.check_trust(origin)
        return flow.choose(challenge, policy=self.policy, origin=origin, ceiling=ceiling)

    def _keys(self, attempt: Attempt, prepaid: bool) -> tuple[str, str | None, Attempt | None]:
        """The key a payment is booked under, the logical request's other key (None without pre-payment: there is
        none), and the attempt to fall back to when a pre-payment is refused."""
        if prepaid:
            return attempt.prepay_key, attempt.key, attempt
        return attempt.key, attempt.prepay_key if self.prepayments is not None else None, None

    def _prepayable(self, request: Any, attempt: Attempt) -> tuple[flow.Challenge, PaymentRequirements] | None:
        """The remembered challenge of the request's route and the option the policy takes from it now, if any."""
        if self.prepayments is None:
            return None
        route = route_of(request, attempt.origin)
        challenge = self.prepayments.challenge_for(route)
        if challenge is None:
            return None
        try:
            return challenge, self._choose(challenge, attempt.origin, attempt.ceiling)
        except PaymentError:  # the policy, the ceiling or the trust marks changed: pay reactively, if at all
            self.prepayments.forget(route)
            return None

    def _remember(self, request: Any, challenge: flow.Challenge, payment: Payment) -> None:
        """After a paid answer: remember the route's challenge for pre-payment, unless the payment failed."""
        if self.prepayments is not None and payment.status is not PaymentStatus.FAILED:
            self.prepayments.remember(route_of(request, payment.origin), challenge)

    def _after_refusal(
        self, rejected: PaymentRejected, payment: Payment, headers: Any, body: bytes | None
    ) -> flow.Challenge:
        """A pre-payment was answered with a 402: the new challenge to pay reactively, or `rejected` re-raised
        when there is none or it asks for exactly what was signed."""
        assert self.prepayments is not None  # noqa: S101 - only pre-payments fall back
        self.prepayments.refused(payment.origin)
        try:
            challenge = flow.decode_challenge(headers, body)
        except ChallengeError as exc:
            raise rejected from exc
        if challenge is None or asks_for_signed(challenge, payment.signed.requirement):
            raise rejected
        return challenge

    def _sign(
        self, challenge: flow.Challenge, requirement: PaymentRequirements, origin: str, extensions: dict[str, Any]
    ) -> tuple[Payment, tuple[str, str]]:
        return flow.sign(
            challenge, requirement, wallet=self.wallet, policy=self.policy, origin=origin,
            now=int(self.options.clock()), extensions=extensions,
        )  # fmt: skip

    def _sponsoring(self, challenge: flow.Challenge, requirement: PaymentRequirements, nonce: int) -> dict[str, Any]:
        deadline = int(self.options.clock()) + min(requirement.max_timeout_seconds, self.policy.max_lifetime)
        extension = gas_sponsoring_extension(
            self.wallet, requirement, challenge.required.extensions or {}, nonce=nonce, deadline=deadline
        )
        return {GAS_SPONSORING: extension}

    @staticmethod
    def _retry(request: Any, header: tuple[str, str]) -> Any:
        """The one paid retry: the same request (same URL, same buffered body) plus the payment header."""
        headers = request.headers.copy()
        headers[header[0]] = header[1]
        return type(request)(
            request.method, request.url, headers=headers, stream=request.stream, extensions=request.extensions
        )

    def _tap(self, payment: Payment, response: Any) -> ReceiptTap | None:
        """Attach `payment` to the paid `response`; a tap when a receipt may be inside its body."""
        response.extensions[PAYMENT_EXTENSION] = payment
        content_type = response.headers.get("content-type", "").lower()
        sse = "text/event-stream" in content_type
        compressed = response.headers.get("content-encoding", "identity").lower() not in ("identity", "")
        wants_body = "json" in content_type and payment.receipt is None
        if compressed or not (sse or wants_body):
            return None
        return ReceiptTap(payment, sse=sse, keep_frames=self.options.keep_receipt_frames)


def rebuilt(response: Any, body: bytes) -> Any:
    """A copy of a response whose body was consumed while looking for a challenge, with that (decoded) body."""
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _DROPPED_ON_REBUILD]
    return type(response)(response.status_code, headers=headers, content=body, extensions=response.extensions)


def chain_unavailable(exc: Exception) -> ChainUnavailable:
    """The error for an RPC failure during the Permit2 allowance check (named by type: messages may hold URLs)."""
    return ChainUnavailable(f"the Permit2 allowance could not be read from rpc_url ({type(exc).__name__}); nothing "
                            "was signed")  # fmt: skip


def too_large() -> ChallengeError:
    """The error for a 402 body larger than anything a challenge needs."""
    return ChallengeError(f"402 body is over the {MAX_BODY_BYTES} byte limit")
