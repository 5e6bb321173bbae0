"""A request as the payment program sees it (`Call`), and one logical request on its way (`Attempt`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from x402pay._books import IDEMPOTENCY_KEY, PREPAY_SUFFIX, is_our_key, new_key
from x402pay._flow import announced_ceiling
from x402pay._payment import Payment
from x402pay._policy import SpendPolicy
from x402pay._prepay import Route
from x402pay._protocol.headers import CHANNEL_REFUND, MAX_AMOUNT
from x402pay._protocol.models import PaymentRequirements
from x402pay._repeats import Repeats, retry_mark

if TYPE_CHECKING:
    from x402pay._presign import Presigned, Presigner


@dataclass(slots=True)
class Call:
    """The request as the program needs it: method, ``scheme://host[:port]``, path, the caller's headers, and what
    identifies it when it carries no key (`x402pay._repeats.fingerprint`; None: it cannot be told from others)."""

    method: str
    origin: str
    path: str
    headers: Mapping[str, str]
    fingerprint: str | None = None
    timeout: float | None = None  # the longest its answer may take (its client's timeouts); inf: no limit; None: unsaid


@dataclass(slots=True)
class Trail:
    """What one logical request chose and sent, shared by every form of its `Attempt`: the last option the policy
    chose, its last payment, and whether that was a stored one re-sent."""

    chosen: PaymentRequirements | None = None
    sent: Payment | None = None
    resent: bool = False


@dataclass(slots=True)
class Attempt:
    """One logical request on its way: its key, where it goes, the ceiling it announces, the headers it carries."""

    key: str
    origin: str
    route: Route
    ceiling: int | None
    headers: Mapping[str, str]
    fresh: bool = False  # the key was made up just now: no book can hold it
    fingerprint: str | None = None  # set when the caller gave no key: repeats are told by it
    repeat_of: str | None = None  # the fingerprint the books may find an unanswered twin by (not an SDK's first try)
    trail: Trail = field(default_factory=Trail)
    strip: tuple[str, ...] = ()  # ours, on a request to an origin the policy never pays (a redirect brought them)
    refund: str | None = None  # the caller asks for a channel's escrow back (`CHANNEL_REFUND`), not to pay
    presigned: Presigned | None = None  # a payment signed ahead for it, its key the request's (`x402pay._presign`)
    timeout: float | None = None  # as the `Call` says

    @property
    def keys(self) -> tuple[str, str]:
        """Its own key, and the key its pre-payment is booked under."""
        return self.key, self.key + PREPAY_SUFFIX

    def lowered(self, ceiling: int) -> Attempt:
        """The same attempt announcing `ceiling` instead."""
        return replace(self, ceiling=ceiling, headers={**self.headers, MAX_AMOUNT: str(ceiling)})

    def resent(self, headers: Mapping[str, str]) -> Attempt:
        """The same attempt carrying `headers` (a stored payment's) instead of today's values for them."""
        return replace(self, headers={**self.headers, **headers}) if headers else self


def attempt_of(
    call: Call, *, repeats: Repeats, presigner: Presigner | None, policy: SpendPolicy, announce: bool
) -> Attempt:
    """The logical request `call` starts: its key (the caller's, a repeat's, a payment signed ahead's, or a new
    one), the ceiling it announces (`announce`: always, else only where the caller set one) and the headers it
    carries, or strips on its way to an origin the `policy` never pays."""
    given_key = call.headers.get(IDEMPOTENCY_KEY)
    fingerprint = None if given_key or repeats.window <= 0 else call.fingerprint
    mark = retry_mark(call.headers)
    repeated = repeats.key_of(fingerprint, mark) if fingerprint else None
    route = (call.method, call.origin.lower(), call.path)
    fresh = not (given_key or repeated)
    presigned = presigner.take(route) if fresh and presigner is not None else None
    key = given_key or repeated or (presigned.key if presigned is not None else new_key())
    given = call.headers.get(MAX_AMOUNT)
    ceiling = announced_ceiling(policy, given) if announce or given is not None else None
    headers = {IDEMPOTENCY_KEY: key} | ({MAX_AMOUNT: str(ceiling)} if ceiling is not None else {})
    strip: tuple[str, ...] = ()
    if not policy.pays(call.origin):  # it will not be paid: it learns neither our ceiling nor our key
        headers = {}
        strip = (MAX_AMOUNT,) + ((IDEMPOTENCY_KEY,) if given_key and is_our_key(given_key) else ())
    repeat_of = fingerprint if mark != 0 else None  # an SDK's first attempt repeats nothing
    refund = call.headers.get(CHANNEL_REFUND)
    strip += (CHANNEL_REFUND,) if refund is not None else ()
    return Attempt(key, call.origin, route, ceiling, headers, fresh, fingerprint, repeat_of, strip=strip,
                   presigned=presigned, refund=refund, timeout=call.timeout)  # fmt: skip
