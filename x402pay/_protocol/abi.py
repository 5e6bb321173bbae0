"""The contract interfaces x402 payments touch, each written once: the token, Permit2 and the x402 Permit2 proxies.

Functions are web3 JSON ABI fragments, grouped per contract (`TOKEN_ABI`, `PERMIT2_ABI`, `EXACT_PROXY_ABI`,
`UPTO_PROXY_ABI`); `input_types` and `selector` give what raw ``eth_call`` data and calldata decoding need from the
same fragments. Events are only ever filtered by topic, so they are kept as their topics.
"""

from __future__ import annotations

from typing import Any, Final

from eth_utils.crypto import keccak

Fragment = dict[str, Any]


def _param(kind: str, name: str = "") -> Fragment:
    return {"type": kind, "name": name}


def _tuple(name: str, *components: Fragment) -> Fragment:
    return {"type": "tuple", "name": name, "components": list(components)}


def _function(name: str, inputs: list[Fragment], outputs: tuple[str, ...] = (), *, view: bool = False) -> Fragment:
    return {
        "type": "function",
        "name": name,
        "inputs": inputs,
        "outputs": [_param(kind) for kind in outputs],
        "stateMutability": "view" if view else "nonpayable",
    }


def _topic(signature: str) -> str:
    return "0x" + keccak(text=signature).hex()


# The token: ERC-20, EIP-2612 (nonces, DOMAIN_SEPARATOR) and EIP-3009, as USDC's FiatToken has them.
AUTHORIZATION_STATE: Final = _function(
    "authorizationState", [_param("address", "authorizer"), _param("bytes32", "nonce")], ("bool",), view=True
)
TOKEN_ABI: Final = [
    _function("balanceOf", [_param("address", "account")], ("uint256",), view=True),
    _function("allowance", [_param("address", "owner"), _param("address", "spender")], ("uint256",), view=True),
    _function("approve", [_param("address", "spender"), _param("uint256", "value")], ("bool",)),
    _function("nonces", [_param("address", "owner")], ("uint256",), view=True),
    _function("DOMAIN_SEPARATOR", [], ("bytes32",), view=True),
    AUTHORIZATION_STATE,
    _function(
        "transferWithAuthorization",
        [
            _param("address", "from"),
            _param("address", "to"),
            _param("uint256", "value"),
            _param("uint256", "validAfter"),
            _param("uint256", "validBefore"),
            _param("bytes32", "nonce"),
            _param("bytes", "signature"),
        ],
    ),
]
TRANSFER_TOPIC: Final = _topic("Transfer(address,address,uint256)")
AUTHORIZATION_USED_TOPIC: Final = _topic("AuthorizationUsed(address,bytes32)")

# Permit2: the unordered nonces of SignatureTransfer, 256 to a bitmap word.
NONCE_BITMAP: Final = _function(
    "nonceBitmap", [_param("address", "owner"), _param("uint256", "wordPosition")], ("uint256",), view=True
)
PERMIT2_ABI: Final = [NONCE_BITMAP]

# The x402 proxies: ``settle``, and ``settleWithPermit`` that first submits the payer's EIP-2612 approval of Permit2.
_PERMIT: Final = _tuple(
    "permit",
    _tuple("permitted", _param("address", "token"), _param("uint256", "amount")),
    _param("uint256", "nonce"),
    _param("uint256", "deadline"),
)
_EIP2612_PERMIT: Final = _tuple(
    "permit2612",
    _param("uint256", "value"),
    _param("uint256", "deadline"),
    _param("bytes32", "r"),
    _param("bytes32", "s"),
    _param("uint8", "v"),
)
_EXACT_WITNESS: Final = _tuple("witness", _param("address", "to"), _param("uint256", "validAfter"))
_UPTO_WITNESS: Final = _tuple(
    "witness", _param("address", "to"), _param("address", "facilitator"), _param("uint256", "validAfter")
)
_EXACT_SETTLE: Final = [_PERMIT, _param("address", "owner"), _EXACT_WITNESS, _param("bytes", "signature")]
_UPTO_SETTLE: Final = [
    _PERMIT, _param("uint256", "amount"), _param("address", "owner"), _UPTO_WITNESS, _param("bytes", "signature")
]  # fmt: skip
EXACT_PROXY_ABI: Final = [
    _function("settle", _EXACT_SETTLE),
    _function("settleWithPermit", [_EIP2612_PERMIT, *_EXACT_SETTLE]),
]
UPTO_PROXY_ABI: Final = [
    _function("settle", _UPTO_SETTLE),
    _function("settleWithPermit", [_EIP2612_PERMIT, *_UPTO_SETTLE]),
]


def _canonical(param: Fragment) -> str:
    """A parameter's type as a function signature spells it: tuples written out, ``(address,uint256)``."""
    if param["type"] != "tuple":
        return str(param["type"])
    return "(" + ",".join(_canonical(component) for component in param["components"]) + ")"


def input_types(function: Fragment) -> tuple[str, ...]:
    """The canonical types of a function's inputs, in order (what ``eth_abi`` encodes and decodes)."""
    return tuple(_canonical(param) for param in function["inputs"])


def selector(function: Fragment) -> str:
    """A function's 4-byte selector, ``0x``-prefixed lower-case hex."""
    return "0x" + keccak(text=f"{function['name']}({','.join(input_types(function))})")[:4].hex()


def address_topic(address: str) -> str:
    """An address as an indexed event argument's topic (left-padded to 32 bytes, lower case)."""
    return "0x" + "00" * 12 + address.lower().removeprefix("0x")
