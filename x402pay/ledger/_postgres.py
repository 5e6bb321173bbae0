"""The PostgreSQL backends (psycopg 3), sync and async: one program, one transaction, few round trips.

A transaction is sent in pipeline mode: ``BEGIN``, the commit-flush setting and the advisory lock go out with the
program's first statement, a statement whose rows the program ignores (`Query.reads` False) goes out with the next
one, and the commit goes out with the program's last statement when it says it is the last (`Query.last`), so a
reservation is one round trip and holds the advisory lock only while the server runs it. Every statement is still
run by the server in order, in one READ COMMITTED transaction, and any error rolls it back.
"""

from __future__ import annotations

import asyncio
import contextlib
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
_ADVISORY_LOCK: Final = "SELECT pg_advisory_xact_lock(%s, hashtext(%s))"
#: This transaction's commit waits for the flush the server is configured for (the session turned it off).
_SERVER_FLUSH: Final = "SET LOCAL synchronous_commit TO DEFAULT"
#: libpq's ``PGRES_TUPLES_OK``: the statement returned rows (possibly none).
_TUPLES_OK: Final = 2


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
    return query.sql.replace("?", "%s")


def _rows(cursor: Any) -> Rows:
    # The result's status, not `cursor.description`: that builds a column object per column of every result.
    result = cursor.pgresult
    return cursor.fetchall() if result is not None and result.status == _TUPLES_OK else []


class _PostgresSettings:
    """What both PostgreSQL backends share: the connection string, the schema, and the statements around them."""

    def __init__(self, conninfo: str, schema: str | None, connect_timeout: int, durability: Durability | str) -> None:
        self.conninfo = conninfo
        self.schema = schema
        self.connect_timeout = connect_timeout
        self.durability = Durability(durability)

    @property
    def lock_params(self) -> tuple[int, str]:
        return _ADVISORY_CLASS, self.schema or "public"

    def setup_statements(self) -> list[Any]:
        """Statements for a fresh connection: create the schema (under the lock) and make it the search path; stop
        waiting for commit flushes unless every commit must wait."""
        statements: list[Any] = []
        if self.durability is not Durability.FULL:
            statements.append("SET synchronous_commit = off")
        if self.schema is not None:
            sql = _psycopg().sql
            name = sql.Identifier(self.schema)
            statements += [sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name),
                           sql.SQL("SET search_path TO {}").format(name)]  # fmt: skip
        return statements

    def opening(self, exclusive: bool, durable: bool) -> list[tuple[str, tuple[Any, ...]]]:
        """The statements that open a transaction: BEGIN, the server's own commit flush when the session turned it
        off and the write is durable, the advisory lock when exclusive."""
        statements: list[tuple[str, tuple[Any, ...]]] = [("BEGIN", ())]
        if durable and self.durability is Durability.SIGNED:
            statements.append((_SERVER_FLUSH, ()))
        if exclusive:
            statements.append((_ADVISORY_LOCK, self.lock_params))
        return statements


class _Ended:
    """Whether the transaction's COMMIT has been sent with the program's last statement."""

    def __init__(self) -> None:
        self.committed = False

    def check(self) -> None:
        if self.committed:
            raise LedgerError("a ledger program ran a statement after the one it said was its last")


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
        self._lock = threading.Lock()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            settings = self._settings
            conn = _psycopg().connect(settings.conninfo, autocommit=True, connect_timeout=settings.connect_timeout)
            with conn.transaction():
                conn.execute(_ADVISORY_LOCK, settings.lock_params)
                for statement in settings.setup_statements():
                    conn.execute(statement)
            self._conn = conn
        return self._conn

    def run(self, program: Program[T], *, write: bool = False, exclusive: bool = False, durable: bool = False) -> T:
        """Run `program` in one READ COMMITTED transaction, after the advisory lock when `exclusive`."""
        with self._lock, _postgres_errors():
            conn = self._connection()
            with conn.pipeline() as pipeline:
                for sql, params in self._settings.opening(exclusive, durable):
                    conn.execute(sql, params, prepare=False)
                try:
                    return self._drive(conn, pipeline, program)
                except BaseException:
                    with contextlib.suppress(_psycopg().Error):  # the commit may be done, or the link gone
                        conn.execute("ROLLBACK", prepare=False)
                        pipeline.sync()
                    raise

    @staticmethod
    def _drive(conn: psycopg.Connection[Any], pipeline: psycopg.Pipeline, program: Program[T]) -> T:
        ended = _Ended()

        def execute(query: Query) -> Rows:
            ended.check()
            cursor = conn.execute(_pg_sql(query), query.params)
            if query.last:
                conn.execute("COMMIT", prepare=False)
                ended.committed = True
            elif not query.reads:
                return []
            pipeline.sync()
            return _rows(cursor)

        result = drive(program, execute)
        if not ended.committed:
            conn.execute("COMMIT", prepare=False)
            pipeline.sync()
        return result

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()


class AsyncPostgresDatabase:
    """The asyncio twin of `PostgresDatabase`, over one ``psycopg.AsyncConnection``, one task at a time."""

    def __init__(
        self, conninfo: str, *, schema: str | None = None, connect_timeout: int = 10,
        durability: Durability | str = Durability.SIGNED,
    ) -> None:  # fmt: skip
        self._settings = _PostgresSettings(conninfo, schema, connect_timeout, durability)
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            settings = self._settings
            conn = await _psycopg().AsyncConnection.connect(
                settings.conninfo, autocommit=True, connect_timeout=settings.connect_timeout
            )
            async with conn.transaction():
                await conn.execute(_ADVISORY_LOCK, settings.lock_params)
                for statement in settings.setup_statements():
                    await conn.execute(statement)
            self._conn = conn
        return self._conn

    async def run(
        self, program: Program[T], *, write: bool = False, exclusive: bool = False, durable: bool = False
    ) -> T:
        """Run `program` in one READ COMMITTED transaction, after the advisory lock when `exclusive`."""
        async with self._lock:
            with _postgres_errors():
                conn = await self._connection()
                async with conn.pipeline() as pipeline:
                    for sql, params in self._settings.opening(exclusive, durable):
                        await conn.execute(sql, params, prepare=False)
                    try:
                        return await self._drive(conn, pipeline, program)
                    except BaseException:
                        with contextlib.suppress(_psycopg().Error):  # the commit may be done, or the link gone
                            await conn.execute("ROLLBACK", prepare=False)
                            await pipeline.sync()
                        raise

    @staticmethod
    async def _drive(conn: psycopg.AsyncConnection[Any], pipeline: psycopg.AsyncPipeline, program: Program[T]) -> T:
        ended = _Ended()

        async def execute(query: Query) -> Rows:
            ended.check()
            cursor = await conn.execute(_pg_sql(query), query.params)
            if query.last:
                await conn.execute("COMMIT", prepare=False)
                ended.committed = True
            elif not query.reads:
                return []
            await pipeline.sync()
            result = cursor.pgresult
            return await cursor.fetchall() if result is not None and result.status == _TUPLES_OK else []

        result = await adrive(program, execute)
        if not ended.committed:
            await conn.execute("COMMIT", prepare=False)
            await pipeline.sync()
        return result

    async def close(self) -> None:
        """Close the connection."""
        async with self._lock:
            if self._conn is not None:
                await self._conn.close()
