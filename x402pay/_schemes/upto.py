"""The x402 `upto` scheme on EVM: a Permit2 witness transfer for a maximum, settled later for what was used.

The witness binds the recipient, the one facilitator allowed to settle, and ``validAfter``; the spender is the x402
upto proxy, which refuses to move more than the signed maximum. A requirement without ``extra.facilitatorAddress``
is refused: without it, anyone could settle the authorization (for any amount up to the maximum).
"""

from __future__ import annotations

from x402pay._protocol.addresses import UPTO_PERMIT2_PROXY_ADDRESS
from x402pay._protocol.models import PaymentRequirements
from x402pay._schemes import eip712
from x402pay._schemes.exact import (
    DEFAULT_CLOCK_SKEW,
    SignedPayment,
    checksum_address,
    sign_permit2_witness,
    terms_of,
)
from x402pay._wallet import Wallet
from x402pay.errors import SigningError


def sign_upto(
    wallet: Wallet,
    requirement: PaymentRequirements,
    *,
    now: int,
    max_lifetime: int,
    clock_skew: int = DEFAULT_CLOCK_SKEW,
) -> SignedPayment:
    """Sign `requirement` (scheme ``upto``): Permit2 for ``amount`` as the maximum, witness {to, facilitator}."""
    if requirement.scheme != "upto":
        raise SigningError(f"sign_upto signs the 'upto' scheme, not {requirement.scheme!r}")
    method = (requirement.extra or {}).get("assetTransferMethod", "permit2")
    if method != "permit2":
        raise SigningError(f"upto is signed with Permit2 only, not assetTransferMethod {str(method)[:40]!r}")
    facilitator = requirement.extra_str("facilitatorAddress")
    if facilitator is None:
        raise SigningError("upto scheme requires facilitatorAddress in paymentRequirements.extra")
    terms = terms_of(requirement, now=now, max_lifetime=max_lifetime, clock_skew=clock_skew)
    witness = {
        "to": terms.pay_to,
        "facilitator": checksum_address(facilitator, "extra.facilitatorAddress"),
        "validAfter": terms.valid_after,
    }
    return sign_permit2_witness(
        wallet, requirement, terms, spender=UPTO_PERMIT2_PROXY_ADDRESS, witness=witness,
        witness_fields=eip712.UPTO_WITNESS_FIELDS,
    )  # fmt: skip
