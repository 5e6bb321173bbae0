"""Every lie a paid server can tell about a settlement is caught, with the check that failed and both values."""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from verify_support import AMOUNT, Facilitator, claim_of, deploy_token, requirement, sign, sign_upto
from web3 import AsyncHTTPProvider, AsyncWeb3, HTTPProvider, Web3

from x402pay.errors import PaymentError
from x402pay.testing import Devnet
from x402pay.verify import Check, ReceiptMismatch, Verdict, Verification, averify_claim, verify_claim

pytestmark = pytest.mark.chain

PERMIT2 = {"assetTransferMethod": "permit2"}


def mismatch(verification: Verification, check: Check) -> Verification:
    assert (verification.verdict, verification.check) == (Verdict.MISMATCH, check), verification
    with pytest.raises(ReceiptMismatch) as raised:
        verification.raise_for_mismatch()
    assert raised.value.verification is verification
    assert isinstance(raised.value, PaymentError)
    return verification


@pytest.fixture
def other_payer(x402pay_chain: Devnet) -> LocalAccount:
    return x402pay_chain.payers[1]


def test_a_tx_hash_that_does_not_exist_is_not_found(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, web3: Web3
) -> None:
    ghost = "0x" + secrets.token_hex(32)
    verification = verify_claim(web3, claim_of(sign(x402pay_chain, x402pay_payer, requirement(x402pay_chain)), ghost))
    assert (verification.verdict, verification.check) == (Verdict.NOT_FOUND, Check.TRANSACTION)
    verification.raise_for_mismatch()  # not a mismatch: nothing raised


def test_a_malformed_tx_hash_is_a_mismatch(x402pay_chain: Devnet, x402pay_payer: LocalAccount, web3: Web3) -> None:
    claim = claim_of(sign(x402pay_chain, x402pay_payer, requirement(x402pay_chain)), "0xdeadbeef")
    assert mismatch(verify_claim(web3, claim), Check.TRANSACTION).claimed == "0xdeadbeef"
    assert web3.provider.posts == 0  # type: ignore[attr-defined]


def test_a_reverted_settlement_is_a_mismatch(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, facilitator: Facilitator, web3: Web3
) -> None:
    signed = sign(x402pay_chain, x402pay_payer, requirement(x402pay_chain))
    facilitator.settle(signed)
    reverted = facilitator.settle(signed)  # the same authorization again: mined, reverted
    verification = mismatch(verify_claim(web3, claim_of(signed, reverted)), Check.STATUS)
    assert (verification.claimed, verification.actual) == ("success", "reverted")


def test_a_transfer_of_a_look_alike_token_is_a_mismatch(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, facilitator: Facilitator, web3: Web3
) -> None:
    fake = deploy_token(x402pay_chain, x402pay_payer.address)
    domain = {"name": "USD Coin", "version": "2"}
    signed = sign(x402pay_chain, x402pay_payer, requirement(x402pay_chain, asset=fake, extra=domain))
    tx_hash = facilitator.settle(signed)  # same payer, payee, amount, nonce and events; another contract
    claim = dataclasses.replace(claim_of(signed, tx_hash), asset=x402pay_chain.usdc)
    verification = mismatch(verify_claim(web3, claim), Check.TRANSFER)
    assert fake.lower() in str(verification.actual).lower()
    assert x402pay_chain.usdc in str(verification.claimed)


def test_a_transfer_to_another_recipient_is_a_mismatch(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, facilitator: Facilitator, web3: Web3
) -> None:
    elsewhere = x402pay_chain.deployer.address
    signed = sign(x402pay_chain, x402pay_payer, requirement(x402pay_chain, pay_to=elsewhere))
    claim = dataclasses.replace(claim_of(signed, facilitator.settle(signed)), pay_to=x402pay_chain.payee.address)
    assert elsewhere.lower() in str(mismatch(verify_claim(web3, claim), Check.TRANSFER).actual)


