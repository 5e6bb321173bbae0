"""The program behind each ledger operation, shared by `Ledger` and `AsyncLedger`: arguments checked, clock read."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from x402pay.errors import InvalidTransition
from x402pay.ledger import _sql
from x402pay.ledger._chain import Resolution
from x402pay.ledger._model import (
    EACH_ORIGIN,
    OPEN_STATES,
    Budget,
    BudgetStatus,
    Entry,
    EntryState,
    ReconcileReport,
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

    def reserve(self, new: NewEntry) -> Program[Entry]:
        """Reserve `new` against the budgets (run it exclusive)."""
        if not new.key:
            raise ValueError("a reservation needs a non-empty idempotency key")
        check_amount(new.amount)
        return _sql.reserve(new, uuid.uuid4().hex, self.budgets, self.now())

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

    def settle(self, entry_id: str, amount: int, tx_hash: str | None) -> Program[Entry]:
        """Record a settlement of `amount` (at most the signed maximum) in `tx_hash`."""
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

    def release(self, entry_id: str, reason: str) -> Program[Entry]:
        """Release a reservation that was never signed."""

        def changes(entry: Entry) -> Mapping[str, Any]:
            require(entry, {EntryState.RESERVED}, "release", _RELEASE_HINT)
            return {"state": EntryState.RELEASED, "held": 0, "detail": reason}

        return _sql.transition(entry_id, self.now(), changes)

    def mark(
        self, entry_id: str, state: EntryState, allowed: Collection[EntryState], detail: str | None
    ) -> Program[Entry]:
        """Move an entry to `state` (unknown, verified, mismatch) from one of `allowed`; mismatch holds the maximum."""

        def changes(entry: Entry) -> Mapping[str, Any]:
            require(entry, allowed, f"mark {state}")
            held = entry.amount if state is EntryState.MISMATCH else entry.held
            return {"state": state, "held": held, "detail": detail if detail is not None else entry.detail}

        return _sql.transition(entry_id, self.now(), changes)

    def resolve(self, verdict: Resolution) -> Program[Entry]:
        """Apply a reconcile verdict: settle from the chain's transfer, or release what provably did not settle."""
        entry, transfer = verdict.entry, verdict.transfer
        if verdict.action == "release":

            def released(current: Entry) -> Mapping[str, Any]:
                require(current, OPEN_STATES, "release")
                return {"state": EntryState.RELEASED, "held": 0, "detail": verdict.reason}

            return _sql.transition(entry.id, self.now(), released)
        if transfer is not None and transfer.amount > entry.amount:
            detail = f"chain moved {transfer.amount} in {transfer.tx_hash}, more than the {entry.amount} signed"
            return self.mark(entry.id, EntryState.MISMATCH, OPEN_STATES, detail)
        if transfer is None:
            raise ValueError("only a settle or release verdict can be applied")
        return self.settle(entry.id, transfer.amount, transfer.tx_hash)

    def remaining(self, asset: str, network: str, origin: str) -> Program[int | None]:
        """The least room left among the budgets a payment would fall under; None if none applies."""
        now = self.now()
        room: int | None = None
        for budget in self.budgets:
            if budget.applies_to(asset, network, origin):
                held = yield from _sql.held(budget, origin, now)
                room = min(room if room is not None else budget.limit, max(0, budget.limit - held))
        return room

    def statuses(self, origin: str | None) -> Program[list[BudgetStatus]]:
        """Every budget's status; a per-origin budget reports `origin`, or each origin holding money against it."""
        now = self.now()
        found: list[BudgetStatus] = []
        for budget in self.budgets:
            if budget.origin == EACH_ORIGIN and origin is None:
                by_origin = yield from _sql.held_by_origin(budget, now)
                found += [BudgetStatus(budget, held, name) for name, held in by_origin] or [BudgetStatus(budget, 0)]
            else:
                held = yield from _sql.held(budget, origin, now)
                found.append(BudgetStatus(budget, held, origin if budget.origin == EACH_ORIGIN else budget.origin))
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
