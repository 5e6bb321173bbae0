"""LocalFacilitator's channel half, called directly on anvil: what it advertises, contract-wallet vouchers (EIP-1271),
and the claim, sweep and refund requests it refuses."""

from __future__ import annotations

from dataclasses import replace

import pytest
from channel_support import ACCEPTS, REFUSES, ZERO, Channels, contract_wallet, transact
from eth_account.signers.local import LocalAccount

from x402pay._protocol.channel_wire import Voucher, VoucherPayload
from x402pay._protocol.models import PaymentPayload, PaymentRequirements
from x402pay._schemes import channel_deposit
from x402pay.server import LocalFacilitator, Price
from x402pay.server import _channel_rules as rules
from x402pay.server._channel_actions import ClaimAction, RefundAction, SweepAction, VoucherClaim
from x402pay.server._channel_desk import synthetic

pytestmark = pytest.mark.chain

DEPOSIT = 10_000
ANY_SIGNATURE = b"whatever the wallet says"


def requirement(channels: Channels) -> PaymentRequirements:
    price = Price.channel(1_000, asset=channels.devnet.usdc, receiver_authorizer=channels.receiver_authorizer.address)
    devnet = channels.devnet
    return price.requirement(
        network=devnet.network, chain_id=devnet.chain_id, pay_to=devnet.payee.address, ceiling=None, facilitator=None
    )


def facilitator(channels: Channels, *, holds_key: bool = True) -> LocalFacilitator:
    devnet = channels.devnet
    key = channels.receiver_authorizer if holds_key else None
    return LocalFacilitator(devnet.rpc_url, devnet.facilitator, channel_authorizer=key)


def test_it_advertises_channels_with_the_key_it_holds(channels: Channels) -> None:
    kind = facilitator(channels).supported_blocking().kind("batch-settlement", channels.devnet.network)
    assert kind is not None
    assert kind.extra == {"receiverAuthorizer": channels.receiver_authorizer.address}
    bare = facilitator(channels, holds_key=False).supported_blocking().kind("batch-settlement", channels.devnet.network)
    assert bare is not None
    assert bare.extra is None


def test_a_contract_wallet_payers_voucher_is_asked_of_the_wallet(channels: Channels, payer: LocalAccount) -> None:
    devnet = channels.devnet
    wallet = contract_wallet(devnet, "0x" + "34" * 19 + "72", ACCEPTS)
    transact(channels.usdc.functions.transfer(wallet, DEPOSIT), payer.address)
    config = replace(channels.config(payer), payer=wallet, payer_authorizer=ZERO)
    data = channel_deposit.permit2_collector_data(nonce=1, deadline=devnet.chain_time() + 600, signature=ANY_SIGNATURE)
    transact(channels.deposit_call(config, DEPOSIT, devnet.permit2_collector, data), channels.sender)

    wanted = requirement(channels)
    voucher = VoucherPayload(config, Voucher(channels.id_of(config), 3_000, ANY_SIGNATURE)).as_wire()
    payload = PaymentPayload(x402_version=2, payload=voucher, accepted=wanted.to_wire())
    local = facilitator(channels)
    verdict = local.verify_blocking(payload, wanted)
    assert verdict.is_valid, verdict
    assert verdict.extra is not None
    assert verdict.extra["channelState"]["balance"] == str(DEPOSIT)
    contract_wallet(devnet, wallet, REFUSES)
    assert local.verify_blocking(payload, wanted).invalid_reason == rules.VOUCHER_SIGNATURE


def test_claims_sweeps_and_refunds_it_cannot_do_are_refused(channels: Channels, payer: LocalAccount) -> None:
    devnet, config = channels.devnet, channels.config(payer)
    channels.deposit(config, payer, DEPOSIT)
    wanted = requirement(channels)
    row = VoucherClaim(config, 2_000, channels.voucher(config, 2_000, payer), 2_000)

    unsigned = facilitator(channels, holds_key=False).settle_blocking(*synthetic(ClaimAction((row,)), wanted))
    assert unsigned.error_reason == rules.AUTHORIZER_NOT_CONFIGURED
    assert (
        facilitator(channels).settle_blocking(*synthetic(ClaimAction(()), wanted)).error_reason == rules.CLAIM_PAYLOAD
    )

    nothing = SweepAction(devnet.payee.address, devnet.usdc)
    assert facilitator(channels).settle_blocking(*synthetic(nothing, wanted)).error_reason == rules.NOTHING_TO_SETTLE

    closing = Voucher(channels.id_of(config), 2_000, channels.voucher(config, 2_000, payer))
    stale = RefundAction(config, closing, 1_000, refund_nonce=7, claims=(row,))
    assert facilitator(channels).settle_blocking(*synthetic(stale, wanted)).error_reason == rules.REFUND_PAYLOAD
    assert channels.state(config) == (DEPOSIT, 0)  # nothing was sent

    signed = facilitator(channels, holds_key=False).settle_blocking(
        *synthetic(ClaimAction((row,), channels.batch_signature([row.as_abi()])), wanted)
    )  # the server's own signature: a facilitator without the key relays it
    assert signed.success, signed
    assert channels.state(config) == (DEPOSIT, 2_000)
