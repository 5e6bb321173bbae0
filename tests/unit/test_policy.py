"""SpendPolicy: allow-lists, the cap, lifetimes, the choice among options, and why each was refused."""

from __future__ import annotations

import dataclasses

import pytest

from x402pay._policy import SpendPolicy
from x402pay._protocol.models import PaymentRequirements
from x402pay.errors import NoAcceptableRequirement, NotBudgeted, SpendCapExceeded
from x402pay.ledger import Budget
from x402pay.ledger._model import uncovered

BASE_USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
SEPOLIA_USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
MAINNET_USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
PAYEE = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
ORIGIN = "https://api.example.com"


def option(**changes: object) -> PaymentRequirements:
    data: dict[str, object] = {
        "scheme": "exact",
        "network": "eip155:8453",
        "amount": "10000",
        "asset": BASE_USDC,
        "payTo": PAYEE,
        "maxTimeoutSeconds": 60,
        "extra": {"name": "USD Coin", "version": "2"},
    }
    data.update(changes)
    return PaymentRequirements.model_validate(data)


def test_policy_is_frozen_and_validates_its_fields() -> None:
    policy = SpendPolicy(max_per_request=50_000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_per_request = 1  # type: ignore[misc]
    with pytest.raises(TypeError, match="atomic units"):
        SpendPolicy(max_per_request=0.05)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_lifetime"):
        SpendPolicy(max_per_request=1, max_lifetime=0)
    with pytest.raises(ValueError, match="cannot sign"):
        SpendPolicy(max_per_request=1, schemes=("teleport",))


def test_networks_given_as_a_set_are_refused_at_construction_not_at_the_first_payment() -> None:
    # Regression: a set was accepted, then the first payment failed (a set has no .index, and no order).
    with pytest.raises(TypeError, match=r"networks must be a tuple or list .* not set: its order is the preference"):
        SpendPolicy(max_per_request=50_000, networks={"eip155:8453", "eip155:84532"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not frozenset"):
        SpendPolicy(max_per_request=50_000, networks=frozenset({"eip155:8453"}))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"networks": "eip155:8453"}, TypeError, r"networks .* not a str .* write networks=\('eip155:8453',\)"),
        ({"networks": ("eip155:8453", 8453)}, TypeError, "networks must hold str values, not int"),
        ({"networks": ("base",)}, ValueError, "networks: 'base' is a v1 network name; .* 'eip155:8453'"),
        ({"networks": ("8453",)}, ValueError, "networks: '8453' is not a CAIP-2 id"),
        ({"assets": BASE_USDC}, TypeError, "assets must be a collection of str, not a str"),
        ({"payees": PAYEE}, TypeError, "payees must be a collection of str, not a str"),
        ({"origins": ORIGIN}, TypeError, "origins must be a collection of str, not a str"),
        ({"origins": 443}, TypeError, "origins must be a collection of str .* not int"),
        ({"payees": [PAYEE, None]}, TypeError, "payees must hold str values, not NoneType"),
        ({"schemes": "exact"}, TypeError, "schemes must be a tuple or list of str, not a str"),
        ({"schemes": {"exact"}}, TypeError, "schemes must be a tuple or list of str, not set"),
        ({"schemes": ("exact", "teleport")}, ValueError, r"schemes: cannot sign \['teleport'\]"),
        ({"max_lifetime": True}, TypeError, "max_lifetime is an int of seconds, not bool"),
        ({"max_lifetime": 60.0}, TypeError, "max_lifetime is an int of seconds, not float"),
        ({"max_lifetime": -5}, ValueError, "max_lifetime must be >= 1"),
        ({"max_per_request": True}, TypeError, "max_per_request is an int of atomic units"),
        ({"max_per_request": -1}, ValueError, "max_per_request must be >= 0"),
    ],
)
def test_each_field_is_checked_and_the_error_names_it(
    fields: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        SpendPolicy(**{"max_per_request": 50_000, **fields})  # type: ignore[arg-type]


def test_lists_are_accepted_and_stored_as_the_frozen_types() -> None:
    policy = SpendPolicy(
        max_per_request=50_000,
        networks=["eip155:84532", "eip155:8453"],  # type: ignore[arg-type]
        assets=[BASE_USDC],  # type: ignore[arg-type]
        payees={PAYEE},  # type: ignore[arg-type]
        origins=(ORIGIN.upper(),),  # type: ignore[arg-type]
        schemes=["exact"],  # type: ignore[arg-type]
    )
    assert policy.networks == ("eip155:84532", "eip155:8453")
    assert policy.assets == frozenset({BASE_USDC.lower()})
    assert policy.payees == frozenset({PAYEE.lower()})
    assert policy.origins == frozenset({ORIGIN.lower()})
    assert policy.schemes == ("exact",)
    assert hash(policy) == hash(dataclasses.replace(policy))


def test_chooses_the_cheapest_acceptable_option() -> None:
    policy = SpendPolicy(max_per_request=50_000)
    offered = [option(amount="20000"), option(amount="9000"), option(amount="60000")]
    assert policy.choose(offered, ORIGIN) == (1, offered[1])


def test_ties_go_to_the_preferred_network() -> None:
    policy = SpendPolicy(max_per_request=50_000, networks=("eip155:84532", "eip155:8453"))
    offered = [option(), option(network="eip155:84532", asset=SEPOLIA_USDC)]
    assert policy.choose(offered, ORIGIN)[0] == 1


def test_v1_network_names_are_understood() -> None:
    policy = SpendPolicy(max_per_request=50_000, networks=("eip155:8453",))
    assert policy.choose([option(network="base")], ORIGIN)[0] == 0


def test_over_the_cap_is_spend_cap_exceeded_with_the_reason() -> None:
    policy = SpendPolicy(max_per_request=9_999)
    with pytest.raises(SpendCapExceeded, match="10000 > max_per_request 9999") as caught:
        policy.choose([option()], ORIGIN)
    assert list(caught.value.refusals) == [0]


@pytest.mark.parametrize(
    ("policy", "offered", "reason"),
    [
        (SpendPolicy(max_per_request=10**9), option(network="eip155:1"), "not a known USDC"),
        (SpendPolicy(max_per_request=10**9, networks=("eip155:84532",)), option(), "network eip155:8453"),
        (SpendPolicy(max_per_request=10**9), option(network="solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"), "not an EVM"),
        (SpendPolicy(max_per_request=10**9), option(scheme="batch-settlement"), "scheme 'batch-settlement'"),
        (SpendPolicy(max_per_request=10**9, schemes=("exact",)), option(scheme="upto"), "scheme 'upto'"),
        (SpendPolicy(max_per_request=10**9), option(scheme="upto"), "no facilitatorAddress"),
        (SpendPolicy(max_per_request=10**9), option(payTo="merchant"), "not an EVM address"),
        (SpendPolicy(max_per_request=10**9), option(maxTimeoutSeconds=0), "leaves no time"),
        (SpendPolicy(max_per_request=10**9), option(maxTimeoutSeconds=-5), "leaves no time"),
        (SpendPolicy(max_per_request=10**9, payees=frozenset({BASE_USDC})), option(), "payee"),
        (SpendPolicy(max_per_request=10**9, origins=frozenset({"https://other.example"})), option(), "origin"),
        (SpendPolicy(max_per_request=10**9, assets=frozenset({SEPOLIA_USDC})), option(), "asset"),
    ],
)
def test_refusals_name_their_reason(policy: SpendPolicy, offered: PaymentRequirements, reason: str) -> None:
    with pytest.raises(NoAcceptableRequirement, match=reason) as caught:
        policy.choose([offered], ORIGIN)
    assert not isinstance(caught.value, SpendCapExceeded)


def test_allow_lists_compare_addresses_and_origins_case_insensitively() -> None:
    policy = SpendPolicy(
        max_per_request=10**9,
        payees=frozenset({PAYEE.lower()}),
        assets=frozenset({BASE_USDC.upper().replace("0X", "0x")}),
        origins=frozenset({"HTTPS://API.EXAMPLE.COM"}),
    )
    assert policy.choose([option()], ORIGIN)[0] == 0


def test_an_explicitly_allowed_unknown_asset_can_be_paid() -> None:
    token = "0x1111111111111111111111111111111111111111"
    policy = SpendPolicy(max_per_request=10**9, assets=frozenset({token}))
    assert policy.choose([option(asset=token)], ORIGIN)[0] == 0


def test_malformed_options_and_mixed_refusals_are_all_reported() -> None:
    policy = SpendPolicy(max_per_request=5_000)
    with pytest.raises(SpendCapExceeded) as caught:
        policy.choose({1: option(), 2: option(scheme="teleport")}, ORIGIN, malformed={0: "amount: bad"})
    assert caught.value.refusals.keys() == {0, 1, 2}
    assert "option 0: amount: bad" in str(caught.value)


def test_no_options_at_all() -> None:
    with pytest.raises(NoAcceptableRequirement, match="offered none"):
        SpendPolicy(max_per_request=1).choose([], ORIGIN)


def test_an_upto_option_with_a_facilitator_is_acceptable() -> None:
    upto = option(scheme="upto", extra={"facilitatorAddress": PAYEE, "assetTransferMethod": "permit2"})
    assert SpendPolicy(max_per_request=50_000).choose([upto], ORIGIN)[0] == 0


def test_the_announced_ceiling_caps_below_the_policy() -> None:
    policy = SpendPolicy(max_per_request=50_000)
    assert policy.choose([option()], ORIGIN, ceiling=10_000)[0] == 0
    with pytest.raises(SpendCapExceeded, match="announced ceiling 9999"):
        policy.choose([option()], ORIGIN, ceiling=9_999)


def test_the_policy_chooses_an_option_a_budget_covers_over_a_cheaper_one_none_covers() -> None:
    budgets = (Budget([("eip155:1", MAINNET_USDC)], 100),)
    policy = SpendPolicy(max_per_request=50_000)
    offered = [option(amount="1000"), option(network="eip155:1", asset=MAINNET_USDC, amount="2000")]

    def why(requirement: PaymentRequirements) -> str | None:
        return uncovered(budgets, requirement.asset, requirement.network, ORIGIN)

    assert policy.choose(offered, ORIGIN)[0] == 0  # without the books, the cheaper one
    assert policy.choose(offered, ORIGIN, uncovered=why)[0] == 1
    with pytest.raises(NotBudgeted, match=r"option 0: no budget covers asset 0x833589fC.* on eip155:8453") as caught:
        policy.choose(offered[:1], ORIGIN, uncovered=why)
    assert isinstance(caught.value, SpendCapExceeded)
    assert set(caught.value.refusals) == {0}
