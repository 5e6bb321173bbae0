"""Claims and sweeps on anvil: many vouchers, one signed claim batch, one settle that pays the receiver exactly."""

from __future__ import annotations

import pytest
from channel_support import ZERO, Channels, events, reverts_with, transact
from eth_account import Account
from eth_account.signers.local import LocalAccount

pytestmark = pytest.mark.chain

DEPOSIT = 10_000
PRICE = 1_000


def test_many_vouchers_one_claim_one_sweep(channels: Channels, payer: LocalAccount) -> None:
    config = channels.config(payer)
    channels.deposit(config, payer, DEPOSIT)
    charged, signatures = 0, []
    for actual in (1_000, 400, 1_000, 250, 1_000, 0, 730):  # each request: the voucher is charged + PRICE
        signatures.append((charged + PRICE, channels.voucher(config, charged + PRICE, payer)))
        charged += actual
    ceiling, last = signatures[-1]
    receipt = channels.claim([channels.row(config, ceiling, last, charged)])
    assert channels.state(config) == (DEPOSIT, charged)
    (claimed,) = events(receipt, channels.settlement, "Claimed")
    assert (claimed["args"]["claimAmount"], claimed["args"]["newTotalClaimed"]) == (charged, charged)
    assert channels.settlement.functions.receivers(config.receiver, config.token).call() == [charged, 0]

    payee_before = channels.balance_of(config.receiver)
    swept = transact(channels.settlement.functions.settle(config.receiver, config.token), channels.sender)
    assert channels.balance_of(config.receiver) == payee_before + charged
    (settled,) = events(swept, channels.settlement, "Settled")
    assert settled["args"]["amount"] == charged
    assert settled["args"]["sender"] == channels.sender
    assert channels.settlement.functions.receivers(config.receiver, config.token).call() == [charged, charged]
    again = transact(channels.settlement.functions.settle(config.receiver, config.token), channels.sender)
    assert events(again, channels.settlement, "Settled") == []
    assert channels.balance_of(config.receiver) == payee_before + charged


def test_one_signed_batch_claims_several_channels(
    channels: Channels, payer: LocalAccount, other_payer: LocalAccount
) -> None:
    first, second = channels.config(payer), channels.config(other_payer, payer_authorizer=ZERO)
    channels.deposit(first, payer, DEPOSIT)
    channels.deposit(second, other_payer, DEPOSIT)
    rows = [
        channels.row(first, 3_000, channels.voucher(first, 3_000, payer), 2_500),
        channels.row(second, 5_000, channels.voucher(second, 5_000, other_payer), 5_000),
    ]
    channels.claim(rows)
    assert (channels.state(first), channels.state(second)) == ((DEPOSIT, 2_500), (DEPOSIT, 5_000))
    payee_before = channels.balance_of(first.receiver)
    transact(channels.settlement.functions.settle(first.receiver, first.token), channels.sender)
    assert channels.balance_of(first.receiver) == payee_before + 7_500


def test_a_replayed_or_older_claim_changes_nothing(channels: Channels, payer: LocalAccount) -> None:
    config = channels.config(payer)
    channels.deposit(config, payer, DEPOSIT)
    old = channels.row(config, 2_000, channels.voucher(config, 2_000, payer), 2_000)
    new = channels.row(config, 4_000, channels.voucher(config, 4_000, payer), 3_500)
    channels.claim([new])
    for stale in ([new], [old]):
        receipt = channels.claim(stale)
        assert events(receipt, channels.settlement, "Claimed") == []
        assert channels.state(config) == (DEPOSIT, 3_500)


