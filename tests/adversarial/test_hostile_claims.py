"""Receipts are claims: a server that invents, borrows or delays a settlement is caught, inline and in the background.

The money stays held at the signed maximum until the chain shows the authorization consumed and what it moved;
a claim the chain contradicts is fraud, recorded in the ledger with the origin marked for every process that uses
it; a claim that cannot be decided yet stays a claim, and `reconcile` decides it later from chain state.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hostile_support import (
    PRICE,
    STRANGER,
    Call,
    Hostile,
    Reply,
    b64,
    challenge,
    challenge_reply,
    challenge_then,
    client,
    requirement,
    settle_honestly,
    settled_header,
    wallet,
)

from x402pay import OriginUntrusted, Payment, ReceiptMismatch, SettlementPending, payment_of
from x402pay._protocol.models import SettleResponse
from x402pay.ledger import EntryState, Ledger, Web3Chain

MADE_UP_TX = "0x" + "ab" * 32


def claiming(transaction: str, *, settle: bool) -> Callable[[Call], Reply]:
    """Claim a settlement in `transaction`, after settling for real (`settle`) or without settling at all."""

    def answer(call: Call) -> Reply:
        real = call.settle() if settle else None
        claim = SettleResponse(
            success=True, transaction=transaction, network=call.server.devnet.network,
            payer=wallet(call.server.devnet).address, amount=str(PRICE),
        )  # fmt: skip
        return Reply(200, [settled_header(real or claim, transaction=transaction)], b"paid")

    return answer


def claims_now_settles_later(hostile: Hostile) -> list[Call]:
    """Script `hostile` to claim a settlement without a transaction; the paid calls, to settle them later."""
    paid: list[Call] = []

    def claims_first(call: Call) -> Reply:
        paid.append(call)
        return claiming("", settle=False)(call)

    hostile.script = challenge_then(challenge_reply(challenge(requirement(hostile.devnet))), claims_first)
    return paid


def someone_elses_transaction(hostile: Hostile) -> str:
    """A real settlement of another payer's payment to the same server."""
    hostile.script = challenge_then(challenge_reply(challenge(requirement(hostile.devnet))), settle_honestly)
    their_payer = hostile.devnet.payers[0]  # the suite's client pays with payers[1]
    with client(dataclasses.replace(hostile.devnet, payers=(their_payer, their_payer))) as http:
        theirs = payment_of(http.get(hostile.url + "/report"))
    assert theirs is not None
    assert theirs.transaction is not None
    return theirs.transaction


def our_earlier_transaction(hostile: Hostile, ledger: Ledger) -> str:
    """A real, verified settlement of this payer's own earlier payment (replayed as the next receipt)."""
    hostile.script = challenge_then(challenge_reply(challenge(requirement(hostile.devnet))), settle_honestly)
    with client(hostile.devnet, ledger=ledger, rpc_url=hostile.devnet.rpc_url, verify="inline") as http:
        first = payment_of(http.get(hostile.url + "/report"))
    assert first is not None
    assert first.transaction is not None
    return first.transaction


def our_payment_to_another_recipient(hostile: Hostile, ledger: Ledger) -> str:
    """A real settlement of this payer's own payment, made to another recipient."""
    elsewhere = requirement(hostile.devnet, payTo=STRANGER)
    hostile.script = challenge_then(challenge_reply(challenge(elsewhere)), settle_honestly)
    with client(hostile.devnet) as http:
        to_stranger = payment_of(http.get(hostile.url + "/report"))
    assert to_stranger is not None
    assert to_stranger.transaction is not None
    return to_stranger.transaction


