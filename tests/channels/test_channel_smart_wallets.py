"""Contract wallets (EIP-1271) on either side of a channel: a payer without a payerAuthorizer, a receiverAuthorizer.

The wallets are a few bytes of code whose ``isValidSignature`` answers yes or no whatever the signature, so a
signature the contract accepts from them was checked by EIP-1271 and by nothing else.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from channel_support import ACCEPTS, REFUSES, ZERO, Channels, contract_wallet, reverts_with, transact
from eth_account.signers.local import LocalAccount

from x402pay._schemes import channel_deposit

pytestmark = pytest.mark.chain

DEPOSIT = 10_000
ANY_SIGNATURE = b"whatever the wallet says"


def test_a_contract_wallet_payer_deposits_and_signs_its_vouchers(channels: Channels, payer: LocalAccount) -> None:
    wallet = contract_wallet(channels.devnet, "0x" + "12" * 19 + "71", ACCEPTS)
    transact(channels.usdc.functions.transfer(wallet, DEPOSIT), payer.address)
    config = replace(channels.config(payer), payer=wallet, payer_authorizer=ZERO)
    # Permit2 asks the wallet itself (EIP-1271) about the deposit's signature.
    deadline = channels.devnet.chain_time() + 600
    data = channel_deposit.permit2_collector_data(nonce=1, deadline=deadline, signature=ANY_SIGNATURE)
    deposit = channels.deposit_call(config, DEPOSIT, channels.devnet.permit2_collector, data)
    transact(deposit, channels.sender)
    assert channels.state(config) == (DEPOSIT, 0)

    row = channels.row(config, 3_000, ANY_SIGNATURE, 3_000)
    contract_wallet(channels.devnet, wallet, REFUSES)
    reverts_with("InvalidSignature()", channels.claim_call([row]), channels.sender)
    contract_wallet(channels.devnet, wallet, ACCEPTS)
    channels.claim([row])
    assert channels.state(config) == (DEPOSIT, 3_000)


def test_a_contract_wallet_receiver_authorizer_signs_claims_and_refunds(
    channels: Channels, payer: LocalAccount
) -> None:
    authorizer = contract_wallet(channels.devnet, "0x" + "12" * 19 + "73", REFUSES)
    config = channels.config(payer, receiver_authorizer=authorizer)
    channels.deposit(config, payer, DEPOSIT)
    row = channels.row(config, 3_000, channels.voucher(config, 3_000, payer), 3_000)
    refund = channels.settlement.functions.refundWithSignature(config.as_abi(), 1_000, 0, ANY_SIGNATURE)
    reverts_with("InvalidSignature()", channels.claim_call([row], ANY_SIGNATURE), channels.sender)
    reverts_with("InvalidSignature()", refund, channels.sender)
    contract_wallet(channels.devnet, authorizer, ACCEPTS)
    transact(channels.claim_call([row], ANY_SIGNATURE), channels.sender)
    transact(refund, channels.sender)
    assert channels.state(config) == (DEPOSIT - 1_000, 3_000)
