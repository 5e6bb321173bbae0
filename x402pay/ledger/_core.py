"""`Ledger`: the spend ledger's API over a SQLite or PostgreSQL backend (`AsyncLedger`, its twin, is in `_async`).

The transport's part, for one logical request (its idempotency key):

    entry = ledger.reserve(key, ...)        # budget check + reservation, atomic; BudgetExceeded / PaymentInFlight
    if entry.state is reserved:             # a new reservation: sign, then store BEFORE sending
        ledger.authorize(entry.id, payment=..., payer=..., nonce=..., valid_before=..., method=...)
    else:                                   # a retry: re-send entry.payment, never sign again
    ...send...
    ledger.claim(entry.id, amount=..., tx_hash=...)  or  ledger.mark_unknown(entry.id)   # what the server says
    ledger.settle(entry.id, amount=..., tx_hash=...)  or  ledger.mark_mismatch(entry.id, detail)  # what the chain says
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Final, Self

from x402pay.errors import InvalidTransition, PaymentInFlight
from x402pay.ledger import _sql
from x402pay.ledger._backends import Database, Durability, SQLiteDatabase
from x402pay.ledger._chain import Chain, Resolution, judge_entry
from x402pay.ledger._channels import ChannelBook
from x402pay.ledger._holder import current_holder, holder_is_gone
from x402pay.ledger._model import Budget, BudgetStatus, Entry, EntryState, ReconcileReport, uncovered
from x402pay.ledger._postgres import PostgresDatabase
from x402pay.ledger._routes import RememberedRoute
from x402pay.ledger._sql import NewEntry
from x402pay.ledger._steps import Operations, Tally
from x402pay.ledger._watch import Watcher

logger = logging.getLogger(__name__)

#: A reservation never signed after this many seconds belongs to a request that died: reconcile() releases it.
DEFAULT_STALE_AFTER: Final = 600
#: Seconds past an authorization's expiry before reconcile() trusts that its unused nonce stays unused.
DEFAULT_MARGIN: Final = 30
#: The states `mark_unknown` moves from: a payment that got no answer (a claimed one keeps its claim).
UNANSWERED_STATES: Final = frozenset({EntryState.AUTHORIZED, EntryState.UNKNOWN})
POSTGRES_SCHEMES: Final = ("postgres://", "postgresql://")
Clock = Callable[[], float]


def log_resolution(verdict: Resolution) -> None:
    level = logging.DEBUG if verdict.action == "open" else logging.INFO
    logger.log(level, "reconcile %s: %s (%s)", verdict.entry.id, verdict.action, verdict.reason)


def new_entry(key: str, origin: str, asset: str, network: str, amount: int, scheme: str, pay_to: str) -> NewEntry:
    return NewEntry(key=key, origin=origin, asset=asset, network=network, scheme=scheme, pay_to=pay_to, amount=amount,
                    holder=current_holder())  # fmt: skip


class Ledger:
    """A persistent spend ledger with budgets, safe across threads and processes (and machines on PostgreSQL).

    Build one with `Ledger.sqlite` (the default, embedded), `Ledger.postgres` (a fleet sharing one budget), or
    `Ledger.open` from a path or a ``postgresql://`` URL. The schema is created and migrated on open. Amounts are
    ints of atomic units; times are the `clock`'s whole seconds.
    """

    def __init__(self, database: Database, *, budgets: Sequence[Budget] = (), clock: Clock = time.time) -> None:
        self._db = database
        self._steps = Operations(budgets, clock)
        database.run(_sql.migrate(), write=True, exclusive=True, durable=True)

    @classmethod
    def sqlite(
        cls, path: str | os.PathLike[str] = ":memory:", *, budgets: Sequence[Budget] = (), clock: Clock = time.time,
        durability: Durability | str = Durability.SIGNED,
    ) -> Self:  # fmt: skip
        """A ledger in the SQLite file at `path` (WAL), or in memory for this ledger object only.

        `durability` says which commits wait for the disk (`Durability`; the default keeps every stored signed
        payment through a power cut)."""
        return cls(SQLiteDatabase(path, durability=durability), budgets=budgets, clock=clock)

    @classmethod
    def postgres(
        cls, conninfo: str, *, schema: str | None = None, budgets: Sequence[Budget] = (), clock: Clock = time.time,
        durability: Durability | str = Durability.SIGNED,
    ) -> Self:  # fmt: skip
        """A ledger in PostgreSQL (`conninfo`: a libpq URL or key=value string), in `schema` if given.

        `durability` says which commits wait for the server's flush (`Durability`)."""
        return cls(PostgresDatabase(conninfo, schema=schema, durability=durability), budgets=budgets, clock=clock)

    @classmethod
    def open(
        cls, target: str | os.PathLike[str], *, schema: str | None = None, budgets: Sequence[Budget] = (),
        clock: Clock = time.time, durability: Durability | str = Durability.SIGNED,
    ) -> Self:  # fmt: skip
        """`Ledger.postgres` for a ``postgres(ql)://`` URL, else `Ledger.sqlite` for a file path."""
        if str(target).startswith(POSTGRES_SCHEMES):
            return cls.postgres(str(target), schema=schema, budgets=budgets, clock=clock, durability=durability)
        return cls.sqlite(target, budgets=budgets, clock=clock, durability=durability)

    @property
    def channels(self) -> ChannelBook:
        """This ledger's payment channels (``batch-settlement``), shared by every process that opens it."""
        return ChannelBook(self._db, self._steps.now)

    @property
    def budgets(self) -> tuple[Budget, ...]:
        """The budgets this ledger enforces."""
        return self._steps.budgets

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def reserve(
        self, key: str, *, origin: str, asset: str, network: str, amount: int, pay_to: str, scheme: str = "exact",
        fingerprint: str | None = None,
    ) -> Entry:  # fmt: skip
        """Hold `amount` for the logical request `key` against every budget it falls under, atomically.

        Returns a new entry in state ``reserved`` (sign it), or the live entry already recorded for `key` in any
        later state (re-send its `payment`; never sign again), or, for a request without a key of its own that
        repeats one which ended unanswered (`unanswered`, same `fingerprint`, within its window), that one's
        entry (re-send its payment: its key differs from `key`). Raises `BudgetExceeded` naming the budget that
        refused and its room, `NotBudgeted` when the ledger has budgets and none covers the payment, or
        `PaymentInFlight` while another request with this key holds a reservation (it is
        signing, or its process died while signing: `release_stale` frees such a reservation once it is stale).
        """
        new = new_entry(key, origin, asset, network, amount, scheme, pay_to)
        try:
            if fingerprint is None:  # one round trip reserves, refuses, or finds the key's entry
                known = self._db.run(self._steps.reserve_at_once(new), write=True, exclusive=True)
                if known is not None:
                    return known
            return self._db.run(self._steps.reserve(new, fingerprint), write=True, exclusive=True)
        except PaymentInFlight as busy:  # its holder may have died between reserving and signing
            held = busy.entry
            if held is None or not holder_is_gone(held.holder, held.created_at, self._steps.now()):
                raise
            self._db.run(_sql.take_over(held, self._steps.now()), write=True)
        return self._db.run(self._steps.reserve(new, fingerprint), write=True, exclusive=True)

    def authorize(
        self, entry_id: str, *, payment: Mapping[str, Any], payer: str, nonce: str, valid_before: int, method: str,
        amount: int | None = None,
    ) -> Entry:  # fmt: skip
        """Store a reserved entry's signed payment (JSON-able; enough to re-send it byte for byte) before it is sent.

        `nonce` is as on the wire, `valid_before` the EIP-3009 validBefore or Permit2 deadline, `method`
        ``"eip3009"`` or ``"permit2"``; `amount`, if given, is what was signed (at most what was reserved).
        Raises `InvalidTransition` if the entry is no longer reserved: then the payment must not be sent.
        """
        at_once, full = self._steps.authorizing(
            entry_id, payment=payment, payer=payer, nonce=nonce, valid_before=valid_before, method=method, amount=amount
        )
        authorized = self._db.run(at_once, write=True, durable=True)
        return authorized if authorized is not None else self._db.run(full, write=True, durable=True)

    def claim(self, entry_id: str, *, amount: int, tx_hash: str | None) -> Entry:
        """Record the settlement the server reports (`amount` in `tx_hash`) as its claim; the entry keeps holding
        its signed maximum until the chain shows what moved (`settle`, or `reconcile`)."""
        return self._db.run(self._steps.claim(entry_id, amount, tx_hash), write=True)

    def settle(self, entry_id: str, *, amount: int, tx_hash: str | None) -> Entry:
        """The chain shows the entry's authorization consumed, moving `amount` in `tx_hash`: hold that amount."""
        settled = self._db.run(self._steps.settle_at_once(entry_id, amount, tx_hash), write=True)
        if settled is not None:
            return settled
        return self._db.run(self._steps.settle(entry_id, amount, tx_hash), write=True)

    def release(self, entry_id: str, reason: str) -> Entry:
        """Release a reservation that was never signed (e.g. the request was refused before signing)."""
        return self._db.run(self._steps.release(entry_id, reason), write=True)

    def mark_unknown(self, entry_id: str, detail: str | None = None) -> Entry:
        """The signed payment was sent but no receipt came (lost response, timeout): reconcile() will decide."""
        steps = self._steps.mark(entry_id, EntryState.UNKNOWN, UNANSWERED_STATES, detail)
        return self._db.run(steps, write=True)

    def unanswered(self, fingerprint: str, entry_id: str, *, window: float) -> None:
        """The request without a key identified by `fingerprint` (see `x402pay._repeats.fingerprint`) sent the
        payment of `entry_id` and got no answer its caller could use: for `window` seconds, a repeat of it from any
        process that uses this ledger re-sends that payment (see `reserve`)."""
        self._db.run(self._steps.unanswered(fingerprint, entry_id, window), write=True)

    def answered(self, fingerprint: str) -> None:
        """A repeat of the request `fingerprint` got its answer: later requests like it are new ones."""
        self._db.run(self._steps.answered(fingerprint), write=True)

    def remember_route(
        self, method: str, origin: str, path: str, challenge: Mapping[str, Any], *, max_age: float
    ) -> None:
        """Keep `challenge` (a decoded ``PAYMENT-REQUIRED`` object) as the price its server accepted for the route,
        for pre-payment by any process of this ledger; routes not seen for `max_age` seconds are dropped."""
        self._db.run(self._steps.remember_route(method, origin, path, challenge, max_age), write=True)

    def routes(self, *, max_age: float) -> list[RememberedRoute]:
        """The routes remembered within the last `max_age` seconds, most recent first (at most 1024)."""
        return self._db.run(self._steps.routes(max_age))

    def forget_routes(self, origin: str, *, max_age: float) -> None:
        """Forget the routes of `origin` (it refused a pre-payment), and every route older than `max_age` seconds."""
        self._db.run(self._steps.forget_routes(origin, max_age), write=True)

    def mark_mismatch(self, entry_id: str, detail: str) -> Entry:
        """The receipt disagrees with the chain or with what was signed: hold the signed maximum, say why, and mark
        the entry's origin untrusted for every process that uses this ledger."""
        return self._db.run(self._steps.mismatch(entry_id, detail), write=True, durable=True)

    def untrusted(self) -> dict[str, str]:
        """Every origin marked untrusted, with the reason."""
        return self._db.run(_sql.untrusted())

    def trust_reason(self, origin: str) -> str | None:
        """Why `origin` is marked untrusted, or None when it may be paid."""
        return self._db.run(_sql.trust_reason(origin))

    def mark_untrusted(self, origin: str, reason: str) -> None:
        """Mark `origin` untrusted (the first reason stays): no payment to it is reserved until it is cleared."""
        self._db.run(_sql.mark_untrusted(origin, reason, self._steps.now()), write=True, durable=True)

    def clear_untrusted(self, origin: str) -> bool:
        """Clear the mark on `origin` (a person decided); False if it had none."""
        return self._db.run(_sql.clear_untrusted(origin), write=True)

    def get(self, entry_id: str) -> Entry:
        """The entry `entry_id`; `EntryNotFound` if there is none."""
        return self._db.run(_sql.get(entry_id))

    def lookup(self, key: str) -> Entry | None:
        """The live entry of idempotency key `key`, else its latest released one, else None."""
        return self._db.run(_sql.lookup(key))

    def find(self, keys: Collection[str]) -> dict[str, Entry]:
        """`lookup` for several keys at once (one read): each key that has an entry, with that entry."""
        return self._db.run(_sql.find(keys))

    def entries(
        self, *, limit: int = 100, states: Collection[EntryState] | None = None, since: int | None = None
    ) -> list[Entry]:
        """Entries, newest first: at most `limit`, optionally only in `states` and created at or after `since`."""
        return self._db.run(_sql.entries(limit, states, since))

    def remaining(self, asset: str, *, network: str, origin: str) -> int | None:
        """The most a payment of `asset` on `network` to `origin` may reserve now; None when no budget applies."""
        return self._db.run(self._steps.remaining(asset, network, origin))

    def uncovered(self, asset: str, *, network: str, origin: str) -> str | None:
        """Why `reserve` would refuse a payment of `asset` on `network` to `origin` for falling under no budget
        (`NotBudgeted`), or None: some budget covers it, or the ledger has none. Reads no database."""
        return uncovered(self.budgets, asset, network, origin)

    def budget_status(self, *, origin: str | None = None) -> list[BudgetStatus]:
        """Each budget with the money held against it (per-origin budgets: for `origin`, or each origin)."""
        return self._db.run(self._steps.statuses(origin))

    def release_stale(self, older_than: int = DEFAULT_STALE_AFTER) -> list[Entry]:
        """Release reservations never signed within `older_than` seconds (their request died)."""
        now = self._steps.now()
        return self._db.run(_sql.release_stale(now - older_than, now), write=True)

    def reconcile(
        self, chain: Chain, *, stale_after: int = DEFAULT_STALE_AFTER, margin: int = DEFAULT_MARGIN
    ) -> ReconcileReport:
        """Resolve every entry whose money the chain has not proven yet, and release stale reservations.

        A used nonce settles the entry at the amount of the token's Transfer, unless that contradicts the server's
        claim (a mismatch, holding what moved, and the origin marked untrusted); an authorization expired more than
        `margin` seconds ago with its nonce unused is released (a claim of a settlement that never happened is a
        mismatch holding nothing); anything else stays open, with the reason. Running it again changes nothing.
        """
        tally = Tally(released=self.release_stale(stale_after))
        for entry in self._db.run(_sql.open_entries()):
            verdict = judge_entry(chain, entry, margin)
            tally.add(verdict, self._apply(verdict))
        return tally.report()

    def watch(
        self, chain: Chain | Callable[[], Chain], *, every: float = 60.0,
        on_report: Callable[[ReconcileReport], None] | None = None,
    ) -> Watcher:  # fmt: skip
        """Reconcile every `every` seconds on a background thread, for a long-running bot (started; `stop` it, or
        use it as a context manager). `chain` may be a callable that builds the `Chain` on that thread."""
        return Watcher(self, chain, every=every, on_report=on_report).start()

    def _apply(self, verdict: Resolution) -> Entry | str:
        log_resolution(verdict)
        if verdict.action == "open":
            return verdict.reason
        try:
            return self._db.run(self._steps.resolve(verdict), write=True, durable=True)
        except InvalidTransition as exc:  # the transport got there first
            return str(exc)
