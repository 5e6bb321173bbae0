"""The program behind each ledger operation, shared by `Ledger` and `AsyncLedger`: arguments checked, clock read."""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from x402pay.errors import InvalidTransition
from x402pay.ledger import _repeats, _routes, _sql, _totals
from x402pay.ledger._chain import Resolution
from x402pay.ledger._model import (
    EACH_ORIGIN,
    OPEN_STATES,
    Budget,
    BudgetStatus,
    Entry,
    EntryState,
    ReconcileReport,
    Transfer,
)
from x402pay.ledger._sql import NewEntry, Program, check_amount, require

_RELEASE_HINT = "; a signed payment may still settle until it expires: mark it unknown and let reconcile() release it"


class Operations:
    """Builds the programs of ledger operations from their arguments, the budgets and the clock."""

    def __init__(self, budgets: Sequence[Budget], clock: Callable[[], float]) -> None:
        self.budgets = tuple(budgets)
        self._clock = clock

    def now(self) -> int:
        """The ledger clock, in whole seconds."""
        return int(self._clock())

    def reserve(self, new: NewEntry, fingerprint: str | None = None) -> Program[Entry]:
        """Reserve `new` against the budgets, unless it repeats an unanswered request (run it exclusive)."""
        return self._reserve(_checked(new), fingerprint, self.now())

    def reserve_at_once(self, new: NewEntry) -> Program[Entry | None]:
        """Reserve `new` in one round trip, or raise its refusal from it; None: `reserve` decides (see
        `_sql.reserve_at_once`)."""
        return _sql.reserve_at_once(_checked(new), new_entry_id(), self.budgets, self.now())

    def _reserve(self, new: NewEntry, fingerprint: str | None, now: int) -> Program[Entry]:
        if fingerprint is not None:
            earlier = yield from _repeats.earlier_entry(fingerprint, now)
            if earlier is not None:
                return earlier
        return (yield from _sql.reserve(new, new_entry_id(), self.budgets, now))

    def unanswered(self, fingerprint: str, entry_id: str, window: float) -> Program[None]:
        """Mark `fingerprint` as the unanswered request of `entry_id` for `window` seconds."""
        if not 0 < window < 2**31:
            raise ValueError(f"window must be a positive number of seconds, not {window!r}")
        return _repeats.note_unanswered(fingerprint, entry_id, self.now() + math.ceil(window))

    def answered(self, fingerprint: str) -> Program[None]:
        """Clear the mark of `fingerprint` (and of every closed window)."""
        return _repeats.note_answered(fingerprint, self.now())

    def remember_route(
        self, method: str, origin: str, path: str, challenge: Mapping[str, Any], max_age: float
    ) -> Program[None]:
        """Keep the challenge a route's server accepted, dropping routes older than `max_age` seconds."""
        return _routes.remember(method, origin, path, challenge, self.now(), _whole_seconds(max_age))

    def routes(self, max_age: float) -> Program[list[_routes.RememberedRoute]]:
        """The routes seen within `max_age` seconds."""
        return _routes.recent(self.now() - _whole_seconds(max_age))

    def forget_routes(self, origin: str, max_age: float) -> Program[None]:
        """Forget `origin`'s routes (and any older than `max_age` seconds)."""
        return _routes.forget_origin(origin, self.now(), _whole_seconds(max_age))

    def authorize(
        self, entry_id: str, *, payment: Mapping[str, Any], payer: str, nonce: str, valid_before: int, method: str,
        amount: int | None,
    ) -> Program[Entry]:  # fmt: skip
        """Store the signed payment of a reserved entry (lowering its held amount to `amount` if given)."""
        signed = {"state": EntryState.AUTHORIZED, "payment": dict(payment), "payer": payer, "nonce": nonce,
                  "valid_before": valid_before, "method": method}  # fmt: skip
        if amount is not None:
            signed |= {"amount": check_amount(amount), "held": amount}

        def changes(entry: Entry) -> Mapping[str, Any]:
            require(entry, {EntryState.RESERVED}, "authorize")
            if amount is not None and amount > entry.amount:
                raise InvalidTransition(f"entry {entry.id} reserved {entry.amount}, not the {amount} signed", entry)
            return signed

        return _sql.transition(entry_id, self.now(), changes)

    def authorize_at_once(
        self, entry_id: str, *, payment: Mapping[str, Any], payer: str, nonce: str, valid_before: int, method: str,
        amount: int | None,
    ) -> Program[Entry | None]:  # fmt: skip
        """`authorize` in one statement when the entry is reserved and signed for all it holds, else None."""
        signed = {"state": EntryState.AUTHORIZED, "payment": dict(payment), "payer": payer, "nonce": nonce,
                  "valid_before": valid_before, "method": method}  # fmt: skip
        whole = {} if amount is None else {"amount": check_amount(amount), "held": amount}
        return _sql.transition_at_once(entry_id, self.now(), {EntryState.RESERVED}, signed, whole)

    def authorizing(
        self, entry_id: str, *, payment: Mapping[str, Any], payer: str, nonce: str, valid_before: int, method: str,
        amount: int | None,
    ) -> tuple[Program[Entry | None], Program[Entry]]:  # fmt: skip
        """`authorize_at_once`, and `authorize` to run when the first returns None."""
        signed: dict[str, Any] = {"payment": payment, "payer": payer, "nonce": nonce, "valid_before": valid_before,
                                  "method": method, "amount": amount}  # fmt: skip
        return self.authorize_at_once(entry_id, **signed), self.authorize(entry_id, **signed)

    def settle_at_once(self, entry_id: str, amount: int, tx_hash: str | None) -> Program[Entry | None]:
        """`settle` in one statement when the entry is open and the chain moved all it holds, else None."""
        check_amount(amount, "settled amount")
        settled = {"state": EntryState.SETTLED, "settled_amount": amount, "tx_hash": tx_hash}
        return _sql.transition_at_once(entry_id, self.now(), OPEN_STATES, settled, {"amount": amount, "held": amount})

    def claim(self, entry_id: str, amount: int, tx_hash: str | None) -> Program[Entry]:
        """Record the server's claim (`amount` in `tx_hash`) beside the hold, which stays at the signed maximum."""
        check_amount(amount, "claimed amount")

        def changes(entry: Entry) -> Mapping[str, Any]:
            require(entry, {EntryState.AUTHORIZED, EntryState.UNKNOWN, EntryState.CLAIMED}, "claim")
            if amount > entry.amount:
                raise InvalidTransition(
                    f"entry {entry.id} cannot claim {amount}, over its signed {entry.amount}", entry
                )
            claim = {"claimed_amount": amount, "claimed_tx": tx_hash}
            if entry.state is EntryState.CLAIMED and (entry.claimed_amount, entry.claimed_tx) != (amount, tx_hash):
                raise InvalidTransition(f"entry {entry.id} already claims {entry.claimed_amount}", entry)
            return {"state": EntryState.CLAIMED, **claim}

        return _sql.transition(entry_id, self.now(), changes)

    def settle(self, entry_id: str, amount: int, tx_hash: str | None) -> Program[Entry]:
        """The chain shows the entry's authorization consumed, moving `amount` in `tx_hash`: hold that amount."""
        check_amount(amount, "settled amount")

        def changes(entry: Entry) -> Mapping[str, Any]:
            require(entry, {*OPEN_STATES, EntryState.SETTLED}, "settle")
            if amount > entry.amount:
                raise InvalidTransition(
                    f"entry {entry.id} cannot settle {amount}, more than its signed {entry.amount}: a mismatch", entry
                )
            if entry.state is EntryState.SETTLED and (entry.settled_amount, entry.tx_hash) != (amount, tx_hash):
                raise InvalidTransition(f"entry {entry.id} already settled {entry.settled_amount}", entry)
            return {"state": EntryState.SETTLED, "settled_amount": amount, "tx_hash": tx_hash, "held": amount}

        return _sql.transition(entry_id, self.now(), changes)

    def mismatch(self, entry_id: str, detail: str) -> Program[Entry]:
        """Fraud: hold the signed maximum, say why, and mark the entry's origin untrusted (one transaction)."""

        def changes(entry: Entry) -> Mapping[str, Any]:
            require(entry, {*OPEN_STATES, EntryState.SETTLED, EntryState.MISMATCH}, "mark mismatch")
            return {"state": EntryState.MISMATCH, "held": entry.amount, "detail": detail}

        return self._marking(_sql.transition(entry_id, self.now(), changes), detail)

    def _marking(self, program: Program[Entry], reason: str) -> Program[Entry]:
        """`program`, then the mark on its entry's origin."""
        entry = yield from program
        yield from _sql.mark_untrusted(entry.origin, reason, self.now())
        return entry

    def release(self, entry_id: str, reason: str) -> Program[Entry]:
        """Release a reservation that was never signed."""

        def changes(entry: Entry) -> Mapping[str, Any]:
            require(entry, {EntryState.RESERVED}, "release", _RELEASE_HINT)
            return {"state": EntryState.RELEASED, "held": 0, "detail": reason}

        return _sql.transition(entry_id, self.now(), changes)

    def mark(
        self, entry_id: str, state: EntryState, allowed: Collection[EntryState], detail: str | None
    ) -> Program[Entry]:
        """Move an entry to `state` (unknown) from one of `allowed`."""

        def changes(entry: Entry) -> Mapping[str, Any]:
            require(entry, allowed, f"mark {state}")
            return {"state": state, "detail": detail if detail is not None else entry.detail}

        return _sql.transition(entry_id, self.now(), changes)

    def resolve(self, verdict: Resolution) -> Program[Entry]:
        """Apply a reconcile verdict: settle from the chain's transfer, or release what provably did not settle; a
        claim the chain contradicts, or an amount over the signed one, is a mismatch holding what the chain moved."""
        entry, transfer = verdict.entry, verdict.transfer
        if verdict.action == "release":
            return self._expired(verdict)
        if transfer is None:
            raise ValueError("only a settle or release verdict can be applied")
        contradiction = _contradiction(entry, transfer)
        if contradiction is None:
            return self.settle(entry.id, transfer.amount, transfer.tx_hash)

        def proven(current: Entry) -> Mapping[str, Any]:
            require(current, {*OPEN_STATES, EntryState.MISMATCH}, "record what the chain moved")
            return {"state": EntryState.MISMATCH, "settled_amount": transfer.amount, "tx_hash": transfer.tx_hash,
                    "held": max(transfer.amount, 0), "detail": contradiction}  # fmt: skip

        return self._marking(_sql.transition(entry.id, self.now(), proven), contradiction)

    def _expired(self, verdict: Resolution) -> Program[Entry]:
        """The authorization expired unused: nothing moved. A claim of a settlement was a lie."""
        entry = verdict.entry
        if entry.state in (EntryState.CLAIMED, EntryState.MISMATCH):
            detail = (f"claimed {entry.claimed_amount} in {entry.claimed_tx}, but {verdict.reason}"
                      if entry.state is EntryState.CLAIMED else f"{entry.detail}; {verdict.reason}")  # fmt: skip

            def lied(current: Entry) -> Mapping[str, Any]:
                require(current, {EntryState.CLAIMED, EntryState.MISMATCH}, "release")
                return {"state": EntryState.MISMATCH, "held": 0, "detail": detail[:500]}

            return self._marking(_sql.transition(entry.id, self.now(), lied), detail)

        def released(current: Entry) -> Mapping[str, Any]:
            require(current, OPEN_STATES, "release")
            return {"state": EntryState.RELEASED, "held": 0, "detail": verdict.reason}

        return _sql.transition(entry.id, self.now(), released)

    def remaining(self, asset: str, network: str, origin: str) -> Program[int | None]:
        """The least room left among the budgets a payment would fall under; None if none applies."""
        applying = [budget for budget in self.budgets if budget.applies_to(asset, network, origin)]
        sums = yield from _totals.held(applying, origin, self.now())
        rooms = [max(0, budget.limit - held) for budget, held in zip(applying, sums, strict=True)]
        return min(rooms, default=None)

    def statuses(self, origin: str | None) -> Program[list[BudgetStatus]]:
        """Every budget's status; a per-origin budget reports `origin`, or each origin holding money against it."""
        now = self.now()
        spread = [budget for budget in self.budgets if budget.origin == EACH_ORIGIN and origin is None]
        single = [budget for budget in self.budgets if budget not in spread]
        sums = dict(zip(single, (yield from _totals.held(single, origin, now)), strict=True))
        found: list[BudgetStatus] = []
        for budget in self.budgets:
            if budget in sums:
                named = origin if budget.origin == EACH_ORIGIN else budget.origin
                found.append(BudgetStatus(budget, sums[budget], named))
                continue
            by_origin = yield from _totals.held_by_origin(budget, now)
            found += [BudgetStatus(budget, held, name) for name, held in by_origin] or [BudgetStatus(budget, 0)]
        return found


