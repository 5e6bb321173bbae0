"""x402pay: pay for HTTP calls over the x402 protocol, safely.

wallet = x402pay.Wallet.from_env()
policy = x402pay.SpendPolicy(max_per_request=x402pay.usdc("0.05"))
client = httpx.Client(transport=x402pay.PaymentTransport(wallet=wallet, policy=policy))
response = client.get(url)
payment = x402pay.payment_of(response)
"""

import logging
from typing import TYPE_CHECKING, Any

from x402pay.amounts import usdc
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
    NoAcceptableRequirement,
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
    SigningError,
    SpendCapExceeded,
    WalletError,
    X402PayError,
)
from x402pay.payment import Payment, PaymentStatus, payment_of
from x402pay.policy import SpendPolicy
from x402pay.receipts import Receipt
from x402pay.transport import AsyncPaymentTransport, PaymentTransport, TransportOptions
from x402pay.trust import TrustStore
from x402pay.wallet import Wallet

if TYPE_CHECKING:
    from x402pay._requests import PaymentAdapter

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
    "NoAcceptableRequirement",
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
    "SigningError",
    "SpendCapExceeded",
    "SpendPolicy",
    "TransportOptions",
    "TrustStore",
    "Wallet",
    "WalletError",
    "X402PayError",
    "__version__",
    "payment_of",
    "usdc",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    if name == "PaymentAdapter":  # requests is imported only by those who use it
        from x402pay._requests import PaymentAdapter

        return PaymentAdapter
    raise AttributeError(f"module 'x402pay' has no attribute {name!r}")
