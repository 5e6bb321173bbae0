"""EIP-712 vectors quoted in the protocol reference (x402-protocol.md sections 4.1, 4.2 and 5), recomputed here.

Each hash is computed twice where possible: by hand (keccak over the ABI encoding, as the contracts do) and by
eth-account's typed-data encoder. Both must equal the literal hex copied from the reference.
"""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

PERMIT2 = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
EXACT_PROXY = "0x402085c248EeA27D92E8b30b2C58ed07f9E20001"
UPTO_PROXY = "0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002"
BASE_SEPOLIA_USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
BASE_USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"

TRANSFER_WITH_AUTHORIZATION = (
    "TransferWithAuthorization(address from,address to,uint256 value,"
    "uint256 validAfter,uint256 validBefore,bytes32 nonce)"
)
AUTH_FIELDS = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"},
    {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]
# The x402 v2 specification's example authorization and its signature (specs/x402-specification-v2.md).
SPEC_AUTHORIZATION: dict[str, Any] = {
    "from": "0x857b06519E91e3A54538791bDbb0E22373e36b66",
    "to": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
    "value": 10000,
    "validAfter": 1740672089,
    "validBefore": 1740672154,
    "nonce": bytes.fromhex("f3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480"),
}
SPEC_SIGNATURE = (
    "0x2d6a7588d6acca505cbf0d9a4a227e0c52c6c34008c8e8986a1283259764173608a2ce6496642e377d6da8dbbf5836e9bd15092f9"
    "ecab05ded3d6293af148b571c"
)
BASE_SEPOLIA_DOMAIN = {"name": "USDC", "version": "2", "chainId": 84532, "verifyingContract": BASE_SEPOLIA_USDC}

PERMIT_WITNESS_STUB = (
    "PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline,"
)
TOKEN_PERMISSIONS = "TokenPermissions(address token,uint256 amount)"
EXACT_WITNESS = "Witness(address to,uint256 validAfter)"
UPTO_WITNESS = "Witness(address to,address facilitator,uint256 validAfter)"
TOKEN_PERMISSIONS_TYPEHASH = "0x618358ac3db8dc274f0cd8829da7e234bd48cd73c4a740aede1adec9846d06a1"
EXACT_WITNESS_TYPEHASH = "0xd97b3239a7f32295517bd14cb074edfdd188dfe5eb42f802bb26d4fd1eb12c37"
UPTO_WITNESS_TYPEHASH = "0xd4171c445a74218b01d4fd8af34ff1106580ea1e36ff837e64484bfaa2253b75"
EXACT_PRIMARY_TYPEHASH = "0xebc156cd23678a74c94df13d772ef5478420637f0c94bd10d509e1dc98f521c7"
UPTO_PRIMARY_TYPEHASH = "0x51dff6974ad4388c499e7fcfe838d2bd767162553a144098ce20ea661d70c2ee"


def hex32(value: bytes) -> str:
    return "0x" + value.hex()


def typehash(type_string: str) -> str:
    return hex32(keccak(text=type_string))


def encoded_hash(types: list[str], values: list[Any]) -> bytes:
    return keccak(encode(types, values))


