"""The presigner's races, driven one effect at a time with a real SQLite ledger: what a payment signed ahead becomes
when the transport closes, the route is forgotten or its origin refuses a pre-payment while it is being signed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.program_peers import EXACT, ORIGIN, WALLET, b64
from x402pay import SpendPolicy
from x402pay._books import Books
from x402pay._effects import Book, Effect, Program, Sign, drive
from x402pay._flow import Challenge, decode_challenge
from x402pay._prepay import Prepayments, SharedPrepayments
from x402pay._presign import Presigner
from x402pay._trust import TrustStore
from x402pay.ledger import Budget, EntryState, Ledger

ROUTE = ("GET", ORIGIN, "/data")


class Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


def the_challenge(amount: int = 10_000) -> Challenge:
    required = {"x402Version": 2, "accepts": [{**EXACT, "amount": str(amount)}], "resource": {"url": ORIGIN}}
    found = decode_challenge({"PAYMENT-REQUIRED": b64(required)}, None)
    assert found is not None
    return found


class Setup:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.clock = Clock()
        books = Books(ledger=True, trust=TrustStore(), verify="off", on_receipt=None, on_verified=None)
        self.prepayments = SharedPrepayments(Prepayments(300.0, clock=self.clock), books, self.clock)
        self.challenge = the_challenge()
        self.prepayments.memory.remember(ROUTE, self.challenge)
        self.presigner = Presigner(
            books=books, wallet=WALLET, policy=SpendPolicy(max_per_request=50_000), prepayments=self.prepayments,
            clock=self.clock, reads_chain=False,
        )  # fmt: skip

    def perform(self, effect: Effect) -> Any:
        if isinstance(effect, Book):
            return getattr(self.ledger, effect.operation)(*effect.args, **effect.kwargs)
        if isinstance(effect, Sign):
            return effect.work()
        raise AssertionError(f"unexpected effect {effect!r}")

    def ahead(self) -> Program[None]:
        return self.presigner.ahead(ROUTE, self.challenge, self.challenge.requirements[0])

    def until_signing(self, program: Program[None]) -> Sign:
        """Run `program` up to its signature (the reservation made), and stop there."""
        effect = next(program)
        while not isinstance(effect, Sign):
            effect = program.send(self.perform(effect))
        return effect

    def finish(self, program: Program[None], sign: Sign) -> None:
        try:
            effect = program.send(self.perform(sign))
            while True:
                effect = program.send(self.perform(effect))
        except StopIteration:
            return

    def states(self) -> list[EntryState]:
        return [entry.state for entry in self.ledger.entries()]


@pytest.fixture
def setup(tmp_path: Path) -> Any:
    with Ledger.sqlite(tmp_path / "ledger.db") as ledger:
        yield Setup(ledger)


def test_a_payment_signed_ahead_is_taken_once_and_only_for_its_terms(setup: Setup) -> None:
    drive(setup.ahead(), setup.perform)
    assert setup.states() == [EntryState.RESERVED]  # reserved through the books before it was signed
    taken = setup.presigner.take(ROUTE)
    assert taken is not None
    assert setup.presigner.take(ROUTE) is None  # one request only
    assert taken.fits(setup.challenge.requirements[0], setup.clock.now)
    assert not taken.fits(the_challenge(12_000).requirements[0], setup.clock.now)  # a new price
    assert not taken.fits(setup.challenge.requirements[0], setup.clock.now + 16)  # over a quarter of 60 s
    assert drive(setup.presigner.usable(taken, the_challenge(12_000).requirements[0]), setup.perform) is None
    assert setup.states() == [EntryState.RELEASED]


def test_closing_while_one_is_being_signed_releases_it(setup: Setup) -> None:
    program = setup.ahead()
    sign = setup.until_signing(program)
    drive(setup.presigner.close(), setup.perform)
    setup.finish(program, sign)
    assert setup.presigner.take(ROUTE) is None
    assert setup.states() == [EntryState.RELEASED]
    drive(setup.ahead(), setup.perform)  # closed: nothing more is reserved
    assert setup.states() == [EntryState.RELEASED]


def test_a_route_forgotten_while_one_is_being_signed_gets_none(setup: Setup) -> None:
    program = setup.ahead()
    sign = setup.until_signing(program)
    setup.prepayments.forget(ROUTE)
    setup.finish(program, sign)
    assert setup.presigner.take(ROUTE) is None
    assert setup.states() == [EntryState.RELEASED]


def test_a_refusal_releases_what_was_signed_ahead_for_the_origin(setup: Setup) -> None:
    drive(setup.ahead(), setup.perform)
    drive(setup.prepayments.refused(ORIGIN), setup.perform)
    drive(setup.presigner.dropped(ORIGIN), setup.perform)
    assert setup.presigner.take(ROUTE) is None
    assert setup.states() == [EntryState.RELEASED]
    drive(setup.ahead(), setup.perform)  # the origin is barred: what is signed now is not kept
    assert setup.presigner.take(ROUTE) is None
    assert setup.states() == [EntryState.RELEASED, EntryState.RELEASED]


def test_an_old_one_is_released_by_the_next_signing_ahead(setup: Setup) -> None:
    drive(setup.ahead(), setup.perform)
    setup.clock.now += 20  # past a quarter of its 60 s window
    drive(setup.ahead(), setup.perform)
    states = sorted(entry.state for entry in setup.ledger.entries())
    assert states == [EntryState.RELEASED, EntryState.RESERVED]  # the old one released, a fresh one reserved
    fresh = setup.presigner.take(ROUTE)
    assert fresh is not None
    assert fresh.signed_at == int(setup.clock.now)


def test_a_budget_too_short_leaves_nothing_reserved(tmp_path: Path) -> None:
    with Ledger.sqlite(tmp_path / "tight.db", budgets=[Budget(EXACT["asset"], 5_000)]) as ledger:
        setup = Setup(ledger)
        drive(setup.ahead(), setup.perform)  # the budget refuses: the next request signs for itself
        assert setup.presigner.take(ROUTE) is None
        assert ledger.entries() == []
