"""What a `LocalFacilitator` broadcast: one row per payment it sent a settlement for, in SQLite.

A row is written *before* its transaction is broadcast (the hash of a signed transaction is known before it is sent),
so a crash between sending and recording cannot lose one. It is ``pending`` until the chain decides: ``settled``
(mined, succeeded), or ``failed`` (mined and reverted, or never mined and no longer able to be). A payment presented
again while its row is pending is never broadcast a second time: the facilitator follows the stored transaction.

The store is the paid side's books: `SettlementStore.settled_total` says what a payer was charged, and
`LocalFacilitator.reconcile` settles the pending rows from the chain, as the client's ``reconcile`` does its own.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal

from x402pay._jsonrpc import BatchSender, RpcAnswerError, block_timestamp, result_of
from x402pay._protocol.models import SettleResponse
from x402pay.server._sqlite import open_store

State = Literal["pending", "settled", "failed"]
#: How the key of a payment channel's deposit begins: escrow, not a charge.
ESCROW: Final = "channel-deposit:"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS settlements (
    key TEXT PRIMARY KEY,
    tx_hash TEXT NOT NULL,
    network TEXT NOT NULL,
    payer TEXT NOT NULL,
    amount TEXT NOT NULL,
    valid_before INTEGER NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    sent_at REAL NOT NULL,
    decided_at REAL
)
"""
_SELECT: Final = "SELECT key, tx_hash, network, payer, amount, valid_before, state, detail FROM settlements"
# A payment has one row: a new broadcast takes the place of a failed one only, never of one pending or settled.
_INSERT: Final = """
INSERT INTO settlements (key, tx_hash, network, payer, amount, valid_before, state, detail, sent_at)
VALUES (?, ?, ?, ?, ?, ?, 'pending', '', ?)
ON CONFLICT (key) DO UPDATE SET
    tx_hash = excluded.tx_hash, network = excluded.network, payer = excluded.payer, amount = excluded.amount,
    valid_before = excluded.valid_before, state = 'pending', detail = '', sent_at = excluded.sent_at, decided_at = NULL
WHERE settlements.state = 'failed'
"""


@dataclass(frozen=True)
class Broadcast:
    """One settlement transaction this facilitator sent: which payment (`key`), its hash, what it charges.

    `valid_before` is when the payment's authorization expires: a transaction still unmined after it can no
    longer move money.
    """

    key: str
    tx_hash: str
    network: str
    payer: str
    amount: int
    valid_before: int
    state: State = "pending"
    detail: str = ""


class SettlementStore:
    """The settlements a facilitator broadcast, in SQLite: a file survives a restart; ``":memory:"`` does not.

        store = SettlementStore("/var/lib/api/settlements.sqlite3")
        facilitator = LocalFacilitator(rpc_url, account, settlements=store)

    Thread-safe (the facilitator settles from worker threads); every write is committed before it returns.
    """

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._conn = open_store(self.path, _SCHEMA)

    def __repr__(self) -> str:
        return f"SettlementStore({self.path!r})"

    def find(self, key: str) -> Broadcast | None:
        """The broadcast for payment `key`, or None if none was sent."""
        rows = self._query(_SELECT + " WHERE key = ?", (key,))
        return _broadcast(rows[0]) if rows else None

    def sending(self, broadcast: Broadcast) -> Broadcast:
        """Record `broadcast` as pending, before it is sent (in place of a failed row of the same payment only).

        Returns the row that stands: `broadcast`, or the one another settlement of the same payment recorded
        first (in another thread or process); that one is to be followed, and `broadcast` never sent.
        """
        row = (broadcast.key, broadcast.tx_hash, broadcast.network, broadcast.payer, str(broadcast.amount),
               broadcast.valid_before, time.time())  # fmt: skip
        with self._lock:
            self._conn.execute(_INSERT, row)
            standing = self._conn.execute(_SELECT + " WHERE key = ?", (broadcast.key,)).fetchone()
        return _broadcast(standing)

    def decide(self, key: str, state: State, detail: str = "") -> None:
        """Record what the chain decided about the pending broadcast of `key`."""
        self._query(
            "UPDATE settlements SET state = ?, detail = ?, decided_at = ? WHERE key = ? AND state = 'pending'",
            (state, detail[:500], time.time(), key),
        )

    def forget(self, key: str) -> None:
        """Drop the row of a transaction the node refused outright: it was never broadcast."""
        self._query("DELETE FROM settlements WHERE key = ? AND state = 'pending'", (key,))

    def pending(self) -> list[Broadcast]:
        """The broadcasts the chain has not decided yet, oldest first."""
        rows = self._query(_SELECT + " WHERE state = 'pending' ORDER BY sent_at", ())
        return [_broadcast(row) for row in rows]

    def settled_total(self, payer: str) -> int:
        """What the settled exact and upto payments charged `payer`, in atomic units. A payment channel's deposit is
        not counted: it is escrow, which the payer can take back; what a channel charged is in its claims
        (`ChannelClaims`)."""
        sql = "SELECT amount FROM settlements WHERE state = 'settled' AND lower(payer) = ? AND key NOT LIKE ?"
        rows = self._query(sql, (payer.lower(), f"{ESCROW}%"))
        return sum(int(row[0]) for row in rows)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._conn.close()

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()


