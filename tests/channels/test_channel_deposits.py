"""The batch settlement contract on anvil: our digests are its digests, and deposits by both collectors.

Every signature here comes from x402pay's own digests (`x402pay._schemes.channel`, `channel_deposit`), so each
accepted deposit also proves the channel id, the ERC-3009 nonce derivation, the Permit2 witness and the collector data.
"""

from __future__ import annotations

import secrets

import pytest
from channel_support import DELAY, ZERO, Channels, events, reverts_with, reverts_with_reason, sign, transact
from eth_account.signers.local import LocalAccount
from web3 import Web3

from x402pay._schemes import channel, channel_deposit
from x402pay._schemes.eip712 import eip2612_permit
from x402pay._schemes.fast712 import typed_data_digest
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

AMOUNT = 10_000


def test_channel_ids_and_digests_are_the_contracts(channels: Channels, payer: LocalAccount) -> None:
    views, chain_id = channels.settlement.functions, channels.devnet.chain_id
    configs = [
        channels.config(payer),
        channels.config(payer, payer_authorizer=ZERO, salt=secrets.token_bytes(32), withdraw_delay=2**40 - 1),
    ]
    for config in configs:
        channel_id = channel.channel_id(config, chain_id)
        assert views.getChannelId(config.as_abi()).call() == channel_id
        assert views.getVoucherDigest(channel_id, 2**128 - 1).call() == channel.voucher_digest(
            channel_id, 2**128 - 1, chain_id
        )
        assert views.getRefundDigest(channel_id, 7, 12_345).call() == channel.refund_digest(
            channel_id, 7, 12_345, chain_id
        )
    for count in (0, 1, 3):
        rows = [channels.row(configs[i % 2], 1_000 * (i + 1), b"\x01", 500 * i) for i in range(count)]
        entries = [channel.ClaimEntry(channels.id_of(configs[i % 2]), 1_000 * (i + 1), 500 * i) for i in range(count)]
        assert views.getClaimBatchDigest(rows).call() == channel.claim_batch_digest(entries, chain_id)


def test_an_eip3009_deposit_opens_then_tops_up_the_channel(channels: Channels, payer: LocalAccount) -> None:
    config = channels.config(payer)
    before = channels.balance_of(payer.address)
    first = channels.deposit(config, payer, AMOUNT)
    assert channels.state(config) == (AMOUNT, 0)
    assert channels.balance_of(payer.address) == before - AMOUNT
    assert channels.balance_of(channels.devnet.batch_settlement) == AMOUNT
    assert channels.balance_of(channels.devnet.erc3009_collector) == 0
    (created,) = events(first, channels.settlement, "ChannelCreated")
    assert created["args"]["channelId"] == channels.id_of(config)
    (deposited,) = events(first, channels.settlement, "Deposited")
    assert (deposited["args"]["amount"], deposited["args"]["newBalance"]) == (AMOUNT, AMOUNT)
    assert deposited["args"]["sender"] == channels.sender

    top_up = channels.deposit(config, payer, 2 * AMOUNT)
    assert channels.state(config) == (3 * AMOUNT, 0)
    assert events(top_up, channels.settlement, "ChannelCreated") == []


def test_an_eip3009_deposit_authorization_is_used_once_and_for_its_channel_only(
    channels: Channels, payer: LocalAccount
) -> None:
    config, other = channels.config(payer), channels.config(payer, salt=b"\x01" * 32)
    data = channels.eip3009_data(config, payer, AMOUNT)
    collector = channels.devnet.erc3009_collector
    transact(channels.deposit_call(config, AMOUNT, collector, data), channels.sender)
    reverts_with_reason(
        "authorization is used", channels.deposit_call(config, AMOUNT, collector, data), channels.sender
    )
    fresh = channels.eip3009_data(config, payer, AMOUNT)
    reverts_with_reason("invalid signature", channels.deposit_call(other, AMOUNT, collector, fresh), channels.sender)
    reverts_with_reason(
        "invalid signature", channels.deposit_call(config, AMOUNT + 1, collector, fresh), channels.sender
    )
    assert channels.state(config) == (AMOUNT, 0)
    assert channels.state(other) == (0, 0)


def test_a_permit2_deposit_moves_the_tokens_once(channels: Channels, payer: LocalAccount) -> None:
    config = channels.config(payer)
    data = channels.permit2_data(config, payer, AMOUNT)
    collector = channels.devnet.permit2_collector
    receipt = transact(channels.deposit_call(config, AMOUNT, collector, data), channels.sender)
    assert channels.state(config) == (AMOUNT, 0)
    assert channels.balance_of(channels.devnet.batch_settlement) == AMOUNT
    assert len(events(receipt, channels.settlement, "ChannelCreated")) == 1
    reverts_with("InvalidNonce()", channels.deposit_call(config, AMOUNT, collector, data), channels.sender)
    other, fresh = channels.config(payer, salt=b"\x02" * 32), channels.permit2_data(config, payer, AMOUNT)
    reverts_with("InvalidSigner()", channels.deposit_call(other, AMOUNT, collector, fresh), channels.sender)
    assert channels.state(other) == (0, 0)