def a_reverted_transaction(hostile: Hostile, ledger: Ledger) -> str:
    """A mined transaction that reverted: a USDC transfer of more than the sender holds, gas given explicitly."""
    devnet = hostile.devnet
    web3, sender = devnet.web3(), devnet.facilitator
    usdc = devnet.contract("TestUSDC", devnet.usdc)
    call = usdc.functions.transfer(devnet.payee.address, 10**30).build_transaction({
        "from": sender.address, "gas": 200_000, "nonce": web3.eth.get_transaction_count(sender.address, "pending"),
    })  # fmt: skip
    tx_hash = web3.eth.send_raw_transaction(sender.sign_transaction(call).raw_transaction)
    assert web3.eth.wait_for_transaction_receipt(tx_hash)["status"] == 0
    return str(tx_hash.to_0x_hex())


LIES: dict[str, tuple[Callable[[Hostile, Ledger], str], bool, str]] = {
    "a made-up transaction, nothing settled": (lambda hostile, ledger: MADE_UP_TX, False, "no transaction 0xabab"),
    "someone else's settlement": (lambda hostile, ledger: someone_elses_transaction(hostile), True, "no Transfer"),
    "our own earlier settlement, replayed": (our_earlier_transaction, False, "authorization"),
    "our payment to another recipient": (our_payment_to_another_recipient, False, "no Transfer"),
    "a reverted transaction": (a_reverted_transaction, False, "status"),
}


def pay_once(hostile: Hostile, ledger: Ledger, mode: str) -> tuple[Payment | None, BaseException | None]:
    """One paid request with verification in `mode`; the Payment and what was raised, after the checks finished."""
    verified = threading.Event()
    options: dict[str, Any] = {"ledger": ledger, "rpc_url": hostile.devnet.rpc_url, "verify": mode,
                               "verify_patience": 0.5, "on_verified": lambda _: verified.set()}  # fmt: skip
    with client(hostile.devnet, **options) as http:
        try:
            response = http.get(hostile.url + "/report", headers={"Idempotency-Key": f"lie-{mode}"})
        except ReceiptMismatch as exc:
            return exc.payment if isinstance(exc.payment, Payment) else None, exc
    assert verified.is_set()  # closing the client waited for the background check
    return payment_of(response), None


@pytest.mark.parametrize("mode", ["inline", "background"])
@pytest.mark.parametrize("lie", list(LIES))
def test_each_lie_is_caught_with_its_reason_and_the_origin_is_not_paid_again(
    hostile: Hostile, tmp_path: Path, lie: str, mode: str
) -> None:
    ledger = Ledger.sqlite(tmp_path / "spend.db")
    evidence, settle, reason = LIES[lie]
    transaction = evidence(hostile, ledger)
    hostile.script = challenge_then(
        challenge_reply(challenge(requirement(hostile.devnet))), claiming(transaction, settle=settle)
    )

    payment, raised = pay_once(hostile, ledger, mode)

    assert payment is not None
    assert payment.mismatch is not None
    assert reason in payment.mismatch
    assert (raised is not None) == (mode == "inline")  # in the background, the answer was already delivered
    entry = ledger.lookup(f"lie-{mode}")
    assert entry is not None
    assert (entry.state, entry.held) == (EntryState.MISMATCH, PRICE)  # the signed maximum stays held
    assert reason in ledger.untrusted()[hostile.url]
    with client(hostile.devnet, ledger=ledger) as http, pytest.raises(OriginUntrusted):
        http.get(hostile.url + "/report")  # another client on the same ledger: refused before signing


def test_a_claim_without_a_transaction_stays_a_claim_until_the_chain_decides(hostile: Hostile, tmp_path: Path) -> None:
    """Claimed, not settled: the maximum stays held; settled later for real, reconcile settles it from the chain."""
    paid = claims_now_settles_later(hostile)
    ledger = Ledger.sqlite(tmp_path / "spend.db")
    with client(hostile.devnet, ledger=ledger, rpc_url=hostile.devnet.rpc_url, verify="inline",
                verify_patience=0.5) as http:  # fmt: skip
        payment = payment_of(http.get(hostile.url + "/report"))
    assert payment is not None
    assert payment.verification.verdict == "pending"  # the authorization is unused, and still valid
    (entry,) = ledger.entries()
    assert (entry.state, entry.held) == (EntryState.CLAIMED, PRICE)

    paid[0].settle()  # the server settles after all
    report = ledger.reconcile(Web3Chain(hostile.devnet.web3()))
    [settled] = report.settled
    assert (settled.state, settled.held, settled.settled_amount) == (EntryState.SETTLED, PRICE, PRICE)
    assert ledger.untrusted() == {}


