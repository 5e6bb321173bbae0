"""Pre-payment against a hostile server: refusing pre-payments to collect signatures, pricing up, redirecting.

A pre-payment is a signature sent before the server asked for it, so the server gets chances to misuse it. The
bounds: each pre-payment passes the policy and the budget; a refusal on the same terms is final; a refusal with
new terms costs at most one extra signature per origin per `BAR_SECONDS`; nothing goes to another origin.
"""

from __future__ import annotations

import pytest
from hostile_support import (
    CAP,
    PRICE,
    STRANGER,
    Balances,
    Call,
    Hostile,
    Reply,
    challenge,
    challenge_reply,
    client,
    requirement,
    settle_honestly,
    settled_header,
    unb64,
)

from x402pay import (
    AlreadyPaid,
    NoAcceptableRequirement,
    OriginUntrusted,
    PaymentRejected,
    ReceiptMismatch,
    SpendCapExceeded,
)
from x402pay._prepay import BAR_SECONDS
from x402pay.ledger import Budget, EntryState, Ledger

pytestmark = pytest.mark.chain


def honest_until(hostile: Hostile, paid_calls: int, then: Reply) -> None:
    """Challenge unpaid requests; settle the first `paid_calls` payments honestly, answer later ones with `then`."""
    first = challenge_reply(challenge(requirement(hostile.devnet)))
    count = {"paid": 0}

    def script(call: Call) -> Reply:
        if not call.paid:
            return first
        count["paid"] += 1
        return settle_honestly(call) if count["paid"] <= paid_calls else then

    hostile.script = script


def test_refusing_every_pre_payment_with_a_new_price_yields_one_extra_signature_per_origin(hostile: Hostile) -> None:
    dearer = challenge_reply(challenge(requirement(hostile.devnet, amount=str(PRICE + 1))))
    honest_until(hostile, 1, dearer)
    balances = Balances(hostile.devnet)

    with client(hostile.devnet, prepay=True) as http:
        http.get(hostile.url + "/report")
        for _ in range(5):
            with pytest.raises(PaymentRejected):
                http.get(hostile.url + "/report")

    # One honest payment, then: one pre-payment refused with a new price, its reactive payment refused too; and from
    # then on (pre-payment barred for BAR_SECONDS) only the reactive flow: one signature per request, as always.
    assert BAR_SECONDS >= 3600
    assert len(hostile.signatures) == 1 + 2 + 4
    assert [seen.payment is not None for seen in hostile.seen] == [False, True, True, True] + [False, True] * 4
    assert balances.moved() == PRICE


def test_a_pre_payment_is_never_above_the_cap_or_for_another_payee(hostile: Hostile) -> None:
    greedy = challenge_reply(challenge(requirement(hostile.devnet, amount=str(CAP + 1), payTo=STRANGER)))
    honest_until(hostile, 1, greedy)
    balances = Balances(hostile.devnet)

    with client(hostile.devnet, prepay=True) as http:
        http.get(hostile.url + "/report")
        with pytest.raises(NoAcceptableRequirement):
            http.get(hostile.url + "/report")

    payments = [unb64(signature) for signature in hostile.signatures]
    assert [p["accepted"]["amount"] for p in payments] == [str(PRICE), str(PRICE)]
    assert {p["payload"]["authorization"]["to"] for p in payments} == {hostile.devnet.payee.address}
    assert balances.moved() == PRICE


def test_a_pre_payment_does_not_follow_a_redirect_to_another_origin(hostile: Hostile, elsewhere: Hostile) -> None:
    first = challenge_reply(challenge(requirement(hostile.devnet)))
    away = Reply(307, [("location", elsewhere.url + "/report")])
    count = {"paid": 0}

    def script(call: Call) -> Reply:
        if not call.paid:
            return first
        count["paid"] += 1
        return settle_honestly(call) if count["paid"] == 1 else away

    hostile.script = script
    elsewhere.script = lambda call: challenge_reply(challenge(requirement(hostile.devnet)))

    with client(hostile.devnet, prepay=True, follow_redirects=True) as http:
        http.get(hostile.url + "/report")
        with pytest.raises(AlreadyPaid):  # the redirected request was pre-paid at its first origin
            http.get(hostile.url + "/report")

    assert len(elsewhere.seen) == 1  # the redirect was followed, and its 402 not paid
    assert elsewhere.seen[0].payment is None  # the pre-payment stayed with its origin


def test_the_budget_counts_a_refused_pre_payment_until_it_expires(hostile: Hostile, tmp_path: object) -> None:
    dearer = challenge_reply(challenge(requirement(hostile.devnet, amount=str(PRICE + 1))))
    honest_until(hostile, 1, dearer)
    ledger = Ledger.sqlite(str(tmp_path) + "/ledger.db", budgets=[Budget(hostile.devnet.usdc, 4 * PRICE)])

    with client(hostile.devnet, prepay=True, ledger=ledger) as http:
        http.get(hostile.url + "/report")
        with pytest.raises(PaymentRejected):
            http.get(hostile.url + "/report", headers={"Idempotency-Key": "k"})
        # Room left: 4 * PRICE - PRICE (settled) - PRICE (the refused pre-payment) - (PRICE + 1) (the refused
        # reactive payment): both refused payments may still settle until they expire, so both stay held.
        with pytest.raises(SpendCapExceeded):
            http.get(hostile.url + "/report")

    held = ledger.lookup("k#prepay")
    assert held is not None
    assert held.state is EntryState.UNKNOWN
    refused = ledger.lookup("k")
    assert refused is not None
    assert refused.state is EntryState.UNKNOWN


def test_a_lying_receipt_on_a_pre_paid_answer_stops_all_payment_to_the_origin(hostile: Hostile) -> None:
    def overcharge(call: Call) -> Reply:
        settlement = call.settle()
        return Reply(200, [settled_header(settlement, amount=str(2 * PRICE))], b"{}")

    honest_until(hostile, 1, Reply(500))
    with client(hostile.devnet, prepay=True) as http:
        http.get(hostile.url + "/report")
        hostile.script = lambda call: (
            overcharge(call) if call.paid else challenge_reply(challenge(requirement(hostile.devnet)))
        )
        with pytest.raises(ReceiptMismatch) as caught:
            http.get(hostile.url + "/report")
        with pytest.raises(OriginUntrusted):
            http.get(hostile.url + "/report")

    assert caught.value.payment.prepaid
    assert [seen.payment is not None for seen in hostile.seen] == [False, True, True, False]
