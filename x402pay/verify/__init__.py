"""Receipt verification against chain state: a server's settlement claim is checked, never trusted.

    claim = Claim.from_signed(payment.signed, payment.settled_amount, payment.transaction)
    verification = verify_claim(web3, claim, confirmations=2)
    verification.raise_for_mismatch()

For each claim, and saying which check failed: the RPC serves the signed chain; the transaction exists, succeeded
and has enough confirmations; it carries a ``Transfer`` log emitted by the signed asset (logs are filtered by
address before decoding) from the payer to the signed recipient, of the claimed amount, which is the signed one
(exact) or at most it (upto); it consumed the signed authorization (EIP-3009 ``AuthorizationUsed(payer, nonce)``
from the asset; Permit2: a call to the scheme's x402 proxy settling that owner and nonce, whose bit is set in
``nonceBitmap``); and no earlier payment claimed the same transaction (the ledger's `seen_transactions` hook).
A claim without tx hash is located by its nonce, or stays ``pending`` while its authorization is unused.
"""

from x402pay.errors import ReceiptMismatch
from x402pay.verify._claims import Check, Claim, Verdict, Verification
from x402pay.verify._rpc import averify_claim, averify_claims, verify_claim, verify_claims

__all__ = [
    "Check",
    "Claim",
    "ReceiptMismatch",
    "Verdict",
    "Verification",
    "averify_claim",
    "averify_claims",
    "verify_claim",
    "verify_claims",
]
