"""The contract errors a facilitator decodes from a reverted settlement (Permit2, x402 proxies, ERC-20, USDC).

The functions it calls are in `x402pay._protocol.abi`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from eth_utils.crypto import keccak

if TYPE_CHECKING:
    from x402pay.server._evm import Codes

#: Custom errors of Permit2, the proxies and OpenZeppelin ERC-20, by selector, as protocol reason codes;
#: ``@name`` stands for the `Codes` field of the kind of authorization being settled.
REVERT_CODES: Final = {
    keccak(text=signature)[:4]: code
    for signature, code in {
        "InvalidAmount()": "permit2_invalid_amount",
        "InvalidOwner()": "permit2_invalid_owner",
        "InvalidDestination()": "permit2_invalid_destination",
        "PaymentTooEarly()": "permit2_payment_too_early",
        "Permit2612AmountMismatch()": "permit2_2612_amount_mismatch",
        "AmountExceedsPermitted()": "upto_amount_exceeds_permitted",
        "UnauthorizedFacilitator()": "upto_unauthorized_facilitator",
        "InvalidNonce()": "@nonce_used",
        "SignatureExpired(uint256)": "@expired",
        "InvalidAmount(uint256)": "@amount",
        "InvalidSigner()": "@signature",
        "InvalidSignature()": "@signature",
        "InvalidSignatureLength()": "@signature",
        "InvalidContractSignature()": "@signature",
        "ERC20InsufficientAllowance(address,uint256,uint256)": "permit2_allowance_required",
        "ERC20InsufficientBalance(address,uint256,uint256)": "@balance",
    }.items()
}
#: FiatToken (USDC) revert reasons, as protocol reason codes.
REVERT_REASONS: Final = {
    "authorization is used or canceled": "@nonce_used",
    "authorization is expired": "@expired",
    "authorization is not yet valid": "@not_yet_valid",
    "invalid signature": "@signature",
    "exceeds balance": "@balance",
}


def revert_code(exc: Exception, codes: Codes) -> str:
    """The reason code of a reverted settlement call raised by web3 (`revert_code_of` its data and message)."""
    data = getattr(exc, "data", None)
    return revert_code_of(data if isinstance(data, str) else None, str(getattr(exc, "message", exc)), codes)


def revert_code_of(data: str | None, message: str, codes: Codes) -> str:
    """The reason code of a reverted settlement call: custom error selector first, then FiatToken's text."""
    code = None
    if data is not None and data.startswith("0x") and len(data) >= 10:
        code = REVERT_CODES.get(bytes.fromhex(data[2:10]))
    code = code or next((value for text, value in REVERT_REASONS.items() if text in message), None)
    if code is None:
        return codes.simulation
    return str(getattr(codes, code[1:])) if code.startswith("@") else code
