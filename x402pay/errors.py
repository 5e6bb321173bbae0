"""The x402pay error tree.

Every error the library raises on purpose derives from `X402PayError`; foreign exceptions (web3, eth-account,
pydantic, json, base64) are mapped to these where they enter, and chained with ``raise ... from exc``. Each name
says whose fault it is: ours (policy, budget, wallet) or the peer's (a malformed challenge or settlement).

    X402PayError
    ├── PaymentError                   a paid request could not be completed
    │   ├── ChallengeError             the peer's 402 is malformed or not x402
    │   ├── NoAcceptableRequirement    no offered way to pay passes the spend policy (why, per option)
    │   │   └── SpendCapExceeded       ours: an option was acceptable but for the cap
    │   ├── OriginUntrusted            this origin lied about a payment before; a person must clear it
    │   ├── SigningError               ours: the wallet could not sign the chosen requirement
    │   ├── Permit2AllowanceRequired   ours: Permit2 may not spend the token yet, and no gas-free way was offered
    │   ├── ChainUnavailable           the JSON-RPC endpoint failed a check made before signing (nothing signed)
    │   ├── PaymentRejected            the peer answered the signed payment with another 402
    │   │   └── AlreadyPaid            another origin asks to be paid for a request already paid (a redirect)
    │   ├── SettlementError            the peer's settlement response or receipt is malformed
    │   ├── SettlementFailed           the peer says settlement failed (e.g. a compose.error frame mid-stream)
    │   └── ReceiptMismatch            fraud: the peer's receipt disagrees with what was signed (or the chain)
    └── WalletError                    no usable key: bad key, keystore or password, missing env vars

The local-chain kit's errors (`DevnetError`, `AnvilNotFound`, `AnvilStartError`) live with it in `x402pay.testing`;
they derive from `X402PayError` too.
"""

from __future__ import annotations

from collections.abc import Mapping


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


class OriginUntrusted(PaymentError):
    """The origin was caught lying about a payment; it is not paid until the mark is cleared.

    Clear it with ``x402pay trust reset ORIGIN`` or ``TrustStore.reset``.
    """


class SigningError(PaymentError):
    """The wallet could not sign the chosen requirement (e.g. an asset without a known EIP-712 domain)."""


class PaymentRejected(PaymentError):
    """The server answered the signed payment with another 402; `reason` is its error code or message."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class Permit2AllowanceRequired(PaymentError):
    """The payer has not approved Permit2 for the token, and the server offered no gas-free approval.

    Approve once with ``Wallet.approve_permit2`` (or ``x402pay wallet approve-permit2``); nothing was signed.
    """


class ChainUnavailable(PaymentError):
    """The chain's JSON-RPC endpoint (``rpc_url``) was down, too slow or answered nonsense during a check that must
    pass before signing (the Permit2 allowance); nothing was signed."""


class AlreadyPaid(PaymentRejected):
    """This logical request (its Idempotency-Key) was already paid at another origin, which a redirect led to."""


class SettlementError(PaymentError):
    """The server's settlement response or receipt (header, body or stream frame) is malformed."""


class SettlementFailed(PaymentError):
    """The server reports that settlement failed; `code` is its reason code, if it gave one."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


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
