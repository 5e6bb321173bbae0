"""One logical request, one signature, without the caller's help: repeats, twins and the payment identifier.

The payment program with scripted peers (no I/O): a request without an ``Idempotency-Key`` that repeats an earlier
one (an SDK's retry, or one by hand after a lost answer) re-sends its payment; a new request signs anew; a twin
that shares a key waits for the other to sign and re-sends its payment; a server that declares the
``payment-identifier`` extension gets the request's id in the payment.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Generator
from typing import Any

import httpx
import pytest
from program_peers import EXACT, ORIGIN, Peer, answer, b64, challenge, program, settled

from x402pay import PaymentInFlight
from x402pay._attempt import Call
from x402pay._effects import Answer, Book, Effect, Pause, Sign, drive
from x402pay._identifier import request_id
from x402pay._program import TWIN_PATIENCE
from x402pay._repeats import Repeats, fingerprint

PRINT = fingerprint("POST", ORIGIN + "/v1/chat/completions", b'{"model": "demo"}')


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def call(headers: dict[str, str] | None = None, print_: str | None = PRINT) -> Call:
    return Call("POST", ORIGIN, "/v1/chat/completions", httpx.Headers(headers or {}), print_)


def signs(peer: Peer) -> int:
    return peer.log.count("sign")


def test_a_repeat_after_a_lost_answer_re_sends_the_payment_without_signing() -> None:
    peer = Peer([challenge(), httpx.ReadError("the server dropped the connection"), settled()])
    paying = program(peer)
    with pytest.raises(httpx.ReadError):
        drive(paying.run(call()), peer)
    again = drive(paying.run(call()), peer)
    assert signs(peer) == 1
    assert peer.log[-1:] == ["send paid"]
    assert peer.payments[0] == peer.payments[1]  # byte for byte: the same signed authorization
    assert again.payment is not None


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503])
def test_an_sdk_retry_after_an_answer_it_retries_re_sends_the_payment(status: int) -> None:
    peer = Peer([challenge(), answer(status), settled()])
    paying = program(peer)
    first = drive(paying.run(call({"x-stainless-retry-count": "0"})), peer)
    assert first.answer.status == status
    drive(paying.run(call({"x-stainless-retry-count": "1"})), peer)
    assert signs(peer) == 1
    assert peer.payments[0] == peer.payments[1]


def test_an_sdk_first_attempt_is_a_new_request_even_after_a_lost_answer() -> None:
    peer = Peer([challenge(), httpx.ReadError("dropped"), challenge(), settled()])
    paying = program(peer)
    with pytest.raises(httpx.ReadError):
        drive(paying.run(call({"x-stainless-retry-count": "0"})), peer)
    drive(paying.run(call({"x-stainless-retry-count": "0"})), peer)
    assert signs(peer) == 2


def test_a_repeat_after_an_answer_the_caller_could_use_is_a_new_request() -> None:
    peer = Peer([challenge(), settled(), challenge(), settled()])
    paying = program(peer)
    drive(paying.run(call()), peer)
    drive(paying.run(call()), peer)
    assert signs(peer) == 2
    assert peer.payments[0] != peer.payments[1]


def test_a_repeat_after_the_window_is_a_new_request() -> None:
    clock = Clock()
    peer = Peer([challenge(), httpx.ReadError("dropped"), challenge(), settled()])
    paying = program(peer, repeats=Repeats(60.0, clock))
    with pytest.raises(httpx.ReadError):
        drive(paying.run(call()), peer)
    clock.now += 61
    drive(paying.run(call()), peer)
    assert signs(peer) == 2


def test_another_body_or_no_fingerprint_is_another_request() -> None:
    other = fingerprint("POST", ORIGIN + "/v1/chat/completions", b'{"model": "other"}')
    for print_ in (other, None):
        peer = Peer([challenge(), httpx.ReadError("dropped"), challenge(), settled()])
        paying = program(peer)
        with pytest.raises(httpx.ReadError):
            drive(paying.run(call()), peer)
        drive(paying.run(call(print_=print_)), peer)
        assert signs(peer) == 2


def test_a_window_of_zero_turns_repeats_off() -> None:
    peer = Peer([challenge(), httpx.ReadError("dropped"), challenge(), settled()])
    paying = program(peer, repeats=Repeats(0.0, Clock()))
    with pytest.raises(httpx.ReadError):
        drive(paying.run(call()), peer)
    drive(paying.run(call({"x-stainless-retry-count": "1"})), peer)
    assert signs(peer) == 2


def test_the_repeat_carries_the_first_attempts_idempotency_key() -> None:
    keys: list[str] = []

    class Keys(Peer):
        def __call__(self, effect: Effect) -> Any:
            headers = getattr(effect, "headers", None)
            if headers is not None and "Idempotency-Key" in headers:
                keys.append(headers["Idempotency-Key"])
            return super().__call__(effect)

    peer = Keys([challenge(), httpx.ReadError("dropped"), settled()])
    paying = program(peer)
    with pytest.raises(httpx.ReadError):
        drive(paying.run(call()), peer)
    drive(paying.run(call()), peer)
    assert len(set(keys)) == 1


def step_until_signing(run: Generator[Effect, Any, Any], peer: Peer) -> Sign:
    """Drive `run` until it asks to sign, and return that effect unperformed."""
    effect = next(run)
    while not isinstance(effect, Sign):
        effect = run.send(peer(effect))
    return effect


def test_a_twin_with_the_same_key_waits_for_the_signature_and_re_sends_it() -> None:
    peer = Peer([challenge(), challenge(), settled(), settled()])
    paying = program(peer)
    key = {"Idempotency-Key": "order-1"}
    first = paying.run(call(key))
    signing = step_until_signing(first, peer)
    finished: list[Any] = []

    def twin_peer(effect: Effect) -> Any:
        if isinstance(effect, Pause) and not finished:  # the first request signs and is answered meanwhile
            finished.append(drive_from(first, peer, peer(signing)))
        return peer(effect)

    drive(paying.run(call(key)), twin_peer)
    assert finished
    assert signs(peer) == 1
    assert peer.payments[0] == peer.payments[1]


def drive_from(run: Generator[Effect, Any, Any], peer: Peer, reply: Any) -> Any:
    try:
        effect = run.send(reply)
        while True:
            effect = run.send(peer(effect))
    except StopIteration as done:
        return done.value


def test_a_twin_whose_other_never_finishes_signing_gives_up_without_signing() -> None:
    peer = Peer([challenge(), challenge()])
    paying = program(peer)
    key = {"Idempotency-Key": "order-1"}
    first = paying.run(call(key))  # kept: a program dropped unfinished lets its reservation go
    step_until_signing(first, peer)
    waited: list[float] = []

    def twin_peer(effect: Effect) -> Any:
        if isinstance(effect, Pause):
            waited.append(effect.seconds)
        return peer(effect)

    with pytest.raises(PaymentInFlight, match="still signing"):
        drive(paying.run(call(key)), twin_peer)
    assert sum(waited) == pytest.approx(TWIN_PATIENCE)
    assert signs(peer) == 0  # the twin never signed (and the first was stopped before it did)
    first.close()


def declaring(extension: dict[str, Any]) -> Answer:
    required = {
        "x402Version": 2, "accepts": [EXACT], "resource": {"url": ORIGIN + "/v1/chat/completions"},
        "extensions": {"payment-identifier": extension},
    }  # fmt: skip
    return answer(402, {"PAYMENT-REQUIRED": b64(required)})


def sent_extensions(header: tuple[str, str]) -> dict[str, Any]:
    extensions: dict[str, Any] = json.loads(base64.b64decode(header[1]))["extensions"]
    return extensions


def test_a_declared_payment_identifier_carries_the_request_key_and_is_re_sent_unchanged() -> None:
    declared = {"info": {"required": True}, "schema": {"type": "object"}}
    peer = Peer([declaring(declared), httpx.ReadError("dropped"), settled()])
    paying = program(peer)
    key = "order-2026-12-03-0001"
    with pytest.raises(httpx.ReadError):
        drive(paying.run(call({"Idempotency-Key": key})), peer)
    drive(paying.run(call({"Idempotency-Key": key})), peer)
    echoed = sent_extensions(peer.payments[0])["payment-identifier"]
    assert echoed == {"info": {"required": True, "id": key}, "schema": {"type": "object"}}
    assert peer.payments[1] == peer.payments[0]


def test_a_made_up_key_is_the_payment_id_and_no_declaration_adds_nothing() -> None:
    peer = Peer([declaring({"info": {"required": False}}), settled(), challenge(), settled()])
    paying = program(peer)
    drive(paying.run(call(print_=None)), peer)
    drive(paying.run(call(print_=None)), peer)
    made_up = sent_extensions(peer.payments[0])["payment-identifier"]["info"]["id"]
    assert made_up.startswith("x402pay-")
    assert request_id(made_up) == made_up
    undeclared = json.loads(base64.b64decode(peer.payments[1][1])).get("extensions") or {}
    assert "payment-identifier" not in undeclared


def test_a_key_that_is_not_a_valid_id_becomes_a_stable_digest() -> None:
    assert request_id("fortune-1") == request_id("fortune-1")
    assert request_id("fortune-1").startswith("pay_")
    assert len(request_id("fortune-1")) == 44
    assert request_id("order#prepay" + "x" * 20) != request_id("order#prepay" + "y" * 20)
    assert request_id("a" * 129).startswith("pay_")


def test_the_sdk_retry_mark_and_the_window_decide_alone() -> None:
    clock = Clock()
    repeats = Repeats(30.0, clock)
    repeats.started("fp", "k1")
    assert repeats.key_of("fp", None) is None  # still under way: a concurrent twin is another request
    assert repeats.key_of("fp", 1) == "k1"  # but an SDK says it is its retry
    repeats.ended("fp", "k1", answered=True)
    assert repeats.key_of("fp", None) is None
    assert repeats.key_of("fp", 2) == "k1"
    assert repeats.key_of("fp", 0) is None
    repeats.started("fp", "k1")
    repeats.ended("fp", "k1", answered=False)
    assert repeats.key_of("fp", None) == "k1"
    clock.now = 31
    assert repeats.key_of("fp", None) is None
    assert repeats.key_of("fp", 1) is None


def test_with_a_ledger_an_unanswered_request_is_marked_for_other_processes_and_an_answered_repeat_clears_it() -> None:
    peer = Peer([challenge(), httpx.ReadError("dropped"), settled()], ledger=True)
    paying = program(peer)
    with pytest.raises(httpx.ReadError):
        drive(paying.run(call()), peer)
    assert peer.log[-3:] == ["send paid", "book mark_unknown", "book unanswered"]
    drive(paying.run(call()), peer)
    assert peer.log[-3:] == ["send paid", "book claim", "book answered"]
    assert signs(peer) == 1


def test_an_sdks_first_attempt_is_never_looked_up_by_its_fingerprint() -> None:
    reserves: list[dict[str, Any]] = []

    class Books(Peer):
        def __call__(self, effect: Effect) -> Any:
            if isinstance(effect, Book) and effect.operation == "reserve":
                reserves.append(dict(effect.kwargs))
            return super().__call__(effect)

    peer = Books([challenge(), settled(), challenge(), settled()], ledger=True)
    paying = program(peer)
    drive(paying.run(call({"x-stainless-retry-count": "0"})), peer)
    drive(paying.run(call()), peer)
    assert "fingerprint" not in reserves[0]
    assert reserves[1]["fingerprint"] == PRINT
