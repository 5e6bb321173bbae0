"""The ledger's states, budgets and idempotency, on SQLite and PostgreSQL, sync and async."""

from __future__ import annotations

import re

import pytest
from ledger_support import ASSET, NETWORK, ORIGIN, Backend, Clock, areserve, authorize, reserve

from x402pay.errors import NotBudgeted, SpendCapExceeded
from x402pay.ledger import (
    DAY,
    EACH_ORIGIN,
    HOUR,
    AsyncLedger,
    Budget,
    BudgetExceeded,
    EntryNotFound,
    EntryState,
    InvalidTransition,
    Ledger,
    LedgerError,
    PaymentInFlight,
    SchemaError,
)

PAYMENT = {"header": "PAYMENT-SIGNATURE", "value": "eyJ4NDAyVmVyc2lvbiI6Mn0=  \u00e9"}


# -- states --------------------------------------------------------------------------------------------------------


def test_a_payment_goes_reserved_authorized_claimed_settled(backend: Backend, clock: Clock) -> None:
    with backend.ledger(clock=clock) as ledger:
        entry = reserve(ledger, "k", 50_000, origin="HTTPS://API.example", asset=ASSET)
        assert (entry.state, entry.held, entry.origin, entry.asset) == ("reserved", 50_000, ORIGIN, ASSET.lower())
        entry = authorize(ledger, entry.id, payment=PAYMENT, amount=40_000)
        assert (entry.state, entry.amount, entry.held, entry.payment) == ("authorized", 40_000, 40_000, PAYMENT)
        entry = ledger.claim(entry.id, amount=30_000, tx_hash="0xabc")
        assert (entry.state, entry.held) == ("claimed", 40_000)  # the server's word: the maximum stays held
        assert (entry.claimed_amount, entry.claimed_tx, entry.settled_amount) == (30_000, "0xabc", None)
        entry = ledger.settle(entry.id, amount=30_000, tx_hash="0xabc")
        assert (entry.state, entry.held, entry.settled_amount, entry.tx_hash) == ("settled", 30_000, 30_000, "0xabc")
        assert ledger.get(entry.id) == entry


async def test_a_payment_goes_reserved_authorized_claimed_settled_async(backend: Backend, clock: Clock) -> None:
    ledger = await backend.aledger(clock=clock)
    async with ledger:
        entry = await areserve(ledger, "k", 50_000)
        entry = await ledger.authorize(
            entry.id, payment=PAYMENT, payer="0x1", nonce="1", valid_before=9, method="permit2"
        )
        entry = await ledger.claim(entry.id, amount=20_000, tx_hash="0xabc")
        assert (entry.state, entry.held) == ("claimed", 50_000)
        entry = await ledger.settle(entry.id, amount=20_000, tx_hash="0xabc")
        assert (entry.state, entry.held, entry.payment) == ("settled", 20_000, PAYMENT)
        assert await ledger.get(entry.id) == entry


def test_a_claim_over_the_signed_maximum_or_changed_afterwards_is_refused(backend: Backend) -> None:
    with backend.ledger() as ledger:
        entry = authorize(ledger, reserve(ledger, "k", 10).id)
        with pytest.raises(InvalidTransition, match="cannot claim 11"):
            ledger.claim(entry.id, amount=11, tx_hash="0x1")
        ledger.claim(entry.id, amount=4, tx_hash="0x1")
        assert ledger.claim(entry.id, amount=4, tx_hash="0x1").claimed_amount == 4  # the same claim again
        with pytest.raises(InvalidTransition, match="already claims 4"):
            ledger.claim(entry.id, amount=10, tx_hash="0x2")


def test_the_stored_payment_comes_back_byte_for_byte(backend: Backend) -> None:
    with backend.ledger() as ledger:
        entry = authorize(ledger, reserve(ledger, "k", 1).id, payment=PAYMENT)
    with backend.ledger() as reopened:
        stored = reopened.get(entry.id).payment
    assert stored is not None
    assert stored["value"].encode() == PAYMENT["value"].encode()


def test_a_reservation_never_signed_is_released_to_zero(backend: Backend) -> None:
    with backend.ledger() as ledger:
        entry = ledger.release(reserve(ledger, "k", 10).id, "refused before signing")
        assert (entry.state, entry.held, entry.detail) == ("released", 0, "refused before signing")


def test_a_signed_payment_cannot_be_released_by_hand(backend: Backend) -> None:
    with backend.ledger() as ledger:
        entry = authorize(ledger, reserve(ledger, "k", 10).id)
        with pytest.raises(InvalidTransition, match="reconcile") as caught:
            ledger.release(entry.id, "changed my mind")
        assert caught.value.entry.state == "authorized"
        assert ledger.mark_unknown(entry.id, "timeout").state == "unknown"


