"""Pre-payment (opt-in): pay on the first request to a route whose price this transport saw recently.

Reactive payment costs two round trips: the request, its 402, and the paid retry. With ``prepay=True`` a
transport remembers the challenge of each route (method, origin and path; not the query) that it paid and the
server accepted, and for the next request to that route signs a fresh payment from the remembered challenge and
sends it with the first request. Each pre-payment passes the policy and the budget again (the remembered challenge
is re-chosen under the current ceiling), and each is signed anew.

A server that answers a pre-payment with a 402 did not take it. If the new challenge asks for exactly what was
signed, the refusal stands (`PaymentRejected`, no second signature). If it asks for something else (the price
changed), the route is forgotten and the request is paid reactively, once, under a key of its own. The refused
pre-payment stays held in the ledger (it may still settle until it expires), and pre-payment stops for that origin
for `BAR_SECONDS`: a server cannot keep refusing pre-payments to collect extra signatures.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from x402pay._flow import Challenge
from x402pay._protocol.models import PaymentRequirements

#: How many routes a transport remembers for pre-payment (least recently used are forgotten first).
MAX_ROUTES: Final = 1024
#: How long pre-payment stays off for an origin that refused one.
BAR_SECONDS: Final = 3600.0

Route = tuple[str, str, str]


def asks_for_signed(challenge: Challenge, signed: PaymentRequirements) -> bool:
    """Whether `challenge` offers exactly the requirement that was signed (a refusal on the server's own terms)."""
    return any(option.raw == signed.raw for option in challenge.requirements.values())


class Prepayments:
    """The routes a transport may pre-pay, with when each challenge was seen; thread-safe, bounded."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._routes: OrderedDict[Route, tuple[Challenge, float]] = OrderedDict()
        self._barred: dict[str, float] = {}

    def challenge_for(self, route: Route) -> Challenge | None:
        """The remembered challenge of `route`, if it is fresh and its origin is not barred."""
        now = self._clock()
        with self._lock:
            if self._barred.get(route[1], now) > now:
                return None
            seen = self._routes.get(route)
            if seen is None or now - seen[1] > self.ttl:
                self._routes.pop(route, None)
                return None
            self._routes.move_to_end(route)
            return seen[0]

    def remember(self, route: Route, challenge: Challenge) -> None:
        """Note that the server of `route` accepted a payment for `challenge` just now."""
        with self._lock:
            self._routes[route] = (challenge, self._clock())
            self._routes.move_to_end(route)
            while len(self._routes) > MAX_ROUTES:
                self._routes.popitem(last=False)

    def forget(self, route: Route) -> None:
        """Stop pre-paying `route` (its challenge no longer passes the policy)."""
        with self._lock:
            self._routes.pop(route, None)

    def refused(self, origin: str) -> None:
        """An origin answered a pre-payment with a 402: forget its routes and bar it for `BAR_SECONDS`."""
        origin = origin.lower()
        with self._lock:
            self._barred[origin] = self._clock() + BAR_SECONDS
            for route in [route for route in self._routes if route[1] == origin]:
                del self._routes[route]
            if len(self._barred) > MAX_ROUTES:
                now = self._clock()
                self._barred = {name: until for name, until in self._barred.items() if until > now}
