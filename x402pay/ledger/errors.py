"""The ledger's errors, now defined in `x402pay.errors`; this module re-exports them for old import paths."""

from x402pay.errors import (
    BudgetExceeded,
    EntryNotFound,
    InvalidTransition,
    LedgerError,
    PaymentInFlight,
    SchemaError,
)

__all__ = [
    "BudgetExceeded",
    "EntryNotFound",
    "InvalidTransition",
    "LedgerError",
    "PaymentInFlight",
    "SchemaError",
]