def test_a_permit2_deposit_with_an_eip2612_permit_needs_no_prior_approval(
    channels: Channels, payer: LocalAccount
) -> None:
    devnet = channels.devnet
    transact(channels.usdc.functions.approve(devnet.permit2, 0), payer.address)
    config, collector = channels.config(payer), devnet.permit2_collector
    reverts_with(
        "ERC20InsufficientAllowance(address,uint256,uint256)",
        channels.deposit_call(config, AMOUNT, collector, channels.permit2_data(config, payer, AMOUNT)),
        channels.sender,
    )
    segment = _eip2612_segment(devnet, payer, AMOUNT)
    data = channels.permit2_data(config, payer, AMOUNT, eip2612_permit=segment)
    transact(channels.deposit_call(config, AMOUNT, collector, data), channels.sender)
    assert channels.state(config) == (AMOUNT, 0)
    wrong_value = _eip2612_segment(devnet, payer, AMOUNT + 1)
    data = channels.permit2_data(config, payer, AMOUNT, eip2612_permit=wrong_value)
    reverts_with("Permit2612AmountMismatch()", channels.deposit_call(config, AMOUNT, collector, data), channels.sender)


def _eip2612_segment(devnet: Devnet, payer: LocalAccount, value: int) -> bytes:
    usdc = devnet.contract("TestUSDC", devnet.usdc)
    deadline = devnet.chain_time() + 600
    typed = eip2612_permit(
        token_name="USD Coin",
        token_version="2",
        chain_id=devnet.chain_id,
        token=devnet.usdc,
        owner=payer.address,
        spender=devnet.permit2,
        value=value,
        nonce=usdc.functions.nonces(payer.address).call(),
        deadline=deadline,
    )
    digest = typed_data_digest(typed)
    assert digest is not None
    return channel_deposit.eip2612_permit_data(value=value, deadline=deadline, signature=sign(payer, digest))


@pytest.mark.parametrize(
    ("overrides", "amount", "error"),
    [
        ({"withdraw_delay": DELAY - 1}, AMOUNT, "WithdrawDelayOutOfRange()"),
        ({"withdraw_delay": 30 * 86_400 + 1}, AMOUNT, "WithdrawDelayOutOfRange()"),
        ({}, 0, "ZeroDeposit()"),
    ],
)
def test_a_deposit_outside_the_rules_reverts(
    channels: Channels, payer: LocalAccount, overrides: dict[str, int], amount: int, error: str
) -> None:
    config = channels.config(payer, **overrides)
    data = channels.eip3009_data(config, payer, amount)
    reverts_with(error, channels.deposit_call(config, amount, channels.devnet.erc3009_collector, data), channels.sender)


def test_a_deposit_needs_a_collector_that_delivers(channels: Channels, payer: LocalAccount) -> None:
    config = channels.config(payer)
    data = channels.eip3009_data(config, payer, AMOUNT)
    reverts_with("InvalidCollector()", channels.deposit_call(config, AMOUNT, ZERO, data), channels.sender)
    # Code that returns at once: the call succeeds but no tokens arrive.
    idle = Web3.to_checksum_address("0x" + secrets.token_hex(20))
    channels.devnet.web3().provider.make_request("anvil_setCode", [idle, "0x00"])
    reverts_with("DepositCollectionFailed()", channels.deposit_call(config, AMOUNT, idle, data), channels.sender)


def test_only_the_settlement_contract_may_call_a_collector(channels: Channels, payer: LocalAccount) -> None:
    config = channels.config(payer)
    data = channels.eip3009_data(config, payer, AMOUNT)
    devnet = channels.devnet
    for name, address in (
        ("ERC3009DepositCollector", devnet.erc3009_collector),
        ("Permit2DepositCollector", devnet.permit2_collector),
    ):
        collector = devnet.contract(name, address)
        call = collector.functions.collect(payer.address, devnet.usdc, AMOUNT, channels.id_of(config), data)
        reverts_with("OnlyX402BatchSettlement()", call, payer.address)


def test_a_zero_receiver_authorizer_is_no_channel(channels: Channels, payer: LocalAccount) -> None:
    # ChannelConfig refuses the zero address here, so the raw tuple is built by hand.
    config = channels.config(payer)
    raw = (*config.as_abi()[:3], ZERO, *config.as_abi()[4:])
    data = channels.eip3009_data(config, payer, AMOUNT)
    call = channels.settlement.functions.deposit(raw, AMOUNT, channels.devnet.erc3009_collector, data)
    reverts_with("InvalidChannel()", call, channels.sender)


def test_a_balance_cannot_pass_the_uint128_ceiling(channels: Channels, payer: LocalAccount) -> None:
    devnet, most = channels.devnet, 2**128 - 1
    transact(channels.usdc.functions.mint(payer.address, most), devnet.deployer.address)
    config = channels.config(payer)
    channels.deposit(config, payer, most)
    assert channels.state(config) == (most, 0)
    data = channels.eip3009_data(config, payer, 1)
    reverts_with("DepositOverflow()", channels.deposit_call(config, 1, devnet.erc3009_collector, data), channels.sender)
