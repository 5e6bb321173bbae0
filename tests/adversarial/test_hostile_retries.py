"""Retry games: a server that asks again, changes its price, or redirects the paid request elsewhere.

At most one signature per logical request, never more than one paid retry, and the payment header only ever
reaches the origin that issued the challenge.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hostile_support import (
    FLAVOURS,
    HTTP_FLAVOURS,
    PRICE,
    STRANGER,
    Balances,
    Call,
    Hostile,
    Reply,
    challenge,
    challenge_reply,
    challenge_then,
    client,
    fetch,
    policy,
    requirement,
    settle_honestly,
    settled_header,
    unb64,
)

from x402pay import NoAcceptableRequirement, Payment, PaymentRejected, ReceiptMismatch, payment_of
from x402pay._protocol.models import PaymentRequirements
from x402pay.ledger import EntryState, Ledger

pytestmark = pytest.mark.chain


def asks_again(hostile: Hostile, **second: str) -> None:
    """The first challenge is honest; the paid retry gets another 402 with `second` changed."""
    first = challenge_reply(challenge(requirement(hostile.devnet)))
    again = challenge_reply(challenge(requirement(hostile.devnet, **second)))
    hostile.script = lambda call: again if call.paid else first


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize(
    "second",
    [{"amount": str(2 * PRICE)}, {"amount": "1"}, {"payTo": STRANGER}, {}],
    ids=["dearer", "cheaper", "another-recipient", "the-same"],
)
def test_a_second_402_after_payment_is_rejected_without_a_second_signature(
    hostile: Hostile, flavour: str, second: dict[str, str]
) -> None:
    asks_again(hostile, **second)

    with pytest.raises(PaymentRejected, match="refused the signed payment"):
        fetch(flavour, hostile.devnet, hostile.url + "/report")

    assert len(hostile.seen) == 2  # the challenge and one paid retry: never a third request
    assert len(hostile.signatures) == 1


def test_a_second_402_leaves_the_ledger_entry_held(hostile: Hostile, tmp_path: Path) -> None:
    asks_again(hostile, amount=str(2 * PRICE))
    ledger = Ledger.sqlite(tmp_path / "spend.db")

    with client(hostile.devnet, ledger=ledger) as http, pytest.raises(PaymentRejected):
        http.get(hostile.url + "/report")

    (entry,) = ledger.entries()
    assert entry.state is EntryState.UNKNOWN  # the server holds a signature: it may still settle it
    assert entry.held == PRICE


def test_asking_again_with_the_same_key_resends_the_same_signature(hostile: Hostile, tmp_path: Path) -> None:
    asks_again(hostile, amount=str(2 * PRICE))
    ledger = Ledger.sqlite(tmp_path / "spend.db")

    with client(hostile.devnet, ledger=ledger) as http:
        for _ in range(3):
            with pytest.raises(PaymentRejected):
                http.get(hostile.url + "/report", headers={"Idempotency-Key": "order-7"})

    assert len(set(hostile.signatures)) == 1  # one signature, re-sent
    assert len(hostile.seen) == 4  # one challenge, then the stored payment each time
    assert len(ledger.entries()) == 1


def test_requirements_changed_between_challenge_and_retry_are_not_paid_more(hostile: Hostile) -> None:
    """The server settles the paid retry against a dearer requirement than it announced, and claims that price.

    The token moves only what was signed; the claim of more is fraud, flagged on the Payment and raised.
    """
    balances = Balances(hostile.devnet)

    def dearer(call: Call) -> Reply:
        payload = call.payload()
        assert payload.accepted is not None
        changed = PaymentRequirements.model_validate({**payload.accepted, "amount": str(3 * PRICE)})
        settlement = call.server.facilitator.settle_blocking(payload, changed)
        return Reply(200, [settled_header(settlement, amount=str(3 * PRICE))], b"ok")

    hostile.script = challenge_then(challenge_reply(challenge(requirement(hostile.devnet))), dearer)

    with pytest.raises(ReceiptMismatch, match="above the signed maximum") as caught:
        fetch("sync", hostile.devnet, hostile.url + "/report")

    assert balances.moved() <= PRICE
    assert len(hostile.signatures) == 1
    payment = caught.value.payment
    assert isinstance(payment, Payment)
    assert payment.mismatch is not None


# -- redirects --------------------------------------------------------------------------------------------------


def redirects_after_payment(hostile: Hostile, target: str, status: int = 307) -> None:
    def paid(call: Call) -> Reply:
        if call.seen.path == "/report":
            return Reply(status, [("location", target)], b"")
        return Reply(200, [("content-type", "text/plain")], b"elsewhere")

    hostile.script = challenge_then(challenge_reply(challenge(requirement(hostile.devnet))), paid)


@pytest.mark.parametrize("flavour", HTTP_FLAVOURS)  # MCP has no redirects
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_after_payment_to_another_origin_does_not_carry_the_payment(
    hostile: Hostile, elsewhere: Hostile, flavour: str, status: int
) -> None:
    redirects_after_payment(hostile, elsewhere.url + "/collect", status)
    elsewhere.script = lambda call: Reply(200, [("content-type", "text/plain")], b"collected")

    response = fetch(flavour, hostile.devnet, hostile.url + "/report", follow_redirects=True)

    assert response.text == "collected"
    assert len(hostile.signatures) == 1
    assert len(elsewhere.seen) == 1
    assert elsewhere.signatures == []


@pytest.mark.parametrize("flavour", HTTP_FLAVOURS)
def test_with_a_ledger_a_redirect_to_another_origin_does_not_carry_the_payment(
    hostile: Hostile, elsewhere: Hostile, flavour: str, tmp_path: Path
) -> None:
    redirects_after_payment(hostile, elsewhere.url + "/collect")
    elsewhere.script = lambda call: Reply(200, [("content-type", "text/plain")], b"collected")
    ledger = Ledger.sqlite(tmp_path / "spend.db")

    fetch(flavour, hostile.devnet, hostile.url + "/report", follow_redirects=True, ledger=ledger)

    assert len(hostile.signatures) == 1
    assert elsewhere.signatures == []


def test_a_redirect_to_another_origin_that_challenges_needs_a_fresh_policy_check(
    hostile: Hostile, elsewhere: Hostile
) -> None:
    redirects_after_payment(hostile, elsewhere.url + "/collect")
    elsewhere.script = lambda call: challenge_reply(challenge(requirement(hostile.devnet, payTo=STRANGER)))
    rules = policy(hostile.devnet, origins=frozenset({hostile.url}))

    with pytest.raises(NoAcceptableRequirement, match="origin"):
        fetch("sync", hostile.devnet, hostile.url + "/report", follow_redirects=True, rules=rules)

    assert len(hostile.signatures) == 1
    assert elsewhere.signatures == []


def test_a_redirect_to_the_same_origin_with_a_ledger_resends_the_same_payment(hostile: Hostile, tmp_path: Path) -> None:
    redirects_after_payment(hostile, hostile.url + "/other")

    response = fetch("sync", hostile.devnet, hostile.url + "/report", follow_redirects=True,
                     ledger=Ledger.sqlite(tmp_path / "spend.db"))  # fmt: skip

    assert response.text == "elsewhere"
    assert len(set(hostile.signatures)) == 1


def redirect_chain(hostile: Hostile, hops: int) -> None:
    """Every hop challenges; paid, it redirects to the next hop (same origin), until the last one answers."""

    def paid(call: Call) -> Reply:
        hop = int(call.seen.path.removeprefix("/hop") or 0) if call.seen.path.startswith("/hop") else 0
        if hop < hops:
            return Reply(302, [("location", f"{hostile.url}/hop{hop + 1}")], b"")
        return Reply(200, [("content-type", "text/plain")], b"the end")

    hostile.script = challenge_then(challenge_reply(challenge(requirement(hostile.devnet))), paid)


def test_a_redirect_chain_that_challenges_at_every_hop_gets_one_signature(hostile: Hostile) -> None:
    redirect_chain(hostile, hops=4)

    with contextlib.suppress(PaymentRejected):
        fetch("sync", hostile.devnet, hostile.url + "/report", follow_redirects=True)

    assert len(set(hostile.signatures)) == 1  # the later hops got the same payment again, never a new one


def test_without_following_redirects_the_caller_sees_the_redirect_and_the_payment(
    hostile: Hostile, elsewhere: Hostile
) -> None:
    redirects_after_payment(hostile, elsewhere.url + "/collect")

    with client(hostile.devnet) as http:
        response = http.get(hostile.url + "/report")

    assert response.status_code == 307
    assert payment_of(response) is not None
    assert elsewhere.seen == []


def test_an_honest_payment_settles_once(hostile: Hostile) -> None:
    """The control: the same hostile server, behaving, moves exactly the price once."""
    balances = Balances(hostile.devnet)
    hostile.script = challenge_then(challenge_reply(challenge(requirement(hostile.devnet))), settle_honestly)

    response = fetch("sync", hostile.devnet, hostile.url + "/report")

    assert response.status_code == 200
    assert balances.moved() == PRICE
    (signature,) = hostile.signatures
    assert unb64(signature)["accepted"]["amount"] == str(PRICE)


def test_a_server_that_always_answers_402_gets_one_retry(hostile: Hostile) -> None:
    hostile.script = lambda call: challenge_reply(challenge(requirement(hostile.devnet)))

    with client(hostile.devnet) as http, pytest.raises(PaymentRejected):
        http.get(hostile.url + "/report")

    assert len(hostile.seen) == 2
    assert isinstance(hostile.seen[1].payment, str)