def test_a_claim_above_the_ceiling_or_the_balance_reverts(channels: Channels, payer: LocalAccount) -> None:
    config = channels.config(payer)
    channels.deposit(config, payer, DEPOSIT)
    over_ceiling = channels.row(config, 3_000, channels.voucher(config, 3_000, payer), 3_001)
    reverts_with("ClaimExceedsCeiling()", channels.claim_call([over_ceiling]), channels.sender)
    ceiling = 2 * DEPOSIT
    over_balance = channels.row(config, ceiling, channels.voucher(config, ceiling, payer), DEPOSIT + 1)
    reverts_with("ClaimExceedsBalance()", channels.claim_call([over_balance]), channels.sender)
    assert channels.state(config) == (DEPOSIT, 0)


def test_only_the_channels_voucher_signer_counts(
    channels: Channels, payer: LocalAccount, stranger: LocalAccount
) -> None:
    delegate = Account.create()
    delegated = channels.config(payer, payer_authorizer=delegate.address)
    own = channels.config(payer, payer_authorizer=ZERO)
    for config in (delegated, own):
        channels.deposit(config, payer, DEPOSIT)
    forged = [
        channels.row(delegated, PRICE, channels.voucher(delegated, PRICE, payer), PRICE),  # payer, not its delegate
        channels.row(own, PRICE, channels.voucher(own, PRICE, stranger), PRICE),
        channels.row(own, PRICE, channels.voucher(own, PRICE + 1, payer), PRICE),  # signed for another ceiling
    ]
    for row in forged:
        reverts_with("InvalidSignature()", channels.claim_call([row]), channels.sender)
    channels.claim([channels.row(delegated, PRICE, channels.voucher(delegated, PRICE, delegate), PRICE)])
    channels.claim([channels.row(own, PRICE, channels.voucher(own, PRICE, payer), PRICE)])
    assert (channels.state(delegated), channels.state(own)) == ((DEPOSIT, PRICE), (DEPOSIT, PRICE))


def test_a_claim_batch_needs_its_receiver_authorizers_signature(
    channels: Channels, payer: LocalAccount, stranger: LocalAccount
) -> None:
    config = channels.config(payer)
    channels.deposit(config, payer, DEPOSIT)
    row = channels.row(config, PRICE, channels.voucher(config, PRICE, payer), PRICE)
    reverts_with(
        "InvalidSignature()", channels.claim_call([row], channels.batch_signature([row], stranger)), channels.sender
    )
    other_row = channels.row(config, 2 * PRICE, channels.voucher(config, 2 * PRICE, payer), 2 * PRICE)
    signed_for_other_rows = channels.batch_signature([other_row])
    reverts_with("InvalidSignature()", channels.claim_call([row], signed_for_other_rows), channels.sender)
    reverts_with("EmptyBatch()", channels.claim_call([], b"\x00" * 65), channels.sender)


def test_a_claim_batch_is_for_one_receiver_authorizer(
    channels: Channels, payer: LocalAccount, other_payer: LocalAccount
) -> None:
    ours, theirs = channels.config(payer), channels.config(other_payer, receiver_authorizer=other_payer.address)
    channels.deposit(ours, payer, DEPOSIT)
    channels.deposit(theirs, other_payer, DEPOSIT)
    rows = [
        channels.row(ours, PRICE, channels.voucher(ours, PRICE, payer), PRICE),
        channels.row(theirs, PRICE, channels.voucher(theirs, PRICE, other_payer), PRICE),
    ]
    reverts_with("NotReceiverAuthorizer()", channels.claim_call(rows), channels.sender)
    assert channels.state(ours) == (DEPOSIT, 0)


def test_an_unsigned_claim_comes_from_the_receiver_side_only(
    channels: Channels, payer: LocalAccount, stranger: LocalAccount
) -> None:
    config = channels.config(payer)
    channels.deposit(config, payer, DEPOSIT)
    row = channels.row(config, PRICE, channels.voucher(config, PRICE, payer), PRICE)
    reverts_with("NotAuthorizedToClaim()", channels.settlement.functions.claim([row]), stranger.address)
    reverts_with("EmptyBatch()", channels.settlement.functions.claim([]), config.receiver)
    transact(channels.settlement.functions.claim([row]), config.receiver)
    assert channels.state(config) == (DEPOSIT, PRICE)
