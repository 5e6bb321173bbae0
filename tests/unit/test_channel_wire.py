"""The batch-settlement wire objects: payloads the official SDK's client builds parse and come back byte for byte;
requirement and response extras agree with the SDK's own types; bad input is refused with the field named."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from eth_account import Account
from pydantic import ValidationError
from x402.mechanisms.evm.batch_settlement import types as sdk_types
from x402.mechanisms.evm.batch_settlement.client.eip3009 import create_batch_settlement_eip3009_deposit_payload
from x402.mechanisms.evm.batch_settlement.client.permit2 import create_batch_settlement_permit2_deposit_payload
from x402.mechanisms.evm.batch_settlement.client.voucher import sign_voucher
from x402.mechanisms.evm.signers import EthAccountSigner
from x402.schemas import PaymentRequirements

from x402pay._protocol import channel_extra
from x402pay._protocol import channel_wire as wire
from x402pay._protocol.models import SettleResponse
from x402pay._schemes import channel
from x402pay.errors import ChallengeError, MalformedPayment, SettlementError

PAYER = Account.from_key("0x" + "11" * 32)
TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
RECEIVER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
AUTHORIZER = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
NETWORK = "eip155:31337"


def sdk_config() -> sdk_types.ChannelConfig:
    return sdk_types.ChannelConfig(
        payer=PAYER.address,
        payer_authorizer=PAYER.address,
        receiver=RECEIVER,
        receiver_authorizer=AUTHORIZER,
        token=TOKEN,
        withdraw_delay=900,
        salt="0x" + "00" * 32,
    )


def requirements(method: str) -> PaymentRequirements:
    extra = {"name": "USD Coin", "version": "2", "assetTransferMethod": method, "receiverAuthorizer": AUTHORIZER}
    return PaymentRequirements(
        scheme="batch-settlement", network=NETWORK, asset=TOKEN, amount="1000", pay_to=RECEIVER,
        max_timeout_seconds=300, extra=extra,
    )  # fmt: skip


def sdk_voucher(ceiling: int) -> sdk_types.VoucherFields:
    config = wire.parse_config(sdk_config().to_dict())
    channel_id = "0x" + channel.channel_id(config, 31337).hex()
    return sign_voucher(EthAccountSigner(PAYER), channel_id, ceiling, NETWORK)


@pytest.mark.parametrize(
    "build", [create_batch_settlement_eip3009_deposit_payload, create_batch_settlement_permit2_deposit_payload]
)
def test_an_sdk_deposit_round_trips(build: Any) -> None:
    method = "eip3009" if build is create_batch_settlement_eip3009_deposit_payload else "permit2"
    sent = build(EthAccountSigner(PAYER), requirements(method), sdk_config(), 10_000, 1_000).to_dict()
    parsed = wire.parse_payload(sent)
    assert isinstance(parsed, wire.DepositPayload)
    assert parsed.deposit.amount == 10_000
    assert parsed.deposit.method == method
    assert parsed.voucher.max_claimable_amount == 1_000
    assert parsed.voucher.channel_id == channel.channel_id(parsed.config, 31337)
    assert parsed.as_wire() == sent


def test_an_sdk_voucher_and_refunds_round_trip() -> None:
    voucher = sdk_voucher(3_000)
    sent = sdk_types.VoucherPayload(channel_config=sdk_config(), voucher=voucher).to_dict()
    parsed = wire.parse_payload(sent)
    assert isinstance(parsed, wire.VoucherPayload)
    assert parsed.voucher.max_claimable_amount == 3_000
    assert parsed.as_wire() == sent
    for amount in (None, "2500"):
        refund = sdk_types.RefundPayload(channel_config=sdk_config(), voucher=voucher, amount=amount).to_dict()
        back = wire.parse_payload(refund)
        assert isinstance(back, wire.RefundPayload)
        assert back.amount == (None if amount is None else 2_500)
        assert back.as_wire() == refund


def test_requirement_extra_agrees_with_the_sdks_types() -> None:
    state = sdk_types.ChannelStateExtra("0x" + "ab" * 32, "10000", "3000", 1_700_000_000, "2", "4000")
    voucher = sdk_types.VoucherStateExtra("4000", "0x" + "cd" * 65)
    sdk_extra = sdk_types.PaymentRequirementsExtra(AUTHORIZER, 900, "USD Coin", "2", "permit2", "10000", state, voucher)
    sent = sdk_extra.to_dict()
    parsed = channel_extra.ChannelExtra.from_wire(sent)
    assert parsed.channel_state is not None
    assert parsed.channel_state.charged_cumulative_amount == 4_000
    assert parsed.voucher_state == channel_extra.VoucherState(4_000, bytes.fromhex("cd" * 65))
    assert parsed.min_deposit == 10_000
    assert parsed.asset_transfer_method == "permit2"
    assert parsed.as_wire() == sent
    assert sdk_types.PaymentRequirementsExtra.from_dict(parsed.as_wire()) == sdk_extra


def test_response_extra_agrees_with_the_sdks_types() -> None:
    state = sdk_types.ChannelStateExtra("0x" + "ab" * 32, "10000", "0", 0, "0", "1500")
    sent = sdk_types.PaymentResponseExtra(charged_amount="500", channel_state=state).to_dict()
    parsed = channel_extra.ResponseExtra.from_wire(sent)
    assert parsed.charged_amount == 500
    assert parsed.voucher_state is None
    assert parsed.as_wire() == sent


def mutated(path: list[str], value: Any) -> dict[str, Any]:
    sent = sdk_types.VoucherPayload(channel_config=sdk_config(), voucher=sdk_voucher(1_000)).to_dict()
    data = copy.deepcopy(sent)
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (["type"], "exact", "payload.type"),
        (["voucher", "channelId"], "0x1234", "voucher.channelId"),
        (["voucher", "maxClaimableAmount"], "-5", "voucher.maxClaimableAmount"),
        (["voucher", "maxClaimableAmount"], str(1 << 128), "voucher.maxClaimableAmount"),
        (["voucher", "maxClaimableAmount"], True, "voucher.maxClaimableAmount"),
        (["voucher", "signature"], "0x", "voucher.signature"),
        (["voucher", "signature"], "zz", "voucher.signature"),
        (["voucher"], KeyError, "voucher"),
        (["channelConfig", "payer"], "0x" + "00" * 20, "payer"),
        (["channelConfig", "token"], TOKEN.lower()[:-1], "token"),
        (["channelConfig", "withdrawDelay"], "900", "withdrawDelay"),
        (["channelConfig", "withdrawDelay"], 1 << 40, "withdraw_delay"),
        (["channelConfig", "salt"], "0x00", "salt"),
    ],
)
def test_a_malformed_payload_is_refused_naming_the_field(path: list[str], value: Any, named: str) -> None:
    with pytest.raises(MalformedPayment, match=re.escape(named)):
        wire.parse_payload(mutated(path, value))


def test_a_deposit_needs_exactly_one_authorization_and_a_positive_amount() -> None:
    sent = create_batch_settlement_eip3009_deposit_payload(
        EthAccountSigner(PAYER), requirements("eip3009"), sdk_config(), 10_000, 1_000
    ).to_dict()
    both = copy.deepcopy(sent)
    both["deposit"]["authorization"]["permit2Authorization"] = {"from": PAYER.address}
    with pytest.raises(MalformedPayment, match="exactly one"):
        wire.parse_payload(both)
    zero = copy.deepcopy(sent)
    zero["deposit"]["amount"] = "0"
    with pytest.raises(MalformedPayment, match=r"deposit\.amount"):
        wire.parse_payload(zero)


def test_the_error_class_follows_the_side() -> None:
    with pytest.raises(ChallengeError, match="receiverAuthorizer"):
        channel_extra.ChannelExtra.from_wire({"withdrawDelay": 900})
    with pytest.raises(ChallengeError, match="assetTransferMethod"):
        channel_extra.ChannelExtra.from_wire(
            {"receiverAuthorizer": AUTHORIZER, "withdrawDelay": 900, "assetTransferMethod": 1}
        )
    with pytest.raises(SettlementError, match="chargedAmount"):
        channel_extra.ResponseExtra.from_wire({"chargedAmount": "1.5"})
    with pytest.raises(SettlementError, match=r"channelState\.balance"):
        channel_extra.ResponseExtra.from_wire({"channelState": {"channelId": "0x" + "00" * 32, "totalClaimed": "0"}})
    with pytest.raises(ChallengeError, match=r"voucher\.channelId"):
        wire.Voucher.from_wire({}, ChallengeError)


def test_a_settlement_that_says_no_amount_reads() -> None:
    said = {"success": True, "transaction": "", "network": NETWORK, "amount": ""}  # the SDKs' voucher answer
    assert SettleResponse.model_validate(said).amount is None
    with pytest.raises(ValidationError, match="amount"):
        SettleResponse.model_validate(said | {"amount": "1.5"})


def test_no_channel_object_shows_a_signature_in_its_repr() -> None:
    from x402pay.server._channel_actions import ClaimAction, RefundAction, VoucherClaim
    from x402pay.server._channel_store import ChannelRecord

    signature, config = bytes(range(65)), channel.ChannelConfig(PAYER.address, PAYER.address, RECEIVER, AUTHORIZER,
                                                                TOKEN, 900)  # fmt: skip
    voucher = wire.Voucher(b"\x01" * 32, 1_000, signature)
    claim = VoucherClaim(config, 1_000, signature, 1_000)
    shown = [
        voucher, channel_extra.VoucherState(1_000, signature), wire.Erc3009Deposit(0, 1, 2, signature),
        wire.Permit2Deposit(PAYER.address, TOKEN, 1, RECEIVER, 3, 4, b"\x01" * 32, signature),
        claim, ClaimAction((claim,), signature), RefundAction(config, voucher, 1, 0, (claim,), signature, signature),
        ChannelRecord(b"\x01" * 32, config, 1_000, 1_000, signature, 10_000, 0),
    ]  # fmt: skip
    for value in shown:
        assert signature.hex()[:32] not in repr(value), type(value).__name__
        assert "signature=" not in repr(value), type(value).__name__
