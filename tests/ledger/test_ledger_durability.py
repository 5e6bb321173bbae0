"""Which commits wait for the disk under each `Durability`, and that every setting survives a killed process."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from ledger_support import Backend, authorize, reserve

from x402pay.errors import PaymentInFlight
from x402pay.ledger import Durability, EntryState, Ledger
from x402pay.ledger._backends import SQLiteDatabase
from x402pay.ledger._holder import LEASE
from x402pay.ledger._sql import Program, Query

# (flushed when the ledger does not ask, flushed when it asks): the promise of each setting.
FLUSHES = {
    Durability.FULL: (True, True),
    Durability.SIGNED: (False, True),
    Durability.UNSAFE_PROCESS: (False, False),
}


def _flush_setting(backend: str, last: bool) -> Program[bool]:
    """Inside a write transaction: whether its commit will wait for the disk. `last`: the program says the statement
    is its last (on PostgreSQL, a transaction of one round trip, without BEGIN)."""
    if backend == "sqlite":
        rows = yield Query("PRAGMA synchronous", last=last)
        return int(rows[0][0]) >= 2  # FULL
    rows = yield Query("SHOW synchronous_commit", last=last)
    return str(rows[0][0]) != "off"


@pytest.mark.parametrize("last", [False, True], ids=["explicit", "one-round-trip"])
@pytest.mark.parametrize("durability", list(Durability))
def test_each_durability_flushes_the_commits_it_promises(backend: Backend, durability: Durability, last: bool) -> None:
    with backend.ledger(durability=durability) as ledger:
        database = ledger._db
        flushed = tuple(
            database.run(_flush_setting(backend.name, last), write=True, durable=asks) for asks in (False, True)
        )
        assert flushed == FLUSHES[durability]
        assert flushed == (durability.flushes(False), durability.flushes(True))


class Recording:
    """A database that notes which operations asked for a durable commit."""

    def __init__(self, inner: SQLiteDatabase) -> None:
        self.inner = inner
        self.durable: list[bool] = []

    def run(self, program: Program[Any], *, write: bool = False, exclusive: bool = False, durable: bool = False) -> Any:
        if write:
            self.durable.append(durable)
        return self.inner.run(program, write=write, exclusive=exclusive, durable=durable)

    def close(self) -> None:
        self.inner.close()


def test_the_stored_signed_payment_and_a_mismatch_ask_for_durable_commits(tmp_path: Path) -> None:
    database = Recording(SQLiteDatabase(tmp_path / "ledger.db"))
    with Ledger(database) as ledger:
        entry = reserve(ledger, "k", 10)
        authorize(ledger, entry.id)
        ledger.claim(entry.id, amount=10, tx_hash="0x01")
        ledger.mark_mismatch(entry.id, "the chain moved nothing")
    #                          schema, reserve, authorize, claim, mismatch
    assert database.durable == [True, False, True, False, True]


def test_an_unknown_durability_is_refused_with_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'fast' is not a valid Durability"):
        Ledger.sqlite(tmp_path / "ledger.db", durability="fast")


def _sign_then_die(backend: Backend, durability: str) -> None:
    ledger = backend.ledger(durability=durability)
    entry = reserve(ledger, "killed", 10)
    authorize(ledger, entry.id)
    reserve(ledger, "killed-too", 5)
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint: as if killed between signing and sending


@pytest.mark.parametrize("durability", list(Durability))
def test_every_durability_keeps_what_a_killed_process_committed(backend: Backend, durability: Durability) -> None:
    backend.ledger().close()
    child = multiprocessing.get_context("spawn").Process(target=_sign_then_die, args=(backend, str(durability)))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    with backend.ledger(durability=durability) as ledger:
        signed, reserved = ledger.lookup("killed"), ledger.lookup("killed-too")
        assert signed is not None
        assert (signed.state, signed.payment is not None) == (EntryState.AUTHORIZED, True)
        assert reserved is not None
        assert (reserved.state, reserved.held) == (EntryState.RESERVED, 5)


def test_a_reservation_whose_holder_was_killed_is_taken_over_at_once(backend: Backend) -> None:
    backend.ledger().close()
    child = multiprocessing.get_context("spawn").Process(target=_sign_then_die, args=(backend, "signed"))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    with backend.ledger() as ledger:
        orphan = ledger.lookup("killed-too")
        assert orphan is not None
        assert orphan.state is EntryState.RESERVED
        retry = reserve(ledger, "killed-too", 5)  # at once: no PaymentInFlight for the stale timeout's ten minutes
        assert (retry.state, retry.held) == (EntryState.RESERVED, 5)
        assert retry.id != orphan.id
        released = ledger.get(orphan.id)
        assert (released.state, released.held) == (EntryState.RELEASED, 0)
        assert "taken over: its holder" in str(released.detail)
        signed = ledger.lookup("killed")
        assert signed is not None
        assert signed.state is EntryState.AUTHORIZED  # a signed payment is never taken over: it may have left


def test_a_live_holders_reservation_is_never_taken_over(backend: Backend) -> None:
    with backend.ledger() as ledger:
        reserve(ledger, "mine", 5)
        with pytest.raises(PaymentInFlight, match="mine"):
            reserve(ledger, "mine", 5)  # this very process holds it: it may be signing right now


def test_a_holder_on_another_machine_keeps_its_reservation_for_the_lease(backend: Backend) -> None:
    now = [1_000_000]
    with backend.ledger(clock=lambda: now[0]) as ledger:
        entry = reserve(ledger, "remote", 5)
        remote = "another-machine/4242/77"
        ledger._db.run(_set_holder(entry.id, remote), write=True)
        with pytest.raises(PaymentInFlight):
            reserve(ledger, "remote", 5)
        now[0] += LEASE + 1
        assert reserve(ledger, "remote", 5).id != entry.id


def _set_holder(entry_id: str, holder: str) -> Program[None]:
    yield Query("UPDATE x402pay_entries SET holder = ? WHERE id = ?", (holder, entry_id))
