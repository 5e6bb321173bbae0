"""Schema migrations: a ledger written by an older x402pay opens, upgrades once, and keeps its entries."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ledger_support import ASSET, NETWORK, ORIGIN, PAY_TO, Backend

from x402pay.ledger import Budget, EntryState, Ledger
from x402pay.ledger._backends import Database, SQLiteDatabase
from x402pay.ledger._postgres import PostgresDatabase
from x402pay.ledger._sql import MIGRATIONS, SCHEMA_VERSION, Program, Query, migrate

NOW = 1_800_000_000
INDEXES = {
    "x402pay_entries_live_key", "x402pay_entries_state", "x402pay_entries_key", "x402pay_entries_held",
    "x402pay_routes_seen",
}  # fmt: skip


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
        assert ledger._db.run(_version()) == SCHEMA_VERSION == 7
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