def test_a_settlement_above_the_signed_maximum_is_refused(backend: Backend) -> None:
    with backend.ledger() as ledger:
        entry = authorize(ledger, reserve(ledger, "k", 10).id)
        with pytest.raises(InvalidTransition, match="more than its signed"):
            ledger.settle(entry.id, amount=11, tx_hash="0x1")
        mismatch = ledger.mark_mismatch(entry.id, "server claims 11")
        assert (mismatch.state, mismatch.held, mismatch.detail) == ("mismatch", 10, "server claims 11")


def test_a_mismatch_holds_the_signed_maximum(backend: Backend) -> None:
    with backend.ledger() as ledger:
        entry = authorize(ledger, reserve(ledger, "k", 10).id)
        ledger.claim(entry.id, amount=4, tx_hash="0x1")
        assert ledger.mark_mismatch(entry.id, "no such transfer on chain").held == 10
        assert ledger.trust_reason(entry.origin) == "no such transfer on chain"  # the same transaction marks it


def test_settling_twice_is_idempotent_only_for_the_same_receipt(backend: Backend) -> None:
    with backend.ledger() as ledger:
        entry = authorize(ledger, reserve(ledger, "k", 10).id)
        first = ledger.settle(entry.id, amount=10, tx_hash="0x1")
        assert ledger.settle(entry.id, amount=10, tx_hash="0x1").settled_amount == first.settled_amount
        with pytest.raises(InvalidTransition, match="already settled"):
            ledger.settle(entry.id, amount=9, tx_hash="0x2")


def test_signing_more_than_was_reserved_is_refused(backend: Backend) -> None:
    with backend.ledger() as ledger:
        entry = reserve(ledger, "k", 10)
        with pytest.raises(InvalidTransition, match="reserved 10"):
            authorize(ledger, entry.id, amount=11)
        assert ledger.get(entry.id).state == "reserved"


@pytest.mark.parametrize("step", ["settle", "claim", "unknown"])
def test_steps_out_of_order_are_refused(backend: Backend, step: str) -> None:
    with backend.ledger() as ledger:
        entry = reserve(ledger, "k", 10)
        calls = {
            "settle": lambda: ledger.settle(entry.id, amount=1, tx_hash="0x1"),
            "claim": lambda: ledger.claim(entry.id, amount=1, tx_hash="0x1"),
            "unknown": lambda: ledger.mark_unknown(entry.id),
        }
        with pytest.raises(InvalidTransition, match="it is reserved"):
            calls[step]()


def test_an_unknown_entry_id_is_reported(backend: Backend) -> None:
    with backend.ledger() as ledger, pytest.raises(EntryNotFound, match="nope"):
        ledger.settle("nope", amount=1, tx_hash=None)


@pytest.mark.parametrize("amount", [-1, 2**63, 1.5, True])
def test_amounts_are_ints_the_ledger_can_store(backend: Backend, amount: object) -> None:
    with backend.ledger() as ledger, pytest.raises(ValueError, match="atomic units"):
        reserve(ledger, "k", amount)  # type: ignore[arg-type]


# -- idempotency ---------------------------------------------------------------------------------------------------


def test_a_second_reserve_while_signing_is_in_flight(backend: Backend) -> None:
    with backend.ledger() as ledger:
        entry = reserve(ledger, "k", 10)
        with pytest.raises(PaymentInFlight) as caught:
            reserve(ledger, "k", 10)
        assert caught.value.entry.id == entry.id
        assert ledger.entries() == [entry]


@pytest.mark.parametrize("state", ["authorized", "unknown", "settled"])
def test_a_retry_gets_the_signed_payment_back_and_holds_nothing_more(backend: Backend, state: str) -> None:
    with backend.ledger((Budget(ASSET, 10),)) as ledger:
        entry = authorize(ledger, reserve(ledger, "k", 10).id, payment=PAYMENT)
        if state == "unknown":
            ledger.mark_unknown(entry.id)
        if state == "settled":
            ledger.settle(entry.id, amount=10, tx_hash="0x1")
        again = reserve(ledger, "k", 10)
        assert (again.id, again.state, again.payment) == (entry.id, state, PAYMENT)
        assert ledger.lookup("k") == again


def test_after_a_release_the_same_key_may_pay_afresh(backend: Backend, clock: Clock) -> None:
    with backend.ledger(clock=clock) as ledger:
        first = ledger.release(reserve(ledger, "k", 10).id, "refused")
        assert ledger.lookup("k") == first
        clock.advance(1)
        second = reserve(ledger, "k", 10)
        assert second.id != first.id
        assert ledger.lookup("k") == second
        assert ledger.lookup("other") is None


