"""The official x402 SDK's own batch-settlement helpers sign; our contracts at the canonical addresses accept.

Its client builds deposit payloads (EIP-3009 and Permit2) and vouchers, its encoders build the collector data, and
its receiver-authorizer helpers sign the claim batch and the refund. Then its facilitator, in process, verifies and
sends a deposit, a claim, a sweep and a refund (reading state through Multicall3, simulating, decoding `Settled`).
None of its code is copied; it is a dev dependency.
"""

from __future__ import annotations

from typing import Any

import pytest
from channel_support import Channels, transact
from eth_account import Account
from eth_account.signers.local import LocalAccount
from x402.mechanisms.evm.batch_settlement import encoding as sdk_encoding
from x402.mechanisms.evm.batch_settlement import types as sdk_types
from x402.mechanisms.evm.batch_settlement.abi import BATCH_SETTLEMENT_ABI
from x402.mechanisms.evm.batch_settlement.authorizer_signer import (
    LocalAuthorizerSigner,
    sign_claim_batch,
    sign_refund,
)
from x402.mechanisms.evm.batch_settlement.client.eip3009 import create_batch_settlement_eip3009_deposit_payload
from x402.mechanisms.evm.batch_settlement.client.permit2 import create_batch_settlement_permit2_deposit_payload
from x402.mechanisms.evm.batch_settlement.client.voucher import sign_voucher
from x402.mechanisms.evm.batch_settlement.constants import (
    BATCH_SETTLEMENT_ADDRESS,
    ERC3009_DEPOSIT_COLLECTOR_ADDRESS,
    PERMIT2_DEPOSIT_COLLECTOR_ADDRESS,
)
from x402.mechanisms.evm.batch_settlement.facilitator.scheme import BatchSettlementEvmFacilitator
from x402.mechanisms.evm.signers import EthAccountSigner, FacilitatorWeb3Signer
from x402.schemas import PaymentPayload, PaymentRequirements

from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

DEPOSIT = 10_000
PRICE = 1_000


def requirements(devnet: Devnet, authorizer: str, method: str) -> PaymentRequirements:
    # The SDK dates its authorizations by the wall clock; a day's lifetime covers a chain clock moved by other tests.
    return PaymentRequirements(
        scheme="batch-settlement",
        network=devnet.network,
        asset=devnet.usdc,
        amount=str(PRICE),
        pay_to=devnet.payee.address,
        max_timeout_seconds=86_400,
        extra={"name": "USD Coin", "version": "2", "assetTransferMethod": method, "receiverAuthorizer": authorizer},
    )


def sdk_channel(devnet: Devnet, payer: LocalAccount, authorizer: str) -> sdk_types.ChannelConfig:
    return sdk_types.ChannelConfig(
        payer=payer.address,
        payer_authorizer=payer.address,
        receiver=devnet.payee.address,
        receiver_authorizer=authorizer,
        token=devnet.usdc,
        withdraw_delay=900,
        salt="0x" + "00" * 32,
    )


def abi_config(config: sdk_types.ChannelConfig) -> tuple[Any, ...]:
    salt = bytes.fromhex(config.salt.removeprefix("0x"))
    fields = (config.payer, config.payer_authorizer, config.receiver, config.receiver_authorizer, config.token)
    return (*fields, config.withdraw_delay, salt)


def collector_data(payload: sdk_types.DepositPayload) -> tuple[str, bytes]:
    """The collector and its data, encoded by the SDK's own encoders from its deposit payload."""
    auth = payload.deposit.authorization
    if auth.erc3009_authorization is not None:
        erc3009 = auth.erc3009_authorization
        data = sdk_encoding.build_erc3009_collector_data(
            erc3009.valid_after, erc3009.valid_before, erc3009.salt, erc3009.signature
        )
        return ERC3009_DEPOSIT_COLLECTOR_ADDRESS, data
    permit2 = auth.permit2_authorization
    assert permit2 is not None
    return PERMIT2_DEPOSIT_COLLECTOR_ADDRESS, sdk_encoding.build_permit2_collector_data(
        permit2.nonce, permit2.deadline, permit2.signature
    )


def test_the_canonical_addresses_are_the_sdks(channels: Channels) -> None:
    devnet = channels.devnet
    expected = (BATCH_SETTLEMENT_ADDRESS, ERC3009_DEPOSIT_COLLECTOR_ADDRESS, PERMIT2_DEPOSIT_COLLECTOR_ADDRESS)
    assert (devnet.batch_settlement, devnet.erc3009_collector, devnet.permit2_collector) == expected


