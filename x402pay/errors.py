"""The x402pay error tree.

Every error the library raises on purpose derives from `X402PayError`; foreign exceptions (web3, eth-account,
pydantic, json, base64, sqlite3, psycopg) are mapped to these where they enter, and chained with
``raise ... from exc``. The right-hand column says whose fault each one is: ours (this process: its policy, budget,
wallet, ledger or caller), the peer's (the paid server, or on the paid side the paying client), or a third party's
(the JSON-RPC node, the facilitator, the database, the host).

    X402PayError
    ├── PaymentError                   a paid request could not be completed
    │   ├── ChallengeError             the peer's: its 402 is malformed or not x402
    │   ├── NoAcceptableRequirement    ours: no offered way to pay passes the spend policy (why, per option)
    │   │   └── SpendCapExceeded       ours: an option was acceptable but for the cap
    │   │       ├── BudgetExceeded     ours: a ledger budget has no room left for this payment
    │   │       └── NotBudgeted        ours: the ledger has budgets, none of them covers this payment
    │   ├── OriginUntrusted            the peer's: it lied about a payment before; a person must clear the mark
    │   ├── AlreadyPaid                ours: this request was paid already (another origin, a lost channel answer)
    │   ├── PaymentInFlight            ours: another request with the same Idempotency-Key is signing (or died signing)
    │   ├── SigningError               ours: the wallet could not sign the chosen requirement
    │   ├── Permit2AllowanceRequired   ours: Permit2 may not spend the token yet, and no gas-free way was offered
    │   ├── ChainUnavailable           the RPC node's: it failed a check made before signing (nothing signed)
    │   ├── PaymentRejected            the peer's: it answered the signed payment with another 402
    │   ├── SettlementError            the peer's: its settlement response or receipt is malformed
    │   ├── SettlementFailed           the peer's: it says settlement failed (e.g. a compose.error frame mid-stream)
    │   ├── SettlementPending          nobody's yet: the settlement was sent but not confirmed; you may be charged
    │   └── ReceiptMismatch            the peer's, fraud: its receipt disagrees with what was signed (or the chain)
    ├── WalletError                    ours: no usable key (bad key, keystore or password, missing env vars)
    ├── TrustStoreError                ours or the host's: the trust file is unreadable; nothing is paid until fixed
    ├── LedgerError                    the database's or ours: the ledger could not do what was asked
    │   ├── EntryNotFound              ours: no entry has that id
    │   ├── InvalidTransition          ours: the entry's state does not allow this step
    │   └── SchemaError                the database's: its schema is newer than this library, or not the ledger's
    ├── MalformedPayment               the paying client's: its payment header does not decode (the server answers 400)
    ├── FacilitatorError               the facilitator's: no verdict (unreachable, timed out, not x402)
    ├── ServerStartError               the host's: the uvicorn server of `serve_app` did not come up
    └── MissingExtra                   ours: a part needs an extra that is not installed (also an ImportError)

The local-chain kit's errors (`DevnetError`, `AnvilNotFound`, `AnvilStartError`) live with it in `x402pay.testing`;
they derive from `X402PayError` too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from x402pay.ledger._model import Budget, Entry


class X402PayError(Exception):
    """Base class of every error x402pay raises on purpose."""


class PaymentError(X402PayError):
    """A paid request could not be completed."""


class ChallengeError(PaymentError):
    """The server's 402 challenge is malformed, oversized, or not an x402 challenge (the peer's fault)."""


class NoAcceptableRequirement(PaymentError):
    """No offered payment requirement passes the spend policy; `refusals` says why, per option."""

    def __init__(self, message: str, refusals: Mapping[int, str] | None = None) -> None:
        super().__init__(message)
        self.refusals: dict[int, str] = dict(refusals or {})


class SpendCapExceeded(NoAcceptableRequirement):
    """Paying would sign more than the policy's cap (our limit, not the peer's fault)."""


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


class NotBudgeted(SpendCapExceeded):
    """The ledger has budgets and none covers the payment (its asset, network or origin): refused unsigned.

    Budgets fail closed: a payment outside every budget would be spent without a limit. Give the payment a budget
    (e.g. ``Budget(ANY_USDC, ...)`` covers USDC on every chain), or narrow the policy to what the budgets cover.
    """


class OriginUntrusted(PaymentError):
    """The origin was caught lying about a payment; it is not paid until the mark is cleared.

    Clear it with ``x402pay trust reset ORIGIN`` or ``TrustStore.reset``.
    """


class AlreadyPaid(PaymentError):
    """This logical request (its Idempotency-Key) was already paid: at another origin, which a redirect led to, or
    through a payment channel whose server served it before its answer was lost (it proved it holds the voucher
    this request signed).

    Our own refusal, made before anything more is signed: the payment made stays with its origin.
    """


class PaymentInFlight(PaymentError):
    """Another request with the same idempotency key holds a reservation: it is signing, or died while signing.

    Nothing was signed for this request; the transport waited a while for the other one to finish first. Retry
    with the same key once the other one has finished; a reservation left by a dead process is freed by
    `Ledger.release_stale` or `Ledger.reconcile` once it is stale. `entry` is the ledger's reservation (None when
    the twin is in this process and there is no ledger).
    """

    def __init__(self, entry: Entry | None, key: str | None = None) -> None:
        # Imported here, not at the top: the ledger imports this module.
        from x402pay.ledger._core import DEFAULT_STALE_AFTER

        if entry is None:
            message = (
                f"another request of this process with idempotency key {str(key)[:80]!r} is still signing its "
                "payment; nothing was signed for this one. Retry with the same key once that request has finished "
                "(its payment is then re-sent, not signed again)"
            )
        else:
            message = (
                f"another request with idempotency key {entry.key!r} holds reservation {entry.id} and is signing "
                "its payment, or its process died while signing; nothing was signed for this one. Retry with the "
                "same key once that request has finished (its payment is then reused, not signed again). A "
                "reservation left by a dead process is freed by Ledger.release_stale() or Ledger.reconcile() once "
                f"it is older than their stale_after ({DEFAULT_STALE_AFTER} s by default)"
            )
        super().__init__(message)
        self.entry = entry


class SigningError(PaymentError):
    """The wallet could not sign the chosen requirement (e.g. an asset without a known EIP-712 domain)."""


class Permit2AllowanceRequired(PaymentError):
    """The payer has not approved Permit2 for the token, and the server offered no gas-free approval.

    Approve once with ``Wallet.approve_permit2`` (or ``x402pay wallet approve-permit2``); nothing was signed.
    """


class ChainUnavailable(PaymentError):
    """The chain's JSON-RPC endpoint (``rpc_url``) was down, too slow or answered nonsense during a check that must
    pass before signing (the Permit2 allowance); nothing was signed."""


class PaymentRejected(PaymentError):
    """The server answered the signed payment with another 402; `reason` is its error code or message."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class SettlementError(PaymentError):
    """The server's settlement response or receipt (header, body or stream frame) is malformed."""


