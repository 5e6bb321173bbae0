"""Schema migrations: a ledger written by an older x402pay opens, upgrades once, and keeps its entries."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from ledger_support import ASSET, NETWORK, ORIGIN, PAY_TO, Backend

from x402pay.errors import LedgerError
from x402pay.ledger import Budget, EntryState, Ledger
from x402pay.ledger._backends import Database, SQLiteDatabase
from x402pay.ledger._model import MAXIMUM_STATES
from x402pay.ledger._postgres import PostgresDatabase
from x402pay.ledger._sql import (
    MIGRATIONS,
    SCHEMA_VERSION,
    UNFINISHED,
    NewEntry,
    Program,
    Query,
    find,
    get,
    lookup,
    migrate,
    open_entries,
    release_stale,
    reserve,
    reserve_at_once,
)

NOW = 1_800_000_000
INDEXES = {"x402pay_entries_keys", "x402pay_entries_unfinished", "x402pay_routes_seen"}


def _database(backend: Backend) -> Database:
    if backend.name == "sqlite":
        return SQLiteDatabase(backend.target)
    return PostgresDatabase(backend.target, schema=backend.schema)


def _version_1() -> Program[None]:
    yield Query("CREATE TABLE x402pay_schema (version INTEGER NOT NULL)")
    yield Query("INSERT INTO x402pay_schema (version) VALUES (1)")
    for statement in MIGRATIONS[0]:
        yield Query(statement)


def _version() -> Program[int]:
    rows = yield Query("SELECT version FROM x402pay_schema")
    return int(rows[0][0])


def _indexes(backend: str) -> Program[set[str]]:
    if backend == "sqlite":
        rows = yield Query("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'x402pay%'")
    else:
        rows = yield Query("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
    return {str(name) for (name,) in rows if not str(name).endswith("_pkey")}


def _old_row(number: int) -> Program[None]:
    yield Query(
        "INSERT INTO x402pay_entries (id, key, origin, asset, network, scheme, pay_to, amount, held, state, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            f"id-{number}",
            f"old-{number}",
            ORIGIN,
            ASSET.lower(),
            NETWORK,
            "exact",
            PAY_TO,
            10,
            10,
            "reserved",
            NOW,
            NOW,
        ),
    )


def _written_by_version_1(backend: Backend) -> None:
    database = _database(backend)
    database.run(_version_1(), write=True, exclusive=True)
    for number in range(3):  # rows as version 1 wrote them (today's reserve also reads the trust marks' table)
        database.run(_old_row(number), write=True)
    database.close()


def test_a_version_1_ledger_is_migrated_on_open_and_keeps_its_entries(backend: Backend) -> None:
    _written_by_version_1(backend)
    with backend.ledger((Budget(ASSET, 100),)) as ledger:
        assert ledger._db.run(_version()) == SCHEMA_VERSION == 8
        assert ledger._db.run(_indexes(backend.name)) == INDEXES
        old = ledger.lookup("old-1")
        assert old is not None
        assert (old.id, old.state) == ("id-1", EntryState.RESERVED)
        assert ledger.remaining(ASSET, network=NETWORK, origin=ORIGIN) == 70
        ledger.release("id-1", "never signed")
        assert ledger.remaining(ASSET, network=NETWORK, origin=ORIGIN) == 80


def test_a_migrated_ledger_still_finds_its_unfinished_entries_by_state(backend: Backend) -> None:
    _written_by_version_1(backend)
    with backend.ledger(clock=lambda: NOW + 3_600) as ledger:
        ledger.authorize("id-0", payment={}, payer="0x1", nonce="1", valid_before=NOW + 4_000, method="eip3009")
        released = ledger.release_stale()
        assert sorted(entry.id for entry in released) == ["id-1", "id-2"]
        assert [entry.id for entry in ledger._db.run(open_entries())] == ["id-0"]


def test_reopening_a_migrated_ledger_changes_nothing(backend: Backend) -> None:
    _written_by_version_1(backend)
    backend.ledger().close()
    with backend.ledger() as ledger:
        assert ledger._db.run(_version()) == SCHEMA_VERSION
        assert ledger._db.run(_indexes(backend.name)) == INDEXES
        assert sorted(entry.key for entry in ledger.entries()) == ["old-0", "old-1", "old-2"]


def test_opening_a_ledger_twice_migrates_it_once(backend: Backend) -> None:
    """Migrations run under the exclusive lock after reading the version, so racing openers upgrade it once: the
    latest one moves data (old receipts become claims) and must not run twice."""
    with backend.ledger() as ledger:
        entry = ledger.reserve("k", origin=ORIGIN, asset=ASSET, network=NETWORK, amount=10, pay_to=PAY_TO)
        ledger.authorize(entry.id, payment={}, payer="0x1", nonce="1", valid_before=9, method="eip3009")
        ledger.settle(entry.id, amount=10, tx_hash="0x1")
        ledger._db.run(migrate(), write=True, exclusive=True, durable=True)
        assert ledger._db.run(_indexes(backend.name)) == INDEXES
        assert ledger.get(entry.id).state == "settled"


_NEW = NewEntry("k", ORIGIN, ASSET, NETWORK, "exact", PAY_TO, 10)


def _first(program: Program[object]) -> Query:
    query = next(program)
    program.close()
    return query


#: The ledger's reads of entries by key, id or state (budgets read the totals), each with the index it must use.
FOUND_BY_INDEX = (
    (_first(lookup("k")), "x402pay_entries_keys"),
    (_first(find(["k", "l"])), "x402pay_entries_keys"),
    (_first(get("i")), "pkey"),
    (_first(release_stale(1, 2)), "x402pay_entries_unfinished"),
    (_first(open_entries()), "x402pay_entries_unfinished"),
    (_first(reserve(_NEW, "id", (Budget(ASSET, 100),), NOW)), "x402pay_entries_keys"),
    (_first(reserve_at_once(_NEW, "id", (Budget(ASSET, 100),), NOW)), "x402pay_entries_keys"),
)


def test_sqlite_finds_entries_without_scanning_the_table(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    Ledger.sqlite(path).close()
    with sqlite3.connect(path) as conn:
        for query, index in FOUND_BY_INDEX:
            plan = " ".join(str(row[-1]) for row in conn.execute(f"EXPLAIN QUERY PLAN {query.sql}", query.params))
            assert "SCAN x402pay_entries" not in plan, (query.sql, plan)
            assert index.replace("pkey", "sqlite_autoindex") in plan, (query.sql, plan)


def test_postgres_finds_entries_by_index(postgres: str, postgres_schema: str) -> None:
    import psycopg

    Ledger.postgres(postgres, schema=postgres_schema).close()
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{postgres_schema}"')
        conn.execute("SET enable_seqscan = off")  # an empty table: only an index the query cannot use is scanned
        for query, index in FOUND_BY_INDEX:
            rows = conn.execute(f"EXPLAIN {query.sql.replace('?', '%s')}", query.params).fetchall()
            plan = " ".join(str(row[0]) for row in rows)
            assert "Seq Scan" not in plan, (query.sql, plan)
            assert index in plan, (query.sql, plan)


def test_the_partial_index_holds_every_entry_that_holds_its_signed_maximum() -> None:
    assert f"state IN ({', '.join(repr(str(state)) for state in EntryState if state in MAXIMUM_STATES)})" == UNFINISHED


def _second_live(key: str, state: str) -> Program[None]:
    yield Query(
        "INSERT INTO x402pay_entries (id, key, origin, asset, network, scheme, pay_to, amount, held, state, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'exact', ?, 1, 1, ?, ?, ?)",
        (f"{key}-{state}", key, ORIGIN, ASSET.lower(), NETWORK, PAY_TO, state, NOW, NOW),
    )


def test_the_schema_keeps_one_live_entry_per_key_and_any_number_of_released_ones(backend: Backend) -> None:
    with backend.ledger() as ledger:
        first = ledger.reserve("k", origin=ORIGIN, asset=ASSET, network=NETWORK, amount=10, pay_to=PAY_TO)
        with pytest.raises(LedgerError):
            ledger._db.run(_second_live("k", "authorized"), write=True)
        ledger.release(first.id, "refused")
        ledger._db.run(_second_live("k", "released"), write=True)
        again = ledger.reserve("k", origin=ORIGIN, asset=ASSET, network=NETWORK, amount=10, pay_to=PAY_TO)
        assert (again.state, ledger.lookup("k")) == (EntryState.RESERVED, again)
        assert len(ledger.entries()) == 3
