"""What the paid side knows about each payment channel, in SQLite: `ChannelStore`.

Per channel: its config, what this server has charged in all (``charged``), the latest voucher (its ceiling and
signature: what a claim may redeem), the on-chain state mirrored from the facilitator with the time it was read, and
a reservation that lets one request at a time use the channel. A file survives a restart (the vouchers are money:
losing them forfeits what they would claim); ``":memory:"`` (the default) does not.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from x402pay._protocol.channel_extra import ChannelState, VoucherState
from x402pay._protocol.channel_wire import parse_config
from x402pay._schemes.channel import ChannelConfig
from x402pay.errors import LedgerError
from x402pay.server._sqlite import open_store

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS channels (
    channel_id TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    charged TEXT NOT NULL,
    signed_max TEXT NOT NULL,
    signature TEXT NOT NULL,
    balance TEXT NOT NULL,
    total_claimed TEXT NOT NULL,
    withdraw_requested_at INTEGER NOT NULL,
    refund_nonce TEXT NOT NULL,
    synced_at REAL NOT NULL,
    busy_token TEXT,
    busy_until REAL NOT NULL DEFAULT 0,
    last_used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS receivers (
    receiver TEXT NOT NULL,
    token TEXT NOT NULL,
    PRIMARY KEY (receiver, token)
)
"""
_SELECT: Final = (
    "SELECT channel_id, config, charged, signed_max, signature, balance, total_claimed, withdraw_requested_at, "
    "refund_nonce, synced_at, last_used FROM channels"
)
_UPSERT: Final = """
INSERT INTO channels (channel_id, config, charged, signed_max, signature, balance, total_claimed,
    withdraw_requested_at, refund_nonce, synced_at, last_used)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (channel_id) DO UPDATE SET
    config = excluded.config, charged = excluded.charged, signed_max = excluded.signed_max,
    signature = excluded.signature, balance = excluded.balance, total_claimed = excluded.total_claimed,
    withdraw_requested_at = excluded.withdraw_requested_at, refund_nonce = excluded.refund_nonce,
    synced_at = excluded.synced_at, last_used = excluded.last_used
"""


@dataclass(frozen=True)
class ChannelRecord:
    """One channel as this server sees it (amounts in atomic units; `synced_at`: when the chain was last read)."""

    channel_id: bytes
    config: ChannelConfig
    charged: int
    signed_max: int
    signature: bytes = field(repr=False)  # never in a repr or a log
    balance: int
    total_claimed: int
    withdraw_requested_at: int = 0
    refund_nonce: int = 0
    synced_at: float = 0.0
    last_used: float = 0.0

    @property
    def unclaimed(self) -> int:
        """What the latest voucher would claim beyond what the chain already counts as claimed."""
        return max(0, self.charged - self.total_claimed)

    def state(self, *, charged: bool = True) -> ChannelState:
        """The ``channelState`` the server reports (with ``chargedCumulativeAmount`` unless `charged` is False)."""
        return ChannelState(
            channel_id=self.channel_id,
            balance=self.balance,
            total_claimed=self.total_claimed,
            withdraw_requested_at=self.withdraw_requested_at,
            refund_nonce=self.refund_nonce,
            charged_cumulative_amount=self.charged if charged else None,
        )

    def voucher_state(self) -> VoucherState:
        """The ``voucherState`` of a corrective 402: the voucher this server holds, which proves its charge."""
        return VoucherState(self.signed_max, self.signature or None)

    def mirrored(self, state: ChannelState, at: float) -> ChannelRecord:
        """This record with the chain's state as `state` says, read at `at`."""
        return replace(
            self, balance=state.balance, total_claimed=state.total_claimed, refund_nonce=state.refund_nonce,
            withdraw_requested_at=state.withdraw_requested_at, synced_at=at,
        )  # fmt: skip