@dataclass
class Tally:
    """Collects reconcile outcomes into a `ReconcileReport`."""

    released: list[Entry] = field(default_factory=list)
    settled: list[Entry] = field(default_factory=list)
    mismatched: list[Entry] = field(default_factory=list)
    unresolved: list[tuple[Entry, str]] = field(default_factory=list)

    def add(self, verdict: Resolution, outcome: Entry | str) -> None:
        """Count one verdict's outcome: the entry it produced, or why it stays open."""
        if isinstance(outcome, str):
            self.unresolved.append((verdict.entry, outcome))
        elif outcome.state is EntryState.RELEASED:
            self.released.append(outcome)
        elif outcome.state is EntryState.MISMATCH:
            self.mismatched.append(outcome)
        else:
            self.settled.append(outcome)

    def report(self) -> ReconcileReport:
        """The report of everything counted."""
        return ReconcileReport(
            settled=tuple(self.settled),
            released=tuple(self.released),
            mismatched=tuple(self.mismatched),
            unresolved=tuple(self.unresolved),
        )


def new_entry_id() -> str:
    """A fresh entry id, 32 hex digits: the time in nanoseconds, then 64 random bits. Unique like a random one, but
    a new id sorts after the older ones, so the primary key's index grows at its right edge, in pages the database
    has at hand however long the history (a random id lands anywhere in it)."""
    return f"{time.time_ns():016x}{secrets.randbits(64):016x}"


