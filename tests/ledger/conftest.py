"""The ledger suite runs against SQLite (a file) and PostgreSQL (a schema of its own per test, dropped after).

PostgreSQL comes from $X402PAY_TEST_POSTGRES_DSN (default: postgres@127.0.0.1:5432/test, trust auth). When it is
unreachable the PostgreSQL tests skip, saying what to install, except under CI, where they fail.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from ledger_support import POSTGRES_ENV, Backend, Clock, postgres_dsn

_RUN = f"{uuid.uuid4().hex[:8]}_{os.getpid()}"
_SCHEMAS = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> str:
    """A reachable PostgreSQL DSN, or a skip (a failure under CI)."""
    dsn = postgres_dsn()
    try:
        import psycopg

        psycopg.connect(dsn, connect_timeout=5).close()
    except Exception as exc:  # psycopg missing, or any connection failure
        message = (
            f"needs PostgreSQL at {dsn} (set {POSTGRES_ENV}; install the server, e.g. `apt-get install postgresql`, "
            f"and `pip install 'x402pay[postgres]'`): {exc}"
        )
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return dsn


@pytest.fixture
def postgres_schema(postgres: str) -> Iterator[str]:
    """A schema name unique to this test and run; dropped afterwards."""
    import psycopg

    schema = f"x402pay_test_{_RUN}_{next(_SCHEMAS)}"
    yield schema
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each ledger test runs on both backends."""
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path / "ledger.db"))
    schema = request.getfixturevalue("postgres_schema")
    return Backend("postgres", request.getfixturevalue("postgres"), schema)


@pytest.fixture
def clock() -> Clock:
    """A clock that moves only when the test says."""
    return Clock()
