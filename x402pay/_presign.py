"""Speculative pre-signing (opt-in: ``presign=True``, with ``prepay=True``): sign a route's next payment while a
pre-paid request to it is in flight.

A pre-paid request waits one round trip; the network wait is idle CPU. With `presign` on, as a pre-paid request
to a route leaves, the transport starts the route's next payment beside it (the `Ahead` effect: a task on the
event loop, a worker thread for a sync transport): it reserves the amount through the books (the budgets are
checked, and with a ledger the reservation is durable) and only then signs, under a key of its own made up for the
next logical request (booked, as every pre-payment is, under that key plus ``#prepay``). The next fresh request to
the route (one without a caller's ``Idempotency-Key`` and not a repeat) takes that key and that payment: the books
store it (`Books.authorize`, durable before it leaves) and it goes out with the first send, with no signing on the
request's path.

Money rules, as for any payment: a pre-signed payment is used only if the policy, choosing anew for the request,
picks exactly the requirement it was signed for (a new price, a lower ceiling, an untrusted origin: it is released
and the request goes on as without it). It is taken by one request only (taken out of the store under a lock),
goes only to the route it was signed for (the route names its origin), and is used only while it is young: at most
`MAX_AGE` seconds and a quarter of its validity window (which the policy's `max_lifetime` bounds, as always), so
that the server has most of the window to settle it. A pre-signed payment that never leaves is released: when it is
found too old or for other terms, when its origin refuses a pre-payment, and when the transport closes. A process
that dies with one leaves a reservation without a payment, which the ledger's `release_stale` frees (reconcile).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Final

from x402pay import _events, _flow
from x402pay._books import PREPAY_SUFFIX, Books, Hold, new_key
from x402pay._effects import Program, Sign
from x402pay._identifier import payment_identifier
from x402pay._payment import Payment
from x402pay._policy import SpendPolicy
from x402pay._prepay import Route, SharedPrepayments
from x402pay._protocol.models import PaymentRequirements
from x402pay._wallet import Wallet

logger = logging.getLogger(__name__)

#: The longest a pre-signed payment waits for its request, in seconds (and never over a quarter of its window).
MAX_AGE: Final = 60.0


@dataclass(slots=True)
class Presigned:
    """A payment signed ahead for the next request to `route`, under the logical request key `key`: its
    reservation, the payment, the header that carries it, and when (clock seconds) it was signed."""

    key: str
    route: Route
    hold: Hold
    payment: Payment
    header: tuple[str, str]
    signed_at: int

    def fits(self, requirement: PaymentRequirements, now: float) -> bool:
        """Whether it may pay a request for which the policy chose `requirement` at `now`: the same terms, and young
        (see `MAX_AGE`)."""
        signed = self.payment.signed
        window = signed.valid_before - self.signed_at
        same = signed.requirement is requirement or signed.requirement.raw == requirement.raw
        return same and 0 <= now - self.signed_at <= min(MAX_AGE, window / 4)


class Presigner:
    """The payments signed ahead, at most one per route, and the programs that make, hand out and release them."""

    def __init__(
        self, *, books: Books, wallet: Wallet, policy: SpendPolicy, prepayments: SharedPrepayments,
        clock: Callable[[], float], reads_chain: bool,
    ) -> None:  # fmt: skip
        self.books = books
        self._wallet = wallet
        self._policy = policy
        self._prepayments = prepayments
        self._clock = clock
        self._reads_chain = reads_chain
        self._lock = threading.Lock()
        self._ready: dict[Route, Presigned] = {}
        self._signing: set[Route] = set()
        self._closed = False

    def take(self, route: Route) -> Presigned | None:
        """The payment signed ahead for `route`, now this caller's alone (it must use or `release` it)."""
        with self._lock:
            return self._ready.pop(route, None)

    def usable(self, presigned: Presigned | None, requirement: PaymentRequirements | None) -> Program[Presigned | None]:
        """`presigned` if it may pay for `requirement` (what the policy chose for the request, None: nothing),
        else None, after releasing it."""
        if presigned is None or (requirement is not None and presigned.fits(requirement, self._clock())):
            return presigned
        yield from self.release(presigned, "pre-signed, never sent: other terms, or too old")
        return None

    def authorize(
        self, presigned: Presigned, key: str, sent: Mapping[str, str]
    ) -> Program[tuple[Payment, tuple[str, str]]]:
        """Store `presigned` for the request `key` with the headers it is `sent` with (durable before it leaves);
        on failure, release it."""
        payment = presigned.payment
        payment.idempotency_key = key
        try:
            yield from self.books.authorize(presigned.hold, payment, presigned.header, sent)
        except GeneratorExit:
            self.books.let_go(presigned.hold)
            raise
        except BaseException as exc:
            yield from self.books.release(presigned.hold, f"never sent: {type(exc).__name__}")
            raise
        return payment, presigned.header

    def ahead(self, route: Route, challenge: _flow.Challenge, requirement: PaymentRequirements) -> Program[None]:
        """Reserve and sign the next payment of `route` for `requirement` of `challenge` (run beside the request in
        flight); old ones of other routes are released first. Nothing here fails the request: a budget too short,
        a signer that fails, leave the next request to sign for itself."""
        yield from self._release_all(self._expired(), "pre-signed, never sent: too old")
        if (self._reads_chain and _flow.uses_permit2(requirement)) or not self._start(route):
            return
        try:
            presigned = yield from self._sign(route, challenge, requirement)
        except Exception as exc:  # the next request signs for itself; the reservation was released in `_sign`
            logger.debug("no payment signed ahead for %s%s: %s", route[1], route[2], type(exc).__name__)
            presigned = None
        finally:
            with self._lock:
                self._signing.discard(route)
        if presigned is not None and not self._keep(presigned, challenge):
            reason = "pre-signed, never sent: the route changed or the transport closed"
            yield from self._release_all([presigned], reason)

    def dropped(self, origin: str) -> Program[None]:
        """`origin` refused a pre-payment: release what was signed ahead for it."""
        origin = origin.lower()
        with self._lock:
            gone = [self._ready.pop(route) for route in list(self._ready) if route[1] == origin]
        yield from self._release_all(gone, "pre-signed, never sent: the origin refused a pre-payment")

    def close(self) -> Program[None]:
        """The transport closes: release every payment signed ahead; none is kept from now on."""
        with self._lock:
            self._closed = True
            gone, self._ready = list(self._ready.values()), {}
        yield from self._release_all(gone, "pre-signed, never sent: the transport closed")

    def release(self, presigned: Presigned, reason: str) -> Program[None]:
        """Give back the reservation of a payment signed ahead that never left the process."""
        yield from self.books.release(presigned.hold, reason)

    def _sign(
        self, route: Route, challenge: _flow.Challenge, requirement: PaymentRequirements
    ) -> Program[Presigned | None]:
        key = new_key()
        held = yield from self.books.reserve(key + PREPAY_SUFFIX, route[1], requirement)
        if not isinstance(held, Hold):  # a key made up just now is in no book: never a payment to re-send
            return None
        try:
            now = int(self._clock())
            extensions = payment_identifier(challenge.required.extensions, held.key)
            signing = partial(_flow.sign, challenge, requirement, wallet=self._wallet, policy=self._policy,
                              origin=held.origin, now=now, extensions=extensions)  # fmt: skip
            payment, header = yield Sign(signing)
        except GeneratorExit:
            self.books.let_go(held)
            raise
        except BaseException as exc:
            yield from self.books.release(held, f"never sent: {type(exc).__name__}")
            raise
        payment.prepaid = True
        payment.idempotency_key = key
        _events.signed(payment)
        return Presigned(key, route, held, payment, header, now)

    def _start(self, route: Route) -> bool:
        """Mark `route` as being signed ahead; False when it has one ready or signing already, or the transport
        closed."""
        with self._lock:
            if self._closed or route in self._ready or route in self._signing:
                return False
            self._signing.add(route)
            return True

    def _keep(self, presigned: Presigned, challenge: _flow.Challenge) -> bool:
        """Keep `presigned` for its route's next request, unless the transport closed, one is there already, or
        the route is no longer pre-paid on the terms it was signed for."""
        remembered = self._prepayments.memory.challenge_for(presigned.route)
        same = remembered is challenge or (remembered is not None and remembered.required == challenge.required)
        with self._lock:
            if self._closed or not same or presigned.route in self._ready:
                return False
            self._ready[presigned.route] = presigned
            return True

    def _expired(self) -> list[Presigned]:
        now = self._clock()
        with self._lock:
            old = [route for route, presigned in self._ready.items() if not presigned.fits(
                presigned.payment.signed.requirement, now)]  # fmt: skip
            return [self._ready.pop(route) for route in old]

    def _release_all(self, presigned: list[Presigned], reason: str) -> Program[None]:
        for one in presigned:
            try:
                yield from self.release(one, reason)
            except Exception:  # one failed release must not keep the others held; the ledger's reconcile frees it
                logger.info("could not release a payment signed ahead for %s", one.route[1], exc_info=True)
