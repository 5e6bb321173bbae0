"""The PostgreSQL backends (psycopg 3), sync and async: one program, one transaction, few round trips.

A transaction is sent in pipeline mode: the commit-flush setting and the advisory lock go out with the program's
first statement, a statement whose rows the program ignores (`Query.reads` False) goes out with the next one, and
the commit goes out with the program's last statement when it says it is the last (`Query.last`), so a
reservation is one round trip and holds the advisory lock only while the server runs it. A program of one round
trip needs no ``BEGIN`` nor ``COMMIT``: the server runs what comes before a pipeline's sync as one implicit
transaction, committed at the sync. A longer program opens with ``BEGIN``. Every statement is still run by the
server in order, in one READ COMMITTED transaction, and any error rolls it back.

The connection stays in pipeline mode for as long as it is open, and each transaction ends at its own sync:
leaving pipeline mode costs a sync of its own, a second round trip for every transaction that entered it.

Over TCP (Linux), a transaction's statements leave in one write: psycopg sends each pipelined statement as it is
executed, so without it the server would run the first (the advisory lock of a reservation) and wait, holding the
lock, for the rest from a client process that may not be running. Statements go through two raw cursors kept for
the connection's lifetime (``$1`` placeholders): one for the statement whose rows the program reads, one for the
others; a cursor per statement and psycopg's placeholder conversion cost the client more than the server spends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final, TypeVar

from x402pay.errors import LedgerError
from x402pay.ledger._backends import Durability, adrive, drive
from x402pay.ledger._query import Program, Query, Rows

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")

#: First half of the PostgreSQL advisory lock key (the second is the hash of the schema name).
_ADVISORY_CLASS: Final = 0x402
_ADVISORY_LOCK: Final = "SELECT pg_advisory_xact_lock($1, hashtext($2))"
#: A statement for the pipeline: SQL, parameters, and psycopg's `prepare` (False for the transaction control
#: statements of the rarer explicit transactions, None to let psycopg prepare what repeats: the advisory lock and
#: the commit flush setting too, which the server would otherwise parse and plan again in every transaction).
Statement = tuple[str, tuple[Any, ...], bool | None]
#: This transaction's commit waits for the flush the server is configured for (the session turned it off).
_SERVER_FLUSH: Final[Statement] = ("SET LOCAL synchronous_commit TO DEFAULT", (), False)
#: The same in an implicit transaction, where SET LOCAL works but warns: the setting the connection started with.
_IMPLICIT_SERVER_FLUSH: Final = "SELECT set_config('synchronous_commit', $1, true)"
_SHOW_FLUSH: Final = "SHOW synchronous_commit"
#: A statement psycopg prepared (the fifth run of one text) keeps one plan for every parameter. Left to choose, the
#: server plans a reservation's budget check again each time (a custom plan, by the tables' statistics): bitmap
#: scans of the totals once they hold a long history, a third more server time per reservation at a million
#: entries than on an empty ledger. The statements that repeat (reserve, authorize, settle, the budget checks) find
#: their rows through a key's equality and ranges, so the generic plan (index scans) costs the same at any size.
_GENERIC_PLANS: Final = "SET plan_cache_mode = force_generic_plan"
_COMMIT: Final[Statement] = ("COMMIT", (), False)
#: libpq's ``PGRES_TUPLES_OK``: the statement returned rows (possibly none).
_TUPLES_OK: Final = 2
#: Linux's option that holds a TCP socket's partial segments until it is cleared (absent elsewhere).
_TCP_CORK: Final[int | None] = getattr(socket, "TCP_CORK", None)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise LedgerError("the PostgreSQL ledger needs psycopg 3: pip install 'x402pay[postgres]'") from exc
    return psycopg


@contextlib.contextmanager
def _postgres_errors() -> Iterator[None]:
    psycopg = _psycopg()
    try:
        yield
    except psycopg.Error as exc:
        raise LedgerError(f"PostgreSQL ledger: {type(exc).__name__}: {exc}") from exc


def _pg_sql(query: Query) -> str:
    return _numbered(query.sql)


@functools.lru_cache(maxsize=1024)
def _numbered(sql: str) -> str:
    """`sql` with its ``?`` placeholders numbered as PostgreSQL's ``$1``, ``$2``... (for raw cursors)."""
    first, *rest = sql.split("?")
    return first + "".join(f"${number}{part}" for number, part in enumerate(rest, 1))


