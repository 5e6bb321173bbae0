"""What reconcile() asks the chain, and the answers it acts on.

`Chain` is the small interface: the chain's clock, whether an authorization's nonce is used, and the token
transfer it paid. `Web3Chain` answers it over web3.py: EIP-3009 ``authorizationState(payer, nonce)``, Permit2
``nonceBitmap(payer, word)``, and the token's own ``Transfer`` logs (filtered by the token's address, payer and
payee) of the transaction whose calldata carries the nonce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from eth_utils.address import to_checksum_address

from x402pay._protocol.abi import PERMIT2_ABI, TOKEN_ABI, TRANSFER_TOPIC, address_topic
from x402pay._protocol.addresses import PERMIT2_ADDRESS
from x402pay._protocol.networks import chain_id_of
from x402pay.ledger._model import Entry, Transfer

if TYPE_CHECKING:  # web3 takes a second to import; only a Web3Chain's caller needs it, and brings it
    from web3 import Web3

PERMIT2: Final = "permit2"
#: How far before its reservation an authorization's transfer is looked for: the clocks of the chain and of
#: the machine that reserved it may disagree.
CLOCK_SLACK: Final = 600


class Chain(Protocol):
    """The chain state reconcile() needs, for the entries of one EVM chain."""

    def serves(self, network: str) -> bool:
        """Whether entries on `network` (CAIP-2 or a v1 name) live on this chain."""

    def time(self) -> int:
        """The latest block's timestamp."""

    def nonce_used(self, entry: Entry) -> bool:
        """Whether the nonce of `entry`'s signed authorization is used (or canceled) on chain."""

    def find_transfer(self, entry: Entry) -> Transfer | None:
        """The token transfer that `entry`'s authorization paid, or None if none is found."""


@dataclass(frozen=True)
class Resolution:
    """What chain state says about one open entry: settle it (with `transfer`), release it, or leave it open."""

    entry: Entry
    action: Literal["settle", "release", "open"]
    reason: str = ""
    transfer: Transfer | None = None


def judge_entry(chain: Chain, entry: Entry, margin: int) -> Resolution:
    """Decide `entry` from chain state; released only once expired by more than `margin` seconds, nonce unused."""
    if entry.payer is None or entry.nonce is None or entry.valid_before is None:
        return Resolution(entry, "open", "no signed payment recorded")
    if not chain.serves(entry.network):
        return Resolution(entry, "open", f"on {entry.network}, not this chain")
    # The clock first: a nonce still unused when read after expiry can never be used.
    now = chain.time()
    if chain.nonce_used(entry):
        transfer = chain.find_transfer(entry)
        if transfer is None:
            return Resolution(entry, "open", "nonce used on chain but no matching Transfer found (canceled?)")
        return Resolution(entry, "settle", f"settled on chain in {transfer.tx_hash}", transfer)
    if now > entry.valid_before + margin:
        return Resolution(entry, "release", f"expired at {entry.valid_before} with its nonce unused on chain")
    return Resolution(entry, "open", f"unused, but valid until {entry.valid_before}")


def _nonce_bytes(entry: Entry) -> bytes:
    nonce = str(entry.nonce)
    if entry.method == PERMIT2:
        return int(nonce).to_bytes(32, "big")
    return bytes.fromhex(nonce.removeprefix("0x"))


class Web3Chain:
    """`Chain` over a web3.py ``Web3`` connected to one EVM chain (any RPC node; anvil in tests)."""

    def __init__(self, web3: Web3, *, permit2: str = PERMIT2_ADDRESS) -> None:
        self._web3 = web3
        self._permit2 = web3.eth.contract(address=to_checksum_address(permit2), abi=PERMIT2_ABI)
        self.chain_id = int(web3.eth.chain_id)

    def serves(self, network: str) -> bool:
        """Whether `network` is this chain."""
        try:
            return chain_id_of(network) == self.chain_id
        except ValueError:
            return False

    def time(self) -> int:
        """The latest block's timestamp."""
        return int(self._web3.eth.get_block("latest")["timestamp"])

    def nonce_used(self, entry: Entry) -> bool:
        """EIP-3009 ``authorizationState`` or the Permit2 nonce bitmap bit of the entry's nonce."""
        payer = to_checksum_address(str(entry.payer))
        if entry.method == PERMIT2:
            word, bit = divmod(int(str(entry.nonce)), 256)
            return bool(self._permit2.functions.nonceBitmap(payer, word).call() >> bit & 1)
        token = self._web3.eth.contract(address=to_checksum_address(entry.asset), abi=TOKEN_ABI)
        return bool(token.functions.authorizationState(payer, _nonce_bytes(entry)).call())

    def find_transfer(self, entry: Entry) -> Transfer | None:
        """The payer-to-payee Transfer of the token in the transaction whose calldata carries the entry's nonce."""
        latest = self._web3.eth.get_block("latest")
        logs = self._web3.eth.get_logs(
            {
                "address": to_checksum_address(entry.asset),
                "topics": [TRANSFER_TOPIC, address_topic(str(entry.payer)), address_topic(entry.pay_to)],
                "fromBlock": self._first_block_at(entry.created_at - CLOCK_SLACK, latest),
                "toBlock": int(latest["number"]),
            }
        )
        nonce = _nonce_bytes(entry)
        for tx_hash in dict.fromkeys(log["transactionHash"] for log in logs):
            if nonce in bytes(self._web3.eth.get_transaction(tx_hash)["input"]):
                amount = _paid(entry, [log for log in logs if log["transactionHash"] == tx_hash])
                return None if amount is None else Transfer(amount, "0x" + bytes(tx_hash).hex())
        return None

    def _timestamp(self, number: int) -> int:
        return int(self._web3.eth.get_block(number)["timestamp"])

    def _first_block_at(self, timestamp: int, latest: Any) -> int:
        """The first block at or after `timestamp`: gallop back from the latest block, then bisect."""
        high, step = int(latest["number"]), 1
        low = max(0, high - step)
        while low > 0 and self._timestamp(low) >= timestamp:
            high, step = low, step * 2
            low = max(0, high - step)
        if self._timestamp(low) >= timestamp:
            return low
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if self._timestamp(middle) >= timestamp else (middle, high)
        return high


def _paid(entry: Entry, logs: list[Any]) -> int | None:
    """The amount one authorization moved among a transaction's matching logs (a batch may carry several)."""
    values = [int.from_bytes(bytes(log["data"])[:32], "big") for log in logs]
    if entry.amount in values:
        return entry.amount
    return values[0] if len(values) == 1 else None
