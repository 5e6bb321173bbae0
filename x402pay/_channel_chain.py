"""What a payer asks the settlement contract directly: a channel's state, and its way out without the server.

``channels(id)`` gives a channel's (balance, totalClaimed) for recovery and to check what a server reports. The
escape hatch the official client lacks: ``initiateWithdraw(config, amount)``, then, once the channel's
``withdrawDelay`` has passed, ``finalizeWithdraw(config)``. Both are transactions the payer sends and pays gas for;
there is no signed variant. The receiver side can still claim vouchers it holds until the withdrawal finalizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from eth_utils.crypto import keccak

from x402pay._protocol.abi import Fragment, _function, _param, _tuple
from x402pay._protocol.addresses import BATCH_SETTLEMENT_ADDRESS
from x402pay._schemes.channel import ChannelConfig
from x402pay._wallet import Wallet
from x402pay.errors import SigningError

_CONFIG: Final = _tuple(
    "config",
    *(_param("address", name) for name in ("payer", "payerAuthorizer", "receiver", "receiverAuthorizer", "token")),
    _param("uint40", "withdrawDelay"),
    _param("bytes32", "salt"),
)
#: The settlement contract's functions a payer calls.
PAYER_ABI: Final[list[Fragment]] = [
    _function("channels", [_param("bytes32", "channelId")], ("uint128", "uint128"), view=True),
    _function("pendingWithdrawals", [_param("bytes32", "channelId")], ("uint128", "uint40"), view=True),
    _function("initiateWithdraw", [_CONFIG, _param("uint128", "amount")]),
    _function("finalizeWithdraw", [_CONFIG]),
]


@dataclass(frozen=True)
class OnChain:
    """A channel as the contract holds it: `balance` (deposits less refunds and withdrawals), `total_claimed`, and
    a pending withdrawal of `withdrawing` that may finalize at `withdraw_after` (0: none)."""

    balance: int
    total_claimed: int
    withdrawing: int = 0
    withdraw_after: int = 0

    @property
    def available(self) -> int:
        """Escrow not yet claimed."""
        return max(self.balance - self.total_claimed, 0)


def _contract(web3: Any) -> Any:
    return web3.eth.contract(address=BATCH_SETTLEMENT_ADDRESS, abi=PAYER_ABI)


def read_channel(web3: Any, channel_id: bytes, withdraw_delay: int = 0) -> OnChain:
    """``channels(id)`` and ``pendingWithdrawals(id)`` of `channel_id`."""
    functions = _contract(web3).functions
    balance, claimed = functions.channels(channel_id).call()
    pending, initiated = functions.pendingWithdrawals(channel_id).call()
    after = int(initiated) + withdraw_delay if int(initiated) else 0
    return OnChain(int(balance), int(claimed), int(pending), after)


#: The contract's refusals a payer's own transactions meet, by selector.
PAYER_ERRORS: Final = {
    keccak(text=f"{name}()")[:4].hex(): name
    for name in ("WithdrawDelayNotElapsed", "WithdrawalNotPending", "WithdrawalAlreadyPending", "NothingToWithdraw",
                 "WithdrawAmountExceedsAvailable", "NotAuthorizedToFinalizeWithdraw", "InvalidChannel")
}  # fmt: skip


def _send(web3: Any, wallet: Wallet, call: Any, what: str) -> str:
    from web3.exceptions import ContractCustomError

    try:
        transaction = call.build_transaction(
            {"from": wallet.address, "nonce": web3.eth.get_transaction_count(wallet.address, "pending")}
        )
    except ContractCustomError as exc:  # the estimate reverted: name the contract's reason
        selector = str(exc.data)[2:10] if isinstance(exc.data, str) else ""
        reason = PAYER_ERRORS.get(selector, f"error 0x{selector or 'unknown'}")
        raise SigningError(f"{what} would revert: {reason}; nothing was sent") from exc
    tx_hash = web3.eth.send_raw_transaction(wallet.sign_transaction(transaction))
    receipt = web3.eth.wait_for_transaction_receipt(tx_hash)
    if receipt["status"] != 1:
        raise SigningError(f"{what} transaction {tx_hash.to_0x_hex()} reverted")
    return str(tx_hash.to_0x_hex())


def initiate_withdraw(web3: Any, wallet: Wallet, config: ChannelConfig, amount: int) -> str:
    """Send ``initiateWithdraw(config, amount)`` from `wallet` (the payer) and wait for it; the transaction hash.

    The contract refuses (the estimate reverts) an amount above the unclaimed escrow, or a second withdrawal."""
    return _send(web3, wallet, _contract(web3).functions.initiateWithdraw(config.as_abi(), amount), "initiateWithdraw")


def finalize_withdraw(web3: Any, wallet: Wallet, config: ChannelConfig) -> str:
    """Send ``finalizeWithdraw(config)`` once the delay has passed; the transaction hash."""
    return _send(web3, wallet, _contract(web3).functions.finalizeWithdraw(config.as_abi()), "finalizeWithdraw")
