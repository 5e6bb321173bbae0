"""SettlementStore: what a facilitator broadcast, in SQLite (no chain needed)."""

from __future__ import annotations

from pathlib import Path

from x402pay.server import Broadcast, SettlementStore

PAYER = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"


def sent(key: str, tx: str, amount: int = 10_000) -> Broadcast:
    return Broadcast(key, "0x" + tx * 32, "eip155:31337", PAYER, amount, 2_000_000_000)


def test_a_payment_has_one_broadcast_until_it_failed(tmp_path: Path) -> None:
    store = SettlementStore(tmp_path / "s.sqlite3")
    first = sent("k", "aa")
    assert store.sending(first) == first
    assert store.sending(sent("k", "bb")) == first  # a second settlement of the same payment follows the first
    store.decide("k", "failed", "reverted")
    retry = sent("k", "cc")
    assert store.sending(retry) == retry  # a reverted settlement moved nothing: another may be sent
    store.close()


def test_a_restart_remembers_what_is_pending_and_the_books_count_only_the_settled(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = SettlementStore(path)
    for key, tx, amount in [("a", "aa", 10_000), ("b", "bb", 4_242), ("c", "cc", 7)]:
        store.sending(sent(key, tx, amount))
    store.decide("a", "settled", "mined")
    store.decide("c", "failed", "reverted")
    store.decide("a", "failed", "a decided row is not decided again")
    store.close()

    reopened = SettlementStore(path)
    assert [(row.key, row.state) for row in reopened.pending()] == [("b", "pending")]
    assert reopened.find("a") == Broadcast("a", "0x" + "aa" * 32, "eip155:31337", PAYER, 10_000, 2_000_000_000,
                                           "settled", "mined")  # fmt: skip
    assert reopened.settled_total(PAYER.lower()) == 10_000
    reopened.forget("b")  # the node refused it: never broadcast
    assert reopened.find("b") is None
    assert repr(reopened) == f"SettlementStore({str(path)!r})"
    reopened.close()
