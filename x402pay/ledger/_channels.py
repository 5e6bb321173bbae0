# ruff: noqa: S608  -- the table and column names are constants of this module; every value is a bound parameter
"""The paying side's payment channels (``batch-settlement``), as ledger programs: one row per channel.

A row keeps what this payer knows of one channel: its config, the cumulative amount the server charged us
(`charged`), the highest voucher ceiling we ever signed (`signed_max`), what we deposited, refunded and withdrew,
and the chain's ``channels(id)`` as last read. Every change to a channel happens under its *lease*: a holder takes
it in one conditional statement (atomic on SQLite's write lock and under PostgreSQL's row lock), so that requests on
one channel, from any thread, process or machine sharing the ledger, queue and never sign two ceilings from the
same starting point. A lease expires, so a holder that died frees its channel.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from functools import partial
from typing import Any, Final

from x402pay._protocol.addresses import BATCH_SETTLEMENT_ADDRESS
from x402pay.errors import InvalidTransition
from x402pay.ledger._holder import process_is_gone
from x402pay.ledger._model import Entry, EntryState
from x402pay.ledger._query import Program, Query

CHANNELS: Final = "x402pay_channels"

SCHEMA: Final = (
    f"""CREATE TABLE {CHANNELS} (
        channel_id TEXT PRIMARY KEY, network TEXT NOT NULL, origin TEXT NOT NULL, token TEXT NOT NULL,
        receiver TEXT NOT NULL, config TEXT NOT NULL, charged BIGINT NOT NULL, signed_max BIGINT NOT NULL,
        deposited BIGINT NOT NULL, refunded BIGINT NOT NULL, withdrawn BIGINT NOT NULL,
        chain_balance BIGINT NOT NULL, chain_claimed BIGINT NOT NULL, state TEXT NOT NULL,
        withdraw_after BIGINT, signed_key TEXT, lease TEXT, lease_until BIGINT NOT NULL, updated_at BIGINT NOT NULL)""",
)

#: The states of a channel: paying, a withdrawal under way (nothing more is signed), or emptied.
STATES: Final = ("open", "withdrawing", "closed")


@dataclass(frozen=True)
class ChannelRecord:
    """One channel as this payer keeps it (amounts in atomic units of `token`).

    `charged` is the server's cumulative charge that we accepted (the spend); `signed_max` the highest voucher
    ceiling we signed (`signed_max - charged` is committed, not yet charged); `deposited - refunded - withdrawn` is
    the escrow we put in and did not take back. `chain_balance` / `chain_claimed` are ``channels(id)`` as last read.
    `signed_key` is the logical request (its idempotency key) that signed the `signed_max` voucher: a retry of it
    whose voucher the server proves it served is not paid again.
    """

    channel_id: str
    network: str
    origin: str
    token: str
    receiver: str
    config: Mapping[str, Any]
    charged: int = 0
    signed_max: int = 0
    deposited: int = 0
    refunded: int = 0
    withdrawn: int = 0
    chain_balance: int = 0
    chain_claimed: int = 0
    state: str = "open"
    withdraw_after: int | None = None
    signed_key: str | None = None
    lease: str | None = None
    lease_until: int = 0
    updated_at: int = 0

    @property
    def escrow(self) -> int:
        """What we deposited and have not taken back (spent or not)."""
        return self.deposited - self.refunded - self.withdrawn

    @property
    def committed(self) -> int:
        """What our vouchers allow the server to claim beyond what it charged."""
        return max(self.signed_max - self.charged, 0)


COLUMNS: Final = tuple(item.name for item in fields(ChannelRecord))
_SELECT: Final = f"SELECT {', '.join(COLUMNS)} FROM {CHANNELS}"
#: The fields a holder may change (the identity and the lease are not among them).
CHANGEABLE: Final = frozenset(
    {"charged", "signed_max", "deposited", "refunded", "withdrawn", "chain_balance", "chain_claimed", "state",
     "withdraw_after", "signed_key"}
)  # fmt: skip


def _record(row: tuple[Any, ...]) -> ChannelRecord:
    values = dict(zip(COLUMNS, row, strict=True))
    values["config"] = json.loads(values["config"])
    for name in ("charged", "signed_max", "deposited", "refunded", "withdrawn", "chain_balance", "chain_claimed"):
        values[name] = int(values[name])
    values["lease_until"] = int(values["lease_until"])
    values["updated_at"] = int(values["updated_at"])
    values["withdraw_after"] = None if values["withdraw_after"] is None else int(values["withdraw_after"])
    return ChannelRecord(**values)


def get(channel_id: str) -> Program[ChannelRecord | None]:
    """The channel `channel_id`, or None."""
    rows = yield Query(f"{_SELECT} WHERE channel_id = ?", (channel_id,))
    return _record(rows[0]) if rows else None


def every() -> Program[list[ChannelRecord]]:
    """Every channel, the most recently changed first."""
    rows = yield Query(f"{_SELECT} ORDER BY updated_at DESC, channel_id")
    return [_record(row) for row in rows]


def lease(new: ChannelRecord, holder: str, until: int, now: int) -> Program[ChannelRecord | None]:
    """Create the channel if unknown, then take its lease for `holder` until `until` if it is free (or already
    `holder`'s, or expired, or its holder's process on this machine has ended): the record, or None when another
    holder has it."""
    values = tuple(json.dumps(new.config) if name == "config" else getattr(new, name) for name in COLUMNS)
    yield Query(
        f"INSERT INTO {CHANNELS} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
        "ON CONFLICT (channel_id) DO NOTHING",
        (*values[:-3], None, 0, 0),  # updated_at 0: never changed, so its first holder starts it from the chain
        reads=False,
    )
    rows = yield Query(
        f"UPDATE {CHANNELS} SET lease = ?, lease_until = ? WHERE channel_id = ? "
        f"AND (lease IS NULL OR lease = ? OR lease_until < ?) RETURNING {', '.join(COLUMNS)}",
        (holder, until, new.channel_id, holder, now),
    )
    if rows:
        return _record(rows[0])
    held = yield Query(f"SELECT lease FROM {CHANNELS} WHERE channel_id = ?", (new.channel_id,))
    if not held or held[0][0] is None or not process_is_gone(held[0][0]):
        return None
    rows = yield Query(  # the lease of a process that died: taken over, unless another took it first
        f"UPDATE {CHANNELS} SET lease = ?, lease_until = ? WHERE channel_id = ? AND lease = ? "
        f"RETURNING {', '.join(COLUMNS)}",
        (holder, until, new.channel_id, held[0][0]),
    )
    return _record(rows[0]) if rows else None


def update(channel_id: str, holder: str, changes: Mapping[str, Any], now: int) -> Program[ChannelRecord]:
    """Apply `changes` to a channel whose lease `holder` holds; LookupError if it does not hold it."""
    unknown = set(changes) - CHANGEABLE
    if unknown:
        raise ValueError(f"not a changeable channel field: {sorted(unknown)}")
    names = sorted(changes)
    assignments = ", ".join(f"{name} = ?" for name in [*names, "updated_at"])
    rows = yield Query(
        f"UPDATE {CHANNELS} SET {assignments} WHERE channel_id = ? AND lease = ? RETURNING {', '.join(COLUMNS)}",
        (*(changes[name] for name in names), now, channel_id, holder),
    )
    if not rows:
        raise LookupError(f"channel {channel_id[:66]} is not leased by this holder (its lease expired?)")
    return _record(rows[0])


def release(channel_id: str, holder: str) -> Program[None]:
    """Give the lease of `channel_id` back, if `holder` still holds it."""
    yield Query(
        f"UPDATE {CHANNELS} SET lease = NULL, lease_until = 0 WHERE channel_id = ? AND lease = ?",
        (channel_id, holder),
        reads=False,
        last=True,
    )


def return_escrow(record: ChannelRecord, amount: int, now: int) -> Program[int]:
    """Escrow `amount` came back from `record`'s channel (a refund, a withdrawal): the budgets stop holding it.

    A deposit is booked as a payment of its amount to the settlement contract, settled once the chain shows it; the
    held amounts of the settled deposits of this origin, token and network are lowered by `amount`, oldest first
    (the budgets count by origin, token and network, so which deposit gives it back does not matter). Returns
    what was given back (less than `amount` when the deposits were booked elsewhere)."""
    from x402pay.ledger import _sql  # it imports this module for the schema

    rows = yield Query(
        f"SELECT id FROM {_sql.ENTRIES} WHERE scheme = ? AND lower(pay_to) = ? AND origin = ? AND lower(asset) = ? "
        "AND network = ? AND state = 'settled' AND held > 0 ORDER BY created_at, id",
        ("batch-settlement", BATCH_SETTLEMENT_ADDRESS.lower(), record.origin, record.token.lower(), record.network),
    )
    left = amount
    for (entry_id,) in rows:
        if left <= 0:
            break
        before = yield from _sql.get(str(entry_id))
        after = yield from _sql.transition(str(entry_id), now, partial(_lower, left))
        left -= before.held - after.held
    return amount - max(left, 0)


def _lower(by: int, entry: Entry) -> Mapping[str, Any]:
    if entry.state is not EntryState.SETTLED:
        raise InvalidTransition(f"cannot return escrow from entry {entry.id}: it is {entry.state}", entry)
    return {"held": max(entry.held - by, 0)}


def forget(channel_id: str) -> Program[bool]:
    """Delete the record of `channel_id` (a store wiped by hand); whether there was one."""
    rows = yield Query(f"DELETE FROM {CHANNELS} WHERE channel_id = ? RETURNING channel_id", (channel_id,))
    return bool(rows)


class _Book:
    """What both channel books hold: the ledger's database and clock."""

    def __init__(self, database: Any, clock: Callable[[], float]) -> None:
        self._db = database
        self._clock = clock

    def now(self) -> int:
        """The book's clock, in whole seconds."""
        return int(self._clock())


