"""Permit2 allowances: read them, send the one-time approve, or sign a gas-free EIP-2612 approval instead.

Permit2 (used by ``upto`` and by ``exact`` with ``assetTransferMethod: permit2``) can only move a token its owner
has approved it for. A server may offer the ``eip2612GasSponsoring`` extension: then the client signs an EIP-2612
``permit`` for Permit2 and the facilitator submits it with the settlement (``settleWithPermit``), gas-free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from eth_utils.address import to_checksum_address

from x402pay._protocol.abi import TOKEN_ABI
from x402pay._protocol.addresses import PERMIT2_ADDRESS
from x402pay._protocol.models import PaymentRequirements
from x402pay._protocol.networks import known_asset
from x402pay._schemes import eip712
from x402pay.errors import SigningError

if TYPE_CHECKING:
    from x402pay._wallet import Wallet

MAX_UINT256: Final = 2**256 - 1
GAS_SPONSORING: Final = "eip2612GasSponsoring"


def _token(web3: Any, token: str) -> Any:
    return web3.eth.contract(address=to_checksum_address(token), abi=TOKEN_ABI)


def permit2_allowance(web3: Any, token: str, owner: str) -> int:
    """``token.allowance(owner, Permit2)`` on a (sync) Web3."""
    return int(_token(web3, token).functions.allowance(to_checksum_address(owner), PERMIT2_ADDRESS).call())


async def apermit2_allowance(web3: Any, token: str, owner: str) -> int:
    """``token.allowance(owner, Permit2)`` on an AsyncWeb3."""
    return int(await _token(web3, token).functions.allowance(to_checksum_address(owner), PERMIT2_ADDRESS).call())


def token_nonce(web3: Any, token: str, owner: str) -> int:
    """The owner's EIP-2612 ``nonces`` on a (sync) Web3."""
    return int(_token(web3, token).functions.nonces(to_checksum_address(owner)).call())


async def atoken_nonce(web3: Any, token: str, owner: str) -> int:
    """The owner's EIP-2612 ``nonces`` on an AsyncWeb3."""
    return int(await _token(web3, token).functions.nonces(to_checksum_address(owner)).call())


def approve_permit2(web3: Any, wallet: Wallet, token: str, amount: int) -> str:
    """Send ``approve(Permit2, amount)`` from `wallet` and wait for it to be mined; the transaction hash."""
    call = _token(web3, token).functions.approve(PERMIT2_ADDRESS, amount)
    transaction = call.build_transaction(
        {"from": wallet.address, "nonce": web3.eth.get_transaction_count(wallet.address, "pending")}
    )
    tx_hash = web3.eth.send_raw_transaction(wallet.sign_transaction(transaction))
    receipt = web3.eth.wait_for_transaction_receipt(tx_hash)
    if receipt["status"] != 1:
        raise SigningError(f"approve(Permit2) transaction {tx_hash.to_0x_hex()} reverted")
    return str(tx_hash.to_0x_hex())


def offers_gas_sponsoring(extensions: dict[str, Any] | None) -> bool:
    """Whether a challenge's extensions offer gas-free Permit2 approval by EIP-2612."""
    return isinstance((extensions or {}).get(GAS_SPONSORING), dict)


def gas_sponsoring_extension(
    wallet: Wallet,
    requirement: PaymentRequirements,
    offered: dict[str, Any],
    *,
    nonce: int,
    deadline: int,
) -> dict[str, Any]:
    """The ``eip2612GasSponsoring`` extension for the payload: a signed EIP-2612 permit letting Permit2 spend
    exactly the payment's amount (the x402 proxies insist on that), added to the server's own ``info``."""
    chain_id = requirement.chain_id
    known = known_asset(chain_id, requirement.asset)
    name = requirement.extra_str("name") or (known.name if known else None)
    version = requirement.extra_str("version") or (known.version if known else None)
    if not name or not version:
        raise SigningError(f"no EIP-712 domain known for {requirement.asset}: cannot sign an EIP-2612 permit")
    typed = eip712.eip2612_permit(
        token_name=name, token_version=version, chain_id=chain_id, token=to_checksum_address(requirement.asset),
        owner=wallet.address, spender=PERMIT2_ADDRESS, value=requirement.amount, nonce=nonce, deadline=deadline,
    )  # fmt: skip
    ours = {
        "from": wallet.address,
        "asset": to_checksum_address(requirement.asset),
        "spender": PERMIT2_ADDRESS,
        "amount": str(requirement.amount),
        "nonce": str(nonce),
        "deadline": str(deadline),
        "signature": "0x" + wallet.sign_typed_data(typed).hex(),
        "version": "1",
    }
    server: dict[str, Any] = offered.get(GAS_SPONSORING) or {}
    info: dict[str, Any] = server["info"] if isinstance(server.get("info"), dict) else {}
    return {**server, "info": {**info, **ours}}
