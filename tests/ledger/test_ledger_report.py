"""The text and JSON behind `x402pay ledger`, `x402pay budget` and `x402pay reconcile`."""

from __future__ import annotations

import json

from ledger_support import ASSET, ORIGIN, Backend, Clock, authorize, reserve

from x402pay.ledger import EACH_ORIGIN, HOUR, Budget, ReconcileReport
from x402pay.ledger._report import render_budgets, render_ledger, render_reconcile

BUDGETS = (Budget(ASSET, 1_000_000, name="total"), Budget(ASSET, 100_000, window=HOUR, origin=EACH_ORIGIN))


def test_the_ledger_table_shows_payments_and_budget_totals(backend: Backend, clock: Clock) -> None:
    with backend.ledger(BUDGETS, clock=clock) as ledger:
        reserve(ledger, "k2", 5)
        clock.advance(60)
        entry = authorize(ledger, reserve(ledger, "k", 50_000).id)
        ledger.settle(entry.id, amount=20_000, tx_hash="0x" + "ab" * 32)
        text = render_ledger(ledger)
    lines = text.splitlines()
    assert lines[0].split() == ["time", "origin", "scheme", "signed", "max", "settled", "tx", "verdict"]
    assert lines[1].split() == ["2027-01-15", "08:01:00", ORIGIN, "exact", "0.050000", "USDC", "0.020000", "USDC",
                                "0xababababab…", "settled"]  # fmt: skip
    assert lines[-2].split() == ["'total'", "(all)", "0.020005", "USDC", "1.000000", "USDC", "0.979995", "USDC"]
    assert lines[-1].split()[-7:] == [ORIGIN, "0.020005", "USDC", "0.100000", "USDC", "0.079995", "USDC"]


def test_the_ledger_json_keeps_atomic_units(backend: Backend) -> None:
    with backend.ledger(BUDGETS) as ledger:
        entry = reserve(ledger, "k", 50_000)
        data = json.loads(render_ledger(ledger, as_json=True))
    assert [(item["id"], item["amount"], item["state"]) for item in data["entries"]] == [(entry.id, 50_000, "reserved")]
    total = data["budgets"][0]
    assert (total["budget"], total["held"], total["remaining"]) == ("'total'", 50_000, 950_000)


def test_budgets_render_for_one_origin_and_as_json(backend: Backend) -> None:
    with backend.ledger(BUDGETS) as ledger:
        reserve(ledger, "k", 30_000)
        assert "0.070000 USDC" in render_budgets(ledger, origin=ORIGIN)
        data = json.loads(render_budgets(ledger, origin="https://other.example", as_json=True))
    assert [(item["origin"], item["held"]) for item in data] == [(None, 30_000), ("https://other.example", 0)]


def test_empty_ledgers_say_so(backend: Backend) -> None:
    with backend.ledger() as ledger:
        assert render_ledger(ledger) == "no payments recorded\n\nno budgets configured"


def test_the_reconcile_summary_counts_each_outcome(backend: Backend) -> None:
    with backend.ledger() as ledger:
        released = ledger.release(reserve(ledger, "a", 1).id, "stale")
        open_entry = authorize(ledger, reserve(ledger, "b", 1).id)
    report = ReconcileReport(released=(released,), unresolved=((open_entry, "unused, but valid until 9"),))
    text = render_reconcile(report)
    assert text.splitlines()[-1] == "reconciled: 0 settled, 1 released, 0 mismatch, 1 still open"
    assert f"open       {open_entry.id}  {ORIGIN}  unused, but valid until 9" in text
    data = json.loads(render_reconcile(report, as_json=True))
    assert data["unresolved"][0]["why"] == "unused, but valid until 9"
