"""A request as the payment program sees it (`Call`), and one logical request on its way (`Attempt`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from x402pay._books import PREPAY_SUFFIX
from x402pay._payment import Payment
from x402pay._prepay import Route
from x402pay._protocol.headers import MAX_AMOUNT
from x402pay._protocol.models import PaymentRequirements

if TYPE_CHECKING:
    from x402pay._presign import Presigned


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
