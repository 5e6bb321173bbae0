"""sign_exact: what an `exact` payment signs (EIP-3009 and Permit2), read back from the payload alone.

The typed data is rebuilt here from the wire payload with literal EIP-712 types, and the signer recovered with
eth-account, so a field the payload shows but the signature does not cover (or the reverse) fails a test.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils.address import to_checksum_address

from x402pay._protocol.models import PaymentRequirements
from x402pay._schemes.exact import SignedPayment, sign_exact
from x402pay._wallet import Wallet
from x402pay.errors import SigningError

KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
WALLET = Wallet.from_key(KEY)
NOW = 1_740_672_089
LIFETIME = 300
BASE_USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
DEVNET_USDC = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
UNKNOWN_TOKEN = "0x1111111111111111111111111111111111111111"
PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
PERMIT2 = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
EXACT_PROXY = "0x402085c248EeA27D92E8b30b2C58ed07f9E20001"

AUTH_FIELDS = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"},
    {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]
PERMIT2_TYPES = {
    "PermitWitnessTransferFrom": [
        {"name": "permitted", "type": "TokenPermissions"},
        {"name": "spender", "type": "address"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint256"},
        {"name": "witness", "type": "Witness"},
    ],
    "TokenPermissions": [{"name": "token", "type": "address"}, {"name": "amount", "type": "uint256"}],
    "Witness": [{"name": "to", "type": "address"}, {"name": "validAfter", "type": "uint256"}],
}
DECIMAL = re.compile(r"^(0|[1-9][0-9]*)$")


def requirement(**fields: Any) -> PaymentRequirements:
    wire = {
        "scheme": "exact",
        "network": "eip155:8453",
        "amount": "10000",
        "asset": BASE_USDC,
        "payTo": PAY_TO,
        "maxTimeoutSeconds": 60,
        **fields,
    }
    return PaymentRequirements.model_validate({key: value for key, value in wire.items() if value is not None})


def permit2_requirement(**fields: Any) -> PaymentRequirements:
    return requirement(extra={"assetTransferMethod": "permit2"}, **fields)


def sign(req: PaymentRequirements, **options: Any) -> SignedPayment:
    return sign_exact(WALLET, req, **{"now": NOW, "max_lifetime": LIFETIME, **options})


def recover(domain: dict[str, Any], types: dict[str, Any], message: dict[str, Any], signature: str) -> str:
    signable = encode_typed_data(domain, types, message)
    return Account.recover_message(signable, signature=bytes.fromhex(signature.removeprefix("0x")))


def eip3009_signer(payment: SignedPayment, name: str, version: str, chain_id: int) -> str:
    """The address that signed this EIP-3009 payload, under the given token domain, from the wire values only."""
    auth = payment.payload["authorization"]
    message = {**auth, **{key: int(auth[key]) for key in ("value", "validAfter", "validBefore")}}
    domain = {"name": name, "version": version, "chainId": chain_id, "verifyingContract": payment.requirement.asset}
    return recover(domain, {"TransferWithAuthorization": AUTH_FIELDS}, message, payment.payload["signature"])


def permit2_signer(payment: SignedPayment, chain_id: int) -> str:
    auth = payment.payload["permit2Authorization"]
    message = {
        "permitted": {"token": auth["permitted"]["token"], "amount": int(auth["permitted"]["amount"])},
        "spender": auth["spender"],
        "nonce": int(auth["nonce"]),
        "deadline": int(auth["deadline"]),
        "witness": {"to": auth["witness"]["to"], "validAfter": int(auth["witness"]["validAfter"])},
    }
    domain = {"name": "Permit2", "chainId": chain_id, "verifyingContract": PERMIT2}
    return recover(domain, PERMIT2_TYPES, message, payment.payload["signature"])


def leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in leaves(item)]
    return [value]


# -- EIP-3009 -------------------------------------------------------------------------------------------------


def test_eip3009_payload_fields_and_signature() -> None:
    req = requirement(extra={"name": "USD Coin", "version": "2"})
    payment = sign(req)
    auth = payment.payload["authorization"]
    assert set(payment.payload) == {"signature", "authorization"}
    assert auth == {
        "from": WALLET.address,
        "to": PAY_TO,
        "value": "10000",
        "validAfter": str(NOW - 600),
        "validBefore": str(NOW + 60),
        "nonce": payment.nonce,
    }
    assert re.fullmatch(r"0x[0-9a-f]{64}", payment.nonce)
    assert re.fullmatch(r"0x[0-9a-f]{130}", payment.payload["signature"])
    assert eip3009_signer(payment, "USD Coin", "2", 8453) == WALLET.address
    assert (payment.payer, payment.amount, payment.method) == (WALLET.address, 10_000, "eip3009")
    assert (payment.valid_after, payment.valid_before) == (NOW - 600, NOW + 60)
    assert payment.requirement is req


def test_the_signature_does_not_cover_another_domain_or_value() -> None:
    payment = sign(requirement())
    assert eip3009_signer(payment, "USDC", "2", 8453) != WALLET.address
    assert eip3009_signer(payment, "USD Coin", "2", 84532) != WALLET.address
    tampered = {**payment.payload["authorization"], "value": "10001"}
    forged = SignedPayment(**{**payment.__dict__, "payload": {**payment.payload, "authorization": tampered}})
    assert eip3009_signer(forged, "USD Coin", "2", 8453) != WALLET.address


def test_the_amount_is_signed_exactly_even_at_the_uint256_limit() -> None:
    payment = sign(requirement(amount=str(2**256 - 1)))
    assert payment.payload["authorization"]["value"] == str(2**256 - 1)
    assert eip3009_signer(payment, "USD Coin", "2", 8453) == WALLET.address


def test_a_v1_requirement_signs_max_amount_required_on_its_named_network() -> None:
    v1 = {
        "scheme": "exact",
        "network": "base-sepolia",
        "maxAmountRequired": "2500",
        "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        "payTo": PAY_TO,
        "maxTimeoutSeconds": 60,
        "resource": "https://example.test/paid",
        "extra": {"name": "USDC", "version": "2"},
    }
    payment = sign(PaymentRequirements.model_validate(v1))
    assert payment.payload["authorization"]["value"] == "2500"
    assert eip3009_signer(payment, "USDC", "2", 84532) == WALLET.address


# -- EIP-712 domain of the token ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("network", "asset", "extra", "domain"),
    [
        ("eip155:8453", BASE_USDC, None, ("USD Coin", "2")),
        ("eip155:84532", "0x036CbD53842c5426634e7929541eC2318f3dCF7e", None, ("USDC", "2")),
        ("eip155:31337", DEVNET_USDC, {}, ("USD Coin", "2")),
        ("eip155:8453", BASE_USDC, {"name": "Bridged USDC", "version": "7"}, ("Bridged USDC", "7")),
        ("eip155:8453", BASE_USDC, {"name": "Other"}, ("Other", "2")),
        ("eip155:8453", BASE_USDC, {"name": "", "version": ""}, ("USD Coin", "2")),
        ("eip155:1", UNKNOWN_TOKEN, {"name": "Token", "version": "1"}, ("Token", "1")),
    ],
    ids=["base", "base-sepolia", "devnet", "extra wins", "field-wise fallback", "empty extra", "unknown with extra"],
)
def test_the_token_domain_comes_from_extra_then_the_known_assets(
    network: str, asset: str, extra: dict[str, str] | None, domain: tuple[str, str]
) -> None:
    req = requirement(network=network, asset=asset, extra=extra)
    assert eip3009_signer(sign(req), *domain, req.chain_id) == WALLET.address


@pytest.mark.parametrize(
    ("network", "asset", "extra"),
    [
        ("eip155:1", UNKNOWN_TOKEN, None),
        ("eip155:1", UNKNOWN_TOKEN, {"name": "Token"}),
        ("eip155:1", UNKNOWN_TOKEN, {"name": "Token", "version": 2}),
        ("eip155:1", BASE_USDC, None),  # Base's USDC address means nothing on Ethereum
    ],
)
def test_no_domain_is_refused(network: str, asset: str, extra: dict[str, Any] | None) -> None:
    with pytest.raises(SigningError, match="no EIP-712 domain"):
        sign(requirement(network=network, asset=asset, extra=extra))


# -- Permit2 --------------------------------------------------------------------------------------------------


def test_permit2_payload_fields_and_signature() -> None:
    payment = sign(permit2_requirement(network="eip155:31337", asset=DEVNET_USDC))
    auth = payment.payload["permit2Authorization"]
    assert set(payment.payload) == {"signature", "permit2Authorization"}
    assert auth == {
        "from": WALLET.address,
        "permitted": {"token": DEVNET_USDC, "amount": "10000"},
        "spender": EXACT_PROXY,
        "nonce": payment.nonce,
        "deadline": str(NOW + 60),
        "witness": {"to": PAY_TO, "validAfter": str(NOW - 600)},
    }
    assert DECIMAL.fullmatch(payment.nonce)
    assert int(payment.nonce) < 2**256
    assert permit2_signer(payment, 31337) == WALLET.address
    assert permit2_signer(payment, 8453) != WALLET.address
    assert (payment.method, payment.amount, payment.valid_before) == ("permit2", 10_000, NOW + 60)


def test_permit2_needs_no_token_domain() -> None:
    payment = sign(permit2_requirement(network="eip155:1", asset=UNKNOWN_TOKEN))
    assert permit2_signer(payment, 1) == WALLET.address


def test_explicit_eip3009_method() -> None:
    payment = sign(requirement(extra={"assetTransferMethod": "eip3009"}))
    assert payment.method == "eip3009"
    assert eip3009_signer(payment, "USD Coin", "2", 8453) == WALLET.address


# -- wire form ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [requirement, permit2_requirement], ids=["eip3009", "permit2"])
def test_every_payload_value_is_a_string_and_numbers_are_decimal(make: Any) -> None:
    payment = sign(make())
    values = leaves(payment.payload)
    assert all(isinstance(value, str) for value in values)
    numbers = [value for value in values if not value.startswith("0x")]
    assert numbers
    assert all(DECIMAL.fullmatch(value) for value in numbers)


@pytest.mark.parametrize("make", [requirement, permit2_requirement], ids=["eip3009", "permit2"])
def test_lower_case_addresses_are_checksummed_in_the_payload_and_kept_in_the_requirement(make: Any) -> None:
    req = make(asset=BASE_USDC.lower(), payTo=PAY_TO.lower())
    payment = sign(req)
    addresses = [value for value in leaves(payment.payload) if len(value) == 42]
    assert PAY_TO in addresses
    assert all(address == to_checksum_address(address) for address in addresses)
    if payment.method == "permit2":
        assert payment.payload["permit2Authorization"]["permitted"]["token"] == BASE_USDC
    else:  # the token is signed as the domain's verifyingContract, so only a correct signature shows it
        assert eip3009_signer(payment, "USD Coin", "2", 8453) == WALLET.address
    assert req.raw["payTo"] == PAY_TO.lower()
    assert payment.requirement.pay_to == PAY_TO.lower()


def test_upper_case_hex_addresses_carry_no_checksum_and_are_accepted() -> None:
    payment = sign(requirement(payTo="0x" + PAY_TO[2:].upper()))
    assert payment.payload["authorization"]["to"] == PAY_TO


# -- lifetime -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server_timeout", "max_lifetime", "lifetime"),
    [(60, 300, 60), (300, 300, 300), (10 * 365 * 86_400, 300, 300), (3600, 1, 1)],
)
@pytest.mark.parametrize("make", [requirement, permit2_requirement], ids=["eip3009", "permit2"])
def test_the_lifetime_is_the_shorter_of_the_server_timeout_and_max_lifetime(
    make: Any, server_timeout: int, max_lifetime: int, lifetime: int
) -> None:
    payment = sign(make(maxTimeoutSeconds=server_timeout), max_lifetime=max_lifetime)
    assert payment.valid_before == NOW + lifetime
    assert payment.valid_after == NOW - 600


@pytest.mark.parametrize(("clock_skew", "valid_after"), [(0, NOW), (30, NOW - 30), (NOW + 5, 0)])
def test_clock_skew_backdates_valid_after(clock_skew: int, valid_after: int) -> None:
    assert sign(requirement(), clock_skew=clock_skew).valid_after == valid_after
    assert sign(permit2_requirement(), clock_skew=clock_skew).payload["permit2Authorization"]["witness"] == {
        "to": PAY_TO,
        "validAfter": str(valid_after),
    }


# -- nonces ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [requirement, permit2_requirement], ids=["eip3009", "permit2"])
def test_nonces_never_repeat_across_a_thousand_signatures(make: Any) -> None:
    req = make()
    nonces = {sign(req).nonce for _ in range(1000)}
    assert len(nonces) == 1000


def test_two_signatures_for_one_requirement_differ() -> None:
    req = requirement()
    assert sign(req).payload["signature"] != sign(req).payload["signature"]


# -- refusals -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"scheme": "upto"}, "signs the 'exact' scheme, not 'upto'"),
        ({"network": "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"}, "cannot sign for network 'solana:"),
        ({"network": "mainnet-beta"}, "not an EVM network"),
        ({"maxTimeoutSeconds": 0}, "maxTimeoutSeconds must be positive, got 0"),
        ({"maxTimeoutSeconds": -60}, "maxTimeoutSeconds must be positive, got -60"),
        ({"payTo": "0x1234"}, "payTo is not a valid EVM address"),
        ({"payTo": "not an address at all"}, "payTo is not a valid EVM address"),
        ({"payTo": PAY_TO[:-1] + "c"}, "payTo is not a valid EVM address"),  # EIP-55 checksum broken
        ({"payTo": "0X" + PAY_TO[2:]}, "payTo is not a valid EVM address"),
        ({"payTo": PAY_TO + "00"}, "payTo is not a valid EVM address"),
        ({"payTo": PAY_TO[2:]}, "payTo is not a valid EVM address"),
        ({"payTo": "0x" + "00" * 20}, "payTo is the zero address"),
        ({"asset": "USDC"}, "asset is not a valid EVM address"),
        ({"asset": "0x" + "00" * 20}, "asset is the zero address"),
        ({"extra": {"assetTransferMethod": "erc7710"}}, "cannot sign assetTransferMethod 'erc7710'"),
        ({"extra": {"assetTransferMethod": "Permit2"}}, "cannot sign assetTransferMethod 'Permit2'"),
        ({"extra": {"assetTransferMethod": 2}}, "cannot sign assetTransferMethod '2'"),
    ],
)
def test_refusals(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(SigningError, match=re.escape(message)):
        sign(requirement(**fields))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_lifetime": 0}, "max_lifetime must be positive, got 0"),
        ({"max_lifetime": -1}, "max_lifetime must be positive, got -1"),
        ({"clock_skew": -1}, "must not be negative"),
        ({"now": -1}, "must not be negative"),
        ({"now": NOW + 0.5}, "must be ints of seconds"),
        ({"max_lifetime": True}, "must be ints of seconds"),
    ],
)
@pytest.mark.parametrize("make", [requirement, permit2_requirement], ids=["eip3009", "permit2"])
def test_refused_options(make: Any, options: dict[str, int], message: str) -> None:
    with pytest.raises(SigningError, match=re.escape(message)):
        sign(make(), **options)