class ChannelStore:
    """The channels of a paid side, in SQLite: a file survives a restart; ``":memory:"`` does not.

    Thread-safe; every write is committed before it returns. `reserve` / `release` give one request at a time a
    channel: a concurrent one is refused (the client's next request supersedes it anyway).
    """

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._conn = open_store(self.path, _SCHEMA)

    def __repr__(self) -> str:
        return f"ChannelStore({self.path!r})"

    def get(self, channel_id: bytes) -> ChannelRecord | None:
        """The channel's record, or None if this server has not seen it (or refunded it in full)."""
        rows = self._query(_SELECT + " WHERE channel_id = ?", (channel_id.hex(),))
        return _record(rows[0]) if rows else None

    def save(self, record: ChannelRecord) -> None:
        """Write `record` (its reservation, if any, stands), and remember its receiver and token for sweeps.

        ``total_claimed`` only grows: a request that read the record before a claim landed cannot undo it.
        """
        key = record.channel_id.hex()
        with self._guard():
            row = self._conn.execute("SELECT total_claimed FROM channels WHERE channel_id = ?", (key,)).fetchone()
            if row is not None and int(row[0]) > record.total_claimed:
                record = replace(record, total_claimed=int(row[0]))
            self._conn.execute(_UPSERT, _row(record))
            pair = (record.config.receiver, record.config.token)
            self._conn.execute("INSERT OR IGNORE INTO receivers (receiver, token) VALUES (?, ?)", pair)

    def mark_claimed(self, channel_id: bytes, total: int) -> None:
        """Record that the chain counts `total` as claimed from the channel (never lowering what it says)."""
        with self._guard():
            key = channel_id.hex()
            row = self._conn.execute("SELECT total_claimed FROM channels WHERE channel_id = ?", (key,)).fetchone()
            if row is not None and int(row[0]) < total:
                self._conn.execute("UPDATE channels SET total_claimed = ? WHERE channel_id = ?", (str(total), key))

    def receivers(self) -> list[tuple[str, str]]:
        """Every (receiver, token) a channel of this store has paid: what a sweep moves money for."""
        return [
            (str(receiver), str(token)) for receiver, token in self._query("SELECT receiver, token FROM receivers", ())
        ]

    def delete(self, channel_id: bytes) -> None:
        """Forget a channel (after a full refund: nothing is left to claim)."""
        self._query("DELETE FROM channels WHERE channel_id = ?", (channel_id.hex(),))

    def all(self) -> list[ChannelRecord]:
        """Every channel, least recently used first."""
        rows = self._query(_SELECT + " ORDER BY last_used", ())
        return [record for row in rows if (record := _record(row)) is not None]

    def reserve(self, channel_id: bytes, ttl: float) -> str | None:
        """Reserve the channel for one request for at most `ttl` s; its token, or None if another request holds it."""
        token, now = secrets.token_hex(8), time.time()
        with self._guard(flushed=False):
            self._conn.execute(
                "INSERT OR IGNORE INTO channels (channel_id, config, charged, signed_max, signature, balance, "
                "total_claimed, withdraw_requested_at, refund_nonce, synced_at, last_used) "
                "VALUES (?, '', '-1', '0', '', '0', '0', 0, '0', 0, ?)",
                (channel_id.hex(), now),
            )
            taken = self._conn.execute(
                "UPDATE channels SET busy_token = ?, busy_until = ? WHERE channel_id = ? AND busy_until < ?",
                (token, now + ttl, channel_id.hex(), now),
            ).rowcount
        return token if taken else None

    def release(self, channel_id: bytes, token: str) -> None:
        """End the reservation `token` (a placeholder row of a channel never paid on goes with it)."""
        with self._guard(flushed=False):
            self._conn.execute(
                "UPDATE channels SET busy_token = NULL, busy_until = 0 WHERE channel_id = ? AND busy_token = ?",
                (channel_id.hex(), token),
            )
            self._conn.execute(
                "DELETE FROM channels WHERE channel_id = ? AND charged = '-1' AND busy_token IS NULL",
                (channel_id.hex(),),
            )

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._conn.close()

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._guard():
            return self._conn.execute(sql, params).fetchall()

    @contextlib.contextmanager
    def _guard(self, *, flushed: bool = True) -> Iterator[None]:
        """The store's lock, inside one transaction; SQLite's errors as `LedgerError`. Not `flushed`: committed
        without waiting for the disk, for a request's hold on a channel (a power loss ends every request; a hold it
        kept expires), never for a voucher or a charge."""
        try:
            with self._lock:
                if not flushed:
                    self._conn.execute("PRAGMA synchronous = NORMAL")
                try:
                    self._conn.execute("BEGIN IMMEDIATE")
                    try:
                        yield
                    except BaseException:
                        self._conn.execute("ROLLBACK")
                        raise
                    self._conn.execute("COMMIT")
                finally:
                    if not flushed:
                        self._conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            raise LedgerError(f"the channel store {self.path!r} failed: {exc}") from exc


def _row(record: ChannelRecord) -> tuple[Any, ...]:
    return (
        record.channel_id.hex(), json.dumps(record.config.as_wire()), str(record.charged), str(record.signed_max),
        record.signature.hex(), str(record.balance), str(record.total_claimed), record.withdraw_requested_at,
        str(record.refund_nonce), record.synced_at, record.last_used,
    )  # fmt: skip


def _record(row: tuple[Any, ...]) -> ChannelRecord | None:
    key, config, charged, signed_max, signature, balance, claimed, requested, nonce, synced, used = row
    if charged == "-1":  # a reservation's placeholder: nothing known yet
        return None
    return ChannelRecord(
        bytes.fromhex(key), parse_config(json.loads(config)), int(charged), int(signed_max), bytes.fromhex(signature),
        int(balance), int(claimed), int(requested), int(nonce), float(synced), float(used),
    )  # fmt: skip