def _tuples(cursor: Any) -> bool:
    # The result's status, not `cursor.description`: that builds a column object per column of every result.
    result = cursor.pgresult
    return result is not None and result.status == _TUPLES_OK


class _Cork:
    """Holds a TCP connection's outgoing statements back until `release`, so that they leave in one write."""

    def __init__(self, fileno: int) -> None:
        handle = socket.socket(fileno=os.dup(fileno))  # our own handle on the connection's socket
        if _TCP_CORK is None or handle.family not in (socket.AF_INET, socket.AF_INET6):
            handle.close()  # a Unix socket, or no cork on this system: statements leave as they are written
            self._corked: tuple[socket.socket, int] | None = None
        else:
            self._corked = handle, _TCP_CORK

    def hold(self) -> None:
        """Hold what is written from now on (a no-op where there is no cork)."""
        if self._corked is not None:
            self._corked[0].setsockopt(socket.IPPROTO_TCP, self._corked[1], 1)

    def release(self) -> None:
        """Send everything held."""
        if self._corked is not None:
            self._corked[0].setsockopt(socket.IPPROTO_TCP, self._corked[1], 0)

    def close(self) -> None:
        """Close this handle on the socket (the connection keeps its own)."""
        if self._corked is not None:
            self._corked[0].close()


class _Link:
    """Sends a transaction's statements through the connection's pipeline, and syncs when an answer is due."""

    def __init__(self, conn: psycopg.Connection[Any], pipeline: psycopg.Pipeline) -> None:
        self._pipeline = pipeline
        self._quiet, self._reading = conn.cursor(), conn.cursor()
        self.cork = _Cork(conn.pgconn.socket)

    def answer(self, statements: list[Statement], answer: int | None) -> Rows:
        """Send `statements`; when `answer` is an index, sync and return that statement's rows; -1: sync."""
        if not statements:
            return []
        self.cork.hold()
        try:
            for index, (sql, params, prepare) in enumerate(statements):
                (self._reading if index == answer else self._quiet).execute(sql, params, prepare=prepare)
        finally:
            self.cork.release()
        if answer is None:
            return []
        self._pipeline.sync()
        return self._reading.fetchall() if answer >= 0 and _tuples(self._reading) else []


