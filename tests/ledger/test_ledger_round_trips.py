"""What the drivers may do with a program's hints (`Query.reads`, `Query.last`) without bending a transaction."""

from __future__ import annotations

from typing import Any

import pytest
from ledger_support import ORIGIN, Backend, areserve, authorize, reserve

from x402pay.errors import BudgetExceeded, InvalidTransition, LedgerError, OriginUntrusted, PaymentInFlight
from x402pay.ledger import Budget, EntryState
from x402pay.ledger._query import Program, Query
from x402pay.ledger._steps import new_entry_id

_ASSET = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def _count(key: str) -> Program[int]:
    rows = yield Query("SELECT COUNT(*) FROM x402pay_entries WHERE key = ?", (key,))
    return int(rows[0][0])


def _untrusted_then_failing(origin: str) -> Program[None]:
    yield Query("INSERT INTO x402pay_untrusted (origin, reason, marked_at) VALUES (?, 'x', 1)", (origin,), reads=False)
    yield Query("INSERT INTO no_such_table VALUES (1)", reads=False)


def _untrusted_then_failing_last(origin: str) -> Program[None]:
    yield Query("INSERT INTO x402pay_untrusted (origin, reason, marked_at) VALUES (?, 'x', 1)", (origin,), reads=False)
    yield Query("INSERT INTO no_such_table VALUES (1)", last=True)


def _after_the_last() -> Program[None]:
    yield Query("INSERT INTO x402pay_untrusted (origin, reason, marked_at) VALUES ('a', 'x', 1)", last=True)
    yield Query("INSERT INTO x402pay_untrusted (origin, reason, marked_at) VALUES ('b', 'x', 1)")


def test_an_unread_statement_that_fails_rolls_its_transaction_back(backend: Backend) -> None:
    with backend.ledger() as ledger:
        with pytest.raises(LedgerError):
            ledger._db.run(_untrusted_then_failing("https://x.example"), write=True)
        assert ledger.untrusted() == {}
        reserve(ledger, "after", 10)  # the connection still works
        assert ledger._db.run(_count("after")) == 1


def test_a_failing_last_statement_rolls_back_what_went_out_with_it(backend: Backend) -> None:
    with backend.ledger() as ledger:
        with pytest.raises(LedgerError):
            ledger._db.run(_untrusted_then_failing_last("https://x.example"), write=True, exclusive=True)
        assert ledger.untrusted() == {}
        reserve(ledger, "after", 10)
        assert ledger._db.run(_count("after")) == 1


def test_a_statement_after_the_last_one_is_refused_on_postgres(backend: Backend) -> None:
    with backend.ledger() as ledger:
        if backend.name == "sqlite":  # SQLite commits after the program; the hint changes nothing there
            ledger._db.run(_after_the_last(), write=True)
            assert set(ledger.untrusted()) == {"a", "b"}
            return
        with pytest.raises(LedgerError, match="after the one it said was its last"):
            ledger._db.run(_after_the_last(), write=True)
        assert set(ledger.untrusted()) == {"a"}  # committed with the last statement; nothing ran after it


def test_when_the_one_statement_reservation_cannot_reserve_the_full_one_says_why(backend: Backend) -> None:
    budget = Budget(_ASSET, 100, name="small")
    with backend.ledger((budget,)) as ledger:
        first = reserve(ledger, "k", 60)
        with pytest.raises(PaymentInFlight):
            reserve(ledger, "k", 10)
        with pytest.raises(BudgetExceeded) as refused:
            reserve(ledger, "other", 50)
        assert refused.value.remaining == 40
        ledger.release(first.id, "refused")
        again = reserve(ledger, "k", 50)  # a released key pays afresh
        assert (again.state, again.id != first.id) == (EntryState.RESERVED, True)
        ledger.mark_untrusted(ORIGIN, "lied")
        with pytest.raises(OriginUntrusted):
            reserve(ledger, "third", 1)
        assert ledger._db.run(_count("other")) + ledger._db.run(_count("third")) == 0


class _Counting:
    """A database that counts the statements of the programs it runs."""

    def __init__(self, database: Any) -> None:
        self.database = database
        self.statements = 0
        self.exclusive: list[bool] = []  # per transaction: whether it took the exclusive lock

    def run(self, program: Program[Any], **options: Any) -> Any:
        self.exclusive.append(options.get("exclusive", False))
        return self.database.run(self._counted(program), **options)

    def _counted(self, program: Program[Any]) -> Program[Any]:
        rows = None
        try:
            query = next(program)
            while True:
                self.statements += 1
                rows = yield query
                query = program.send(rows)
        except StopIteration as done:
            return done.value

    def close(self) -> None:
        self.database.close()


