"""Routes remembered for pre-payment, in the ledger: shared by every process, fresh ones only, forgotten on refusal.

Each test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import anyio
import pytest
from ledger_support import Backend, Clock

CHALLENGE = {"x402Version": 2, "accepts": [{"scheme": "exact", "amount": "10000"}]}
ORIGIN = "http://api.example"


def test_a_route_is_kept_and_read_back_while_fresh(backend: Backend, clock: Clock) -> None:
    with backend.ledger(clock=clock) as ledger:
        ledger.remember_route("get", "HTTP://API.example", "/report", CHALLENGE, max_age=300)
        clock.advance(10)
        ledger.remember_route("POST", ORIGIN, "/chat", {**CHALLENGE, "x402Version": 1}, max_age=300)

        routes = ledger.routes(max_age=300)
        assert [(r.method, r.origin, r.path, r.challenge) for r in routes] == [
            ("POST", ORIGIN, "/chat", {**CHALLENGE, "x402Version": 1}),  # the most recent first
            ("GET", ORIGIN, "/report", CHALLENGE),
        ]
        assert routes[1].seen_at == routes[0].seen_at - 10
        clock.advance(295)
        assert [r.path for r in ledger.routes(max_age=300)] == ["/chat"]


def test_a_route_seen_again_takes_its_new_price_and_time(backend: Backend, clock: Clock) -> None:
    raised = {"x402Version": 2, "accepts": [{"scheme": "exact", "amount": "12000"}]}
    with backend.ledger(clock=clock) as ledger:
        ledger.remember_route("GET", ORIGIN, "/report", CHALLENGE, max_age=300)
        clock.advance(200)
        ledger.remember_route("GET", ORIGIN, "/report", raised, max_age=300)
        clock.advance(200)
        assert [r.challenge for r in ledger.routes(max_age=300)] == [raised]


def test_forgetting_an_origin_leaves_the_others(backend: Backend, clock: Clock) -> None:
    with backend.ledger(clock=clock) as ledger:
        for origin in (ORIGIN, "http://other.example"):
            ledger.remember_route("GET", origin, "/a", CHALLENGE, max_age=300)
            ledger.remember_route("GET", origin, "/b", CHALLENGE, max_age=300)
        ledger.forget_routes("HTTP://API.EXAMPLE", max_age=300)
        assert {(r.origin, r.path) for r in ledger.routes(max_age=300)} == {
            ("http://other.example", "/a"),
            ("http://other.example", "/b"),
        }


def test_old_routes_are_dropped_as_new_ones_come(backend: Backend, clock: Clock) -> None:
    with backend.ledger(clock=clock) as ledger:
        ledger.remember_route("GET", ORIGIN, "/old", CHALLENGE, max_age=300)
        clock.advance(400)
        ledger.remember_route("GET", ORIGIN, "/new", CHALLENGE, max_age=300)
        assert [r.path for r in ledger.routes(max_age=10_000)] == ["/new"]


@pytest.mark.parametrize("max_age", [0, -1, 2**31, float("nan")])
def test_a_max_age_must_be_a_positive_number_of_seconds(backend: Backend, max_age: float) -> None:
    with backend.ledger() as ledger, pytest.raises(ValueError, match="max_age"):
        ledger.routes(max_age=max_age)


def test_the_async_ledger_keeps_and_forgets_routes_the_same_way(backend: Backend, clock: Clock) -> None:
    async def go() -> list[list[str]]:
        ledger = await backend.aledger(clock=clock)
        try:
            await ledger.remember_route("GET", ORIGIN, "/report", CHALLENGE, max_age=300)
            kept = [r.path for r in await ledger.routes(max_age=300)]
            await ledger.forget_routes(ORIGIN, max_age=300)
            return [kept, [r.path for r in await ledger.routes(max_age=300)]]
        finally:
            await ledger.aclose()

    assert anyio.run(go) == [["/report"], []]
