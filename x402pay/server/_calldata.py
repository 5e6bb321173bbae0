"""Call data for the reads and the simulated settlement of a verification, encoded straight with eth-abi.

web3's contract objects give the same bytes (a test compares them) at several times the cost, on the path of
every paid request. Selectors and argument types come from the ABIs the settlement uses.
"""

from __future__ import annotations

from typing import Any, Final

from eth_abi.abi import encode
from eth_utils.abi import function_abi_to_4byte_selector, get_abi_input_types
from web3.contract.contract import ContractFunction

from x402pay._jsonrpc import Call
from x402pay._protocol.abi import EXACT_PROXY_ABI, TOKEN_ABI, UPTO_PROXY_ABI
from x402pay._protocol.addresses import EXACT_PERMIT2_PROXY_ADDRESS, PERMIT2_ADDRESS, UPTO_PERMIT2_PROXY_ADDRESS
from x402pay._protocol.models import PaymentRequirements
from x402pay.server._evm import Authorization, Eip3009Authorization, Permit2Authorization

#: The block a settlement is simulated and estimated in, where the node allows it: the one a transaction sent now would
#: be mined in, timed by the node's clock. The latest block may be far older on a chain that mines only on demand
#: (anvil's automine, idle): there, an authorization whose ``validAfter`` is recent would look not yet valid, and stay
#: so. Some nodes refuse this tag for calls; `settling_probe` tells.
PENDING: Final = "pending"


def _function(abi: list[dict[str, Any]], name: str, arity: int) -> tuple[bytes, list[str]]:
    entry: Any = next(
        item for item in abi if item.get("type") == "function" and item["name"] == name and len(item["inputs"]) == arity
    )
    return function_abi_to_4byte_selector(entry), get_abi_input_types(entry)


_TRANSFER_WITH_AUTHORIZATION: Final = _function(TOKEN_ABI, "transferWithAuthorization", 7)
_EXACT_SETTLE: Final = _function(EXACT_PROXY_ABI, "settle", 4)
_UPTO_SETTLE: Final = _function(UPTO_PROXY_ABI, "settle", 5)
_BALANCE_OF: Final = _function(TOKEN_ABI, "balanceOf", 1)
_ALLOWANCE: Final = _function(TOKEN_ABI, "allowance", 2)


def _data(function: tuple[bytes, list[str]], *args: Any) -> str:
    selector, types = function
    return "0x" + (selector + encode(types, args)).hex()


def settlement(auth: Authorization, asset: str, amount: int) -> dict[str, str]:
    """The ``eth_call`` transaction object (``to``, ``data``) of the settlement without a permit, charging `amount`
    (upto; exact charges what was signed)."""
    if isinstance(auth, Eip3009Authorization):
        args = (auth.payer, auth.to, auth.amount, auth.valid_after, auth.deadline, auth.nonce, auth.signature)
        return {"to": asset, "data": _data(_TRANSFER_WITH_AUTHORIZATION, *args)}
    witness = tuple(auth.witness.values())
    if auth.facilitator is None:
        data = _data(_EXACT_SETTLE, auth.permit, auth.payer, witness, auth.signature)
        return {"to": EXACT_PERMIT2_PROXY_ADDRESS, "data": data}
    data = _data(_UPTO_SETTLE, auth.permit, amount, auth.payer, witness, auth.signature)
    return {"to": UPTO_PERMIT2_PROXY_ADDRESS, "data": data}


def of_call(call: ContractFunction) -> str:
    """The call data of a web3 contract call, for a transaction sent without web3 (its arguments as given)."""
    abi: Any = call.abi
    return "0x" + (function_abi_to_4byte_selector(abi) + encode(get_abi_input_types(abi), call.args)).hex()


def balance_of(asset: str, owner: str) -> dict[str, str]:
    """``balanceOf(owner)`` on `asset`."""
    return {"to": asset, "data": _data(_BALANCE_OF, owner)}


def permit2_allowance(asset: str, owner: str) -> dict[str, str]:
    """``allowance(owner, Permit2)`` on `asset`."""
    return {"to": asset, "data": _data(_ALLOWANCE, owner, PERMIT2_ADDRESS)}


def settling_probe(sender: str) -> list[Call]:
    """One batch that asks whether the node simulates and estimates in the `PENDING` block: a call and an estimate of
    an empty transfer from `sender` to itself there."""
    empty = {"from": sender, "to": sender}
    return [("eth_call", [empty, PENDING]), ("eth_estimateGas", [empty, PENDING])]


def verification(auth: Authorization, requirements: PaymentRequirements, sender: str, block: str) -> list[Call]:
    """One batch: the latest block (the clock), the settlement simulated from `sender` in `block` (the facilitator's
    settling block), the payer's balance (and Permit2 allowance)."""
    simulation = {"from": sender, **settlement(auth, requirements.asset, requirements.amount)}
    reads: list[Call] = [
        ("eth_getBlockByNumber", ["latest", False]),
        ("eth_call", [simulation, block]),
        ("eth_call", [balance_of(requirements.asset, auth.payer), "latest"]),
    ]
    if isinstance(auth, Permit2Authorization):
        reads.append(("eth_call", [permit2_allowance(requirements.asset, auth.payer), "latest"]))
    return reads
