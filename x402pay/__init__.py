"""x402pay: pay for HTTP calls over the x402 protocol, safely.

wallet = x402pay.Wallet.from_env()
policy = x402pay.SpendPolicy(max_per_request=x402pay.usdc("0.05"))
client = httpx.Client(transport=x402pay.PaymentTransport(wallet=wallet, policy=policy))
response = client.get(url)
payment = x402pay.payment_of(response)
"""

import importlib
import logging
import typing

from x402pay._amounts import usdc
from x402pay._payment import Payment, PaymentStatus, payment_of
from x402pay._policy import SpendPolicy
from x402pay._receipts import Receipt
from x402pay._transport import AsyncPaymentTransport, PaymentTransport, TransportOptions
from x402pay._trust import TrustStore
from x402pay._wallet import Wallet
from x402pay.errors import (
    AlreadyPaid,
    BudgetExceeded,
    ChainUnavailable,
    ChallengeError,
    EntryNotFound,
    FacilitatorError,
    InvalidTransition,
    LedgerError,
    MalformedPayment,
    MissingExtra,
    NoAcceptableRequirement,
    NotBudgeted,
    OriginUntrusted,
    PaymentError,
    PaymentInFlight,
    PaymentRejected,
    Permit2AllowanceRequired,
    ReceiptMismatch,
    SchemaError,
    ServerStartError,
    SettlementError,
    SettlementFailed,
    SettlementPending,
    SigningError,
    SpendCapExceeded,
    TrustStoreError,
    WalletError,
    X402PayError,
)

if typing.TYPE_CHECKING:
    from x402pay._requests import PaymentAdapter

#: Public names imported on first use, from the module that defines them (requests loads only for its users).
_LAZY = {"PaymentAdapter": "x402pay._requests"}

__version__ = "0.1.0"

__all__ = [
    "AlreadyPaid",
    "AsyncPaymentTransport",
    "BudgetExceeded",
    "ChainUnavailable",
    "ChallengeError",
    "EntryNotFound",
    "FacilitatorError",
    "InvalidTransition",
    "LedgerError",
    "MalformedPayment",
    "MissingExtra",
    "NoAcceptableRequirement",
    "NotBudgeted",
    "OriginUntrusted",
    "Payment",
    "PaymentAdapter",
    "PaymentError",
    "PaymentInFlight",
    "PaymentRejected",
    "PaymentStatus",
    "PaymentTransport",
    "Permit2AllowanceRequired",
    "Receipt",
    "ReceiptMismatch",
    "SchemaError",
    "ServerStartError",
    "SettlementError",
    "SettlementFailed",
    "SettlementPending",
    "SigningError",
    "SpendCapExceeded",
    "SpendPolicy",
    "TransportOptions",
    "TrustStore",
    "TrustStoreError",
    "Wallet",
    "WalletError",
    "X402PayError",
    "__version__",
    "payment_of",
    "usdc",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> typing.Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'x402pay' has no attribute {name!r}")
