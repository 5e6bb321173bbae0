"""Pre-payment (opt-in): pay on the first request to a route whose price this transport saw recently.

Reactive payment costs two round trips: the request, its 402, and the paid retry. With ``prepay=True`` a
transport remembers the challenge of each route (method, origin and path; not the query) that it paid and the
server accepted, and for the next request to that route signs a fresh payment from the remembered challenge and
sends it with the first request. Each pre-payment passes the policy and the budget again (the remembered challenge
is chosen from under the current ceiling, and the origin's trust read again; a frozen policy's answer for one
challenge, origin and ceiling is the same every time, so `KeptChoices` keeps it), and each is signed anew.

A server that answers a pre-payment with a 402 did not take it. If the new challenge asks for exactly what was
signed, the refusal stands (`PaymentRejected`, no second signature). If it asks for something else (the price
changed), the route is forgotten and the request is paid reactively, once, under a key of its own. The refused
pre-payment stays held in the ledger (it may still settle until it expires), and pre-payment stops for that origin
for `BAR_SECONDS`: a server cannot keep refusing pre-payments to collect extra signatures.

With a ledger, what a transport learns is shared: the challenges servers accepted are kept in the ledger (see
`x402pay.ledger.Ledger.remember_route`) and a transport reads the fresh ones once, before its first pre-payment, so a
restarted bot, or another process of the fleet, pre-pays a route at once instead of paying it reactively again. A
refusal makes the ledger forget the origin's routes too.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Final

from x402pay._books import Books
from x402pay._effects import Program
from x402pay._flow import Challenge, challenge_from_wire, choose, decode_challenge
from x402pay._payment import Payment
from x402pay._policy import SpendPolicy
from x402pay._protocol.models import PaymentRequirements
from x402pay.errors import ChallengeError, PaymentRejected

#: How many routes a transport remembers for pre-payment (least recently used are forgotten first).
MAX_ROUTES: Final = 1024
#: How long pre-payment stays off for an origin that refused one.
BAR_SECONDS: Final = 3600.0
#: How many of the policy's choices `KeptChoices` keeps; all are forgotten past that.
KEPT_CHOICES: Final = 1024

Route = tuple[str, str, str]

logger = logging.getLogger(__name__)


def asks_for_signed(challenge: Challenge, signed: PaymentRequirements) -> bool:
    """Whether `challenge` offers exactly the requirement that was signed (a refusal on the server's own terms)."""
    return any(option.raw == signed.raw for option in challenge.requirements.values())


def challenge_after_refusal(
    rejected: PaymentRejected, payment: Payment, headers: Mapping[str, str], body: bytes | None
) -> Challenge:
    """A pre-payment was answered with a 402 (`headers`, and `body` when read): the new challenge to pay
    reactively, or `rejected` re-raised when there is none or it asks for exactly what was signed."""
    try:
        challenge = decode_challenge(headers, body)
    except ChallengeError as exc:
        raise rejected from exc
    if challenge is None or asks_for_signed(challenge, payment.signed.requirement):
        raise rejected
    return challenge


class KeptChoices:
    """What a frozen policy chooses from each remembered challenge, per origin and ceiling, chosen once: a challenge
    never changes, so the answer for one challenge object stays the same. (Not for books with budgets, which change;
    a refusal is not kept.)"""

    def __init__(self, policy: SpendPolicy) -> None:
        self._policy = policy
        # The challenge is kept beside its choice so that the id of one gone from memory is never taken for another's.
        self._kept: dict[tuple[int, str, int | None], tuple[Challenge, tuple[int, PaymentRequirements]]] = {}

    def choose(self, challenge: Challenge, origin: str, ceiling: int | None) -> tuple[int, PaymentRequirements]:
        """The policy's choice from `challenge` for `origin` under `ceiling` (see `x402pay._flow.choose`)."""
        key = (id(challenge), origin, ceiling)
        kept = self._kept.get(key)
        if kept is not None and kept[0] is challenge:
            return kept[1]
        choice = choose(challenge, policy=self._policy, origin=origin, ceiling=ceiling)
        if len(self._kept) >= KEPT_CHOICES:
            self._kept.clear()
        self._kept[key] = (challenge, choice)
        return choice


class Prepayments:
    """The routes a transport may pre-pay, with when each challenge was seen; thread-safe, bounded."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._routes: OrderedDict[Route, tuple[Challenge, float]] = OrderedDict()
        self._barred: dict[str, float] = {}
        self._kept: dict[Route, float] = {}  # when each route's challenge was last handed to the books to keep
        self._loading = True

    def first_to_load(self) -> bool:
        """True once: the caller then reads the routes the books remember and `load`s them."""
        with self._lock:
            loading, self._loading = self._loading, False
            return loading

    def load(self, route: Route, challenge: Challenge, age: float) -> None:
        """Take a route the books remember, seen `age` seconds ago (what this transport saw itself wins)."""
        now = self._clock()
        with self._lock:
            known = route in self._routes or len(self._routes) >= MAX_ROUTES
            if known or age > self.ttl or self._barred.get(route[1], now) > now:
                return
            self._routes[route] = (challenge, now - age)
            self._kept[route] = now - age
            self._routes.move_to_end(route, last=False)

    def challenge_for(self, route: Route) -> Challenge | None:
        """The remembered challenge of `route`, if it is fresh and its origin is not barred."""
        now = self._clock()
        with self._lock:
            if self._barred.get(route[1], now) > now:
                return None
            seen = self._routes.get(route)
            if seen is None or now - seen[1] > self.ttl:
                self._routes.pop(route, None)
                self._kept.pop(route, None)
                return None
            self._routes.move_to_end(route)
            return seen[0]

    def remember(self, route: Route, challenge: Challenge) -> bool:
        """Note that the server of `route` accepted a payment for `challenge` just now; True when the books should
        keep it too (a new or changed price, or one they last kept over a quarter of the ttl ago, from an origin that
        has not refused a pre-payment here)."""
        now = self._clock()
        with self._lock:
            seen = self._routes.get(route)
            self._routes[route] = (challenge, now)
            self._routes.move_to_end(route)
            while len(self._routes) > MAX_ROUTES:
                self._kept.pop(self._routes.popitem(last=False)[0], None)
            if self._barred.get(route[1], now) > now:  # the books learn nothing from an origin that refused one
                return False
            same = seen is not None and (seen[0] is challenge or seen[0].required == challenge.required)
            if same and now - self._kept.get(route, -math.inf) <= self.ttl / 4:
                return False
            self._kept[route] = now
            return True

    def forget(self, route: Route) -> None:
        """Stop pre-paying `route` (its challenge no longer passes the policy)."""
        with self._lock:
            self._routes.pop(route, None)
            self._kept.pop(route, None)

    def refused(self, origin: str) -> None:
        """An origin answered a pre-payment with a 402: forget its routes and bar it for `BAR_SECONDS`."""
        origin = origin.lower()
        with self._lock:
            self._barred[origin] = self._clock() + BAR_SECONDS
            for route in [route for route in self._routes if route[1] == origin]:
                del self._routes[route]
                self._kept.pop(route, None)
            if len(self._barred) > MAX_ROUTES:
                now = self._clock()
                self._barred = {name: until for name, until in self._barred.items() if until > now}


class SharedPrepayments:
    """`Prepayments` with the books behind them: routes the ledger remembers are read once, before the first
    pre-payment; a route whose server accepted a payment is kept there too, and a refusal forgets its origin's.
    The ledger's part is a hint, never a condition: when it fails, pre-payment goes on from memory."""

    def __init__(self, memory: Prepayments, books: Books, clock: Callable[[], float]) -> None:
        self.memory = memory
        self._books = books
        self._clock = clock
        self._shares = books.ledger and memory.ttl > 0

    def challenge_for(self, route: Route) -> Program[Challenge | None]:
        """The remembered challenge of `route`, as `Prepayments.challenge_for`, once the books' routes are in."""
        if self._shares and self.memory.first_to_load():
            yield from self._hinted(self._load(), "read the routes it remembers")
        return self.memory.challenge_for(route)

    def accepted(self, route: Route, challenge: Challenge) -> Program[None]:
        """The server of `route` accepted a payment for `challenge`."""
        if self.memory.remember(route, challenge) and self._shares:
            keep = self._books.remember_route(route, challenge.required.to_wire(), self.memory.ttl)
            yield from self._hinted(keep, f"keep the price of {route[1]}{route[2]}")

    def refused(self, origin: str) -> Program[None]:
        """`origin` refused a pre-payment: no process pre-pays it from what it remembered."""
        self.memory.refused(origin)
        if self._shares:
            forget = self._books.forget_routes(origin, self.memory.ttl)
            yield from self._hinted(forget, f"forget the routes of {origin}")

    def forget(self, route: Route) -> None:
        """Stop pre-paying `route` here (its challenge no longer passes this transport's policy)."""
        self.memory.forget(route)

    def _load(self) -> Program[None]:
        remembered = yield from self._books.routes(self.memory.ttl)
        now = self._clock()
        for route in remembered:
            try:
                challenge = challenge_from_wire(route.challenge)
            except ChallengeError:
                continue
            self.memory.load((route.method, route.origin, route.path), challenge, now - route.seen_at)

    @staticmethod
    def _hinted(program: Program[None], what: str) -> Program[None]:
        try:
            yield from program
        except Exception:
            logger.info("the ledger could not %s; pre-payment goes on from memory", what, exc_info=True)