def _checked(new: NewEntry) -> NewEntry:
    """`new`, if it can be reserved: a key, and an amount the ledger can store."""
    if not new.key:
        raise ValueError("a reservation needs a non-empty idempotency key")
    check_amount(new.amount)
    return new


def _whole_seconds(max_age: float) -> int:
    if not 0 < max_age < 2**31:
        raise ValueError(f"max_age must be a positive number of seconds, not {max_age!r}")
    return math.ceil(max_age)


def _contradiction(entry: Entry, transfer: Transfer) -> str | None:
    """How the chain's `transfer` contradicts `entry` (its signed maximum, its claim, an earlier mismatch), or None."""
    moved = f"the chain moved {transfer.amount} in {transfer.tx_hash}"
    if transfer.amount > entry.amount:
        return f"{moved}, more than the {entry.amount} signed"
    if entry.state is EntryState.MISMATCH:
        return f"{entry.detail}; {moved}"[:500]
    if entry.state is not EntryState.CLAIMED:
        return None
    if entry.claimed_amount != transfer.amount:
        return f"claimed {entry.claimed_amount}, but {moved}"
    if entry.claimed_tx and entry.claimed_tx.lower() != transfer.tx_hash.lower():
        return f"claimed transaction {entry.claimed_tx[:80]}, but {moved}"
    return None
