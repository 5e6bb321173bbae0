"""How a `LocalFacilitator` sends a transaction: quoted in one JSON-RPC batch, signed here, recorded, broadcast.

web3's ``build_transaction`` asks the node four times (block, priority fee, estimate, nonce) through its per-call
machinery, and eth-account's ``sign_transaction`` validates and rebuilds the transaction through several layers:
most of the server's CPU for a settlement, the chain aside. Here one batch asks for the latest block (the clock
and the base fee), the priority fee, the account's pending nonce and the gas estimate (which is the simulation: a
revert refuses the transaction), and the EIP-1559 transaction is RLP-encoded here and its hash signed with the
account's ``unsafe_sign_hash`` (a test checks the bytes against eth-account's ``sign_transaction``). The fees are
web3's defaults: the node's priority fee, and a maximum of that plus twice the base fee. A node without
``eth_maxPriorityFeePerGas`` is asked ``eth_feeHistory`` instead, from then on: the median tip recent blocks paid.

Sends are one at a time, and each takes the node's pending count as quoted for its nonce, unless this sender
broadcast since the quote was asked (which the count may not show yet): then it takes one past that broadcast, if
that is larger. The node's count has the last word whenever it is fresh, so a chain that forgot a transaction (a
reorganisation, a node restarted, a test's snapshot reverted) leaves no gap. A node that refuses a nonce (another
program on the same account, a race the count lost) is asked the count again and the transaction signed again,
once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

from eth_account.signers.base import BaseAccount
from eth_typing import Hash32
from eth_utils.crypto import keccak

from x402pay._jsonrpc import BatchSender, Call, RpcAnswerError, block_timestamp, result_of
from x402pay.server._abi import revert_code_of
from x402pay.server._evm import Codes, Refusal
from x402pay.server._settlements import Broadcast, SettlementStore

logger = logging.getLogger("x402pay.server")

_EIP1559: Final = b"\x02"
# What a node says when the nonce is not the account's next one (geth, anvil, reth, erigon, besu).
_NONCE_REFUSALS: Final = ("nonce too low", "nonce too high", "invalid nonce", "underpriced", "already imported")
_ALREADY_KNOWN: Final = ("already known", "known transaction")
_PRIORITY_FEE: Final[Call] = ("eth_maxPriorityFeePerGas", [])
#: The median tip of each of the last ten blocks, for a node without ``eth_maxPriorityFeePerGas``.
_FEE_HISTORY: Final[Call] = ("eth_feeHistory", ["0xa", "latest", [50]])
#: The tip when recent blocks paid none: 1 gwei, what anvil suggests on a quiet chain.
_QUIET_CHAIN_TIP: Final = 10**9


@dataclass(frozen=True)
class Quote:
    """A transaction to send, as one batch priced it: call, gas, fees, the account's pending nonce, the chain time."""

    to: str
    data: str
    gas: int
    tip: int
    max_fee: int
    pending_nonce: int
    chain_time: int
    sends: int  # how many broadcasts this sender had made when the quote was asked
    refusal: Refusal | None = None  # the estimate reverted: `Sender.send` raises it


