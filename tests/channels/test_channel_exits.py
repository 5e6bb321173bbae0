"""Ways out of a channel on anvil: signed and direct refunds, the timed withdrawal, and a claim that comes too late."""

from __future__ import annotations

from typing import Any

import pytest
from channel_support import DELAY, Channels, events, reverts_with, transact
from eth_abi import decode as abi_decode
from eth_account.signers.local import LocalAccount

from x402pay._schemes import channel

pytestmark = pytest.mark.chain

DEPOSIT = 10_000


def refund_nonce(channels: Channels, config: channel.ChannelConfig) -> int:
    return int(channels.settlement.functions.refundNonce(channels.id_of(config)).call())


def pending(channels: Channels, config: channel.ChannelConfig) -> tuple[int, int]:
    amount, initiated_at = channels.settlement.functions.pendingWithdrawals(channels.id_of(config)).call()
    return int(amount), int(initiated_at)


def test_a_partial_then_a_full_signed_refund(channels: Channels, payer: LocalAccount) -> None:
    config = channels.config(payer)
    channels.deposit(config, payer, DEPOSIT)
    channels.claim([channels.row(config, 3_000, channels.voucher(config, 3_000, payer), 2_000)])
    before = channels.balance_of(payer.address)

    partial = transact(channels.refund_call(config, 1_500), channels.sender)
    assert channels.balance_of(payer.address) == before + 1_500
    assert (channels.state(config), refund_nonce(channels, config)) == ((DEPOSIT - 1_500, 2_000), 1)
    (refunded,) = events(partial, channels.settlement, "Refunded")
    assert refunded["args"]["amount"] == 1_500

    # "Everything": capped at the unclaimed escrow; what was claimed stays for the receiver.
    transact(channels.refund_call(config, 2**128 - 1), channels.sender)
    assert channels.balance_of(payer.address) == before + DEPOSIT - 2_000
    assert (channels.state(config), refund_nonce(channels, config)) == ((2_000, 2_000), 2)
    payee_before = channels.balance_of(config.receiver)
    transact(channels.settlement.functions.settle(config.receiver, config.token), channels.sender)
    assert channels.balance_of(config.receiver) == payee_before + 2_000


def test_a_full_refund_of_an_unclaimed_channel_closes_it(channels: Channels, payer: LocalAccount) -> None:
    config = channels.config(payer)
    channels.deposit(config, payer, DEPOSIT)
    receipt = transact(channels.refund_call(config, DEPOSIT), channels.sender)
    assert channels.state(config) == (0, 0)
    (closed,) = events(receipt, channels.settlement, "ChannelClosed")
    assert closed["args"]["channelId"] == channels.id_of(config)
    # Nothing left: the nonce still advances, and nothing moves.
    empty = transact(channels.refund_call(config, 1), channels.sender)
    assert events(empty, channels.settlement, "Refunded") == []
    assert refund_nonce(channels, config) == 2


def test_a_signed_refund_is_used_once_and_only_from_the_receiver_authorizer(
    channels: Channels, payer: LocalAccount
) -> None:
    config = channels.config(payer)
    channels.deposit(config, payer, DEPOSIT)
    call = channels.refund_call(config, 1_000)
    transact(call, channels.sender)
    reverts_with("InvalidRefundNonce()", call, channels.sender)
    reverts_with("InvalidSignature()", channels.refund_call(config, 1_000, signer=payer), channels.sender)
    reverts_with("ZeroRefund()", channels.refund_call(config, 0), channels.sender)
    assert (channels.state(config), refund_nonce(channels, config)) == ((DEPOSIT - 1_000, 0), 1)


def test_a_direct_refund_comes_from_the_receiver_side_and_voids_signed_ones(
    channels: Channels, payer: LocalAccount, stranger: LocalAccount
) -> None:
    config = channels.config(payer)
    channels.deposit(config, payer, DEPOSIT)
    presigned = channels.refund_call(config, 1_000)
    refund = channels.settlement.functions.refund(config.as_abi(), 4_000)
    reverts_with("NotAuthorizedToRefund()", refund, stranger.address)
    transact(refund, config.receiver)
    assert channels.state(config) == (DEPOSIT - 4_000, 0)
    reverts_with("InvalidRefundNonce()", presigned, channels.sender)


def test_claim_and_refund_in_one_multicall(channels: Channels, payer: LocalAccount) -> None:
    config = channels.config(payer)
    channels.deposit(config, payer, DEPOSIT)
    claim = channels.claim_call([channels.row(config, 3_000, channels.voucher(config, 3_000, payer), 3_000)])
    refund = channels.refund_call(config, 2**128 - 1)
    before = channels.balance_of(payer.address)
    calls = [claim._encode_transaction_data(), refund._encode_transaction_data()]
    transact(channels.settlement.functions.multicall(calls), channels.sender)
    assert channels.state(config) == (3_000, 3_000)
    assert channels.balance_of(payer.address) == before + DEPOSIT - 3_000