def _broadcast(row: tuple[Any, ...]) -> Broadcast:
    key, tx_hash, network, payer, amount, valid_before, state, detail = row
    return Broadcast(key, tx_hash, network, payer, int(amount), int(valid_before), state, detail)


#: The reason code of a settlement that was broadcast and not yet confirmed (the official facilitators' code).
SETTLEMENT_PENDING: Final = "settlement_pending"
# What asking for a receipt can raise: the node did not answer, or answered nonsense (RpcAnswerError).
_UNDECIDED: Final = (OSError, ValueError)
# Seconds between asks for a receipt, doubling from the first to the last.
_FIRST_ASK, _LAST_ASK = 0.002, 0.5


def follow(rpc: BatchSender, store: SettlementStore, broadcast: Broadcast, wait: float) -> Broadcast:
    """Wait up to `wait` seconds (0: one look) for `broadcast`'s receipt; record and return what the chain decided.

    A transaction still unmined (or a node that does not answer) leaves it pending: never failed on a guess.
    """
    try:
        receipt = receipt_of(rpc, broadcast.tx_hash, wait)
    except _UNDECIDED:
        return broadcast
    if receipt is None:
        return broadcast
    state: State = "settled" if receipt.get("status") == "0x1" else "failed"
    detail = f"mined in block {int(receipt['blockNumber'], 16)}" + ("" if state == "settled" else ", reverted")
    store.decide(broadcast.key, state, detail)
    return replace(broadcast, state=state, detail=detail)


def receipt_of(rpc: BatchSender, tx_hash: str, wait: float) -> dict[str, Any] | None:
    """The receipt of `tx_hash`, asked for at once, again 2 ms later, then twice as long each time up to 0.5 s, for
    `wait` seconds (0: one look); None when it has not come. web3's own wait sleeps 100 ms between asks, many times
    what a local chain takes to mine. A node that does not answer raises an OSError or a ValueError."""
    deadline = time.monotonic() + wait
    pause = _FIRST_ASK
    while (receipt := _receipt(rpc, tx_hash)) is None:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        time.sleep(min(pause, left))
        pause = min(2 * pause, _LAST_ASK)
    return receipt


def _receipt(rpc: BatchSender, tx_hash: str) -> dict[str, Any] | None:
    receipt = result_of(rpc([("eth_getTransactionReceipt", [tx_hash])])[0])
    if receipt is not None and not (isinstance(receipt, dict) and isinstance(receipt.get("blockNumber"), str)):
        raise RpcAnswerError("the RPC endpoint's receipt has no block number")
    return receipt


def answer(broadcast: Broadcast) -> SettleResponse:
    """The settlement answer for `broadcast` as it stands: success, ``transaction_failed`` or ``settlement_pending``.

    A pending answer carries the hash in ``transaction`` and the charge in ``amount``: the payer may still be charged.
    """
    common = {"network": broadcast.network, "payer": broadcast.payer}
    if broadcast.state == "settled":
        return SettleResponse(success=True, transaction=broadcast.tx_hash, amount=broadcast.amount, **common)
    if broadcast.state == "failed":
        message = f"settlement transaction {broadcast.tx_hash} reverted"
        return SettleResponse(success=False, error_reason="transaction_failed", error_message=message, **common)
    message = f"settlement transaction {broadcast.tx_hash} was sent and is not confirmed yet: it may still charge"
    return SettleResponse(
        success=False, transaction=broadcast.tx_hash, amount=broadcast.amount, error_reason=SETTLEMENT_PENDING,
        error_message=message, **common,
    )  # fmt: skip


def reconcile_pending(rpc: BatchSender, store: SettlementStore) -> list[Broadcast]:
    """Decide `store`'s pending broadcasts from the chain: mined (settled or reverted), or expired unmined (failed).

    Returns them as they now stand; those still pending are the ones that may yet be mined.
    """
    chain_time = block_timestamp(rpc([("eth_getBlockByNumber", ["latest", False])])[0])
    decided = []
    for broadcast in store.pending():
        followed = follow(rpc, store, broadcast, 0)
        if followed.state == "pending" and chain_time > followed.valid_before:
            # Blocks only move forward: past its authorization's deadline, the transaction can only revert.
            store.decide(followed.key, "failed", f"not mined before {followed.valid_before}")
            followed = replace(followed, state="failed")
        decided.append(followed)
    return decided