@pytest.mark.parametrize("method", ["eip3009", "permit2"])
def test_the_sdks_deposit_vouchers_claim_and_refund_are_accepted(
    channels: Channels, payer: LocalAccount, method: str
) -> None:
    devnet, authorizer = channels.devnet, Account.create()
    config = sdk_channel(devnet, payer, authorizer.address)
    build = {
        "eip3009": create_batch_settlement_eip3009_deposit_payload,
        "permit2": create_batch_settlement_permit2_deposit_payload,
    }[method]
    payload = build(EthAccountSigner(payer), requirements(devnet, authorizer.address, method), config, DEPOSIT, PRICE)
    collector, data = collector_data(payload)
    settlement = channels.settlement.functions
    transact(settlement.deposit(abi_config(config), DEPOSIT, collector, data), channels.sender)
    channel_id = bytes.fromhex(payload.voucher.channel_id.removeprefix("0x"))
    assert settlement.channels(channel_id).call() == [DEPOSIT, 0]

    voucher = sign_voucher(EthAccountSigner(payer), payload.voucher.channel_id, 3 * PRICE, devnet.network)
    claim = sdk_types.VoucherClaim(config, voucher.max_claimable_amount, voucher.signature, str(2_500))
    batch_signature = sign_claim_batch(LocalAuthorizerSigner(authorizer), [claim], devnet.network)
    row = ((abi_config(config), 3 * PRICE), bytes.fromhex(voucher.signature.removeprefix("0x")), 2_500)
    transact(settlement.claimWithSignature([row], batch_signature), channels.sender)
    assert settlement.channels(channel_id).call() == [DEPOSIT, 2_500]

    refund = sign_refund(LocalAuthorizerSigner(authorizer), payload.voucher.channel_id, 7_500, 0, devnet.network)
    transact(settlement.refundWithSignature(abi_config(config), 7_500, 0, refund), channels.sender)
    assert settlement.channels(channel_id).call() == [2_500, 2_500]


def official_facilitator(devnet: Devnet, authorizer: LocalAccount) -> BatchSettlementEvmFacilitator:
    """The SDK's facilitator scheme, in process: it sends as the devnet's facilitator and signs as `authorizer`."""
    signer = FacilitatorWeb3Signer(private_key="0x" + bytes(devnet.facilitator.key).hex(), rpc_url=devnet.rpc_url)
    return BatchSettlementEvmFacilitator(signer, authorizer_signer=LocalAuthorizerSigner(authorizer))


def settled_amounts(devnet: Devnet, transaction: str) -> list[int]:
    """The amounts of the `Settled` events in `transaction`, decoded with the SDK's ABI of the contract."""
    receipt = devnet.web3().eth.get_transaction_receipt(transaction)
    event = devnet.web3().eth.contract(address=BATCH_SETTLEMENT_ADDRESS, abi=BATCH_SETTLEMENT_ABI).events.Settled()
    topic = devnet.web3().keccak(text="Settled(address,address,address,uint128)")
    own = [log for log in receipt["logs"] if log["address"] == BATCH_SETTLEMENT_ADDRESS and log["topics"][0] == topic]
    return [int(event.process_log(log)["args"]["amount"]) for log in own]


def action(devnet: Devnet, payload: dict[str, Any]) -> PaymentPayload:
    """A claim, settle or refund action as the SDK's server sends it: synthetic requirements."""
    accepted = PaymentRequirements(
        scheme="batch-settlement",
        network=devnet.network,
        asset=devnet.usdc,
        amount="0",
        pay_to=devnet.payee.address,
        max_timeout_seconds=0,
        extra={},
    )
    return PaymentPayload(payload=payload, accepted=accepted)


def test_the_sdks_facilitator_runs_a_channel_on_our_contracts(channels: Channels, payer: LocalAccount) -> None:
    # EIP-3009 only: its facilitator's Permit2 deposit path imports `x402.extensions`, which needs the SDK's
    # [extensions] extra (jsonschema), not installed here. The Permit2 deposit is covered by the test above.
    devnet, authorizer = channels.devnet, Account.create()
    facilitator, config = official_facilitator(devnet, authorizer), sdk_channel(devnet, payer, authorizer.address)
    accepted = requirements(devnet, authorizer.address, "eip3009")
    deposit = create_batch_settlement_eip3009_deposit_payload(EthAccountSigner(payer), accepted, config, DEPOSIT, PRICE)
    paid = PaymentPayload(payload=deposit.to_dict(), accepted=accepted)
    assert facilitator.verify(paid, accepted).is_valid
    assert facilitator.settle(paid, accepted).success
    channel_id = deposit.voucher.channel_id
    assert channels.settlement.functions.channels(bytes.fromhex(channel_id[2:])).call() == [DEPOSIT, 0]

    voucher = sign_voucher(EthAccountSigner(payer), channel_id, 2 * PRICE, devnet.network)
    request = {"type": "voucher", "channelConfig": config.to_dict(), "voucher": voucher.to_dict()}
    assert facilitator.verify(PaymentPayload(payload=request, accepted=accepted), accepted).is_valid
    claim = sdk_types.ClaimPayload(claims=[sdk_types.VoucherClaim(config, str(2 * PRICE), voucher.signature, "1700")])
    assert facilitator.settle(action(devnet, claim.to_dict()), accepted).success

    payee_before = channels.balance_of(devnet.payee.address)
    sweep = sdk_types.SettlePayload(receiver=devnet.payee.address, token=devnet.usdc)
    swept = facilitator.settle(action(devnet, sweep.to_dict()), accepted)
    assert swept.success
    # Its FacilitatorWeb3Signer exposes no `web3`, so `swept.amount` stays ""; decode `Settled` with its ABI instead.
    assert settled_amounts(devnet, swept.transaction) == [1_700]
    assert channels.balance_of(devnet.payee.address) == payee_before + 1_700

    payer_before = channels.balance_of(payer.address)
    closing = sign_voucher(EthAccountSigner(payer), channel_id, 1_700, devnet.network)
    refund = sdk_types.EnrichedRefundPayload(
        channel_config=config, voucher=closing, amount=str(DEPOSIT - 1_700), refund_nonce="0"
    )
    assert facilitator.settle(action(devnet, refund.to_dict()), accepted).success
    assert channels.balance_of(payer.address) == payer_before + DEPOSIT - 1_700
    assert channels.settlement.functions.channels(bytes.fromhex(channel_id[2:])).call() == [1_700, 1_700]
