"""Honest settlements verify, with a tx hash or located by their nonce, sync and async; confirmations; pending."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from verify_support import AMOUNT, Facilitator, claim_of, requirement, sign, sign_upto
from web3 import AsyncWeb3, Web3

from x402pay._schemes.exact import SignedPayment
from x402pay.testing import Devnet
from x402pay.verify import Check, Claim, Verdict, averify_claim, verify_claim

pytestmark = pytest.mark.chain

PERMIT2 = {"assetTransferMethod": "permit2"}


def signed_payment(devnet: Devnet, payer: LocalAccount, kind: str) -> SignedPayment:
    if kind == "upto":
        return sign_upto(devnet, payer)
    return sign(devnet, payer, requirement(devnet, extra=PERMIT2 if kind == "permit2" else None))


KINDS = ["eip3009", "permit2", "upto"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_settled_payment_verifies(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, facilitator: Facilitator, web3: Web3, kind: str
) -> None:
    signed = signed_payment(x402pay_chain, x402pay_payer, kind)
    charge = AMOUNT // 3 if kind == "upto" else None
    tx_hash = facilitator.settle(signed, charge)
    verification = verify_claim(web3, claim_of(signed, tx_hash, charge))
    assert verification.verdict is Verdict.VERIFIED, verification
    assert verification.check is None
    assert verification.tx_hash == tx_hash.lower()
    assert verification.transferred == (charge or AMOUNT)
    assert verification.confirmations == 1
    assert web3.provider.posts == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_settled_payment_verifies_async(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, facilitator: Facilitator, aweb3: AsyncWeb3[Any], kind: str
) -> None:
    signed = signed_payment(x402pay_chain, x402pay_payer, kind)
    charge = AMOUNT // 3 if kind == "upto" else None
    tx_hash = facilitator.settle(signed, charge)
    verification = await averify_claim(aweb3, claim_of(signed, tx_hash, charge))
    assert verification.verdict is Verdict.VERIFIED, verification
    assert verification.transferred == (charge or AMOUNT)


@pytest.mark.parametrize("kind", KINDS)
def test_a_settlement_without_tx_hash_is_located_by_its_nonce(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, facilitator: Facilitator, web3: Web3, kind: str
) -> None:
    signed = signed_payment(x402pay_chain, x402pay_payer, kind)
    tx_hash = facilitator.settle(signed)
    later = signed_payment(x402pay_chain, x402pay_payer, kind)  # a newer transfer from the same payer to the payee
    facilitator.settle(later)
    for queued in ("", None):
        verification = verify_claim(web3, claim_of(signed, queued))
        assert verification.verdict is Verdict.VERIFIED, verification
        assert verification.tx_hash == tx_hash.lower()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_settlement_without_tx_hash_is_located_by_its_nonce_async(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, facilitator: Facilitator, aweb3: AsyncWeb3[Any], kind: str
) -> None:
    signed = signed_payment(x402pay_chain, x402pay_payer, kind)
    tx_hash = facilitator.settle(signed)
    verification = await averify_claim(aweb3, claim_of(signed, None))
    assert (verification.verdict, verification.tx_hash) == (Verdict.VERIFIED, tx_hash.lower())


@pytest.mark.parametrize("kind", KINDS)
def test_an_unsettled_claim_without_tx_hash_is_pending(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, web3: Web3, kind: str
) -> None:
    verification = verify_claim(web3, claim_of(signed_payment(x402pay_chain, x402pay_payer, kind), None))
    assert (verification.verdict, verification.check) == (Verdict.PENDING, Check.LOCATE)


def test_confirmations_are_counted_from_the_head(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, facilitator: Facilitator, web3: Web3
) -> None:
    signed = signed_payment(x402pay_chain, x402pay_payer, "eip3009")
    claim = claim_of(signed, facilitator.settle(signed))
    shallow = verify_claim(web3, claim, confirmations=3)
    assert (shallow.verdict, shallow.check) == (Verdict.PENDING, Check.CONFIRMATIONS)
    assert (shallow.claimed, shallow.actual) == (3, 1)
    for _ in range(2):
        web3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    deep = verify_claim(web3, claim, confirmations=3)
    assert (deep.verdict, deep.confirmations) == (Verdict.VERIFIED, 3)
    assert verify_claim(web3, claim, confirmations=0).verified


def test_a_transaction_waiting_to_be_mined_is_pending_then_verified(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, facilitator: Facilitator, web3: Web3
) -> None:
    signed = signed_payment(x402pay_chain, x402pay_payer, "eip3009")
    web3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    facilitator.wait = False
    try:
        claim = claim_of(signed, facilitator.settle(signed))
        waiting = verify_claim(web3, claim)
        assert (waiting.verdict, waiting.check) == (Verdict.PENDING, Check.TRANSACTION)
        assert "not mined" in waiting.reason
        web3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    finally:
        web3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    assert verify_claim(web3, claim).verified


def test_a_zero_upto_charge_is_pending_while_the_authorization_lives_then_verified(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, web3: Web3
) -> None:
    claim = claim_of(sign_upto(x402pay_chain, x402pay_payer), "", 0)
    live = verify_claim(web3, claim)
    assert (live.verdict, live.check) == (Verdict.PENDING, Check.AUTHORIZATION)
    x402pay_chain.increase_time(claim.valid_before - x402pay_chain.chain_time() + 1)
    assert verify_claim(web3, claim).verified


def test_the_replay_hook_sees_the_lower_case_hash(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, facilitator: Facilitator, web3: Web3
) -> None:
    signed = signed_payment(x402pay_chain, x402pay_payer, "eip3009")
    tx_hash = facilitator.settle(signed).upper().replace("0X", "0x")
    asked: list[str] = []

    def seen(candidate: str) -> bool:
        asked.append(candidate)
        return False

    assert verify_claim(web3, claim_of(signed, tx_hash), seen_transactions=seen).verified
    assert asked == [tx_hash.lower()]


def test_claim_from_signed_takes_the_signed_terms(x402pay_chain: Devnet, x402pay_payer: LocalAccount) -> None:
    signed = signed_payment(x402pay_chain, x402pay_payer, "permit2")
    claim = Claim.from_signed(signed, None, "", network=x402pay_chain.network)
    assert (claim.chain_id, claim.asset, claim.payer, claim.pay_to) == (
        x402pay_chain.chain_id,
        x402pay_chain.usdc,
        x402pay_payer.address,
        x402pay_chain.payee.address,
    )
    assert (claim.scheme, claim.method, claim.signed_amount, claim.amount) == ("exact", "permit2", AMOUNT, AMOUNT)
    assert (claim.nonce, claim.valid_before, claim.tx_hash) == (signed.nonce, signed.valid_before, None)
    assert claim.claimed_chain_id == x402pay_chain.chain_id