def test_withdraw_after_the_delay_and_a_late_claim_reverts(channels: Channels, payer: LocalAccount) -> None:
    config = channels.config(payer)
    channels.deposit(config, payer, DEPOSIT)
    signed_before = channels.row(config, 4_000, channels.voucher(config, 4_000, payer), 4_000)
    initiate = channels.settlement.functions.initiateWithdraw(config.as_abi(), DEPOSIT)
    started = transact(initiate, payer.address)
    started_at = channels.devnet.chain_time()
    (event,) = events(started, channels.settlement, "WithdrawInitiated")
    assert (event["args"]["amount"], event["args"]["finalizeAfter"]) == (DEPOSIT, started_at + DELAY)
    assert pending(channels, config) == (DEPOSIT, started_at)

    finalize = channels.settlement.functions.finalizeWithdraw(config.as_abi())
    reverts_with("WithdrawDelayNotElapsed()", finalize, payer.address)
    channels.devnet.increase_time(DELAY)
    before = channels.balance_of(payer.address)
    transact(finalize, payer.address)
    assert channels.balance_of(payer.address) == before + DEPOSIT
    assert (channels.state(config), pending(channels, config)) == ((0, 0), (0, 0))
    reverts_with("ClaimExceedsBalance()", channels.claim_call([signed_before]), channels.sender)
    reverts_with("WithdrawalNotPending()", finalize, payer.address)


def test_a_claim_inside_the_delay_wins_over_the_withdrawal(channels: Channels, payer: LocalAccount) -> None:
    config = channels.config(payer)
    channels.deposit(config, payer, DEPOSIT)
    transact(channels.settlement.functions.initiateWithdraw(config.as_abi(), DEPOSIT), payer.address)
    channels.claim([channels.row(config, 4_000, channels.voucher(config, 4_000, payer), 4_000)])
    channels.devnet.increase_time(DELAY)
    before = channels.balance_of(payer.address)
    receipt = transact(channels.settlement.functions.finalizeWithdraw(config.as_abi()), payer.address)
    (finalized,) = events(receipt, channels.settlement, "WithdrawFinalized")
    assert finalized["args"]["amount"] == DEPOSIT - 4_000
    assert channels.balance_of(payer.address) == before + DEPOSIT - 4_000
    assert channels.state(config) == (4_000, 4_000)


def test_a_refund_shrinks_or_cancels_a_pending_withdrawal(channels: Channels, payer: LocalAccount) -> None:
    config = channels.config(payer)
    channels.deposit(config, payer, DEPOSIT)
    transact(channels.settlement.functions.initiateWithdraw(config.as_abi(), 6_000), payer.address)
    started_at = channels.devnet.chain_time()
    transact(channels.refund_call(config, 2_000), channels.sender)
    assert pending(channels, config) == (4_000, started_at)
    transact(channels.refund_call(config, 4_000), channels.sender)
    assert pending(channels, config) == (0, 0)


def test_withdrawals_follow_the_rules(channels: Channels, payer: LocalAccount, stranger: LocalAccount) -> None:
    config = channels.config(payer)
    channels.deposit(config, payer, DEPOSIT)
    functions = channels.settlement.functions
    cases: list[tuple[str, Any, str]] = [
        ("InvalidChannel()", functions.initiateWithdraw(config.as_abi(), 1), stranger.address),
        ("InvalidChannel()", functions.initiateWithdraw(config.as_abi(), 1), config.receiver),
        ("NothingToWithdraw()", functions.initiateWithdraw(config.as_abi(), 0), payer.address),
        ("WithdrawAmountExceedsAvailable()", functions.initiateWithdraw(config.as_abi(), DEPOSIT + 1), payer.address),
        ("NotAuthorizedToFinalizeWithdraw()", functions.finalizeWithdraw(config.as_abi()), stranger.address),
        ("WithdrawalNotPending()", functions.finalizeWithdraw(config.as_abi()), payer.address),
    ]
    for error, call, sender in cases:
        reverts_with(error, call, sender)
    transact(functions.initiateWithdraw(config.as_abi(), 1), payer.address)
    reverts_with("WithdrawalAlreadyPending()", functions.initiateWithdraw(config.as_abi(), 1), payer.address)


def test_the_getters_have_the_canonical_shapes(channels: Channels, payer: LocalAccount) -> None:
    # Raw eth_call results decoded with the shapes the official SDK reads (abi.py), not with our own ABI.
    config = channels.config(payer)
    channels.deposit(config, payer, DEPOSIT)
    channel_id = channels.id_of(config)
    web3, settlement = channels.devnet.web3(), channels.devnet.batch_settlement
    reads = [
        ("channels(bytes32)", ["uint128", "uint128"], (DEPOSIT, 0)),
        ("pendingWithdrawals(bytes32)", ["uint128", "uint40"], (0, 0)),
        ("refundNonce(bytes32)", ["uint256"], (0,)),
    ]
    for signature, shape, expected in reads:
        selector = web3.keccak(text=signature)[:4]
        raw = web3.eth.call({"to": settlement, "data": selector + channel_id})
        assert len(raw) == 32 * len(shape)
        assert abi_decode(shape, raw) == expected
