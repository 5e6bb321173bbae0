"""EIP-712 typed data for the authorizations x402 signs, named after their standards.

Used by the client to sign and by the facilitator to recover signers, so both agree byte for byte.
Every builder returns the "full message" form accepted by eth-account's ``encode_typed_data(full_message=...)``.
"""

from __future__ import annotations

from typing import Any, Final

from x402pay._protocol.addresses import PERMIT2_ADDRESS

TypedData = dict[str, Any]

#: The fields of an EIP-712 domain with a version (tokens, the batch-settlement contract).
DOMAIN_WITH_VERSION: Final = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
_DOMAIN_WITHOUT_VERSION: Final = [
    {"name": "name", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
_AUTHORIZATION_FIELDS: Final = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"},
    {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]
_TOKEN_PERMISSIONS: Final = [{"name": "token", "type": "address"}, {"name": "amount", "type": "uint256"}]
#: Witness of the x402 exact Permit2 proxy: ``Witness(address to,uint256 validAfter)``.
EXACT_WITNESS_FIELDS: Final = [{"name": "to", "type": "address"}, {"name": "validAfter", "type": "uint256"}]
#: Witness of the x402 upto Permit2 proxy: ``Witness(address to,address facilitator,uint256 validAfter)``.
UPTO_WITNESS_FIELDS: Final = [
    {"name": "to", "type": "address"},
    {"name": "facilitator", "type": "address"},
    {"name": "validAfter", "type": "uint256"},
]


def transfer_with_authorization(
    *,
    token_name: str,
    token_version: str,
    chain_id: int,
    token: str,
    authorization: dict[str, Any],
) -> TypedData:
    """EIP-3009 ``TransferWithAuthorization`` under the token's own domain.

    `authorization` holds ``from, to, value, validAfter, validBefore, nonce`` (ints, addresses, 0x nonce).
    """
    return {
        "types": {"EIP712Domain": DOMAIN_WITH_VERSION, "TransferWithAuthorization": _AUTHORIZATION_FIELDS},
        "primaryType": "TransferWithAuthorization",
        "domain": {"name": token_name, "version": token_version, "chainId": chain_id, "verifyingContract": token},
        "message": authorization,
    }


def permit_witness_transfer_from(
    *,
    chain_id: int,
    token: str,
    amount: int,
    spender: str,
    nonce: int,
    deadline: int,
    witness: dict[str, Any],
    witness_fields: list[dict[str, str]],
    permit2: str = PERMIT2_ADDRESS,
) -> TypedData:
    """Permit2 ``PermitWitnessTransferFrom`` (domain "Permit2", no version) with the x402 proxy's witness."""
    return {
        "types": {
            "EIP712Domain": _DOMAIN_WITHOUT_VERSION,
            "PermitWitnessTransferFrom": [
                {"name": "permitted", "type": "TokenPermissions"},
                {"name": "spender", "type": "address"},
                {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"},
                {"name": "witness", "type": "Witness"},
            ],
            "TokenPermissions": _TOKEN_PERMISSIONS,
            "Witness": witness_fields,
        },
        "primaryType": "PermitWitnessTransferFrom",
        "domain": {"name": "Permit2", "chainId": chain_id, "verifyingContract": permit2},
        "message": permit_witness_message(
            token=token, amount=amount, spender=spender, nonce=nonce, deadline=deadline, witness=witness
        ),
    }


def permit_witness_message(
    *, token: str, amount: int, spender: str, nonce: int, deadline: int, witness: dict[str, Any]
) -> dict[str, Any]:
    """The ``message`` of `permit_witness_transfer_from`."""
    return {
        "permitted": {"token": token, "amount": amount},
        "spender": spender,
        "nonce": nonce,
        "deadline": deadline,
        "witness": witness,
    }


def eip2612_permit(
    *,
    token_name: str,
    token_version: str,
    chain_id: int,
    token: str,
    owner: str,
    spender: str,
    value: int,
    nonce: int,
    deadline: int,
) -> TypedData:
    """EIP-2612 ``Permit`` under the token's domain (e.g. letting Permit2 spend, for gas-sponsored approval)."""
    return {
        "types": {
            "EIP712Domain": DOMAIN_WITH_VERSION,
            "Permit": [
                {"name": "owner", "type": "address"},
                {"name": "spender", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"},
            ],
        },
        "primaryType": "Permit",
        "domain": {"name": token_name, "version": token_version, "chainId": chain_id, "verifyingContract": token},
        "message": {"owner": owner, "spender": spender, "value": value, "nonce": nonce, "deadline": deadline},
    }
