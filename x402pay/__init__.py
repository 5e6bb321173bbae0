"""x402pay: pay for HTTP calls over the x402 protocol, safely.

wallet = x402pay.Wallet.from_env()
policy = x402pay.SpendPolicy(max_per_request=x402pay.usdc("0.05"))
client = httpx.Client(transport=x402pay.PaymentTransport(wallet=wallet, policy=policy))
response = client.get(url)
payment = x402pay.payment_of(response)
"""

import logging
import typing

from x402pay import _lazy
from x402pay._amounts import usdc
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
    from x402pay._payment import Payment, PaymentStatus, payment_of
    from x402pay._policy import SpendPolicy
    from x402pay._protocol.headers import CHANNEL_REFUND
    from x402pay._receipts import Receipt
    from x402pay._requests import PaymentAdapter
    from x402pay._transport import AsyncPaymentTransport, PaymentTransport, TransportOptions
    from x402pay._trust import TrustStore
    from x402pay._wallet import Wallet

#: Public names imported on first use, from the module that defines them: `import x402pay` (and so loading the
#: pytest plugin, `x402pay.testing.pytest_plugin`) costs next to nothing until a program pays; requests, httpx,
#: pydantic and the signing code load then.
_LAZY = {
    "AsyncPaymentTransport": "x402pay._transport",
    "CHANNEL_REFUND": "x402pay._protocol.headers",
    "Payment": "x402pay._payment",
    "PaymentAdapter": "x402pay._requests",
    "PaymentStatus": "x402pay._payment",
    "PaymentTransport": "x402pay._transport",
    "Receipt": "x402pay._receipts",
    "SpendPolicy": "x402pay._policy",
    "TransportOptions": "x402pay._transport",
    "TrustStore": "x402pay._trust",
    "Wallet": "x402pay._wallet",
    "payment_of": "x402pay._payment",
}

__version__ = "0.1.0"

__all__ = [
    "CHANNEL_REFUND",
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


__getattr__ = _lazy.lazy_names(__name__, _LAZY)
