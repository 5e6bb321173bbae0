"""Where the ledger's programs run: SQLite (embedded) here, PostgreSQL (psycopg 3) in `_postgres`; sync and async.

Each backend runs one program (see `x402pay.ledger._sql`) in one transaction. ``exclusive`` transactions (reserve,
migrate) are serialized across every thread, process and machine that shares the database: SQLite through
``BEGIN IMMEDIATE`` (its write lock is the whole database), PostgreSQL through a transaction-level advisory lock
keyed by the schema. Other writes are single-row conditional updates and need no more than the default isolation.
A ``durable`` write is one whose commit must reach stable storage before it returns (see `Durability`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator
from enum import StrEnum
from typing import Protocol, TypeVar

from x402pay.errors import LedgerError
from x402pay.ledger._query import Program, Query, Rows

T = TypeVar("T")


class Durability(StrEnum):
    """How soon a committed ledger write reaches stable storage, i.e. survives a power cut or an OS crash.

    Every setting survives the process being killed (say between signing and sending): a commit that returned is in
    the SQLite file's write-ahead log or on the PostgreSQL server. They differ in what a power cut, an OS crash or
    (PostgreSQL) a server crash can take back, and in how many flushes to disk a payment waits for:

    - ``FULL``: nothing. Every commit is flushed before it returns: three flushes per paid request.
    - ``SIGNED``, the default: nothing a sent payment depends on. The commits that store a signed payment
      (`Ledger.authorize`, before the payment leaves the process), record a mismatch or apply a reconcile verdict
      are flushed before they return, and each flush carries every commit made before it. A crash can take back
      only what was committed since the last flush: a reservation whose payment never left, a settlement (the entry
      is authorized again and reconcile settles it from the chain), a release or a mark (redone by reconcile and
      `release_stale`). Each leaves the budgets holding at least as much as they did, never less. One flush per
      paid request.
    - ``UNSAFE_PROCESS``: no commit waits for a flush. A power cut can take back a signed payment that was already
      sent, and the budgets then forget money that may still settle: the reservation survives the process being
      killed, not the machine going down. Only for ledgers that do not outlive the machine (tmpfs, a test).
    """

    FULL = "full"
    SIGNED = "signed"
    UNSAFE_PROCESS = "unsafe_process"

    def flushes(self, durable: bool) -> bool:
        """Whether a commit is flushed before it returns; `durable`: the ledger asks for it (see `SIGNED`)."""
        return self is Durability.FULL or (durable and self is Durability.SIGNED)


class Database(Protocol):
    """A sync backend: runs a ledger program in one transaction."""

    def run(self, program: Program[T], *, write: bool = False, exclusive: bool = False, durable: bool = False) -> T:
        """Run `program`; `write` for a write transaction, `exclusive` to serialize it with all other exclusive ones,
        `durable` for a commit that must reach stable storage before it returns (unless the durability is unsafe)."""

    def close(self) -> None:
        """Close the connection."""


class AsyncDatabase(Protocol):
    """An async backend: runs a ledger program in one transaction."""

    async def run(
        self, program: Program[T], *, write: bool = False, exclusive: bool = False, durable: bool = False
    ) -> T:
        """Run `program`; `write`, `exclusive` and `durable` as in `Database.run`."""

    async def close(self) -> None:
        """Close the connection."""


def drive(program: Program[T], execute: Callable[[Query], Rows]) -> T:
    """Run `program` to its end, answering each query with `execute`."""
    try:
        query = next(program)
        while True:
            query = program.send(execute(query))
    except StopIteration as done:
        result: T = done.value
        return result


async def adrive(program: Program[T], execute: Callable[[Query], Awaitable[Rows]]) -> T:
    """Run `program` to its end, answering each query with the awaited `execute`."""
    try:
        query = next(program)
        while True:
            query = program.send(await execute(query))
    except StopIteration as done:
        result: T = done.value
        return result


# -- SQLite ------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _sqlite_errors(path: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise LedgerError(f"SQLite ledger {path}: {exc}") from exc


class SQLiteDatabase:
    """An SQLite ledger database: a file (WAL) or ``":memory:"``; one connection, one thread at a time.

    Processes share a file safely: every write transaction takes SQLite's write lock up front (``BEGIN IMMEDIATE``)
    and waits up to `timeout` seconds for it. A flushed commit runs with ``synchronous=FULL`` (the write-ahead log
    is synced before the commit returns), any other with ``synchronous=NORMAL`` (written to the log, which the
    operating system holds, and synced with the next flushed commit or checkpoint).
    """

    def __init__(
        self, path: str | os.PathLike[str] = ":memory:", *, timeout: float = 30.0,
        durability: Durability | str = Durability.SIGNED,
    ) -> None:  # fmt: skip
        self.path = os.fspath(path)
        self.durability = Durability(durability)
        self._lock = threading.Lock()
        self._flushing: bool | None = None
        with _sqlite_errors(self.path):
            self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")

    def run(self, program: Program[T], *, write: bool = False, exclusive: bool = False, durable: bool = False) -> T:
        """Run `program` in one transaction (``BEGIN IMMEDIATE`` for writes), flushed as `durability` says."""
        with self._lock, _sqlite_errors(self.path):
            if write or exclusive:
                self._flush_commits(self.durability.flushes(durable))
            self._conn.execute("BEGIN IMMEDIATE" if write or exclusive else "BEGIN")
            try:
                result = drive(program, self._execute)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return result

    def _flush_commits(self, flush: bool) -> None:
        if flush is not self._flushing:  # a pragma per switch, not per transaction
            self._conn.execute("PRAGMA synchronous=FULL" if flush else "PRAGMA synchronous=NORMAL")
            self._flushing = flush

    def _execute(self, query: Query) -> Rows:
        return self._conn.execute(query.sql, query.params).fetchall()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


class AsyncSQLiteDatabase:
    """`SQLiteDatabase` for asyncio: each transaction runs in a worker thread."""

    def __init__(
        self, path: str | os.PathLike[str] = ":memory:", *, timeout: float = 30.0,
        durability: Durability | str = Durability.SIGNED,
    ) -> None:  # fmt: skip
        self._sync = SQLiteDatabase(path, timeout=timeout, durability=durability)

    async def run(
        self, program: Program[T], *, write: bool = False, exclusive: bool = False, durable: bool = False
    ) -> T:
        """Run `program` in one transaction, in a worker thread."""
        return await asyncio.to_thread(self._sync.run, program, write=write, exclusive=exclusive, durable=durable)

    async def close(self) -> None:
        """Close the connection."""
        self._sync.close()