def test_eip712_domain_typehash() -> None:
    assert (
        typehash("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
        == "0x8b73c3c69bb8fe3d512ecc4cf759cc79239f7b179b0ffacaa9a75d522b39400f"
    )


def test_transfer_with_authorization_typehash() -> None:
    assert typehash(TRANSFER_WITH_AUTHORIZATION) == "0x7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267"


@pytest.mark.parametrize(
    ("name", "chain_id", "token", "expected"),
    [
        ("USDC", 84532, BASE_SEPOLIA_USDC, "0x71f17a3b2ff373b803d70a5a07c046c1a2bc8e89c09ef722fcb047abe94c9818"),
        ("USD Coin", 8453, BASE_USDC, "0x02fa7265e7c5d81118673727957699e4d68f74cd74b7db77da710fe8a2c7834f"),
    ],
    ids=["base-sepolia", "base"],
)
def test_usdc_domain_separators(name: str, chain_id: int, token: str, expected: str) -> None:
    by_hand = encoded_hash(
        ["bytes32", "bytes32", "bytes32", "uint256", "address"],
        [
            keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
            keccak(text=name),
            keccak(text="2"),
            chain_id,
            token,
        ],
    )
    domain = {"name": name, "version": "2", "chainId": chain_id, "verifyingContract": token}
    by_eth_account = encode_typed_data(domain, {"TransferWithAuthorization": AUTH_FIELDS}, SPEC_AUTHORIZATION).header
    assert hex32(by_hand) == expected
    assert hex32(by_eth_account) == expected


def test_v2_example_struct_hash_digest_and_signature() -> None:
    expected_struct_hash = "0x49ad644555c7bdf3ea4fc022a4940ae5589b230b1dde0065c5504fa19bbe39a4"
    expected_digest = "0xf256992871671abcb27ff92885a7afa46218724e5fc0bac35d050115aa1d22e6"
    auth = SPEC_AUTHORIZATION
    by_hand = encoded_hash(
        ["bytes32", "address", "address", "uint256", "uint256", "uint256", "bytes32"],
        [keccak(text=TRANSFER_WITH_AUTHORIZATION), *(auth[field["name"]] for field in AUTH_FIELDS)],
    )
    signable = encode_typed_data(BASE_SEPOLIA_DOMAIN, {"TransferWithAuthorization": AUTH_FIELDS}, auth)

    assert hex32(by_hand) == expected_struct_hash
    assert hex32(signable.body) == expected_struct_hash
    assert hex32(keccak(b"\x19\x01" + signable.header + signable.body)) == expected_digest
    # The spec's example signature is a real one: it recovers to the example's payer under Base Sepolia's domain.
    assert Account.recover_message(signable, signature=SPEC_SIGNATURE) == auth["from"]


@pytest.mark.parametrize(
    ("chain_id", "expected"),
    [
        (1, "0x866a5aba21966af95d6c7ab78eb2b2fc913915c28be3b9aa07cc04ff903e3f28"),
        (8453, "0x3b6f35e4fce979ef8eac3bcdc8c3fc38fe7911bb0c69c8fe72bf1fd1a17e6f07"),
        (84532, "0x010f27a92fb9a32622f44f001dc4d15706a85b33499cfc2ce9033113ab26592c"),
        (43113, "0xfcbcba93fcd540ceb6a3915a2d74a078d57220a015f117bc21afa902102e2a04"),
    ],
)
def test_permit2_domain_separators(chain_id: int, expected: str) -> None:
    # Permit2's domain has no version field.
    by_hand = encoded_hash(
        ["bytes32", "bytes32", "uint256", "address"],
        [
            keccak(text="EIP712Domain(string name,uint256 chainId,address verifyingContract)"),
            keccak(text="Permit2"),
            chain_id,
            PERMIT2,
        ],
    )
    domain = {"name": "Permit2", "chainId": chain_id, "verifyingContract": PERMIT2}
    by_eth_account = encode_typed_data(
        domain, {"TokenPermissions": [{"name": "token", "type": "address"}]}, {"token": PERMIT2}
    )
    assert hex32(by_hand) == expected
    assert hex32(by_eth_account.header) == expected


def test_permit2_component_typehashes() -> None:
    assert typehash(TOKEN_PERMISSIONS) == TOKEN_PERMISSIONS_TYPEHASH
    assert typehash(EXACT_WITNESS) == EXACT_WITNESS_TYPEHASH
    assert typehash(UPTO_WITNESS) == UPTO_WITNESS_TYPEHASH


WITNESS_FIELDS = {
    "exact": [{"name": "to", "type": "address"}, {"name": "validAfter", "type": "uint256"}],
    "upto": [
        {"name": "to", "type": "address"},
        {"name": "facilitator", "type": "address"},
        {"name": "validAfter", "type": "uint256"},
    ],
}
WITNESS_VALUES: dict[str, dict[str, Any]] = {
    "exact": {"to": SPEC_AUTHORIZATION["to"], "validAfter": 1740672089},
    "upto": {"to": SPEC_AUTHORIZATION["to"], "facilitator": SPEC_AUTHORIZATION["from"], "validAfter": 1740672089},
}


@pytest.mark.parametrize(
    ("scheme", "witness_type", "witness_typehash", "spender", "primary_typehash"),
    [
        ("exact", EXACT_WITNESS, EXACT_WITNESS_TYPEHASH, EXACT_PROXY, EXACT_PRIMARY_TYPEHASH),
        ("upto", UPTO_WITNESS, UPTO_WITNESS_TYPEHASH, UPTO_PROXY, UPTO_PRIMARY_TYPEHASH),
    ],
)
def test_permit_witness_transfer_from_typehash_and_struct_hash(
    scheme: str, witness_type: str, witness_typehash: str, spender: str, primary_typehash: str
) -> None:
    # The proxies pass WITNESS_TYPE_STRING = "Witness witness)" + TokenPermissions(...) + Witness(...);
    # Permit2 hashes its stub followed by that string.
    witness_type_string = "Witness witness)" + TOKEN_PERMISSIONS + witness_type
    assert typehash(PERMIT_WITNESS_STUB + witness_type_string) == primary_typehash

    # The literal typehashes, used by hand, reproduce eth-account's struct hash of a full message.
    permitted = {"token": BASE_SEPOLIA_USDC, "amount": 10000}
    message = {"permitted": permitted, "spender": spender, "nonce": 2**255 + 7, "deadline": 1740672154}
    witness = WITNESS_VALUES[scheme]
    witness_hash = encoded_hash(
        ["bytes32", *(field["type"] for field in WITNESS_FIELDS[scheme])],
        [bytes.fromhex(witness_typehash[2:]), *witness.values()],
    )
    permitted_hash = encoded_hash(
        ["bytes32", "address", "uint256"], [bytes.fromhex(TOKEN_PERMISSIONS_TYPEHASH[2:]), *permitted.values()]
    )
    by_hand = encoded_hash(
        ["bytes32", "bytes32", "address", "uint256", "uint256", "bytes32"],
        [
            bytes.fromhex(primary_typehash[2:]),
            permitted_hash,
            spender,
            message["nonce"],
            message["deadline"],
            witness_hash,
        ],
    )
    types = {
        "PermitWitnessTransferFrom": [
            {"name": "permitted", "type": "TokenPermissions"},
            {"name": "spender", "type": "address"},
            {"name": "nonce", "type": "uint256"},
            {"name": "deadline", "type": "uint256"},
            {"name": "witness", "type": "Witness"},
        ],
        "TokenPermissions": [{"name": "token", "type": "address"}, {"name": "amount", "type": "uint256"}],
        "Witness": WITNESS_FIELDS[scheme],
    }
    domain = {"name": "Permit2", "chainId": 84532, "verifyingContract": PERMIT2}
    by_eth_account = encode_typed_data(domain, types, {**message, "witness": witness})
    assert by_eth_account.body == by_hand
