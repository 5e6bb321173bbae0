"""Sign a chosen requirement with the signer of its scheme."""

from __future__ import annotations

from typing import Final

from x402pay._protocol.models import PaymentRequirements
from x402pay._schemes.exact import SignedPayment, sign_exact
from x402pay._schemes.upto import sign_upto
from x402pay._wallet import Wallet
from x402pay.errors import SigningError

#: The schemes this client can sign, in its default order of preference.
SIGNABLE_SCHEMES: Final = ("exact", "upto")


def sign_requirement(wallet: Wallet, requirement: PaymentRequirements, *, now: int, max_lifetime: int) -> SignedPayment:
    """Sign `requirement` with the signer of its scheme; SigningError for a scheme this client cannot sign."""
    if requirement.scheme == "exact":
        return sign_exact(wallet, requirement, now=now, max_lifetime=max_lifetime)
    if requirement.scheme == "upto":
        return sign_upto(wallet, requirement, now=now, max_lifetime=max_lifetime)
    raise SigningError(f"cannot sign scheme {requirement.scheme[:40]!r}; signable: {', '.join(SIGNABLE_SCHEMES)}")