def test_a_claimed_settlement_that_never_happens_is_fraud_once_the_authorization_expired(
    hostile: Hostile, tmp_path: Path
) -> None:
    hostile.script = challenge_then(challenge_reply(challenge(requirement(hostile.devnet))), claiming("", settle=False))
    ledger = Ledger.sqlite(tmp_path / "spend.db")
    with client(hostile.devnet, ledger=ledger) as http:
        assert http.get(hostile.url + "/report").status_code == 200
    (entry,) = ledger.entries()
    assert entry.state is EntryState.CLAIMED

    hostile.devnet.increase_time(3_600)  # past the signed window: the authorization can never be used now
    [lie] = ledger.reconcile(Web3Chain(hostile.devnet.web3())).mismatched
    assert (lie.state, lie.held) == (EntryState.MISMATCH, 0)  # nothing moved, and the claim was a lie
    assert "expired" in ledger.untrusted()[hostile.url]


def test_a_pending_settlement_is_typed_held_and_settled_by_reconcile_once_it_lands(
    hostile: Hostile, tmp_path: Path
) -> None:
    """The official facilitator's answer when its wait for the receipt runs out: the payment may still land."""
    paid: list[Call] = []

    def slow_chain(call: Call) -> Reply:
        paid.append(call)
        pending = {"success": False, "errorReason": "settlement_pending", "transaction": "",
                   "network": call.server.devnet.network}  # fmt: skip
        return Reply(402, [("payment-response", b64(pending))], b"")

    hostile.script = challenge_then(challenge_reply(challenge(requirement(hostile.devnet))), slow_chain)
    ledger = Ledger.sqlite(tmp_path / "spend.db")
    with client(hostile.devnet, ledger=ledger) as http, pytest.raises(SettlementPending, match="may be charged"):
        http.get(hostile.url + "/report", headers={"Idempotency-Key": "slow-1"})
    entry = ledger.lookup("slow-1")
    assert entry is not None
    assert (entry.state, entry.held) == (EntryState.UNKNOWN, PRICE)  # may be charged: held, not released

    assert ledger.reconcile(Web3Chain(hostile.devnet.web3())).unresolved  # not mined yet: stays held
    paid[0].settle()  # the block is mined
    [settled] = ledger.reconcile(Web3Chain(hostile.devnet.web3())).settled
    assert (settled.id, settled.state, settled.held, settled.settled_amount) == (entry.id, "settled", PRICE, PRICE)
    assert ledger.untrusted() == {}  # slow is not a lie


def test_a_bot_that_watches_its_ledger_has_its_late_settlement_settled_without_asking(
    hostile: Hostile, tmp_path: Path
) -> None:
    paid = claims_now_settles_later(hostile)
    ledger = Ledger.sqlite(tmp_path / "spend.db")
    with client(hostile.devnet, ledger=ledger, rpc_url=hostile.devnet.rpc_url, reconcile_every=0.1) as http:
        assert http.get(hostile.url + "/report").status_code == 200
        (entry,) = ledger.entries()
        assert entry.state is EntryState.CLAIMED
        paid[0].settle()  # lands later; nobody calls reconcile
        deadline = time.monotonic() + 20
        while ledger.get(entry.id).state is not EntryState.SETTLED and time.monotonic() < deadline:
            time.sleep(0.05)
    assert (ledger.get(entry.id).state, ledger.get(entry.id).held) == (EntryState.SETTLED, PRICE)
