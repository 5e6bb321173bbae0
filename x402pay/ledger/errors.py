"""The ledger's errors, grafted onto the x402pay error tree.

Budget refusals are a `SpendCapExceeded`, so callers that handle the policy's cap handle budgets too:

    X402PayError
    ├── PaymentError
    │   ├── NoAcceptableRequirement
    │   │   └── SpendCapExceeded
    │   │       └── BudgetExceeded     ours: a budget has no room left for this payment
    │   └── PaymentInFlight            another request with the same idempotency key is being paid right now
    └── LedgerError                    the ledger could not do what was asked
        ├── EntryNotFound              no entry has that id
        ├── InvalidTransition          the entry's state does not allow this step
        └── SchemaError                the database's schema is newer than this library, or unusable
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from x402pay.errors import PaymentError, SpendCapExceeded, X402PayError

if TYPE_CHECKING:
    from x402pay.ledger.model import Budget, Entry


class BudgetExceeded(SpendCapExceeded):
    """Reserving the payment would take `budget` over its limit; `remaining` is the room it has left."""

    def __init__(self, budget: Budget, requested: int, remaining: int) -> None:
        super().__init__(
            f"budget {budget.describe()} refuses {requested}: only {remaining} of {budget.limit} left",
            {0: f"budget {budget.describe()} has {remaining} left, {requested} asked"},
        )
        self.budget = budget
        self.requested = requested
        self.remaining = remaining


class PaymentInFlight(PaymentError):
    """Another request with the same idempotency key holds a reservation and is signing; do not sign again."""

    def __init__(self, entry: Entry) -> None:
        super().__init__(
            f"a payment for idempotency key {entry.key!r} is already in flight (entry {entry.id}); "
            "wait for it and re-send its signed payment instead of signing another"
        )
        self.entry = entry


class LedgerError(X402PayError):
    """The ledger could not do what was asked (database unreachable, a broken invariant, a bad argument)."""


class EntryNotFound(LedgerError):
    """No ledger entry has the given id."""


class InvalidTransition(LedgerError):
    """The entry's state does not allow the requested step; `entry` is the entry as it stands."""

    def __init__(self, message: str, entry: Entry) -> None:
        super().__init__(message)
        self.entry = entry


class SchemaError(LedgerError):
    """The database schema is newer than this library knows, or not the ledger's."""
