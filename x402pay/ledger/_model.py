"""The ledger's values: entry states, entries, budgets and what is left of them.

An entry moves through these states; `held` is what it counts against every budget it falls under:

    reserved ──► authorized ──► claimed ──► settled          (the chain showed the authorization consumed)
        │            │  ▲   │        │
        │            ▼  │   │        └─────► mismatch        (the chain, or the receipt itself, contradicts it)
        │         unknown ──┤
        ▼            │      ▼
    released ◄───────┴── (reconcile: expired and nonce unused)

A receipt is a claim: `claimed` records what the server says (`claimed_amount`, `claimed_tx`) beside the hold,
which stays at the signed maximum. Only the chain settles an entry: `settled` holds the amount the chain moved,
in `tx_hash`. reserved, authorized, unknown, claimed and mismatch hold their signed maximum (a mismatch whose
authorization the chain later shows consumed holds what it moved; one that expired unused holds nothing);
released holds nothing.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, Final

from x402pay._protocol.networks import KNOWN_ASSETS, caip2, chain_id_of, network_names

#: `Budget.origin` value: the limit applies to each origin separately.
EACH_ORIGIN: Final = "*"
HOUR: Final = 3_600
DAY: Final = 86_400
#: Largest amount the ledger stores: both backends keep amounts in signed 64-bit integers.
MAX_STORED_AMOUNT: Final = 2**63 - 1


class EntryState(StrEnum):
    """Where one payment stands."""

    RESERVED = "reserved"  # budget held, nothing signed
    AUTHORIZED = "authorized"  # signed payment stored; it may have been sent
    UNKNOWN = "unknown"  # sent, no receipt (a lost response, a timeout, a crash)
    CLAIMED = "claimed"  # the server says it settled (its claim is recorded); the chain has not shown it yet
    SETTLED = "settled"  # the chain shows the authorization consumed and what it moved
    MISMATCH = "mismatch"  # the receipt disagrees with the chain or with what was signed: fraud
    RELEASED = "released"  # provably not settled: refused before sending, or expired with its nonce unused


#: States whose payment may still move money unseen by the books: reconcile() looks at them on chain (a mismatch
#: until the chain has shown what its authorization moved, or that it expired unused).
OPEN_STATES: Final = frozenset({EntryState.AUTHORIZED, EntryState.UNKNOWN, EntryState.CLAIMED})
#: States that hold the signed maximum.
MAXIMUM_STATES: Final = frozenset({*OPEN_STATES, EntryState.RESERVED, EntryState.MISMATCH})


@dataclass(frozen=True)
class Entry:
    """One payment for one logical request (`key`), as the ledger stores it. Amounts are atomic units."""

    id: str
    key: str
    origin: str
    asset: str
    network: str
    scheme: str
    pay_to: str
    amount: int
    held: int
    state: EntryState
    created_at: int
    updated_at: int
    payer: str | None = None
    method: str | None = None
    nonce: str | None = None
    valid_before: int | None = None
    payment: Mapping[str, Any] | None = None
    settled_amount: int | None = None
    tx_hash: str | None = None
    detail: str | None = None
    claimed_amount: int | None = None
    claimed_tx: str | None = None
    holder: str | None = None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Entry:
        """Build an entry from a row of `ENTRY_COLUMNS` (see `x402pay.ledger._sql`)."""
        values = dict(zip(ENTRY_FIELDS, row, strict=True))
        values["state"] = EntryState(values["state"])
        if values["payment"] is not None:
            values["payment"] = json.loads(values["payment"])
        return cls(**values)


ENTRY_FIELDS: Final = tuple(Entry.__dataclass_fields__)


class AnyUsdc(Enum):
    """The type of `ANY_USDC`, its only value."""

    ANY_USDC = "USDC"

    def __repr__(self) -> str:
        return self.name


#: `Budget.asset` value: USDC on every chain, as far as x402pay knows it: each USDC deployment of its table (the
#: devnet's test USDC among them), which is exactly what a `SpendPolicy` with ``assets=None`` pays.
ANY_USDC: Final = AnyUsdc.ANY_USDC
#: What `Budget.asset` takes: `ANY_USDC`, a token address (on any network), or a collection of token addresses and
#: (network, address) pairs.
BudgetAssets = AnyUsdc | str | Collection[str | tuple[str, str]]


@dataclass(frozen=True)
class Budget:
    """A limit on the money held for some assets, optionally per network, per origin and over a rolling window.

    `asset` is what the budget counts: `ANY_USDC` (USDC wherever the policy pays it without naming it), one token
    address (any case) on any network, or a collection of addresses and (network, address) pairs, e.g.
    ``{("eip155:8453", BASE_USDC), ("eip155:1", MAINNET_USDC)}``; amounts of all of them add up. `network` (a CAIP-2
    id or a v1 name) narrows it to one chain. `origin` is None for all origins together, `EACH_ORIGIN` for each
    origin separately, or one ``scheme://host[:port]``. `window` is None for all time, else seconds (`HOUR`, `DAY`).
    `name` labels the budget in messages and reports. `covered` is what it counts, spelled out: (CAIP-2 network, or
    None for any network; lower-case address) pairs.
    """

    asset: BudgetAssets
    limit: int
    window: int | None = None
    origin: str | None = None
    network: str | None = None
    name: str | None = None
    covered: tuple[tuple[str | None, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or not 0 <= self.limit <= MAX_STORED_AMOUNT:
            raise ValueError(f"a budget limit is an int of atomic units in [0, 2**63), got {self.limit!r}")
        if self.window is not None and self.window <= 0:
            raise ValueError(f"a budget window is a positive number of seconds, got {self.window}")
        object.__setattr__(self, "asset", _assets(self.asset))
        if self.network is not None:
            object.__setattr__(self, "network", caip2(chain_id_of(self.network)))
        if self.origin is not None:
            object.__setattr__(self, "origin", self.origin.lower())
        covered = _covered(self.asset, self.network)
        if not covered:
            raise ValueError(f"budget {self.describe()} covers nothing: x402pay knows no USDC on {self.network}")
        object.__setattr__(self, "covered", covered)

    def applies_to(self, asset: str, network: str, origin: str) -> bool:
        """Whether a payment of `asset` on `network` to `origin` counts against this budget."""
        if self.origin not in (None, EACH_ORIGIN, origin.lower()):
            return False
        address, named = asset.lower(), _network_or_none(network)
        return any(address == covered and where in (None, named) for where, covered in self.covered)

    def describe(self) -> str:
        """A short label: the name if given, else what the budget limits."""
        if self.name:
            return repr(self.name)
        parts = [_assets_text(self.asset)]
        if self.network:
            parts.append(f"on {self.network}")
        if self.origin == EACH_ORIGIN:
            parts.append("per origin")
        elif self.origin:
            parts.append(f"for {self.origin}")
        parts.append(_window_text(self.window))
        return f"[{' '.join(parts)}]"


def uncovered(budgets: Sequence[Budget], asset: str, network: str, origin: str) -> str | None:
    """Why a payment of `asset` on `network` to `origin` may not be reserved because no budget covers it, or None
    (some budget covers it, or there are no budgets)."""
    if not budgets or any(budget.applies_to(asset, network, origin) for budget in budgets):
        return None
    names = ", ".join(budget.describe() for budget in budgets[:10]) + (", …" if len(budgets) > 10 else "")
    return f"no budget covers asset {asset} on {network} for {origin} (the budgets: {names})"


def _assets(assets: object) -> BudgetAssets:
    """`Budget.asset` checked and in its stored form: lower-case addresses, networks as CAIP-2 ids, a frozenset."""
    if isinstance(assets, AnyUsdc):
        return assets
    if isinstance(assets, str):
        return assets.lower()
    if not isinstance(assets, Collection) or not assets:
        raise TypeError(f"a budget's asset is ANY_USDC, an address, or a non-empty collection of addresses and "
                        f"(network, address) pairs; got {assets!r:.80}")  # fmt: skip
    return frozenset(_asset_item(item) for item in assets)


def _asset_item(item: object) -> str | tuple[str, str]:
    if isinstance(item, str):
        return item.lower()
    if isinstance(item, tuple) and len(item) == 2 and all(isinstance(part, str) for part in item):
        return caip2(chain_id_of(item[0])), item[1].lower()
    raise TypeError(f"a budget names an address or a (network, address) pair, not {item!r:.80}")


def _covered(assets: BudgetAssets, network: str | None) -> tuple[tuple[str | None, str], ...]:
    if isinstance(assets, AnyUsdc):
        pairs: set[tuple[str | None, str]] = {(caip2(chain_id), address) for chain_id, address in KNOWN_ASSETS}
    else:
        items = [assets] if isinstance(assets, str) else assets
        pairs = {item if isinstance(item, tuple) else (None, item) for item in items}
    if network is not None:
        pairs = {(network, address) for where, address in pairs if where in (None, network)}
    return tuple(sorted(pairs, key=lambda pair: (pair[0] or "", pair[1])))


def _network_or_none(network: str) -> str | None:
    """The CAIP-2 id of `network` when it is one of its chain's own names, else None. The budget sums match those
    names alone (`network_names`), so another spelling of a chain (``eip155:08453``) must not count as covered."""
    try:
        chain_id = chain_id_of(network)
    except ValueError:
        return None
    return caip2(chain_id) if network in network_names(chain_id) else None


def _assets_text(assets: BudgetAssets) -> str:
    if isinstance(assets, AnyUsdc):
        return "USDC"
    if isinstance(assets, str):
        return _short(assets)
    items = sorted(_short(item) if isinstance(item, str) else f"{_short(item[1])} on {item[0]}" for item in assets)
    return "{" + ", ".join(items) + "}"


def _short(address: str) -> str:
    return f"{address[:10]}…"


def _window_text(window: int | None) -> str:
    if window is None:
        return "in total"
    if window % DAY == 0:
        return "per day" if window == DAY else f"per {window // DAY} days"
    if window % HOUR == 0:
        return "per hour" if window == HOUR else f"per {window // HOUR} hours"
    return f"per {window} s"


@dataclass(frozen=True)
class BudgetStatus:
    """A budget, the money held against it (for one origin when it is per origin), and the room left."""

    budget: Budget
    held: int
    origin: str | None = None

    @property
    def remaining(self) -> int:
        """What may still be reserved (never negative)."""
        return max(0, self.budget.limit - self.held)


@dataclass(frozen=True)
class Transfer:
    """What the chain shows an authorization paid: the token amount moved and the transaction that moved it."""

    amount: int
    tx_hash: str


@dataclass(frozen=True)
class ReconcileReport:
    """What `reconcile` did: entries settled from chain state, released, found to mismatch, left open (with why)."""

    settled: tuple[Entry, ...] = ()
    released: tuple[Entry, ...] = ()
    mismatched: tuple[Entry, ...] = ()
    unresolved: tuple[tuple[Entry, str], ...] = ()
