"""Wire models and the header codec: canonical encoding, lenient but bounded decoding, typed errors."""

from __future__ import annotations

import base64
import json

import pytest

from x402pay._protocol.codec import MAX_HEADER_CHARS, decode_header, encode_header, parse_model
from x402pay._protocol.models import PaymentPayload, PaymentRequired, PaymentRequirements, SettleResponse
from x402pay._protocol.networks import caip2, chain_id_of, known_asset
from x402pay.errors import ChallengeError, SettlementError

REQUIREMENT = {
    "scheme": "exact",
    "network": "eip155:84532",
    "amount": "10000",
    "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
    "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
    "maxTimeoutSeconds": 60,
    "extra": {"name": "USDC", "version": "2"},
}


def b64(data: object, *, urlsafe: bool = False, pad: bool = True) -> str:
    raw = json.dumps(data).encode()
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode()
    return text if pad else text.rstrip("=")


def test_requirements_read_camel_case_and_amounts_as_ints() -> None:
    requirement = PaymentRequirements.model_validate(REQUIREMENT)
    assert requirement.amount == 10000
    assert requirement.pay_to == REQUIREMENT["payTo"]
    assert requirement.max_timeout_seconds == 60
    assert requirement.chain_id == 84532
    assert requirement.to_wire() == REQUIREMENT


def test_v1_max_amount_required_is_the_amount() -> None:
    v1 = {**REQUIREMENT, "network": "base-sepolia", "resource": "https://x/y", "description": "d"}
    v1["maxAmountRequired"] = v1.pop("amount")
    requirement = PaymentRequirements.model_validate(v1)
    assert requirement.amount == 10000
    assert requirement.chain_id == 84532


def test_unknown_fields_are_kept_and_raw_is_the_original() -> None:
    original = {**REQUIREMENT, "futureField": {"x": [1, 2]}, "amount": "010000"}
    requirement = PaymentRequirements.model_validate(original)
    assert requirement.raw == original
    assert requirement.raw is not requirement.raw  # a copy each time: callers cannot change what is echoed


@pytest.mark.parametrize("amount", ["-1", "1.5", "0x10", "1e3", " 1", "", "١٢", True, 1.0, None, str(2**256)])
def test_amounts_that_are_not_uint256_decimal_strings_are_refused(amount: object) -> None:
    with pytest.raises(ChallengeError, match="amount"):
        parse_model({**REQUIREMENT, "amount": amount}, PaymentRequirements, what="option 0", error=ChallengeError)


def test_largest_uint256_and_json_integers_are_accepted() -> None:
    assert PaymentRequirements.model_validate({**REQUIREMENT, "amount": str(2**256 - 1)}).amount == 2**256 - 1
    assert PaymentRequirements.model_validate({**REQUIREMENT, "amount": 5}).amount == 5


def test_payment_required_limits_the_number_of_options() -> None:
    data = {"x402Version": 2, "accepts": [REQUIREMENT] * 10_000}
    with pytest.raises(ChallengeError, match="accepts"):
        parse_model(data, PaymentRequired, what="challenge", error=ChallengeError)


def test_payment_payload_shapes_per_version() -> None:
    with pytest.raises(ValueError, match="accepted"):
        PaymentPayload(x402_version=2, payload={})
    with pytest.raises(ValueError, match="scheme"):
        PaymentPayload(x402_version=1, payload={})
    v1 = PaymentPayload(x402_version=1, scheme="exact", network="base", payload={"signature": "0x"})
    assert v1.to_wire() == {"x402Version": 1, "scheme": "exact", "network": "base", "payload": {"signature": "0x"}}


def test_settle_response_upto_zero_charge() -> None:
    settled = SettleResponse.model_validate({"success": True, "transaction": "", "amount": "0", "network": "eip155:1"})
    assert settled.amount == 0
    assert settled.to_wire()["amount"] == "0"


def test_encoding_is_standard_padded_base64_of_compact_json_without_nulls() -> None:
    header = encode_header(PaymentPayload(x402_version=1, scheme="exact", network="base", payload={"a": "b+/?"}))
    assert (
        header
        == base64.b64encode(b'{"x402Version":1,"payload":{"a":"b+/?"},"scheme":"exact","network":"base"}').decode()
    )
    assert "null" not in base64.b64decode(header).decode()


@pytest.mark.parametrize(
    "encoded", [b64(REQUIREMENT), b64(REQUIREMENT, urlsafe=True, pad=False), " " + b64(REQUIREMENT)]
)
def test_decoding_accepts_url_safe_and_unpadded_base64(encoded: str) -> None:
    assert decode_header(encoded, what="X", error=ChallengeError) == REQUIREMENT


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("%%%not base64%%%", "not base64"),
        ("A", "not valid base64"),
        (base64.b64encode(b"\xff\xfe\xfd").decode(), "not UTF-8"),
        (base64.b64encode(b"{not json").decode(), "not JSON"),
        (base64.b64encode(b'{"a": NaN}').decode(), "not JSON"),
        (base64.b64encode(b"[" * 50_000).decode()[:MAX_HEADER_CHARS], "nested too deeply|not JSON|not valid base64"),
        ("A" * (MAX_HEADER_CHARS + 1), "over the"),
    ],
)
def test_malformed_headers_raise_the_named_error(value: str, reason: str) -> None:
    with pytest.raises(SettlementError, match=reason):
        decode_header(value, what="PAYMENT-RESPONSE", error=SettlementError)


def test_networks() -> None:
    assert chain_id_of("eip155:8453") == chain_id_of("base") == 8453
    assert caip2(31337) == "eip155:31337"
    for bad in [
        "eip155:",
        "eip155:0",
        "eip155:-1",
        "eip155:0x1",
        "solana:mainnet",
        "base-mainnet",
        "eip155:1" + "0" * 30,
    ]:
        with pytest.raises(ValueError, match=r"EVM|range"):
            chain_id_of(bad)
    usdc = known_asset(8453, "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913")
    assert usdc is not None
    assert (usdc.name, usdc.version) == ("USD Coin", "2")
    sepolia = known_asset(84532, "0x036CbD53842c5426634e7929541eC2318f3dCF7e")
    assert sepolia is not None
    assert sepolia.name == "USDC"
    assert known_asset(8453, "0x036CbD53842c5426634e7929541eC2318f3dCF7e") is None


@pytest.mark.parametrize(("chain_id", "seconds"), [(8453, 10.0), (31337, 10.0), (1, 60.0), (999_999, 60.0)])
def test_the_wait_for_a_reported_settlement_suits_the_chains_pace(chain_id: int, seconds: float) -> None:
    from x402pay._protocol.networks import settlement_patience

    assert settlement_patience(chain_id) == seconds  # five blocks, at least ten seconds; unknown chains as slow
