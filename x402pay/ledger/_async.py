"""`AsyncLedger`: the spend ledger for asyncio code, the same operations as `Ledger`, awaited."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Self

from x402pay.errors import InvalidTransition, PaymentInFlight
from x402pay.ledger import _sql
from x402pay.ledger._backends import AsyncDatabase, AsyncSQLiteDatabase, Durability
from x402pay.ledger._chain import Chain, Resolution, judge_entry
from x402pay.ledger._channels import AsyncChannelBook
from x402pay.ledger._core import (
    DEFAULT_MARGIN,
    DEFAULT_STALE_AFTER,
    POSTGRES_SCHEMES,
    UNANSWERED_STATES,
    Clock,
    log_resolution,
    new_entry,
)
from x402pay.ledger._holder import holder_is_gone
from x402pay.ledger._model import Budget, BudgetStatus, Entry, EntryState, ReconcileReport, uncovered
from x402pay.ledger._postgres import AsyncPostgresDatabase
from x402pay.ledger._routes import RememberedRoute
from x402pay.ledger._steps import Operations, Tally


class AsyncLedger:
    """The asyncio twin of `Ledger`: the same operations, awaited, over the same databases."""

    def __init__(self, database: AsyncDatabase, *, budgets: Sequence[Budget] = (), clock: Clock = time.time) -> None:
        self._db = database
        self._steps = Operations(budgets, clock)
        self._migrated = False

    @classmethod
    async def sqlite(
        cls, path: str | os.PathLike[str] = ":memory:", *, budgets: Sequence[Budget] = (), clock: Clock = time.time,
        durability: Durability | str = Durability.SIGNED,
    ) -> Self:  # fmt: skip
        """A ledger in the SQLite file at `path` (WAL), or in memory; see `Ledger.sqlite`."""
        database = AsyncSQLiteDatabase(path, durability=durability)
        return await cls(database, budgets=budgets, clock=clock).migrate()

    @classmethod
    async def postgres(
        cls, conninfo: str, *, schema: str | None = None, budgets: Sequence[Budget] = (), clock: Clock = time.time,
        durability: Durability | str = Durability.SIGNED,
    ) -> Self:  # fmt: skip
        """A ledger in PostgreSQL, in `schema` if given; see `Ledger.postgres`."""
        database = AsyncPostgresDatabase(conninfo, schema=schema, durability=durability)
        return await cls(database, budgets=budgets, clock=clock).migrate()

    @classmethod
    async def open(
        cls, target: str | os.PathLike[str], *, schema: str | None = None, budgets: Sequence[Budget] = (),
        clock: Clock = time.time, durability: Durability | str = Durability.SIGNED,
    ) -> Self:  # fmt: skip
        """`AsyncLedger.postgres` for a ``postgres(ql)://`` URL, else `AsyncLedger.sqlite` for a file path."""
        if str(target).startswith(POSTGRES_SCHEMES):
            return await cls.postgres(str(target), schema=schema, budgets=budgets, clock=clock, durability=durability)
        return await cls.sqlite(target, budgets=budgets, clock=clock, durability=durability)

    async def migrate(self) -> Self:
        """Create or upgrade the schema (the constructors do it; call it when building from a database)."""
        await self._db.run(_sql.migrate(), write=True, exclusive=True, durable=True)
        return self

    @property
    def channels(self) -> AsyncChannelBook:
        """This ledger's payment channels (``batch-settlement``), the same book `Ledger.channels` keeps, awaited."""
        return AsyncChannelBook(self._db, self._steps.now)

    @property
    def budgets(self) -> tuple[Budget, ...]:
        """The budgets this ledger enforces."""
        return self._steps.budgets

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the database connection."""
        await self._db.close()

    async def reserve(
        self, key: str, *, origin: str, asset: str, network: str, amount: int, pay_to: str, scheme: str = "exact",
        fingerprint: str | None = None,
    ) -> Entry:  # fmt: skip
        """Hold `amount` for `key` against the budgets, atomically; see `Ledger.reserve`."""
        new = new_entry(key, origin, asset, network, amount, scheme, pay_to)
        try:
            if fingerprint is None:  # one round trip reserves, refuses, or finds the key's entry
                known = await self._db.run(self._steps.reserve_at_once(new), write=True, exclusive=True)
                if known is not None:
                    return known
            return await self._db.run(self._steps.reserve(new, fingerprint), write=True, exclusive=True)
        except PaymentInFlight as busy:  # its holder may have died between reserving and signing
            held = busy.entry
            if held is None or not holder_is_gone(held.holder, held.created_at, self._steps.now()):
                raise
            await self._db.run(_sql.take_over(held, self._steps.now()), write=True)
        return await self._db.run(self._steps.reserve(new, fingerprint), write=True, exclusive=True)

    async def authorize(
        self, entry_id: str, *, payment: Mapping[str, Any], payer: str, nonce: str, valid_before: int, method: str,
        amount: int | None = None,
    ) -> Entry:  # fmt: skip
        """Store a reserved entry's signed payment before it is sent; see `Ledger.authorize`."""
        at_once, full = self._steps.authorizing(
            entry_id, payment=payment, payer=payer, nonce=nonce, valid_before=valid_before, method=method, amount=amount
        )
        authorized = await self._db.run(at_once, write=True, durable=True)
        return authorized if authorized is not None else await self._db.run(full, write=True, durable=True)

    async def claim(self, entry_id: str, *, amount: int, tx_hash: str | None) -> Entry:
        """Record the server's claim beside the hold; see `Ledger.claim`."""
        return await self._db.run(self._steps.claim(entry_id, amount, tx_hash), write=True)

    async def settle(self, entry_id: str, *, amount: int, tx_hash: str | None) -> Entry:
        """The chain shows what the entry's authorization moved; see `Ledger.settle`."""
        settled = await self._db.run(self._steps.settle_at_once(entry_id, amount, tx_hash), write=True)
        if settled is not None:
            return settled
        return await self._db.run(self._steps.settle(entry_id, amount, tx_hash), write=True)

    async def release(self, entry_id: str, reason: str) -> Entry:
        """Release a reservation that was never signed."""
        return await self._db.run(self._steps.release(entry_id, reason), write=True)

    async def mark_unknown(self, entry_id: str, detail: str | None = None) -> Entry:
        """The signed payment was sent but no receipt came: reconcile() will decide."""
        steps = self._steps.mark(entry_id, EntryState.UNKNOWN, UNANSWERED_STATES, detail)
        return await self._db.run(steps, write=True)

    async def unanswered(self, fingerprint: str, entry_id: str, *, window: float) -> None:
        """See `Ledger.unanswered`."""
        await self._db.run(self._steps.unanswered(fingerprint, entry_id, window), write=True)

    async def answered(self, fingerprint: str) -> None:
        """See `Ledger.answered`."""
        await self._db.run(self._steps.answered(fingerprint), write=True)

    async def remember_route(
        self, method: str, origin: str, path: str, challenge: Mapping[str, Any], *, max_age: float
    ) -> None:
        """See `Ledger.remember_route`."""
        await self._db.run(self._steps.remember_route(method, origin, path, challenge, max_age), write=True)

    async def routes(self, *, max_age: float) -> list[RememberedRoute]:
        """See `Ledger.routes`."""
        return await self._db.run(self._steps.routes(max_age))

    async def forget_routes(self, origin: str, *, max_age: float) -> None:
        """See `Ledger.forget_routes`."""
        await self._db.run(self._steps.forget_routes(origin, max_age), write=True)

    async def mark_mismatch(self, entry_id: str, detail: str) -> Entry:
        """Fraud: hold the signed maximum and mark the origin untrusted; see `Ledger.mark_mismatch`."""
        return await self._db.run(self._steps.mismatch(entry_id, detail), write=True, durable=True)

    async def untrusted(self) -> dict[str, str]:
        """Every origin marked untrusted, with the reason."""
        return await self._db.run(_sql.untrusted())

    async def trust_reason(self, origin: str) -> str | None:
        """Why `origin` is marked untrusted, or None."""
        return await self._db.run(_sql.trust_reason(origin))

    async def mark_untrusted(self, origin: str, reason: str) -> None:
        """Mark `origin` untrusted; see `Ledger.mark_untrusted`."""
        await self._db.run(_sql.mark_untrusted(origin, reason, self._steps.now()), write=True, durable=True)

    async def clear_untrusted(self, origin: str) -> bool:
        """Clear the mark on `origin`; False if it had none."""
        return await self._db.run(_sql.clear_untrusted(origin), write=True)

    async def get(self, entry_id: str) -> Entry:
        """The entry `entry_id`; `EntryNotFound` if there is none."""
        return await self._db.run(_sql.get(entry_id))

    async def lookup(self, key: str) -> Entry | None:
        """The live entry of idempotency key `key`, else its latest released one, else None."""
        return await self._db.run(_sql.lookup(key))

    async def find(self, keys: Collection[str]) -> dict[str, Entry]:
        """`lookup` for several keys at once (one read); see `Ledger.find`."""
        return await self._db.run(_sql.find(keys))

    async def entries(
        self, *, limit: int = 100, states: Collection[EntryState] | None = None, since: int | None = None
    ) -> list[Entry]:
        """Entries, newest first; see `Ledger.entries`."""
        return await self._db.run(_sql.entries(limit, states, since))

    async def remaining(self, asset: str, *, network: str, origin: str) -> int | None:
        """The most a payment may reserve now; None when no budget applies. See `Ledger.remaining`."""
        return await self._db.run(self._steps.remaining(asset, network, origin))

    def uncovered(self, asset: str, *, network: str, origin: str) -> str | None:
        """Why `reserve` would refuse a payment for falling under no budget, or None; see `Ledger.uncovered` (not
        awaited: it reads no database)."""
        return uncovered(self.budgets, asset, network, origin)

    async def budget_status(self, *, origin: str | None = None) -> list[BudgetStatus]:
        """Each budget with the money held against it; see `Ledger.budget_status`."""
        return await self._db.run(self._steps.statuses(origin))

    async def release_stale(self, older_than: int = DEFAULT_STALE_AFTER) -> list[Entry]:
        """Release reservations never signed within `older_than` seconds."""
        now = self._steps.now()
        return await self._db.run(_sql.release_stale(now - older_than, now), write=True)

    async def reconcile(
        self, chain: Chain, *, stale_after: int = DEFAULT_STALE_AFTER, margin: int = DEFAULT_MARGIN
    ) -> ReconcileReport:
        """Resolve open entries from chain state (chain calls run in a worker thread); see `Ledger.reconcile`."""
        tally = Tally(released=await self.release_stale(stale_after))
        for entry in await self._db.run(_sql.open_entries()):
            verdict = await asyncio.to_thread(judge_entry, chain, entry, margin)
            tally.add(verdict, await self._apply(verdict))
        return tally.report()

    async def _apply(self, verdict: Resolution) -> Entry | str:
        log_resolution(verdict)
        if verdict.action == "open":
            return verdict.reason
        try:
            return await self._db.run(self._steps.resolve(verdict), write=True, durable=True)
        except InvalidTransition as exc:  # the transport got there first
            return str(exc)
