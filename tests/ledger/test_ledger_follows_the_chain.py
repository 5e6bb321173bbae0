"""The books follow the chain: an invariant over many random runs of honest and lying servers.

Each run pays through a real ledger (SQLite on disk, reopened at random: a restart) against a simulated chain that
moves money only for a signed, unexpired authorization, and at most its signed maximum. Servers are honest, claim
less than they take (now or later), claim a settlement they never make, or say nothing. At every step, and after
`reconcile`, whatever the chain moved for an entry is held or settled by it, and the budget is never exceeded by
what the chain moved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from x402pay.errors import BudgetExceeded, OriginUntrusted
from x402pay.ledger import Budget, Entry, EntryState, Ledger, Transfer

ASSET = "0x" + "aa" * 20
NETWORK = "eip155:31337"
LIMIT = 100_000
LIFETIME = 60
Behaviour = Literal["honest", "under_claim", "late_full", "phantom", "silent"]


@dataclass
class Chain:
    """A chain where authorizations are spent by nonce, with a clock."""

    now: int = 1_000
    moved: dict[str, Transfer] = field(default_factory=dict)
    waiting: list[tuple[int, str, int]] = field(default_factory=list)  # (step due, nonce, amount) spent later

    def spend(self, nonce: str, amount: int, valid_before: int) -> None:
        if self.now <= valid_before and nonce not in self.moved:
            self.moved[nonce] = Transfer(amount, "0x" + nonce[2:].rjust(64, "0"))

    def serves(self, network: str) -> bool:
        return network == NETWORK

    def time(self) -> int:
        return self.now

    def nonce_used(self, entry: Entry) -> bool:
        return str(entry.nonce) in self.moved

    def find_transfer(self, entry: Entry) -> Transfer | None:
        return self.moved.get(str(entry.nonce))


@dataclass(frozen=True)
class Payment:
    maximum: int
    charge: int
    behaviour: Behaviour
    delay: int


payments = st.builds(
    Payment,
    maximum=st.integers(1, 40_000),
    charge=st.integers(0, 40_000),
    behaviour=st.sampled_from(["honest", "under_claim", "late_full", "phantom", "silent"]),
    delay=st.integers(1, 4),
)
steps = st.lists(st.one_of(payments, st.sampled_from(["tick", "restart", "reconcile"])), min_size=1, max_size=25)


def check(ledger: Ledger, chain: Chain) -> None:
    """Held or settled covers what the chain moved, entry by entry; the budget covers all that moved."""
    entries = ledger.entries(limit=1_000)
    for entry in entries:
        moved = chain.moved.get(str(entry.nonce))
        taken = moved.amount if moved is not None else 0
        if entry.state is EntryState.SETTLED:
            assert entry.held == entry.settled_amount == taken, entry
        else:
            assert entry.held >= taken, (entry, moved)
    assert sum(transfer.amount for transfer in chain.moved.values()) <= LIMIT


def pay(ledger: Ledger, chain: Chain, payment: Payment, number: int, step: int, origin: str) -> None:
    """One payment: reserve, sign, then the server's behaviour on chain and in its receipt."""
    try:
        entry = ledger.reserve(f"k{number}", origin=origin, asset=ASSET, network=NETWORK, amount=payment.maximum,
                               pay_to="0xb")  # fmt: skip
    except (BudgetExceeded, OriginUntrusted):
        return
    nonce, valid_before = f"0x{number:064x}", chain.now + LIFETIME
    ledger.authorize(entry.id, payment={}, payer="0xc", nonce=nonce, valid_before=valid_before, method="eip3009")
    charge = min(payment.charge, payment.maximum)
    tx = "0x" + nonce[2:]
    if payment.behaviour == "honest":
        chain.spend(nonce, charge, valid_before)
        ledger.claim(entry.id, amount=charge, tx_hash=tx)
    elif payment.behaviour == "under_claim":
        chain.spend(nonce, payment.maximum, valid_before)
        ledger.claim(entry.id, amount=min(charge, payment.maximum - 1) if payment.maximum > 1 else 0, tx_hash=tx)
    elif payment.behaviour == "late_full":
        ledger.claim(entry.id, amount=charge, tx_hash=tx)
        chain.waiting.append((step + payment.delay, nonce, payment.maximum))
    elif payment.behaviour == "phantom":
        ledger.claim(entry.id, amount=charge, tx_hash="0x" + "dd" * 32)
    else:  # silent: no receipt at all; the server settles later, or never
        ledger.mark_unknown(entry.id, "no answer")
        if payment.charge % 2:
            chain.waiting.append((step + payment.delay, nonce, charge))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=steps)
def test_what_the_books_hold_covers_what_the_chain_moved(tmp_path: Path, plan: list[Payment | str]) -> None:
    path = tmp_path / f"ledger-{abs(hash(tuple(map(str, plan))))}.db"
    chain = Chain()
    ledger = Ledger.sqlite(path, budgets=[Budget(ASSET, LIMIT)], clock=chain.time)
    valid_before: dict[str, int] = {}
    try:
        for step, item in enumerate(plan):
            for due, nonce, amount in [wait for wait in chain.waiting if wait[0] <= step]:
                chain.waiting.remove((due, nonce, amount))
                entry = next(entry for entry in ledger.entries(limit=1_000) if entry.nonce == nonce)
                chain.spend(nonce, amount, valid_before.get(nonce, entry.valid_before or 0))
            if isinstance(item, Payment):
                pay(ledger, chain, item, step, step, origin=f"https://server-{step % 3}.example")
            elif item == "tick":
                chain.now += 45
            elif item == "restart":
                ledger.close()
                ledger = Ledger.sqlite(path, budgets=[Budget(ASSET, LIMIT)], clock=chain.time)
            else:
                ledger.reconcile(chain, margin=0)
            check(ledger, chain)
        chain.now += LIFETIME + 1  # everything expired: what did not move by now never will
        ledger.reconcile(chain, margin=0)
        check(ledger, chain)
        again = ledger.reconcile(chain, margin=0)
        assert (again.settled, again.released, again.mismatched) == ((), (), ())  # idempotent
        for entry in ledger.entries(limit=1_000):  # nothing left undecided once everything expired
            assert entry.state in (EntryState.SETTLED, EntryState.MISMATCH, EntryState.RELEASED), entry
    finally:
        ledger.close()
