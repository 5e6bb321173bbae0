"""The SQLite connection of the paid side's own stores (settlements, channels)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_store(path: str | Path, schema: str) -> sqlite3.Connection:
    """A connection to the store at `path` (``":memory:"``: none kept) with `schema` created: autocommit (the store
    opens its own transactions), usable from any thread (the store serializes its calls), WAL for a file."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    if str(path) != ":memory:":
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # every commit reaches the disk, unless a store says otherwise
    conn.executescript(schema)
    return conn