def test_another_payers_settlement_is_a_mismatch(
    x402pay_chain: Devnet,
    x402pay_payer: LocalAccount,
    other_payer: LocalAccount,
    facilitator: Facilitator,
    web3: Web3,
) -> None:
    theirs = sign(x402pay_chain, other_payer, requirement(x402pay_chain))
    mine = sign(x402pay_chain, x402pay_payer, requirement(x402pay_chain))
    mismatch(verify_claim(web3, claim_of(mine, facilitator.settle(theirs))), Check.TRANSFER)


def test_a_different_amount_than_transferred_is_a_mismatch(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, facilitator: Facilitator, web3: Web3
) -> None:
    signed = sign_upto(x402pay_chain, x402pay_payer)
    tx_hash = facilitator.settle(signed, 1_000)
    verification = mismatch(verify_claim(web3, claim_of(signed, tx_hash, 2_000)), Check.AMOUNT)
    assert (verification.claimed, verification.actual, verification.transferred) == (2_000, 1_000, 1_000)


def test_more_than_the_signed_maximum_is_a_mismatch(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, facilitator: Facilitator, web3: Web3
) -> None:
    signed = sign_upto(x402pay_chain, x402pay_payer)
    tx_hash = facilitator.settle(signed)
    verification = mismatch(verify_claim(web3, claim_of(signed, tx_hash, AMOUNT + 1)), Check.SIGNED_AMOUNT)
    assert (verification.claimed, verification.actual) == (AMOUNT + 1, AMOUNT)


def test_an_exact_claim_of_another_amount_than_signed_is_a_mismatch(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, facilitator: Facilitator, web3: Web3
) -> None:
    signed = sign(x402pay_chain, x402pay_payer, requirement(x402pay_chain))
    tx_hash = facilitator.settle(signed)
    verification = mismatch(verify_claim(web3, claim_of(signed, tx_hash, AMOUNT - 1)), Check.SIGNED_AMOUNT)
    assert (verification.claimed, verification.actual) == (AMOUNT - 1, AMOUNT)


def test_a_receipt_naming_another_chain_is_a_mismatch(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, facilitator: Facilitator, web3: Web3
) -> None:
    signed = sign(x402pay_chain, x402pay_payer, requirement(x402pay_chain))
    claim = dataclasses.replace(claim_of(signed, facilitator.settle(signed)), claimed_chain_id=8453)
    verification = mismatch(verify_claim(web3, claim), Check.CHAIN_ID)
    assert (verification.claimed, verification.actual) == (8453, x402pay_chain.chain_id)


def test_a_claim_for_another_chain_than_the_rpcs_is_a_mismatch(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, facilitator: Facilitator, web3: Web3
) -> None:
    signed = sign(x402pay_chain, x402pay_payer, requirement(x402pay_chain))
    claim = dataclasses.replace(claim_of(signed, facilitator.settle(signed)), chain_id=8453)
    verification = mismatch(verify_claim(web3, claim), Check.CHAIN_ID)
    assert (verification.claimed, verification.actual) == (8453, x402pay_chain.chain_id)


@pytest.mark.parametrize("extra", [None, PERMIT2], ids=["eip3009", "permit2"])
def test_the_tx_of_an_earlier_payment_is_a_mismatch(
    x402pay_chain: Devnet,
    x402pay_payer: LocalAccount,
    facilitator: Facilitator,
    web3: Web3,
    extra: dict[str, str] | None,
) -> None:
    earlier = sign(x402pay_chain, x402pay_payer, requirement(x402pay_chain, extra=extra))
    earlier_tx = facilitator.settle(earlier)
    this = sign(x402pay_chain, x402pay_payer, requirement(x402pay_chain, extra=extra))
    facilitator.settle(this)
    claim = claim_of(this, earlier_tx)  # same payer, payee, asset and amount: only the nonce tells
    verification = mismatch(verify_claim(web3, claim), Check.AUTHORIZATION)
    assert str(verification.claimed).endswith(this.nonce)
    assert str(earlier.nonce) in str(verification.actual)
    replayed = verify_claim(web3, claim, seen_transactions=lambda tx_hash: tx_hash == earlier_tx.lower())
    assert mismatch(replayed, Check.REPLAY).claimed == earlier_tx.lower()