def test_authorizing_and_settling_all_that_is_held_is_one_statement_each(backend: Backend) -> None:
    budget = Budget(_ASSET, 1_000, name="total")
    with backend.ledger((budget,)) as ledger:
        entry = reserve(ledger, "k", 300)
        counting = ledger._db = _Counting(ledger._db)
        authorized = authorize(ledger, entry.id, amount=300)
        assert (authorized.state, authorized.held, counting.statements) == (EntryState.AUTHORIZED, 300, 1)
        settled = ledger.settle(entry.id, amount=300, tx_hash="0xabc")
        assert (settled.state, settled.settled_amount, settled.held, counting.statements) == (
            EntryState.SETTLED, 300, 300, 2,
        )  # fmt: skip
        assert [status.held for status in ledger.budget_status()] == [300]


def test_a_step_the_one_statement_cannot_take_goes_the_full_way(backend: Backend) -> None:
    budget = Budget(_ASSET, 1_000, name="total")
    with backend.ledger((budget,)) as ledger:
        lowered = reserve(ledger, "lowered", 300)
        assert authorize(ledger, lowered.id, amount=200).held == 200  # signed less than reserved
        assert ledger.settle(lowered.id, amount=150, tx_hash="0x1").held == 150  # the chain moved less (upto)
        assert ledger.settle(lowered.id, amount=150, tx_hash="0x1").state is EntryState.SETTLED  # said again
        with pytest.raises(InvalidTransition):
            ledger.settle(lowered.id, amount=140, tx_hash="0x2")
        with pytest.raises(InvalidTransition):
            authorize(ledger, lowered.id, amount=150)  # no longer reserved
        over = reserve(ledger, "over", 100)
        with pytest.raises(InvalidTransition):
            authorize(ledger, over.id, amount=101)
        with pytest.raises(InvalidTransition):
            ledger.settle(over.id, amount=100, tx_hash="0x3")  # never signed
        assert authorize(ledger, over.id).held == 100
        with pytest.raises(InvalidTransition):
            ledger.settle(over.id, amount=101, tx_hash="0x4")
        assert [status.held for status in ledger.budget_status()] == [250]
        assert ledger.get(over.id).state is EntryState.AUTHORIZED


def test_a_refusal_is_read_in_the_transaction_that_tried_to_reserve(backend: Backend) -> None:
    budget = Budget(_ASSET, 100, name="small")
    with backend.ledger((budget,)) as ledger:
        reserve(ledger, "k", 60)
        counting = ledger._db = _Counting(ledger._db)
        with pytest.raises(BudgetExceeded) as refused:
            reserve(ledger, "other", 50)
        assert (refused.value.remaining, counting.statements) == (40, 3)  # the insert, the totals, the checks
        assert counting.exclusive == [True]  # one transaction (one round trip on PostgreSQL)
        assert reserve(ledger, "fits", 40).held == 40  # the same three statements, and no row from the checks
        assert (counting.statements, counting.exclusive) == (6, [True, True])
        assert [status.held for status in ledger.budget_status()] == [100]


def test_entry_ids_are_unique_and_newer_ones_sort_last(backend: Backend) -> None:
    with backend.ledger() as ledger:
        ids = [reserve(ledger, f"k{number}", 1).id for number in range(50)]
    made = [new_entry_id() for _ in range(1_000)]
    assert len(set(ids + made)) == 1_050
    assert all(len(entry_id) == 32 and int(entry_id, 16) >= 0 for entry_id in ids + made)
    times = [entry_id[:16] for entry_id in ids + made]  # the time part: never smaller than an earlier id's
    assert times == sorted(times)


def _end_the_session(dsn: str, pid: int) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_postgres_ledger_whose_session_ended_goes_on_with_a_new_one(postgres: str, postgres_schema: str) -> None:
    with Backend("postgres", postgres, postgres_schema).ledger() as ledger:
        reserve(ledger, "before", 10)
        _end_the_session(postgres, ledger._db._conn.info.backend_pid)  # type: ignore[attr-defined]
        with pytest.raises(LedgerError):  # the call that finds the connection gone says so, and changes nothing
            reserve(ledger, "lost", 10)
        reserve(ledger, "after", 10)
        assert [ledger._db.run(_count(key)) for key in ("before", "lost", "after")] == [1, 0, 1]


async def test_an_async_postgres_ledger_whose_session_ended_goes_on_with_a_new_one(
    postgres: str, postgres_schema: str
) -> None:
    async with await Backend("postgres", postgres, postgres_schema).aledger() as ledger:
        await areserve(ledger, "before", 10)
        _end_the_session(postgres, ledger._db._conn.info.backend_pid)  # type: ignore[attr-defined]
        with pytest.raises(LedgerError):
            await areserve(ledger, "lost", 10)
        await areserve(ledger, "after", 10)
        assert [await ledger._db.run(_count(key)) for key in ("before", "lost", "after")] == [1, 0, 1]