class ChannelBook(_Book):
    """A ledger's channels (`Ledger.channels`), or a private in-memory set of them (`ChannelBook.in_memory`)."""

    @classmethod
    def in_memory(cls, clock: Callable[[], float]) -> ChannelBook:
        """Channels kept in this process only (a transport without a ledger): the same programs, in SQLite memory."""
        from x402pay.ledger._backends import SQLiteDatabase
        from x402pay.ledger._sql import migrate

        database = SQLiteDatabase(":memory:", durability="unsafe_process")
        database.run(migrate(), write=True, exclusive=True)
        return cls(database, clock)

    def get(self, channel_id: str) -> ChannelRecord | None:
        """The record of `channel_id`, or None."""
        return self._db.run(get(channel_id))  # type: ignore[no-any-return]

    def all(self) -> list[ChannelRecord]:
        """Every channel, the most recently changed first."""
        return self._db.run(every())  # type: ignore[no-any-return]

    def lease(self, new: ChannelRecord, holder: str, seconds: int) -> ChannelRecord | None:
        """Take the lease of `new`'s channel (created as `new` if unknown) for `seconds`; None while another holds
        it."""
        now = self.now()
        # Not flushed: a lease matters only while its holder lives, and a crash of the machine ends them all.
        return self._db.run(lease(new, holder, now + seconds, now), write=True)  # type: ignore[no-any-return]

    def update(self, channel_id: str, holder: str, **changes: Any) -> ChannelRecord:
        """Change a leased channel (see `CHANGEABLE`); LookupError when `holder` no longer holds its lease."""
        return self._db.run(update(channel_id, holder, changes, self.now()), write=True, durable=True)  # type: ignore[no-any-return]

    def note(self, channel_id: str, holder: str, **changes: Any) -> ChannelRecord:
        """`update`, without waiting for the commit to reach stable storage: for what a crash may lose because the
        voucher already written (durably, by `update`) covers it and the server's next corrective 402, which proves
        that voucher, restores it (the charge an answer reported)."""
        return self._db.run(update(channel_id, holder, changes, self.now()), write=True)  # type: ignore[no-any-return]

    def release(self, channel_id: str, holder: str) -> None:
        """Give the lease back."""
        self._db.run(release(channel_id, holder), write=True)

    def return_escrow(self, record: ChannelRecord, amount: int) -> int:
        """Escrow `amount` came back from `record`'s channel: the budgets stop holding it (see `return_escrow`)."""
        return self._db.run(return_escrow(record, amount, self.now()), write=True, durable=True)  # type: ignore[no-any-return]

    def forget(self, channel_id: str) -> bool:
        """Delete the record of `channel_id`; whether there was one."""
        return self._db.run(forget(channel_id), write=True)  # type: ignore[no-any-return]