class Sender:
    """Sends `account`'s transactions through `rpc`, recording each in `store` before it leaves; `chain_id` says the
    chain's id when a transaction is signed.

    Thread-safe: sends are serialized (one nonce at a time); quotes are not.
    """

    def __init__(
        self,
        rpc: BatchSender,
        account: BaseAccount,
        store: SettlementStore,
        chain_id: Callable[[], int],
    ) -> None:
        self._rpc = rpc
        self._account = account
        self._store = store
        self._chain_id = chain_id
        self._lock = threading.Lock()
        self._sends = 0
        self._next_nonce = 0  # one past the last broadcast's nonce
        self._tip_call = _PRIORITY_FEE

    def quote(self, to: str, data: str, codes: Codes, at: str) -> Quote:
        """One batch: block, priority fee, pending nonce, gas estimate (in the block tagged `at`). A revert is kept as
        the quote's `refusal` (its code from `codes`), for the caller's own checks to come first; a node that answers
        anything else amiss raises `RpcAnswerError`."""
        sender, sends = self._account.address, self._sends
        block, tip, nonce, gas = self._rpc([
            ("eth_getBlockByNumber", ["latest", False]),
            self._tip_call,
            ("eth_getTransactionCount", [sender, "pending"]),
            ("eth_estimateGas", [{"from": sender, "to": to, "data": data}, at]),
        ])  # fmt: skip
        refusal = _refusal(gas["error"], codes) if "error" in gas else None
        base_fee = _quantity(result_of(block).get("baseFeePerGas", "0x0"))
        priority = self._priority_fee(tip)
        return Quote(
            to, data, 0 if refusal else _quantity(result_of(gas)), priority, priority + 2 * base_fee,
            _quantity(result_of(nonce)), block_timestamp(block), sends, refusal,
        )  # fmt: skip

    def _priority_fee(self, answer: dict[str, Any]) -> int:
        """The tip from the batch's answer; from ``eth_feeHistory`` when the node has no ``eth_maxPriorityFeePerGas``
        (it is then asked for history in every batch)."""
        if self._tip_call is _FEE_HISTORY:
            return tip_from_history(answer)
        if "error" not in answer:
            return _quantity(result_of(answer))
        logger.info("the node did not answer eth_maxPriorityFeePerGas (%s): tips from eth_feeHistory", answer["error"])
        self._tip_call = _FEE_HISTORY
        (history,) = self._rpc([_FEE_HISTORY])
        return tip_from_history(history)

    def send(self, quote: Quote, planned: Broadcast) -> Broadcast:
        """Sign `quote`, record it as `planned` (its hash filled in), broadcast it. Returns the broadcast that stands
        for `planned.key`: another one recorded first is followed, never sent twice. A node that refuses the
        transaction (other than for its nonce) raises `RpcAnswerError`; one that does not answer leaves it pending.
        A quote whose estimate reverted raises its `Refusal`."""
        if quote.refusal is not None:
            raise quote.refusal
        with self._lock:
            nonce = quote.pending_nonce
            if quote.sends != self._sends:
                nonce = max(nonce, self._next_nonce)
            return self._send_at(quote, planned, nonce, retry=True)

    def _send_at(self, quote: Quote, planned: Broadcast, nonce: int, *, retry: bool) -> Broadcast:
        raw, tx_hash = self.signed(quote, nonce)
        sent = replace(planned, tx_hash=tx_hash)
        standing = self._store.sending(sent)  # before it leaves: a crash after sending cannot lose it
        if standing.tx_hash != sent.tx_hash:
            return standing
        refusal = self._broadcast(raw, sent, nonce)
        if refusal is None:
            return sent
        self._store.forget(sent.key)
        if not retry or not any(text in refusal.lower() for text in _NONCE_REFUSALS):
            raise RpcAnswerError(f"the node refused the transaction: {refusal[:200]}")
        return self._send_at(quote, planned, self._pending_nonce(), retry=False)

    def signed(self, quote: Quote, nonce: int) -> tuple[bytes, str]:
        """The raw EIP-1559 transaction of `quote` at `nonce`, and its hash."""
        fields: list[Any] = [
            self._chain_id(), nonce, quote.tip, quote.max_fee, quote.gas,
            bytes.fromhex(quote.to[2:]), 0, bytes.fromhex(quote.data[2:]), [],
        ]  # fmt: skip
        signature = self._account.unsafe_sign_hash(Hash32(keccak(_EIP1559 + rlp(fields))))
        raw = _EIP1559 + rlp([*fields, signature.v - 27, signature.r, signature.s])
        return raw, "0x" + keccak(raw).hex()

    def _broadcast(self, raw: bytes, sent: Broadcast, nonce: int) -> str | None:
        """None when the transaction went out, or may have; else the node's reason for refusing it."""
        try:
            (answer,) = self._rpc([("eth_sendRawTransaction", ["0x" + raw.hex()])])
        except (OSError, ValueError):  # no answer: it may have gone out, so it stays pending for `follow` to decide
            logger.info("broadcasting settlement %s got no answer; following it", sent.tx_hash, exc_info=True)
            self._noted(nonce)  # not past it: if it did go out, the next send's refused nonce is read again
            return None
        error = answer.get("error")
        if error is not None:
            reason = str(error.get("message", error))
            if not any(text in reason.lower() for text in _ALREADY_KNOWN) and not self._known(sent.tx_hash):
                return reason
        self._noted(nonce + 1)
        return None

    def _noted(self, next_nonce: int) -> None:
        self._sends += 1
        self._next_nonce = next_nonce

    def _known(self, tx_hash: str) -> bool:
        """Whether the node has the transaction (a send retried after its first answer was lost is refused as a used
        nonce, though it went out)."""
        (answer,) = self._rpc([("eth_getTransactionByHash", [tx_hash])])
        return answer.get("result") is not None

    def _pending_nonce(self) -> int:
        (answer,) = self._rpc([("eth_getTransactionCount", [self._account.address, "pending"])])
        return _quantity(result_of(answer))


def _refusal(error: dict[str, Any], codes: Codes) -> Refusal:
    """The `Refusal` of a reverting estimate; `RpcAnswerError` for any other error."""
    message = str(error.get("message", ""))
    if error.get("code") != 3 and "revert" not in message.lower():
        raise RpcAnswerError(f"the RPC call failed: {error.get('code')} {message[:200]}")
    data = error.get("data")
    code = revert_code_of(data if isinstance(data, str) else None, message, codes)
    return Refusal(code, f"the settlement would revert: {message[:300]}")


def tip_from_history(answer: dict[str, Any]) -> int:
    """The median of the tips that recent blocks paid (an ``eth_feeHistory`` answer, one percentile asked), or
    `_QUIET_CHAIN_TIP` when none paid any."""
    history = result_of(answer)
    rewards = history.get("reward") if isinstance(history, dict) else None
    if not isinstance(rewards, list):
        raise RpcAnswerError(f"the RPC endpoint answered {str(history)[:80]!r} for a fee history")
    tips = [_quantity(block[0]) for block in rewards if isinstance(block, list) and block]
    paid = sorted(tip for tip in tips if tip > 0)
    return paid[len(paid) // 2] if paid else _QUIET_CHAIN_TIP


def _quantity(value: Any) -> int:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise RpcAnswerError(f"the RPC endpoint answered {str(value)[:80]!r} for a quantity")
    return int(value, 16)


def rlp(item: bytes | int | list[Any]) -> bytes:
    """The RLP encoding of `item`: bytes, a non-negative int (big-endian, no leading zeros), or a list of items."""
    if isinstance(item, list):
        payload = b"".join(rlp(element) for element in item)
        return _prefix(len(payload), 0xC0) + payload
    if isinstance(item, int):
        item = item.to_bytes((item.bit_length() + 7) // 8, "big")
    if len(item) == 1 and item[0] < 0x80:
        return item
    return _prefix(len(item), 0x80) + item


def _prefix(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes([offset + length])
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([offset + 55 + len(size)]) + size