class SettlementFailed(PaymentError):
    """The server reports that settlement failed; `code` is its reason code, if it gave one."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class SettlementPending(PaymentError):
    """The server sent the settlement but could not confirm it in time (``settlement_pending``): the payment may
    still be charged. `payment` is the Payment, `transaction` the hash the server gave (if any); the ledger keeps
    the signed maximum held until the chain decides (``x402pay reconcile``). Do not pay again for the request:
    re-send it with the same Idempotency-Key."""

    def __init__(self, message: str, payment: object = None, transaction: str | None = None) -> None:
        super().__init__(message)
        self.payment = payment
        self.transaction = transaction


class ReceiptMismatch(PaymentError):
    """A receipt disagrees with what was signed or with the chain: fraud.

    `payment` is the Payment concerned (when known); `verification`, the on-chain check that failed (when the
    chain, not the receipt alone, showed it).
    """

    def __init__(self, message: str, payment: object = None, verification: object = None) -> None:
        super().__init__(message)
        self.payment = payment
        self.verification = verification


class WalletError(X402PayError):
    """No usable signing key: a malformed key, a keystore that does not open, or missing env vars."""


class TrustStoreError(X402PayError):
    """The trust file (`TrustStore`) cannot be read, or does not hold the store's marks. It fails closed: no payment
    is signed while the marks are unknown. Fix or remove the file (``x402pay trust list`` shows what it reads)."""


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


class MalformedPayment(X402PayError):
    """A payment header that does not decode: not base64, not JSON, or not a PaymentPayload (answered with 400)."""


class FacilitatorError(X402PayError):
    """The facilitator gave no verdict: unreachable, timed out, or answered something that is not x402."""


class ServerStartError(X402PayError):
    """The uvicorn server did not come up (its startup failed or timed out)."""


class MissingExtra(X402PayError, ImportError):
    """A part of x402pay needs optional dependencies that are not installed; the message names the extra and the
    command that installs it (``pip install 'x402pay[server]'``). It is an ImportError too, as importing the part
    raises it."""
