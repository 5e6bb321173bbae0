"""The MCP column: hostile servers reached as MCP tools get the answers hostile HTTP servers get.

The scripts are the HTTP suite's (`hostile_support`); `hostile_mcp` speaks them over x402's MCP binding. Tests that
the HTTP suite runs for every driver already include the MCP client (``FLAVOURS``); these are the ones written
for one HTTP client there, and the shapes other MCP implementations put a challenge in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hostile_mcp import SHAPES, mcp_fetch
from hostile_support import (
    PRICE,
    STRANGER,
    Balances,
    Call,
    Hostile,
    Reply,
    challenge,
    challenge_reply,
    challenge_then,
    honest,
    policy,
    requirement,
    settled_header,
)

from x402pay import (
    NoAcceptableRequirement,
    OriginUntrusted,
    PaymentStatus,
    ReceiptMismatch,
    TrustStore,
    payment_of,
)
from x402pay._protocol.models import SettleResponse
from x402pay.ledger import EntryState, Ledger

pytestmark = pytest.mark.chain

FAKE_TX = "0x" + "ab" * 32


def lying(**lies: Any) -> Any:
    """Settle for real, then report the settlement with `lies` in it."""

    def answer(call: Call) -> Reply:
        return Reply(200, [settled_header(call.settle(), **lies)], b"paid")

    return answer


@pytest.mark.parametrize(
    ("lies", "problem"),
    [
        ({"amount": str(PRICE + 1)}, "above the signed maximum"),
        ({"amount": "1"}, "for an exact payment"),
        ({"network": "eip155:84532"}, "network"),
        ({"payer": STRANGER}, "payer"),
    ],
)
def test_a_lying_settlement_is_fraud_and_the_origin_is_not_paid_again(
    hostile: Hostile, tmp_path: Path, lies: dict[str, Any], problem: str
) -> None:
    hostile.script = challenge_then(challenge_reply(challenge(requirement(hostile.devnet))), lying(**lies))
    ledger, trust = Ledger.sqlite(tmp_path / "spend.db"), TrustStore()

    with pytest.raises(ReceiptMismatch, match=problem):
        mcp_fetch(hostile.devnet, hostile.url + "/report", ledger=ledger, trust=trust)
    with pytest.raises(OriginUntrusted):
        mcp_fetch(hostile.devnet, hostile.url + "/report", ledger=ledger, trust=trust)

    (entry,) = ledger.entries()
    assert (entry.state, entry.held) == (EntryState.MISMATCH, PRICE)
    assert trust.reason(hostile.url) is not None
    assert len(hostile.signatures) == 1


def test_a_receipt_for_a_transaction_that_does_not_exist_is_fraud(hostile: Hostile, tmp_path: Path) -> None:
    forged = SettleResponse(success=True, transaction=FAKE_TX, network=hostile.devnet.network)
    hostile.script = challenge_then(challenge_reply(challenge(requirement(hostile.devnet))),
                                    lambda call: Reply(200, [settled_header(forged)], b"paid"))  # fmt: skip
    balances = Balances(hostile.devnet)
    ledger = Ledger.sqlite(tmp_path / "spend.db")

    with pytest.raises(ReceiptMismatch, match="no transaction 0xabab"):
        mcp_fetch(hostile.devnet, hostile.url + "/report", ledger=ledger, rpc_url=hostile.devnet.rpc_url,
                  verify="inline", verify_patience=0.5)  # fmt: skip

    (entry,) = ledger.entries()
    assert (entry.state, entry.held) == (EntryState.MISMATCH, PRICE)
    assert hostile.url in ledger.untrusted()
    assert balances.moved() == 0


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"network": "eip155:8453"}, "network"),
        ({"payTo": STRANGER}, "payee"),
        ({"asset": STRANGER}, "asset"),
    ],
    ids=["another-chain", "another-recipient", "another-asset"],
)
def test_requirements_outside_the_policy_sign_nothing(hostile: Hostile, changes: dict[str, str], reason: str) -> None:
    hostile.script = lambda call: challenge_reply(challenge(requirement(hostile.devnet, **changes)))
    rules = policy(hostile.devnet, payees=frozenset({hostile.devnet.payee.address}))

    with pytest.raises(NoAcceptableRequirement) as refused:
        mcp_fetch(hostile.devnet, hostile.url + "/report", rules=rules)

    assert reason in refused.value.refusals[0]
    assert hostile.signatures == []


@pytest.mark.parametrize("shape", SHAPES)
def test_a_challenge_in_each_shape_implementations_use_is_paid_once(hostile: Hostile, shape: str) -> None:
    honest(hostile)
    balances = Balances(hostile.devnet)

    result = mcp_fetch(hostile.devnet, hostile.url + "/report", shape=shape)

    payment = payment_of(result)
    assert payment is not None
    assert payment.status is PaymentStatus.SETTLED
    assert len(hostile.signatures) == 1
    assert balances.moved() == PRICE


def test_a_tool_error_after_payment_leaves_the_payment_held_and_moves_nothing(hostile: Hostile) -> None:
    hostile.script = challenge_then(challenge_reply(challenge(requirement(hostile.devnet))),
                                    lambda call: Reply(500, [], b"the tool broke"))  # fmt: skip
    balances = Balances(hostile.devnet)

    broken = mcp_fetch(hostile.devnet, hostile.url + "/report")

    assert broken.is_error
    held = payment_of(broken)
    assert held is not None
    assert held.status is PaymentStatus.UNSETTLED  # signed and sent, never settled: the signed amount stays held
    assert len(hostile.signatures) == 1
    assert balances.moved() == 0
