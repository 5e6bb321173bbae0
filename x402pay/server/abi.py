"""The few contract functions and errors a facilitator calls or decodes (ERC-20, EIP-3009, Permit2, x402 proxies)."""

from __future__ import annotations

from typing import Any, Final

from eth_utils.crypto import keccak

Param = dict[str, Any]


def _function(name: str, inputs: list[Param], outputs: tuple[str, ...] = (), view: bool = False) -> Param:
    return {
        "type": "function",
        "name": name,
        "inputs": inputs,
        "outputs": [_p(kind) for kind in outputs],
        "stateMutability": "view" if view else "nonpayable",
    }


def _p(kind: str, name: str = "") -> Param:
    return {"type": kind, "name": name}


def _tuple(name: str, *components: Param) -> Param:
    return {"type": "tuple", "name": name, "components": list(components)}


_PERMIT: Final = _tuple(
    "permit",
    _tuple("permitted", _p("address", "token"), _p("uint256", "amount")),
    _p("uint256", "nonce"),
    _p("uint256", "deadline"),
)
_EIP2612_PERMIT: Final = _tuple(
    "permit2612",
    _p("uint256", "value"),
    _p("uint256", "deadline"),
    _p("bytes32", "r"),
    _p("bytes32", "s"),
    _p("uint8", "v"),
)
_EXACT_WITNESS: Final = _tuple("witness", _p("address", "to"), _p("uint256", "validAfter"))
_UPTO_WITNESS: Final = _tuple("witness", _p("address", "to"), _p("address", "facilitator"), _p("uint256", "validAfter"))
_EXACT_SETTLE: Final = [_PERMIT, _p("address", "owner"), _EXACT_WITNESS, _p("bytes", "signature")]
_UPTO_SETTLE: Final = [
    _PERMIT, _p("uint256", "amount"), _p("address", "owner"), _UPTO_WITNESS, _p("bytes", "signature")
]  # fmt: skip

TOKEN_ABI: Final = [
    _function("balanceOf", [_p("address", "account")], ("uint256",), view=True),
    _function("allowance", [_p("address", "owner"), _p("address", "spender")], ("uint256",), view=True),
    _function("authorizationState", [_p("address", "authorizer"), _p("bytes32", "nonce")], ("bool",), view=True),
    _function("nonces", [_p("address", "owner")], ("uint256",), view=True),
    _function("DOMAIN_SEPARATOR", [], ("bytes32",), view=True),
    _function(
        "transferWithAuthorization",
        [
            _p("address", "from"),
            _p("address", "to"),
            _p("uint256", "value"),
            _p("uint256", "validAfter"),
            _p("uint256", "validBefore"),
            _p("bytes32", "nonce"),
            _p("bytes", "signature"),
        ],
    ),
]
PERMIT2_ABI: Final = [
    _function("nonceBitmap", [_p("address", "owner"), _p("uint256", "wordPosition")], ("uint256",), view=True),
]
#: ``settle`` and, with the payer's EIP-2612 approval of Permit2 first, ``settleWithPermit``.
EXACT_PROXY_ABI: Final = [
    _function("settle", _EXACT_SETTLE),
    _function("settleWithPermit", [_EIP2612_PERMIT, *_EXACT_SETTLE]),
]
UPTO_PROXY_ABI: Final = [
    _function("settle", _UPTO_SETTLE),
    _function("settleWithPermit", [_EIP2612_PERMIT, *_UPTO_SETTLE]),
]

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