class AsyncChannelBook(_Book):
    """An `AsyncLedger`'s channels (`AsyncLedger.channels`): `ChannelBook`'s operations, awaited, running the same
    programs over the same tables, so a channel's lease queues sync and async payers alike."""

    async def get(self, channel_id: str) -> ChannelRecord | None:
        """The record of `channel_id`, or None."""
        return await self._db.run(get(channel_id))  # type: ignore[no-any-return]

    async def all(self) -> list[ChannelRecord]:
        """Every channel, the most recently changed first."""
        return await self._db.run(every())  # type: ignore[no-any-return]

    async def lease(self, new: ChannelRecord, holder: str, seconds: int) -> ChannelRecord | None:
        """Take the lease of `new`'s channel (created as `new` if unknown) for `seconds`; None while another holds
        it."""
        now = self.now()
        # Not flushed: see `ChannelBook.lease`.
        return await self._db.run(lease(new, holder, now + seconds, now), write=True)  # type: ignore[no-any-return]

    async def update(self, channel_id: str, holder: str, **changes: Any) -> ChannelRecord:
        """Change a leased channel (see `CHANGEABLE`); LookupError when `holder` no longer holds its lease."""
        return await self._db.run(update(channel_id, holder, changes, self.now()), write=True, durable=True)  # type: ignore[no-any-return]

    async def note(self, channel_id: str, holder: str, **changes: Any) -> ChannelRecord:
        """See `ChannelBook.note`."""
        return await self._db.run(update(channel_id, holder, changes, self.now()), write=True)  # type: ignore[no-any-return]

    async def release(self, channel_id: str, holder: str) -> None:
        """Give the lease back."""
        await self._db.run(release(channel_id, holder), write=True)

    async def return_escrow(self, record: ChannelRecord, amount: int) -> int:
        """Escrow `amount` came back from `record`'s channel: the budgets stop holding it (see `return_escrow`)."""
        return await self._db.run(return_escrow(record, amount, self.now()), write=True, durable=True)  # type: ignore[no-any-return]

    async def forget(self, channel_id: str) -> bool:
        """Delete the record of `channel_id`; whether there was one."""
        return await self._db.run(forget(channel_id), write=True)  # type: ignore[no-any-return]
