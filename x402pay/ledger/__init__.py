"""The spend ledger: budgets held before signing, one signature per logical request, reconciled with the chain.

    ledger = Ledger.sqlite("spend.db", budgets=[Budget(ANY_USDC, usdc("5"), window=DAY)])
    entry = ledger.reserve(key, origin=..., asset=..., network=..., amount=..., pay_to=...)

A budget counts `ANY_USDC` (USDC on every chain x402pay knows), one token address, or a set of addresses and
(network, address) pairs. Budgets fail closed: with any, a payment that none covers is refused (`NotBudgeted`).
SQLite is the default (embedded; threads and processes of one machine); PostgreSQL (``x402pay[postgres]``) lets
bots on many machines share one budget. `Ledger` and `AsyncLedger` have the same operations. `Durability` says
which commits wait for the disk: by default, the one that stores a signed payment before it leaves the process.
"""

from x402pay.errors import (
    BudgetExceeded,
    EntryNotFound,
    InvalidTransition,
    LedgerError,
    NotBudgeted,
    PaymentInFlight,
    SchemaError,
)
from x402pay.ledger._async import AsyncLedger
from x402pay.ledger._backends import Durability
from x402pay.ledger._chain import Chain, Web3Chain
from x402pay.ledger._core import DEFAULT_MARGIN, DEFAULT_STALE_AFTER, Ledger
from x402pay.ledger._model import (
    ANY_USDC,
    DAY,
    EACH_ORIGIN,
    HOUR,
    Budget,
    BudgetStatus,
    Entry,
    EntryState,
    ReconcileReport,
    Transfer,
)
from x402pay.ledger._routes import RememberedRoute
from x402pay.ledger._watch import Watcher

__all__ = [
    "ANY_USDC",
    "DAY",
    "DEFAULT_MARGIN",
    "DEFAULT_STALE_AFTER",
    "EACH_ORIGIN",
    "HOUR",
    "AsyncLedger",
    "Budget",
    "BudgetExceeded",
    "BudgetStatus",
    "Chain",
    "Durability",
    "Entry",
    "EntryNotFound",
    "EntryState",
    "InvalidTransition",
    "Ledger",
    "LedgerError",
    "NotBudgeted",
    "PaymentInFlight",
    "ReconcileReport",
    "RememberedRoute",
    "SchemaError",
    "Transfer",
    "Watcher",
    "Web3Chain",
]