# -- budgets -------------------------------------------------------------------------------------------------------


def test_a_total_budget_refuses_what_does_not_fit_and_names_itself(backend: Backend) -> None:
    budget = Budget(ASSET, 100, name="bot total")
    with backend.ledger((budget,)) as ledger:
        reserve(ledger, "a", 60)
        with pytest.raises(BudgetExceeded, match="'bot total' refuses 41: only 40 of 100 left") as caught:
            reserve(ledger, "b", 41)
        assert isinstance(caught.value, SpendCapExceeded)
        assert (caught.value.budget, caught.value.remaining, caught.value.requested) == (budget, 40, 41)
        assert reserve(ledger, "b", 40).held == 40
        assert len(ledger.entries()) == 2


async def test_a_total_budget_refuses_what_does_not_fit_async(backend: Backend) -> None:
    ledger = await backend.aledger((Budget(ASSET, 100),))
    async with ledger:
        await areserve(ledger, "a", 60)
        with pytest.raises(BudgetExceeded) as caught:
            await areserve(ledger, "b", 41)
        assert caught.value.remaining == 40
        assert await ledger.remaining(ASSET, network=NETWORK, origin=ORIGIN) == 40


def test_held_money_counts_by_state(backend: Backend) -> None:
    with backend.ledger((Budget(ASSET, 1_000),)) as ledger:
        reserve(ledger, "reserved", 100)
        authorize(ledger, reserve(ledger, "authorized", 200).id, nonce="a")
        ledger.mark_unknown(authorize(ledger, reserve(ledger, "unknown", 300).id, nonce="u").id)
        ledger.settle(authorize(ledger, reserve(ledger, "settled", 250).id, nonce="s").id, amount=50, tx_hash="0x")
        ledger.release(reserve(ledger, "released", 350).id, "refused")
        assert ledger.remaining(ASSET, network=NETWORK, origin=ORIGIN) == 1_000 - 100 - 200 - 300 - 50


def test_budgets_are_per_asset_network_and_origin(backend: Backend) -> None:
    other_asset = "0x" + "ab" * 20
    budgets = (
        Budget(ASSET, 100, network=NETWORK),
        Budget(ASSET, 30, origin="https://pricey.example", network=NETWORK),
        Budget(ASSET, 50, origin=EACH_ORIGIN, network=NETWORK),
    )
    with backend.ledger(budgets) as ledger:
        with pytest.raises(NotBudgeted, match=re.escape(f"asset {other_asset} on {NETWORK} for {ORIGIN}")):
            reserve(ledger, "other asset", 1, asset=other_asset)
        with pytest.raises(NotBudgeted, match=r"on eip155:8453 .*the budgets: .*per origin in total"):
            reserve(ledger, "other network", 1, network="eip155:8453")
        reserve(ledger, "pricey", 30, origin="https://pricey.example")
        with pytest.raises(BudgetExceeded, match=re.escape("for https://pricey.example")):
            reserve(ledger, "pricey again", 1, origin="https://pricey.example")
        reserve(ledger, "one", 50, origin="https://one.example")
        with pytest.raises(BudgetExceeded, match="per origin"):
            reserve(ledger, "one again", 1, origin="https://one.example")
        with pytest.raises(BudgetExceeded, match="on eip155:31337 in total") as caught:
            reserve(ledger, "two", 50, origin="https://two.example")
        assert caught.value.remaining == 20
        assert ledger.remaining(other_asset, network=NETWORK, origin=ORIGIN) is None


def test_rolling_windows_free_up_as_time_passes(backend: Backend, clock: Clock) -> None:
    budgets = (Budget(ASSET, 10, window=HOUR), Budget(ASSET, 25, window=DAY), Budget(ASSET, 40))
    with backend.ledger(budgets, clock=clock) as ledger:
        reserve(ledger, "1", 10)
        with pytest.raises(BudgetExceeded, match="per hour"):
            reserve(ledger, "2", 1)
        clock.advance(HOUR)
        reserve(ledger, "2", 10)
        clock.advance(HOUR)
        with pytest.raises(BudgetExceeded, match="per day") as caught:
            reserve(ledger, "3", 10)
        assert caught.value.remaining == 5
        clock.advance(DAY)
        reserve(ledger, "3", 10)
        clock.advance(DAY)
        reserve(ledger, "4", 10)
        clock.advance(DAY)
        with pytest.raises(BudgetExceeded, match="in total"):
            reserve(ledger, "5", 1)