def test_a_permit2_settlement_through_another_contract_is_a_mismatch(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, facilitator: Facilitator, web3: Web3
) -> None:
    exact = sign(x402pay_chain, x402pay_payer, requirement(x402pay_chain, extra=PERMIT2))
    claim = dataclasses.replace(claim_of(exact, facilitator.settle(exact)), scheme="upto")
    verification = mismatch(verify_claim(web3, claim), Check.SPENDER)
    assert (verification.claimed, verification.actual) == (x402pay_chain.upto_proxy, x402pay_chain.exact_proxy)


@pytest.mark.parametrize("extra", [None, PERMIT2], ids=["eip3009", "permit2"])
def test_a_claimed_settlement_whose_authorization_expired_unused_is_a_mismatch(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, web3: Web3, extra: dict[str, str] | None
) -> None:
    claim = claim_of(sign(x402pay_chain, x402pay_payer, requirement(x402pay_chain, extra=extra)), None)
    assert verify_claim(web3, claim).verdict is Verdict.PENDING
    x402pay_chain.increase_time(claim.valid_before - x402pay_chain.chain_time() + 1)
    assert mismatch(verify_claim(web3, claim), Check.AUTHORIZATION).actual == "expired unused"


def test_a_zero_charge_whose_authorization_was_used_is_a_mismatch(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, facilitator: Facilitator, web3: Web3
) -> None:
    signed = sign_upto(x402pay_chain, x402pay_payer)
    tx_hash = facilitator.settle(signed, 5)
    mismatch(verify_claim(web3, claim_of(signed, tx_hash, 0)), Check.AUTHORIZATION)


def test_a_used_nonce_without_a_settlement_in_the_window_is_not_found(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount, facilitator: Facilitator, web3: Web3
) -> None:
    signed = sign(x402pay_chain, x402pay_payer, requirement(x402pay_chain, extra=PERMIT2))
    facilitator.settle(signed)
    for _ in range(3):
        web3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    verification = verify_claim(web3, claim_of(signed, None), lookback_blocks=2)
    assert (verification.verdict, verification.check) == (Verdict.NOT_FOUND, Check.LOCATE)
    assert verify_claim(web3, claim_of(signed, None), lookback_blocks=4).verified


# -- an RPC that fails ------------------------------------------------------------------------------------------


def test_an_unreachable_rpc_leaves_the_claim_pending(x402pay_chain: Devnet, x402pay_payer: LocalAccount) -> None:
    signed = sign(x402pay_chain, x402pay_payer, requirement(x402pay_chain))
    down = Web3(HTTPProvider("http://127.0.0.1:9/v3/secret-api-key", request_kwargs={"timeout": 2}))
    verification = verify_claim(down, claim_of(signed, "0x" + "11" * 32))
    assert (verification.verdict, verification.check) == (Verdict.PENDING, Check.RPC)
    assert "secret-api-key" not in verification.reason
    assert "the RPC endpoint failed" in verification.reason


async def test_an_unreachable_rpc_leaves_the_claim_pending_async(
    x402pay_chain: Devnet, x402pay_payer: LocalAccount
) -> None:
    signed = sign(x402pay_chain, x402pay_payer, requirement(x402pay_chain))
    down: AsyncWeb3[Any] = AsyncWeb3(AsyncHTTPProvider("http://127.0.0.1:9/v3/secret-api-key"))
    try:
        verification = await averify_claim(down, claim_of(signed, None))
    finally:
        await down.provider.disconnect()
    assert (verification.verdict, verification.check) == (Verdict.PENDING, Check.RPC)
    assert "secret-api-key" not in verification.reason