class _AsyncLink:
    """`_Link` for an async connection."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], pipeline: psycopg.AsyncPipeline) -> None:
        self._pipeline = pipeline
        self._quiet, self._reading = conn.cursor(), conn.cursor()
        self.cork = _Cork(conn.pgconn.socket)

    async def answer(self, statements: list[Statement], answer: int | None) -> Rows:
        """See `_Link.answer`."""
        if not statements:
            return []
        self.cork.hold()
        try:
            for index, (sql, params, prepare) in enumerate(statements):
                await (self._reading if index == answer else self._quiet).execute(sql, params, prepare=prepare)
        finally:
            self.cork.release()
        if answer is None:
            return []
        await self._pipeline.sync()
        return await self._reading.fetchall() if answer >= 0 and _tuples(self._reading) else []


class _PostgresSettings:
    """What both PostgreSQL backends share: the connection string, the schema, and the statements around them."""

    def __init__(self, conninfo: str, schema: str | None, connect_timeout: int, durability: Durability | str) -> None:
        self.conninfo = conninfo
        self.schema = schema
        self.connect_timeout = connect_timeout
        self.durability = Durability(durability)
        #: The server's commit flush setting, as the connection found it before the session turned it off.
        self.server_flush = "on"

    @property
    def lock_params(self) -> tuple[int, str]:
        return _ADVISORY_CLASS, self.schema or "public"

    def setup_statements(self) -> list[Any]:
        """Statements for a fresh connection: plan prepared statements once; create the schema (under the lock) and
        make it the search path; stop waiting for commit flushes unless every commit must wait."""
        statements: list[Any] = [_GENERIC_PLANS]
        if self.durability is not Durability.FULL:
            statements.append("SET synchronous_commit = off")
        if self.schema is not None:
            sql = _psycopg().sql
            name = sql.Identifier(self.schema)
            statements += [sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name),
                           sql.SQL("SET search_path TO {}").format(name)]  # fmt: skip
        return statements

    def opening(self, exclusive: bool, durable: bool, implicit: bool) -> list[Statement]:
        """The statements that open a transaction: BEGIN unless `implicit`, the server's own commit flush when the
        session turned it off and the write is durable, the advisory lock when exclusive."""
        statements: list[Statement] = [] if implicit else [("BEGIN", (), False)]
        if durable and self.durability is Durability.SIGNED:
            statements.append((_IMPLICIT_SERVER_FLUSH, (self.server_flush,), None) if implicit else _SERVER_FLUSH)
        if exclusive:
            statements.append((_ADVISORY_LOCK, self.lock_params, None))
        return statements


class _Transaction:
    """Which statements go out, and when the driver waits, for one program's transaction (sans-IO, both drivers).

    Statements whose rows the program ignores wait in `pending` until one it reads (or the last) comes. When that one
    is the program's last, everything goes out in one round trip without BEGIN: the server runs the statements before
    a pipeline's sync as one implicit transaction, committed at the sync or rolled back whole on an error. An
    exclusive one ends with COMMIT all the same, which commits it (and frees the advisory lock) as soon as the server
    has run it, whether or not the sync, written after it, has arrived. Otherwise BEGIN goes first, and COMMIT with
    the last statement or at the end.
    """

    def __init__(self, settings: _PostgresSettings, exclusive: bool, durable: bool) -> None:
        self._opening = functools.partial(settings.opening, exclusive, durable)
        self._exclusive = exclusive
        self._pending: list[Statement] = []
        self._opened = False
        self._explicit = False
        self._committed = False

    def plan(self, query: Query) -> tuple[list[Statement], int | None]:
        """The statements to send for `query`, and the index of its own among them when the driver must sync and
        answer its rows now (None: go on)."""
        if self._committed:
            raise LedgerError("a ledger program ran a statement after the one it said was its last")
        statement: Statement = (_pg_sql(query), query.params, None)
        if not (query.reads or query.last):
            if self._opened:
                return [statement], None
            self._pending.append(statement)
            return [], None
        statements = [*self._open(implicit=query.last), statement]
        answer = len(statements) - 1
        if query.last:
            self._committed = True
            statements += self._commit()
        return statements, answer

    def _commit(self) -> list[Statement]:
        return [_COMMIT] if self._explicit or self._exclusive else []

    def _open(self, implicit: bool) -> list[Statement]:
        if self._opened:
            return []
        self._opened, self._explicit = True, not implicit
        statements = self._opening(implicit) + self._pending
        self._pending = []
        return statements

    def finish(self) -> list[Statement]:
        """The statements that end a program that did not say which statement was its last (then sync)."""
        if self._committed:
            return []
        self._committed = True
        return self._open(implicit=True) + self._commit()

    def abort(self) -> list[Statement]:
        """The statements that roll an explicit transaction back after an error (then sync); an implicit one was."""
        return [("ROLLBACK", (), False)] if self._explicit and not self._committed else []


class PostgresDatabase:
    """A PostgreSQL ledger database over one psycopg connection (reopened if it breaks), one thread at a time.

    `schema`, when given, is created if missing and holds the ledger's tables; otherwise the connection's search
    path decides. Many processes on many machines may share the database: reservations serialize on an advisory
    lock.
    """

    def __init__(
        self, conninfo: str, *, schema: str | None = None, connect_timeout: int = 10,
        durability: Durability | str = Durability.SIGNED,
    ) -> None:  # fmt: skip
        self._settings = _PostgresSettings(conninfo, schema, connect_timeout, durability)
        self._conn: psycopg.Connection[Any] | None = None
        self._link: _Link | None = None
        self._pipeline = contextlib.ExitStack()
        self._lock = threading.Lock()

    def _connection(self) -> _Link:
        """The link over the open connection, in pipeline mode for its lifetime; reopened if the connection
        broke."""
        if self._conn is None or self._link is None or self._conn.closed or self._conn.broken:
            settings = self._settings
            with contextlib.suppress(_psycopg().Error):  # the broken connection's pipeline, if any
                self._pipeline.close()
            conn = _psycopg().connect(
                settings.conninfo, autocommit=True, connect_timeout=settings.connect_timeout,
                cursor_factory=_psycopg().RawCursor,
            )  # fmt: skip
            with conn.transaction():
                conn.execute(_ADVISORY_LOCK, settings.lock_params)
                settings.server_flush = str(conn.execute(_SHOW_FLUSH).fetchall()[0][0])
                for statement in settings.setup_statements():
                    conn.execute(statement)
            self._conn = conn
            self._pipeline = contextlib.ExitStack()  # kept: the pipeline lasts as long as it
            self._link = _Link(conn, self._pipeline.enter_context(conn.pipeline()))
            self._pipeline.callback(self._link.cork.close)
        return self._link

    def run(self, program: Program[T], *, write: bool = False, exclusive: bool = False, durable: bool = False) -> T:
        """Run `program` in one READ COMMITTED transaction, after the advisory lock when `exclusive`."""
        with self._lock, _postgres_errors():
            link = self._connection()
            transaction = _Transaction(self._settings, exclusive, durable)
            try:
                result = drive(program, lambda query: link.answer(*transaction.plan(query)))
                link.answer(transaction.finish(), -1)
            except BaseException:
                with contextlib.suppress(_psycopg().Error):  # the commit may be done, or the link gone
                    link.answer(transaction.abort(), -1)
                raise
            return result

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(_psycopg().Error):  # a broken connection cannot say goodbye
                    self._pipeline.close()
                self._conn.close()


class AsyncPostgresDatabase:
    """The asyncio twin of `PostgresDatabase`, over one ``psycopg.AsyncConnection``, one task at a time."""

    def __init__(
        self, conninfo: str, *, schema: str | None = None, connect_timeout: int = 10,
        durability: Durability | str = Durability.SIGNED,
    ) -> None:  # fmt: skip
        self._settings = _PostgresSettings(conninfo, schema, connect_timeout, durability)
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._link: _AsyncLink | None = None
        self._pipeline = contextlib.AsyncExitStack()
        self._lock = asyncio.Lock()

    async def _connection(self) -> _AsyncLink:
        """See `PostgresDatabase._connection`."""
        if self._conn is None or self._link is None or self._conn.closed or self._conn.broken:
            settings = self._settings
            with contextlib.suppress(_psycopg().Error):  # the broken connection's pipeline, if any
                await self._pipeline.aclose()
            conn = await _psycopg().AsyncConnection.connect(
                settings.conninfo, autocommit=True, connect_timeout=settings.connect_timeout,
                cursor_factory=_psycopg().AsyncRawCursor,
            )  # fmt: skip
            async with conn.transaction():
                await conn.execute(_ADVISORY_LOCK, settings.lock_params)
                settings.server_flush = str((await (await conn.execute(_SHOW_FLUSH)).fetchall())[0][0])
                for statement in settings.setup_statements():
                    await conn.execute(statement)
            self._conn = conn
            self._pipeline = contextlib.AsyncExitStack()  # kept: the pipeline lasts as long as it
            self._link = _AsyncLink(conn, await self._pipeline.enter_async_context(conn.pipeline()))
            self._pipeline.callback(self._link.cork.close)
        return self._link

    async def run(
        self, program: Program[T], *, write: bool = False, exclusive: bool = False, durable: bool = False
    ) -> T:
        """Run `program` in one READ COMMITTED transaction, after the advisory lock when `exclusive`."""
        async with self._lock:
            with _postgres_errors():
                link = await self._connection()
                transaction = _Transaction(self._settings, exclusive, durable)
                try:
                    result = await adrive(program, lambda query: link.answer(*transaction.plan(query)))
                    await link.answer(transaction.finish(), -1)
                except BaseException:
                    with contextlib.suppress(_psycopg().Error):  # the commit may be done, or the link gone
                        await link.answer(transaction.abort(), -1)
                    raise
                return result

    async def close(self) -> None:
        """Close the connection."""
        async with self._lock:
            if self._conn is not None:
                with contextlib.suppress(_psycopg().Error):  # a broken connection cannot say goodbye
                    await self._pipeline.aclose()
                await self._conn.close()
