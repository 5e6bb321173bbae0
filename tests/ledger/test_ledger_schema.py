"""Schema migrations: a ledger written by an older x402pay opens, upgrades once, and keeps its entries."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ledger_support import ASSET, NETWORK, ORIGIN, PAY_TO, Backend

from x402pay.ledger import Budget, EntryState, Ledger
from x402pay.ledger._backends import Database, PostgresDatabase, SQLiteDatabase
from x402pay.ledger._sql import MIGRATIONS, SCHEMA_VERSION, NewEntry, Program, Query, reserve

NOW = 1_800_000_000
INDEXES = {"x402pay_entries_live_key", "x402pay_entries_state", "x402pay_entries_key", "x402pay_entries_held"}


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


def _written_by_version_1(backend: Backend) -> None:
    database = _database(backend)
    database.run(_version_1(), write=True, exclusive=True)
    for number in range(3):
        new = NewEntry(key=f"old-{number}", origin=ORIGIN, asset=ASSET, network=NETWORK, scheme="exact",
                       pay_to=PAY_TO, amount=10)  # fmt: skip
        database.run(reserve(new, f"id-{number}", (), NOW), write=True, exclusive=True)
    database.close()


def test_a_version_1_ledger_is_migrated_on_open_and_keeps_its_entries(backend: Backend) -> None:
    _written_by_version_1(backend)
    with backend.ledger((Budget(ASSET, 100),)) as ledger:
        assert ledger._db.run(_version()) == SCHEMA_VERSION == 2
        assert ledger._db.run(_indexes(backend.name)) == INDEXES
        old = ledger.lookup("old-1")
        assert old is not None
        assert (old.id, old.state) == ("id-1", EntryState.RESERVED)
        assert ledger.remaining(ASSET, network=NETWORK, origin=ORIGIN) == 70
        ledger.release("id-1", "never signed")
        assert ledger.remaining(ASSET, network=NETWORK, origin=ORIGIN) == 80


def test_reopening_a_migrated_ledger_changes_nothing(backend: Backend) -> None:
    _written_by_version_1(backend)
    backend.ledger().close()
    with backend.ledger() as ledger:
        assert ledger._db.run(_version()) == SCHEMA_VERSION
        assert ledger._db.run(_indexes(backend.name)) == INDEXES
        assert sorted(entry.key for entry in ledger.entries()) == ["old-0", "old-1", "old-2"]


def test_the_latest_migration_can_run_again(backend: Backend) -> None:
    """Its statements are idempotent, so a ledger upgraded by hand (or twice, by racing openers) stays sound."""

    def latest() -> Program[None]:
        for statement in MIGRATIONS[-1]:
            yield Query(statement)

    with backend.ledger() as ledger:
        ledger._db.run(latest(), write=True, exclusive=True)
        assert ledger._db.run(_indexes(backend.name)) == INDEXES


def test_sqlite_finds_keys_and_sums_budgets_without_scanning_the_table(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    Ledger.sqlite(path).close()
    queries = [
        "SELECT * FROM x402pay_entries WHERE key = ? ORDER BY state = 'released', created_at DESC, id LIMIT 1",
        "SELECT SUM(held) FROM x402pay_entries WHERE asset = ? AND network = ? AND origin = ? AND created_at > ?",
        "SELECT SUM(held) FROM x402pay_entries WHERE asset = ?",
    ]
    with sqlite3.connect(path) as conn:
        for query in queries:
            rows = conn.execute(f"EXPLAIN QUERY PLAN {query}", (1,) * query.count("?"))
            plan = " ".join(str(row[-1]) for row in rows)
            assert "SCAN x402pay_entries" not in plan, (query, plan)
            assert "USING" in plan, (query, plan)
