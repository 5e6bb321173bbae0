"""SpendPolicy: what a client is willing to sign, as an immutable value, and `choose` over a challenge."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from eth_utils.address import is_address

from x402pay._amounts import decimal_text
from x402pay._channel_terms import CHANNEL_SCHEME, channel_terms_problem
from x402pay._protocol.models import PaymentRequirements
from x402pay._protocol.networks import V1_NETWORK_CHAIN_IDS, caip2, known_asset
from x402pay._schemes.signing import SIGNABLE_SCHEMES
from x402pay.errors import NoAcceptableRequirement, NotBudgeted, SpendCapExceeded

logger = logging.getLogger(__name__)

DEFAULT_MAX_LIFETIME: Final = 300
_CAP_REFUSAL: Final = "costs more than the cap"
_CAIP2: Final = re.compile(r"[-a-z0-9]{3,8}:[-_a-zA-Z0-9]{1,32}")


def _int_at_least(name: str, value: object, unit: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} is an int of {unit}, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value}")


def _strings(name: str, values: Collection[object]) -> None:
    for value in values:
        if not isinstance(value, str):
            raise TypeError(f"{name} must hold str values, not {type(value).__name__} ({value!r:.40})")


def _ordered(name: str, values: object, why: str = "") -> tuple[str, ...]:
    """`values` (a tuple or a list of str) as a tuple; `why` says what its order means, if anything."""
    if isinstance(values, str):
        raise TypeError(f"{name} must be a tuple or list of str, not a str (a str would be read one character "
                        f"at a time): write {name}=({values!r},)")  # fmt: skip
    if not isinstance(values, tuple | list):
        raise TypeError(f"{name} must be a tuple or list of str, not {type(values).__name__}{why}")
    _strings(name, values)
    return tuple(values)


def _networks(values: object) -> tuple[str, ...]:
    networks = _ordered("networks", values, ": its order is the preference order (the earlier network wins a tie)")
    for network in networks:
        if network in V1_NETWORK_CHAIN_IDS:
            suggestion = caip2(V1_NETWORK_CHAIN_IDS[network])
            raise ValueError(f"networks: {network!r} is a v1 network name; write its CAIP-2 id, {suggestion!r}")
        if not _CAIP2.fullmatch(network):
            raise ValueError(f"networks: {network!r} is not a CAIP-2 id such as 'eip155:8453'")
    return networks


def _lowered(name: str, values: object) -> frozenset[str] | None:
    """An allow-list as lower-cased str (None: no restriction)."""
    if values is None:
        return None
    if isinstance(values, str):
        raise TypeError(f"{name} must be a collection of str, not a str (a str would be read one character at a "
                        f"time): write {name}={{{values!r}}}")  # fmt: skip
    if not isinstance(values, Collection):
        raise TypeError(f"{name} must be a collection of str (a frozenset, set, tuple or list), "
                        f"not {type(values).__name__}")  # fmt: skip
    _strings(name, values)
    return frozenset(value.lower() for value in values)


@dataclass(frozen=True)
class SpendPolicy:
    """What this client may sign: an immutable value, checked before anything is signed.

    Amounts are atomic units of the asset (USDC has 6 decimals: 50_000 is 0.05 USDC). `None` for an allow-list
    means "no restriction" except for `assets`, where it means "only the known USDC deployments": an atomic unit
    of an unknown token could be worth anything, so such a token must be allowed by address on purpose.

    `networks` also sets the preference order: among the cheapest acceptable options, the earlier network wins.
    `max_lifetime` caps, in seconds, how long a signed authorization stays valid, whatever the server asks.
    `max_deposit` caps one deposit into a payment channel (``batch-settlement``, a scheme signed only when listed
    in `schemes`): the escrow a server's ``minDeposit`` hint may ask for. None means ten times `max_per_request`.

    Every field is checked here, not at the first payment (a TypeError or ValueError naming the field):
    `networks` (CAIP-2 ids) and `schemes` are a tuple or list, never a set; `assets`, `payees` and `origins` are a
    collection of str, never a single str.
    """

    max_per_request: int
    networks: tuple[str, ...] | None = None
    assets: frozenset[str] | None = field(default=None)
    payees: frozenset[str] | None = field(default=None)
    origins: frozenset[str] | None = field(default=None)
    schemes: tuple[str, ...] = SIGNABLE_SCHEMES
    max_lifetime: int = DEFAULT_MAX_LIFETIME
    max_deposit: int | None = None

    def __post_init__(self) -> None:
        _int_at_least("max_per_request", self.max_per_request, "atomic units (see x402pay.usdc for decimal text)", 0)
        if self.max_deposit is not None:
            _int_at_least("max_deposit", self.max_deposit, "atomic units", 0)
        _int_at_least("max_lifetime", self.max_lifetime, "seconds", 1)
        if self.networks is not None:
            object.__setattr__(self, "networks", _networks(self.networks))
        schemes = _ordered("schemes", self.schemes)
        unknown = set(schemes) - {*SIGNABLE_SCHEMES, CHANNEL_SCHEME}
        if unknown:
            signable = [*SIGNABLE_SCHEMES, CHANNEL_SCHEME]
            raise ValueError(f"schemes: cannot sign {sorted(unknown)}; signable: {signable}")
        object.__setattr__(self, "schemes", schemes)
        for name in ("assets", "payees", "origins"):
            object.__setattr__(self, name, _lowered(name, getattr(self, name)))

    @property
    def deposit_cap(self) -> int:
        """The most one channel deposit may put in escrow: `max_deposit`, or ten times `max_per_request`."""
        return self.max_deposit if self.max_deposit is not None else 10 * self.max_per_request

    def pays(self, origin: str) -> bool:
        """Whether this policy may pay `origin` at all (its `origins` allow-list, when it has one)."""
        return self.origins is None or origin.lower() in self.origins

    def refusal(self, requirement: PaymentRequirements, origin: str, ceiling: int | None = None) -> str | None:
        """Why this policy refuses `requirement` from `origin`, or None when it may be signed.

        `ceiling` is a lower cap for this request (what the client announced in ``x-x402-max-amount-wei``).
        """
        if not self.pays(origin):
            return f"origin {origin} is not allowed"
        if requirement.scheme not in self.schemes:
            return f"scheme {requirement.scheme!r} is not one this policy signs"
        try:
            network = caip2(requirement.chain_id)
        except ValueError as exc:
            return str(exc)
        if self.networks is not None and network not in self.networks and requirement.network not in self.networks:
            return f"network {requirement.network} is not allowed"
        if not is_address(requirement.asset) or not is_address(requirement.pay_to):
            return "asset or payTo is not an EVM address"
        if self.assets is None and known_asset(requirement.chain_id, requirement.asset) is None:
            return f"asset {requirement.asset} is not a known USDC deployment on {network} (allow it explicitly)"
        if self.assets is not None and requirement.asset.lower() not in self.assets:
            return f"asset {requirement.asset} is not allowed"
        if self.payees is not None and requirement.pay_to.lower() not in self.payees:
            return f"payee {requirement.pay_to} is not allowed"
        if requirement.max_timeout_seconds <= 0:
            return f"maxTimeoutSeconds {requirement.max_timeout_seconds} leaves no time to settle"
        if requirement.scheme == "upto" and not is_address(requirement.extra_str("facilitatorAddress") or ""):
            return "upto option names no facilitatorAddress (anyone could settle it)"
        if requirement.scheme == CHANNEL_SCHEME:
            problem = channel_terms_problem(requirement)
            if problem is not None:
                return problem
        if requirement.amount > self.max_per_request:
            return _over(requirement, self.max_per_request, "max_per_request")
        if ceiling is not None and requirement.amount > ceiling:
            return _over(requirement, ceiling, "the announced ceiling")
        return None

    def choose(
        self,
        accepts: Sequence[PaymentRequirements] | Mapping[int, PaymentRequirements],
        origin: str,
        malformed: Mapping[int, str] | None = None,
        ceiling: int | None = None,
        uncovered: Callable[[PaymentRequirements], str | None] | None = None,
    ) -> tuple[int, PaymentRequirements]:
        """Return (index, requirement) of the cheapest acceptable option, preferring earlier `networks`.

        `accepts` is the list the server offered, or a mapping from its index to the options that parsed.
        Raises `SpendCapExceeded` when some option failed only on the cap, else `NoAcceptableRequirement`; both carry
        the reason each option was refused. `malformed` adds options that did not even parse; `ceiling` is the
        lower cap this request announced, if any. `uncovered` says why the ledger's budgets cannot hold an option
        the policy accepts (None: they can): such options are left out, and `NotBudgeted` is raised when that left
        none.
        """
        refusals = dict(malformed or {})
        acceptable: list[tuple[int, PaymentRequirements]] = []
        unbudgeted = False
        options = accepts if isinstance(accepts, Mapping) else dict(enumerate(accepts))
        for index, requirement in options.items():
            reason = self.refusal(requirement, origin, ceiling)
            if reason is None and uncovered is not None:
                reason = uncovered(requirement)
                unbudgeted = unbudgeted or reason is not None
            if reason is None:
                acceptable.append((index, requirement))
            else:
                refusals[index] = reason
                logger.debug("refusing option %d from %s: %s", index, origin, reason)
        if acceptable:
            return min(acceptable, key=lambda pair: (pair[1].amount, self._preference(pair[1]), pair[0]))
        raise self._no_option(refusals, origin, unbudgeted)

    def _preference(self, requirement: PaymentRequirements) -> int:
        if self.networks is None:
            return 0
        network = caip2(requirement.chain_id)
        return self.networks.index(network) if network in self.networks else self.networks.index(requirement.network)

    @staticmethod
    def _no_option(refusals: dict[int, str], origin: str, unbudgeted: bool) -> NoAcceptableRequirement:
        summary = "; ".join(f"option {index}: {reason}" for index, reason in sorted(refusals.items())[:10])
        message = f"no acceptable way to pay {origin}: {summary or 'the server offered none'}"
        if unbudgeted:
            return NotBudgeted(message, refusals)
        if any(reason.startswith(_CAP_REFUSAL) for reason in refusals.values()):
            return SpendCapExceeded(message, refusals)
        return NoAcceptableRequirement(message, refusals)


def _over(requirement: PaymentRequirements, cap: int, named: str) -> str:
    """Why `requirement` is over `cap`: in atomic units, and in USDC when the token is a known USDC deployment."""
    why = f"{_CAP_REFUSAL}: {requirement.amount} > {named} {cap}"
    token = known_asset(requirement.chain_id, requirement.asset)
    if token is None:
        return why
    return f"{why} ({decimal_text(requirement.amount, token.decimals)} > {decimal_text(cap, token.decimals)} USDC)"