def test_remaining_is_the_least_room_among_the_budgets_that_apply(backend: Backend) -> None:
    budgets = (Budget(ASSET, 100), Budget(ASSET, 30, window=HOUR, origin=EACH_ORIGIN))
    with backend.ledger(budgets) as ledger:
        reserve(ledger, "a", 25)
        assert ledger.remaining(ASSET, network=NETWORK, origin=ORIGIN) == 5
        assert ledger.remaining(ASSET.upper().replace("0X", "0x"), network=NETWORK, origin="https://b.example") == 30
        reserve(ledger, "b", 30, origin="https://b.example")
        reserve(ledger, "c", 30, origin="https://c.example")
        assert ledger.remaining(ASSET, network=NETWORK, origin="https://d.example") == 15


def test_budget_status_lists_each_origin_of_a_per_origin_budget(backend: Backend) -> None:
    budgets = (Budget(ASSET, 100, name="total"), Budget(ASSET, 50, origin=EACH_ORIGIN, name="each"))
    with backend.ledger(budgets) as ledger:
        assert [(s.budget.name, s.held, s.origin) for s in ledger.budget_status()] == [
            ("total", 0, None),
            ("each", 0, None),
        ]
        reserve(ledger, "a", 20, origin="https://a.example")
        reserve(ledger, "b", 30, origin="https://b.example")
        statuses = ledger.budget_status()
        assert [(s.budget.name, s.held, s.origin, s.remaining) for s in statuses] == [
            ("total", 50, None, 50),
            ("each", 30, "https://b.example", 20),
            ("each", 20, "https://a.example", 30),
        ]
        assert [s.held for s in ledger.budget_status(origin="https://a.example")] == [50, 20]


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"limit": -1}, "limit"), ({"limit": 1.0}, "limit"), ({"limit": 1, "window": 0}, "window")],
)
def test_a_budget_is_checked_when_made(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Budget(ASSET, **fields)  # type: ignore[arg-type]


# -- housekeeping --------------------------------------------------------------------------------------------------


def test_stale_reservations_are_released_and_cannot_be_signed_later(backend: Backend, clock: Clock) -> None:
    with backend.ledger((Budget(ASSET, 10),), clock=clock) as ledger:
        stale = reserve(ledger, "stale", 10)
        clock.advance(601)
        signed = authorize(ledger, reserve(ledger, "recent", 0).id)
        assert [entry.id for entry in ledger.release_stale(600)] == [stale.id]
        assert ledger.get(signed.id).state == "authorized"
        with pytest.raises(InvalidTransition, match="it is released"):
            authorize(ledger, stale.id)
        assert ledger.remaining(ASSET, network=NETWORK, origin=ORIGIN) == 10


def test_entries_are_listed_newest_first_and_filtered(backend: Backend, clock: Clock) -> None:
    with backend.ledger(clock=clock) as ledger:
        first = reserve(ledger, "1", 1)
        clock.advance(10)
        second = authorize(ledger, reserve(ledger, "2", 2).id)
        assert [entry.id for entry in ledger.entries()] == [second.id, first.id]
        assert ledger.entries(limit=1) == [second]
        assert ledger.entries(states={EntryState.RESERVED}) == [first]
        assert ledger.entries(states=()) == []
        assert ledger.entries(since=int(clock.now)) == [second]


def test_the_schema_is_versioned_and_reopening_keeps_entries(backend: Backend) -> None:
    with backend.ledger() as ledger:
        entry = reserve(ledger, "k", 1)
    with backend.ledger() as reopened:
        assert reopened.get(entry.id) == entry


def test_a_schema_newer_than_the_library_is_refused(backend: Backend) -> None:
    from x402pay.ledger import _sql as sql

    with backend.ledger() as ledger:
        ledger._db.run(_set_version(sql.SCHEMA_VERSION + 1), write=True)
    with pytest.raises(SchemaError, match=f"version {sql.SCHEMA_VERSION + 1}"):
        backend.ledger()


def _set_version(version: int):  # type: ignore[no-untyped-def]
    from x402pay.ledger._sql import Query

    yield Query("UPDATE x402pay_schema SET version = ?", (version,))


def test_an_in_memory_sqlite_ledger_works_alone() -> None:
    with Ledger.sqlite() as ledger:
        assert reserve(ledger, "k", 1).state == "reserved"


async def test_an_in_memory_async_sqlite_ledger_works_alone() -> None:
    async with await AsyncLedger.sqlite() as ledger:
        assert (await areserve(ledger, "k", 1)).state == "reserved"


def test_an_unreachable_postgres_is_a_ledger_error() -> None:
    with pytest.raises(LedgerError, match="PostgreSQL ledger"):
        Ledger.postgres("postgresql://postgres@127.0.0.1:1/test?connect_timeout=2")


def test_an_unwritable_sqlite_path_is_a_ledger_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LedgerError, match="SQLite ledger"):
        Ledger.sqlite(tmp_path / "missing" / "ledger.db")
