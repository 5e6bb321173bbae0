# ruff: noqa: S608  -- table and column names are constants of this module; every value is a bound parameter
"""The ledger's SQL, written once for SQLite and PostgreSQL, and once for sync and async drivers.

Every operation is a *program*: a generator that yields `Query` values and is sent back each query's rows. A
backend drives a program inside one transaction (see `x402pay.ledger._backends`), so the logic here does no I/O
and cannot tell which database or which driver runs it. Placeholders are ``?``; the PostgreSQL driver rewrites
them. Raising inside a program rolls its transaction back.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from x402pay.errors import (
    BudgetExceeded,
    EntryNotFound,
    InvalidTransition,
    NotBudgeted,
    OriginUntrusted,
    PaymentInFlight,
    SchemaError,
)
from x402pay.ledger import _channels, _totals
from x402pay.ledger._model import (
    ENTRY_FIELDS,
    MAX_STORED_AMOUNT,
    OPEN_STATES,
    Budget,
    Entry,
    EntryState,
    uncovered,
)

# The programs' vocabulary, re-exported: the backends and the tests take it from here.
from x402pay.ledger._query import Program as Program
from x402pay.ledger._query import Query as Query
from x402pay.ledger._query import Rows as Rows

ENTRIES: Final = _totals.ENTRIES
UNTRUSTED: Final = "x402pay_untrusted"
REPEATS: Final = "x402pay_repeats"
ROUTES: Final = "x402pay_routes"
COLUMNS: Final = ", ".join(ENTRY_FIELDS)
#: The entries that the chain may still move money for, or that were never signed: the only ones found by state.
#: Queries repeat it word for word, so that SQLite (which proves no implication) uses the partial index on it.
UNFINISHED: Final = "state IN ('reserved', 'authorized', 'unknown', 'claimed', 'mismatch')"

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        f"""CREATE TABLE {ENTRIES} (
            id TEXT PRIMARY KEY, key TEXT NOT NULL, origin TEXT NOT NULL, asset TEXT NOT NULL,
            network TEXT NOT NULL, scheme TEXT NOT NULL, pay_to TEXT NOT NULL,
            amount BIGINT NOT NULL, held BIGINT NOT NULL, state TEXT NOT NULL,
            created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
            payer TEXT, method TEXT, nonce TEXT, valid_before BIGINT, payment TEXT,
            settled_amount BIGINT, tx_hash TEXT, detail TEXT)""",
        # One live entry per logical request; a released one leaves room for a fresh payment.
        f"CREATE UNIQUE INDEX x402pay_entries_live_key ON {ENTRIES} (key) WHERE state <> 'released'",
        f"CREATE INDEX x402pay_entries_budget ON {ENTRIES} (asset, created_at)",
        f"CREATE INDEX x402pay_entries_state ON {ENTRIES} (state, created_at)",
    ),
    (
        # lookup() must find released entries too, which the partial unique index leaves out: without this it
        # scanned the whole table on every reserve.
        f"CREATE INDEX IF NOT EXISTS x402pay_entries_key ON {ENTRIES} (key)",
        # Budget sums read only these columns, so they never touch the table. The window leads: a per-origin
        # budget scans the window's entries of every origin, which is cheaper than a second index to keep up.
        "DROP INDEX IF EXISTS x402pay_entries_budget",
        f"CREATE INDEX IF NOT EXISTS x402pay_entries_held ON {ENTRIES} (asset, created_at, network, origin, held)",
    ),
    (
        # A receipt is a claim, kept beside the hold; only the chain settles. Old "settled" rows were claims, so
        # they hold their signed maximum again until reconcile proves them; old "verified" rows were proven.
        f"ALTER TABLE {ENTRIES} ADD COLUMN claimed_amount BIGINT",
        f"ALTER TABLE {ENTRIES} ADD COLUMN claimed_tx TEXT",
        # Which process holds a reservation, so that a retry after it died takes the reservation over at once.
        f"ALTER TABLE {ENTRIES} ADD COLUMN holder TEXT",
        f"UPDATE {ENTRIES} SET state = 'claimed', claimed_amount = settled_amount, claimed_tx = tx_hash, "
        "settled_amount = NULL, tx_hash = NULL, held = amount WHERE state = 'settled'",
        f"UPDATE {ENTRIES} SET state = 'settled' WHERE state = 'verified'",
        # Origins caught lying, shared by every process (and machine) that uses the ledger.
        f"CREATE TABLE {UNTRUSTED} (origin TEXT PRIMARY KEY, reason TEXT NOT NULL, marked_at BIGINT NOT NULL)",
    ),
    (
        # Requests without a key that ended unanswered: a repeat from any process re-sends their payment.
        f"CREATE TABLE {REPEATS} (fingerprint TEXT PRIMARY KEY, entry_id TEXT NOT NULL, until BIGINT NOT NULL)",
    ),
    # Running totals of `held` per origin, asset, network and time bucket: a budget check reads them, not the
    # entries of its window (see `x402pay.ledger._totals`).
    _totals.SCHEMA,
    (
        # The challenges servers accepted, per route, so that a restarted transport pre-pays at once.
        f"CREATE TABLE {ROUTES} (method TEXT NOT NULL, origin TEXT NOT NULL, path TEXT NOT NULL, "
        "challenge TEXT NOT NULL, seen_at BIGINT NOT NULL, PRIMARY KEY (method, origin, path))",
        f"CREATE INDEX x402pay_routes_seen ON {ROUTES} (seen_at)",
    ),
    # The payer's payment channels (batch-settlement): see `x402pay.ledger._channels`.
    _channels.SCHEMA,
    (
        # Every state change writes to every index of the entry (no update is HOT: `state` is indexed), so keep
        # only what the queries use. Budgets read the totals, not this covering index; finding entries by state
        # (reconcile, release_stale) needs only the unfinished ones, a few among the settled and released.
        "DROP INDEX IF EXISTS x402pay_entries_held",
        "DROP INDEX IF EXISTS x402pay_entries_state",
        f"CREATE INDEX IF NOT EXISTS x402pay_entries_unfinished ON {ENTRIES} (state, created_at) WHERE {UNFINISHED}",
        # One index on the key both finds every entry of a key and keeps one live entry per key: a live entry's
        # second column is '', a released one's its own id.
        f"CREATE UNIQUE INDEX IF NOT EXISTS x402pay_entries_keys ON {ENTRIES} "
        "(key, (CASE WHEN state = 'released' THEN id ELSE '' END))",
        "DROP INDEX IF EXISTS x402pay_entries_live_key",
        "DROP INDEX IF EXISTS x402pay_entries_key",
    ),
)
SCHEMA_VERSION: Final = len(MIGRATIONS)


@dataclass(frozen=True)
class NewEntry:
    """What `reserve` is asked to hold: one payment of at most `amount` for the logical request `key`."""

    key: str
    origin: str
    asset: str
    network: str
    scheme: str
    pay_to: str
    amount: int
    holder: str | None = None


def check_amount(amount: int, what: str = "amount") -> int:
    """`amount` if it is an int the ledger can store, else ValueError (floats never become money)."""
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= MAX_STORED_AMOUNT:
        raise ValueError(f"{what} must be an int of atomic units in [0, 2**63), got {amount!r}")
    return amount


# -- schema ------------------------------------------------------------------------------------------------------


def migrate() -> Program[int]:
    """Create or upgrade the schema to `SCHEMA_VERSION`; run it under the backend's exclusive lock."""
    yield Query("CREATE TABLE IF NOT EXISTS x402pay_schema (version INTEGER NOT NULL)")
    rows = yield Query("SELECT version FROM x402pay_schema")
    if not rows:
        yield Query("INSERT INTO x402pay_schema (version) VALUES (0)")
    current = int(rows[0][0]) if rows else 0
    if current > SCHEMA_VERSION:
        raise SchemaError(f"the ledger schema is version {current}; this x402pay knows up to {SCHEMA_VERSION}")
    for version in range(current + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[version - 1]:
            yield Query(statement)
        yield Query("UPDATE x402pay_schema SET version = ?", (version,))
    return SCHEMA_VERSION


# -- reads -------------------------------------------------------------------------------------------------------


def get(entry_id: str) -> Program[Entry]:
    """The entry `entry_id`; EntryNotFound if there is none."""
    rows = yield Query(f"SELECT {COLUMNS} FROM {ENTRIES} WHERE id = ?", (entry_id,))
    if not rows:
        raise EntryNotFound(f"no ledger entry {entry_id!r}")
    return Entry.from_row(rows[0])


def lookup(key: str) -> Program[Entry | None]:
    """The live entry for idempotency key `key`, else its latest released one, else None."""
    rows = yield Query(
        f"SELECT {COLUMNS} FROM {ENTRIES} WHERE key = ? ORDER BY state = 'released', created_at DESC, id LIMIT 1",
        (key,),
    )
    return Entry.from_row(rows[0]) if rows else None


def find(keys: Collection[str]) -> Program[dict[str, Entry]]:
    """For each of `keys` that has entries: its live entry, else its latest released one (one query)."""
    rows = yield Query(
        f"SELECT {COLUMNS} FROM {ENTRIES} WHERE key IN ({', '.join('?' for _ in keys)}) "
        "ORDER BY state = 'released', created_at DESC, id",
        tuple(keys),
    )
    found: dict[str, Entry] = {}
    for row in rows:
        entry = Entry.from_row(row)
        found.setdefault(entry.key, entry)
    return found


def entries(limit: int, states: Collection[EntryState] | None = None, since: int | None = None) -> Program[list[Entry]]:
    """Entries, newest first: at most `limit`, optionally only in `states` and created at or after `since`."""
    where, params = _filters(states, since)
    rows = yield Query(f"SELECT {COLUMNS} FROM {ENTRIES}{where} ORDER BY created_at DESC, id LIMIT ?", (*params, limit))
    return [Entry.from_row(row) for row in rows]


def _filters(states: Collection[EntryState] | None, since: int | None) -> tuple[str, tuple[Any, ...]]:
    clauses: list[str] = []
    params: list[Any] = []
    if states is not None:
        clauses.append(f"state IN ({', '.join('?' for _ in states)})" if states else "1 = 0")
        params += [str(state) for state in states]
    if since is not None:
        clauses.append("created_at >= ?")
        params.append(since)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


# -- writes ------------------------------------------------------------------------------------------------------


def reserve(new: NewEntry, entry_id: str, budgets: Collection[Budget], now: int) -> Program[Entry]:
    """Hold `new.amount` against every budget it falls under, or return the live entry for its key. When there are
    budgets and none covers the payment, it is refused (`NotBudgeted`).

    Run under the backend's exclusive lock: the budget sums and the insert must see no concurrent reservation.
    """
    applying = [budget for budget in budgets if budget.applies_to(new.asset, new.network, new.origin)]
    rows = yield _reserve_checks(new, _budget_sums(new, applying, now))
    existing = _decided(new, budgets, applying, rows[0])
    if existing is not None:
        return existing
    entry = _reserved(new, entry_id, now)
    yield Query(f"{_INSERT} VALUES ({_marks(_INSERTED)})", _values(entry), reads=False)
    yield from _totals.adjust(entry, entry.held)
    return entry


def _decided(new: NewEntry, budgets: Collection[Budget], applying: list[Budget], row: tuple[Any, ...]) -> Entry | None:
    """From a row of `_reserve_checks`: raise the refusal of `new`, return the live entry of its key (a retry), or
    None: it may be reserved."""
    distrust, sums, live = row[0], row[1 : 1 + len(applying)], row[1 + len(applying) :]
    if distrust is not None:
        raise OriginUntrusted(untrusted_message(new.origin, str(distrust)))
    existing = Entry.from_row(live) if live[0] is not None else None
    if existing is not None and existing.state is not EntryState.RELEASED:
        if existing.state is EntryState.RESERVED:
            raise PaymentInFlight(existing)
        return existing
    why = uncovered(tuple(budgets), new.asset, new.network, new.origin)
    if why is not None:
        raise NotBudgeted(f"{why}: refused before signing", {0: why})
    for budget, already in zip(applying, sums, strict=True):
        if int(already) + new.amount > budget.limit:
            raise BudgetExceeded(budget, new.amount, max(0, budget.limit - int(already)))
    return None


_INSERTED: Final = ("id", "key", "origin", "asset", "network", "scheme", "pay_to", "amount", "held", "state",
                    "created_at", "updated_at", "holder")  # fmt: skip
_INSERT: Final = f"INSERT INTO {ENTRIES} ({', '.join(_INSERTED)})"


def _reserved(new: NewEntry, entry_id: str, now: int) -> Entry:
    return Entry(entry_id, new.key, new.origin.lower(), new.asset.lower(), new.network, new.scheme, new.pay_to,
                 new.amount, new.amount, EntryState.RESERVED, now, now, holder=new.holder)  # fmt: skip


def _values(entry: Entry) -> tuple[Any, ...]:
    return tuple(_stored(getattr(entry, column)) for column in _INSERTED)


def _marks(values: Collection[Any]) -> str:
    return ", ".join("?" for _ in values)


def reserve_at_once(new: NewEntry, entry_id: str, budgets: Collection[Budget], now: int) -> Program[Entry | None]:
    """`reserve` for a key without entries, an origin without a mark and budgets with room, in one statement whose
    insert is conditional on all that, then the totals, then what `reserve` decides on unless the entry was stored,
    then the commit: one round trip on PostgreSQL, which holds the exclusive lock no longer than the server runs it.
    So a refusal is raised (or the live entry of the key returned) from that same round trip. None when `reserve`
    must decide: a key whose entries were all released, a payment that no budget covers or that exceeds a limit.

    Run under the backend's exclusive lock, like `reserve`.
    """
    applying = [budget for budget in budgets if budget.applies_to(new.asset, new.network, new.origin)]
    if uncovered(tuple(budgets), new.asset, new.network, new.origin) or new.amount > min(
        (budget.limit for budget in applying), default=new.amount
    ):
        return None
    entry = _reserved(new, entry_id, now)
    conditions = [f"NOT EXISTS (SELECT 1 FROM {UNTRUSTED} WHERE origin = ?)",
                  f"NOT EXISTS (SELECT 1 FROM {ENTRIES} WHERE key = ?)"]  # fmt: skip
    params: list[Any] = [*_values(entry), entry.origin, entry.key]
    sums = _budget_sums(new, applying, now)
    for budget, (total, values) in zip(applying, sums, strict=True):
        conditions.append(f"{total} <= ?")
        params += [*values, budget.limit - new.amount]
    yield Query(f"{_INSERT} SELECT {_marks(_INSERTED)} WHERE {' AND '.join(conditions)}", tuple(params), reads=False)
    yield from _totals.add_if_stored(entry)
    rows = yield _reserve_checks(new, sums, unless=entry.id)
    return _decided(new, budgets, applying, rows[0]) if rows else entry


def _budget_sums(new: NewEntry, applying: Collection[Budget], now: int) -> list[tuple[str, list[Any]]]:
    """For each budget that applies to `new`: an SQL expression for the money held against it, and its parameters."""
    return [_totals.budget_sum(budget, new.origin, now) for budget in applying]


def _reserve_checks(new: NewEntry, sums: list[tuple[str, list[Any]]], *, unless: str | None = None) -> Query:
    """What `reserve` decides on, in one statement (one round trip): the origin's trust mark, the money held against
    each budget that applies (`sums`, see `_budget_sums`), and the columns of the key's entry (see `lookup`; NULLs
    when it has none). With `unless` (an entry's id), the last statement of its transaction, which answers no row
    once that entry is stored."""
    columns = [column for column, _ in sums]
    params = [value for _, values in sums for value in values]
    checks = ", ".join([f"(SELECT reason FROM {UNTRUSTED} WHERE origin = ?)", *columns])
    live = ", ".join(f"live.{column}" for column in ENTRY_FIELDS)
    rest = (
        f"(SELECT {checks}) AS checks LEFT JOIN (SELECT {COLUMNS} FROM {ENTRIES} "
        "WHERE key = ? ORDER BY state = 'released', created_at DESC, id LIMIT 1) AS live ON 1 = 1"
    )
    if unless is None:
        return Query(f"SELECT checks.*, {live} FROM {rest}", (new.origin.lower(), *params, new.key))
    # The gate leads the join, so that neither database reads the sums nor the key's entry once the entry is stored.
    gate = f"(SELECT 1 AS one WHERE NOT EXISTS (SELECT 1 FROM {ENTRIES} WHERE id = ?)) AS gate"
    return Query(
        f"SELECT checks.*, {live} FROM {gate} CROSS JOIN {rest}",
        (unless, new.origin.lower(), *params, new.key),
        last=True,
    )


def transition(entry_id: str, now: int, changes: Callable[[Entry], Mapping[str, Any]]) -> Program[Entry]:
    """Update `entry_id` with ``changes(entry)`` (column -> value), if its state is still the one read.

    `changes` sees the entry as it stands and raises (e.g. through `require`) to refuse the step.
    """
    entry = yield from get(entry_id)
    # Only the columns that change: SQLite rewrites every index on a column that is SET, changed or not.
    values = {column: value for column, value in changes(entry).items() if getattr(entry, column) != value}
    values["updated_at"] = now
    assignments = ", ".join(f"{column} = ?" for column in values)
    # The held amount read is part of the condition: the totals move by exactly what this write changes.
    rows = yield Query(
        f"UPDATE {ENTRIES} SET {assignments} WHERE id = ? AND state = ? AND held = ? RETURNING {COLUMNS}",
        (*(_stored(value) for value in values.values()), entry_id, str(entry.state), entry.held),
    )
    if not rows:  # another transaction moved it between our read and our write
        current = yield from get(entry_id)
        raise InvalidTransition(f"entry {entry_id} became {current.state} while being updated", current)
    updated = Entry.from_row(rows[0])
    yield from _totals.adjust(updated, updated.held - entry.held)
    return updated


def transition_at_once(
    entry_id: str, now: int, allowed: Collection[EntryState], changes: Mapping[str, Any], unless: Mapping[str, Any]
) -> Program[Entry | None]:
    """`transition` in one statement, for the case that needs no read first: `entry_id` in one of the `allowed`
    states with each column of `unless` equal to its value (its held amount among them, so that the totals do not
    move), updated with `changes`; the commit goes out with it. None when it did not update: the full `transition`
    then decides (and says why it refuses)."""
    values = {**changes, "updated_at": now}
    states = tuple(sorted(str(state) for state in allowed))
    rows = yield Query(
        _update_at_once(tuple(values), len(states), tuple(unless)),
        (*(_stored(value) for value in values.values()), entry_id, *states, *unless.values()),
        last=True,
    )
    return Entry.from_row(rows[0]) if rows else None


@functools.lru_cache(maxsize=64)
def _update_at_once(columns: tuple[str, ...], states: int, unless: tuple[str, ...]) -> str:
    assignments = ", ".join(f"{column} = ?" for column in columns)
    checks = "".join(f" AND {column} = ?" for column in unless)
    marks = ", ".join("?" * states)
    return f"UPDATE {ENTRIES} SET {assignments} WHERE id = ? AND state IN ({marks}){checks} RETURNING {COLUMNS}"


def require(entry: Entry, allowed: Collection[EntryState], step: str, hint: str = "") -> None:
    """Raise InvalidTransition unless `entry` is in one of the `allowed` states."""
    if entry.state not in allowed:
        raise InvalidTransition(f"cannot {step} entry {entry.id}: it is {entry.state}{hint}", entry)


#: Values stored as they are; the first check of `_stored`, before the slower ABC check of a mapping.
_PLAIN: Final = (int, str, type(None))


def _stored(value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
    if isinstance(value, EntryState):
        return str(value)
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def release_stale(before: int, now: int) -> Program[list[Entry]]:
    """Release reservations created before `before`: nothing was signed for them, so nothing can settle."""
    rows = yield Query(
        f"SELECT id FROM {ENTRIES} WHERE state = ? AND created_at < ? AND {UNFINISHED} ORDER BY created_at, id",
        (str(EntryState.RESERVED), before),
    )
    released = []
    for (entry_id,) in rows:
        try:
            entry = yield from transition(str(entry_id), now, _stale)
        except InvalidTransition:  # signed or released meanwhile
            continue
        released.append(entry)
    return released


def _stale(entry: Entry) -> Mapping[str, Any]:
    require(entry, {EntryState.RESERVED}, "release")
    return {"state": EntryState.RELEASED, "held": 0, "detail": "stale reservation: never signed"}


def take_over(entry: Entry, now: int) -> Program[bool]:
    """Release `entry`'s reservation because its holder died before signing; False if it moved meanwhile."""
    rows = yield Query(
        f"UPDATE {ENTRIES} SET state = ?, held = 0, detail = ?, updated_at = ? WHERE id = ? AND state = ? "
        f"AND holder = ? AND held = ? RETURNING {COLUMNS}",
        (str(EntryState.RELEASED), f"taken over: its holder {entry.holder} is gone, nothing was signed", now,
         entry.id, str(EntryState.RESERVED), entry.holder, entry.held),
    )  # fmt: skip
    if rows:
        yield from _totals.adjust(Entry.from_row(rows[0]), -entry.held)
    return bool(rows)


def open_entries() -> Program[list[Entry]]:
    """Entries whose money the chain has not proven yet (authorized, unknown, claimed, and a mismatch until the
    chain shows what its authorization did), oldest first."""
    states = sorted(OPEN_STATES)
    rows = yield Query(
        f"SELECT {COLUMNS} FROM {ENTRIES} WHERE {UNFINISHED} AND (state IN ({', '.join('?' for _ in states)}) "
        "OR (state = ? AND settled_amount IS NULL AND held > 0)) ORDER BY created_at, id",
        (*(str(state) for state in states), str(EntryState.MISMATCH)),
    )
    return [Entry.from_row(row) for row in rows]


# -- trust marks -------------------------------------------------------------------------------------------------


def untrusted_message(origin: str, reason: str) -> str:
    """The message of `OriginUntrusted` for `origin`."""
    return f"{origin} is untrusted ({reason}); clear it with `x402pay trust reset {origin}`"


def trust_reason(origin: str) -> Program[str | None]:
    """Why `origin` is marked untrusted, or None."""
    rows = yield Query(f"SELECT reason FROM {UNTRUSTED} WHERE origin = ?", (origin.lower(),))
    return str(rows[0][0]) if rows else None


def mark_untrusted(origin: str, reason: str, now: int) -> Program[None]:
    """Mark `origin` untrusted; the first reason stays."""
    yield Query(
        f"INSERT INTO {UNTRUSTED} (origin, reason, marked_at) VALUES (?, ?, ?) ON CONFLICT (origin) DO NOTHING",
        (origin.lower(), reason[:500], now),
        reads=False,
    )


def clear_untrusted(origin: str) -> Program[bool]:
    """Clear the mark on `origin`; False if it had none."""
    rows = yield Query(f"DELETE FROM {UNTRUSTED} WHERE origin = ? RETURNING origin", (origin.lower(),))
    return bool(rows)


def untrusted() -> Program[dict[str, str]]:
    """Every untrusted origin and its reason."""
    rows = yield Query(f"SELECT origin, reason FROM {UNTRUSTED} ORDER BY origin")
    return {str(origin): str(reason) for origin, reason in rows}
