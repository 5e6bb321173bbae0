"""Channel ids, batch-settlement digests and deposit encodings against the official x402 SDK, on random inputs.

The SDK (a dev dependency; none of its code is copied) signs with eth-account; we sign our own digests with the same
key. RFC 6979 signatures are deterministic, so equal signatures mean equal digests. Our typed-data twins are also
held to eth-account's generic encoder. The contracts on anvil check the same values in tests/channels/.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from coincurve import PrivateKey
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from hypothesis import given, settings
from hypothesis import strategies as st
from x402.mechanisms.evm.batch_settlement import encoding as sdk_encoding
from x402.mechanisms.evm.batch_settlement import types as sdk_types
from x402.mechanisms.evm.batch_settlement.authorizer_signer import (
    LocalAuthorizerSigner,
    sign_claim_batch,
    sign_refund,
)
from x402.mechanisms.evm.batch_settlement.client.eip3009 import create_batch_settlement_eip3009_deposit_payload
from x402.mechanisms.evm.batch_settlement.client.permit2 import create_batch_settlement_permit2_deposit_payload
from x402.mechanisms.evm.batch_settlement.client.voucher import sign_voucher
from x402.mechanisms.evm.batch_settlement.utils import compute_channel_id
from x402.mechanisms.evm.signers import EthAccountSigner
from x402.schemas import PaymentRequirements

from x402pay._schemes import channel, channel_deposit
from x402pay._schemes.fast712 import encode_type, keccak256, sign_digest
from x402pay.errors import SigningError

KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
ACCOUNT: LocalAccount = Account.from_key(KEY)
SECP_KEY = PrivateKey(bytes(ACCOUNT.key))
TOKEN = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
NETWORK = "eip155:31337"

addresses = st.binary(min_size=20, max_size=20).map(lambda raw: Account.from_key(keccak256(raw)).address)
uint128 = st.integers(min_value=0, max_value=2**128 - 1)
uint256 = st.integers(min_value=0, max_value=2**256 - 1)
chain_ids = st.sampled_from([1, 8453, 84532, 31337, 2**64 - 1])


@st.composite
def configs(draw: st.DrawFn) -> channel.ChannelConfig:
    zero = "0x" + "00" * 20
    return channel.ChannelConfig(
        payer=draw(addresses),
        payer_authorizer=draw(st.one_of(st.just(zero), addresses)),
        receiver=draw(addresses),
        receiver_authorizer=draw(addresses),
        token=draw(addresses),
        withdraw_delay=draw(st.integers(min_value=0, max_value=2**40 - 1)),
        salt=draw(st.one_of(st.just(bytes(32)), st.binary(min_size=32, max_size=32))),
    )


def sdk_config(config: channel.ChannelConfig) -> sdk_types.ChannelConfig:
    return sdk_types.ChannelConfig.from_dict(config.as_wire())


def ours(digest: bytes) -> str:
    return "0x" + sign_digest(SECP_KEY, digest).hex()


def eth_account_digest(typed_data: dict[str, Any]) -> bytes:
    signable = encode_typed_data(full_message=typed_data)
    return keccak256(b"\x19" + signable.version + signable.header + signable.body)


@settings(max_examples=60, deadline=None)
@given(config=configs(), chain_id=chain_ids)
def test_channel_id_is_the_sdks(config: channel.ChannelConfig, chain_id: int) -> None:
    assert "0x" + channel.channel_id(config, chain_id).hex() == compute_channel_id(sdk_config(config), chain_id)


def test_the_wire_config_is_the_sdks_shape() -> None:
    config = channel.ChannelConfig(ACCOUNT.address, ACCOUNT.address, TOKEN, TOKEN, TOKEN, 900, b"\x01" * 32)
    assert sdk_config(config).to_dict() == config.as_wire()
    assert config.as_wire()["salt"] == "0x" + "01" * 32
    assert config.as_abi() == (ACCOUNT.address, ACCOUNT.address, TOKEN, TOKEN, TOKEN, 900, b"\x01" * 32)


@settings(max_examples=40, deadline=None)
@given(config=configs(), ceiling=uint128)
def test_voucher_digest_signs_like_the_sdk(config: channel.ChannelConfig, ceiling: int) -> None:
    channel_id = channel.channel_id(config, 31337)
    theirs = sign_voucher(EthAccountSigner(ACCOUNT), "0x" + channel_id.hex(), ceiling, NETWORK)
    digest = channel.voucher_digest(channel_id, ceiling, 31337)
    assert ours(digest) == theirs.signature
    assert eth_account_digest(channel.voucher_typed_data(channel_id, ceiling, 31337)) == digest


@settings(max_examples=40, deadline=None)
@given(channel_id=st.binary(min_size=32, max_size=32), nonce=uint256, amount=uint128)
def test_refund_digest_signs_like_the_sdk(channel_id: bytes, nonce: int, amount: int) -> None:
    theirs = sign_refund(LocalAuthorizerSigner(ACCOUNT), "0x" + channel_id.hex(), amount, nonce, NETWORK)
    digest = channel.refund_digest(channel_id, nonce, amount, 31337)
    assert ours(digest) == theirs
    assert eth_account_digest(channel.refund_typed_data(channel_id, nonce, amount, 31337)) == digest


@settings(max_examples=25, deadline=None)
@given(rows=st.lists(st.tuples(configs(), uint128, uint128), min_size=0, max_size=5))
def test_claim_batch_digest_signs_like_the_sdk(rows: list[tuple[channel.ChannelConfig, int, int]]) -> None:
    claims = [
        sdk_types.VoucherClaim(sdk_config(config), str(ceiling), "0x", str(claimed))
        for config, ceiling, claimed in rows
    ]
    entries = [channel.ClaimEntry(channel.channel_id(c, 31337), ceiling, claimed) for c, ceiling, claimed in rows]
    digest = channel.claim_batch_digest(entries, 31337)
    assert ours(digest) == sign_claim_batch(LocalAuthorizerSigner(ACCOUNT), claims, NETWORK)
    assert eth_account_digest(channel.claim_batch_typed_data(entries, 31337)) == digest


def test_a_claim_batch_hashes_its_entries_in_order() -> None:
    first, second = channel.ClaimEntry(b"\x01" * 32, 5, 3), channel.ClaimEntry(b"\x02" * 32, 5, 3)
    assert channel.claim_batch_digest([first, second], 1) != channel.claim_batch_digest([second, first], 1)


def requirements(method: str) -> PaymentRequirements:
    extra = {"name": "USD Coin", "version": "2", "assetTransferMethod": method}
    return PaymentRequirements(
        scheme="batch-settlement",
        network=NETWORK,
        asset=TOKEN,
        amount="1000",
        pay_to=TOKEN,
        max_timeout_seconds=300,
        extra=extra,
    )


@settings(max_examples=20, deadline=None)
@given(config=configs(), amount=st.integers(min_value=1, max_value=2**128 - 1))
def test_an_eip3009_deposit_signs_like_the_sdks(config: channel.ChannelConfig, amount: int) -> None:
    payload = create_batch_settlement_eip3009_deposit_payload(
        EthAccountSigner(ACCOUNT), requirements("eip3009"), sdk_config(config), amount, amount
    )
    auth = payload.deposit.authorization.erc3009_authorization
    assert auth is not None
    channel_id = channel.channel_id(config, 31337)
    nonce = channel_deposit.erc3009_deposit_nonce(channel_id, int(auth.salt, 16))
    assert "0x" + nonce.hex() == sdk_encoding.build_erc3009_deposit_nonce("0x" + channel_id.hex(), auth.salt)
    terms: dict[str, Any] = {
        "token_name": "USD Coin",
        "token_version": "2",
        "chain_id": 31337,
        "token": TOKEN,
        "payer": ACCOUNT.address,
        "value": amount,
        "valid_after": int(auth.valid_after),
        "valid_before": int(auth.valid_before),
        "nonce": nonce,
    }
    digest = channel_deposit.receive_with_authorization_digest(**terms)
    assert ours(digest) == auth.signature
    assert eth_account_digest(channel_deposit.receive_with_authorization_typed_data(**terms)) == digest


@settings(max_examples=20, deadline=None)
@given(config=configs(), amount=st.integers(min_value=1, max_value=2**128 - 1))
def test_a_permit2_deposit_signs_like_the_sdks(config: channel.ChannelConfig, amount: int) -> None:
    payload = create_batch_settlement_permit2_deposit_payload(
        EthAccountSigner(ACCOUNT), requirements("permit2"), sdk_config(config), amount, amount
    )
    auth = payload.deposit.authorization.permit2_authorization
    assert auth is not None
    channel_id = channel.channel_id(config, 31337)
    terms: dict[str, Any] = {
        "chain_id": 31337,
        "token": TOKEN,
        "amount": amount,
        "nonce": int(auth.nonce),
        "deadline": int(auth.deadline),
        "channel": channel_id,
    }
    digest = channel_deposit.permit2_deposit_digest(**terms)
    assert ours(digest) == auth.signature
    assert eth_account_digest(channel_deposit.permit2_deposit_typed_data(**terms)) == digest


@settings(max_examples=40, deadline=None)
@given(valid_after=uint256, valid_before=uint256, salt=uint256, signature=st.binary(min_size=1, max_size=130))
def test_erc3009_collector_data_is_the_sdks(valid_after: int, valid_before: int, salt: int, signature: bytes) -> None:
    data = channel_deposit.erc3009_collector_data(
        valid_after=valid_after, valid_before=valid_before, salt=salt, signature=signature
    )
    assert data == sdk_encoding.build_erc3009_collector_data(valid_after, valid_before, hex(salt), signature.hex())
    assert data == abi_encode(["uint256", "uint256", "uint256", "bytes"], [valid_after, valid_before, salt, signature])


@settings(max_examples=40, deadline=None)
@given(
    nonce=uint256,
    deadline=uint256,
    signature=st.binary(min_size=1, max_size=130),
    permit=st.one_of(st.just(b""), st.binary(min_size=65, max_size=65)),
)
def test_permit2_collector_data_is_the_sdks(nonce: int, deadline: int, signature: bytes, permit: bytes) -> None:
    segment = b""
    if permit:
        segment = channel_deposit.eip2612_permit_data(value=nonce, deadline=deadline, signature=permit)
        r, s, v = "0x" + permit[:32].hex(), "0x" + permit[32:64].hex(), permit[64]
        assert segment == sdk_encoding.build_eip2612_permit_data(str(nonce), str(deadline), v, r, s)
    data = channel_deposit.permit2_collector_data(
        nonce=nonce, deadline=deadline, signature=signature, eip2612_permit=segment
    )
    assert data == sdk_encoding.build_permit2_collector_data(str(nonce), str(deadline), signature.hex(), segment)


def test_the_witness_type_string_is_the_one_permit2_is_handed() -> None:
    typed = channel_deposit.permit2_deposit_typed_data(
        chain_id=1, token=TOKEN, amount=1, nonce=0, deadline=1, channel=bytes(32)
    )
    message_types = {name: fields for name, fields in typed["types"].items() if name != "EIP712Domain"}
    assert encode_type("PermitWitnessTransferFrom", message_types) == channel_deposit.PERMIT_WITNESS_TRANSFER_FROM_TYPE
    assert channel_deposit.PERMIT_WITNESS_TRANSFER_FROM_TYPE.endswith(channel_deposit.DEPOSIT_WITNESS_TYPE_STRING)


GOOD = {
    "payer": ACCOUNT.address,
    "payer_authorizer": "0x" + "00" * 20,
    "receiver": TOKEN,
    "receiver_authorizer": TOKEN,
    "token": TOKEN,
    "withdraw_delay": 900,
}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("payer", "0x" + "00" * 20, "payer is the zero address"),
        ("receiver", TOKEN.lower()[:-1], "receiver is not a 0x EVM address"),
        ("token", TOKEN[:-1] + TOKEN[-1].swapcase(), "token has a broken EIP-55 checksum"),
        ("receiver_authorizer", "0x" + "00" * 20, "receiver_authorizer is the zero address"),
        ("withdraw_delay", 2**40, "withdraw_delay must be an int in [0, 2**40)"),
        ("withdraw_delay", True, "withdraw_delay must be an int"),
        ("salt", b"\x00" * 31, "salt must be 32 bytes"),
    ],
)
def test_a_bad_config_is_refused_by_name(field: str, value: object, message: str) -> None:
    with pytest.raises(SigningError, match=re.escape(message)):
        channel.ChannelConfig(**{**GOOD, field: value})


def test_addresses_are_stored_checksummed() -> None:
    config = channel.ChannelConfig(**{**GOOD, "token": TOKEN.lower()})
    assert config.token == TOKEN


def test_bad_amounts_are_refused_by_name() -> None:
    with pytest.raises(SigningError, match="max_claimable_amount"):
        channel.voucher_digest(bytes(32), 2**128, 1)
    with pytest.raises(SigningError, match="channel_id must be 32 bytes"):
        channel.refund_digest(b"\x00", 0, 1, 1)
    with pytest.raises(SigningError, match="total_claimed"):
        channel.ClaimEntry(bytes(32), 1, -1)
    with pytest.raises(SigningError, match="signature must be non-empty bytes"):
        channel_deposit.erc3009_collector_data(valid_after=0, valid_before=1, salt=0, signature=b"")
    with pytest.raises(SigningError, match="65 bytes"):
        channel_deposit.eip2612_permit_data(value=1, deadline=1, signature=b"\x00" * 64)
