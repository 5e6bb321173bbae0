"""Budget, the value: what it covers (USDC anywhere, one address, a named set), how it says so, and that "USDC
anywhere" is exactly what a policy pays when it names no asset."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from x402pay._policy import SpendPolicy
from x402pay._protocol.models import PaymentRequirements
from x402pay._protocol.networks import DEVNET_CHAIN_IDS, KNOWN_ASSETS, caip2
from x402pay.ledger import ANY_USDC, DAY, EACH_ORIGIN, Budget
from x402pay.ledger._model import uncovered

BASE_USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
MAINNET_USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
DEVNET_USDC = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
OTHER_TOKEN = "0x" + "ee" * 20
PAYEE = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
ORIGIN = "https://api.example.com"


def option(network: str, asset: str, amount: int = 10_000) -> PaymentRequirements:
    return PaymentRequirements.model_validate({
        "scheme": "exact", "network": network, "amount": str(amount), "asset": asset, "payTo": PAYEE,
        "maxTimeoutSeconds": 60, "extra": {"name": "USD Coin", "version": "2"},
    })  # fmt: skip


def test_any_usdc_covers_every_known_usdc_deployment_and_the_devnets_test_usdc() -> None:
    budget = Budget(ANY_USDC, 5_000_000)
    assert len(budget.covered) == len(KNOWN_ASSETS)
    for chain_id in (8453, 84532, 1, 137, 43114, 43113, *DEVNET_CHAIN_IDS):
        assert any(network == caip2(chain_id) for network, _ in budget.covered)
    assert budget.applies_to(BASE_USDC, "eip155:8453", ORIGIN)
    assert budget.applies_to(BASE_USDC.lower(), "base", ORIGIN)  # a v1 challenge names the chain so
    assert budget.applies_to(MAINNET_USDC, "eip155:1", ORIGIN)
    assert budget.applies_to(DEVNET_USDC, "eip155:31337", ORIGIN)
    assert budget.applies_to(DEVNET_USDC, "eip155:1337", ORIGIN)


@pytest.mark.parametrize(
    ("asset", "network"),
    [
        (BASE_USDC, "eip155:1"),  # Base's USDC address on another chain is not USDC
        (OTHER_TOKEN, "eip155:8453"),
        (DEVNET_USDC, "eip155:8453"),
        (BASE_USDC, "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"),
        (DEVNET_USDC, "eip155:31338"),  # a chain whose test USDC x402pay does not know
        (BASE_USDC, "eip155:08453"),  # Base, spelled so that the budget sums (by the chain's names) would miss it
    ],
)
def test_any_usdc_covers_nothing_else(asset: str, network: str) -> None:
    assert not Budget(ANY_USDC, 1).applies_to(asset, network, ORIGIN)


def test_usdc_anywhere_is_exactly_what_a_policy_naming_no_asset_pays() -> None:
    policy, budget = SpendPolicy(max_per_request=10**12), Budget(ANY_USDC, 1)
    addresses = {address for _, address in KNOWN_ASSETS} | {OTHER_TOKEN}
    chains = {chain_id for chain_id, _ in KNOWN_ASSETS} | {10, 31338}
    for chain_id in chains:
        for address in addresses:
            offered = option(caip2(chain_id), address)
            paid = policy.refusal(offered, ORIGIN) is None
            assert paid == budget.applies_to(address, caip2(chain_id), ORIGIN), (chain_id, address)


def test_a_named_set_mixes_addresses_on_any_network_and_network_address_pairs() -> None:
    budget = Budget([OTHER_TOKEN, ("base", BASE_USDC), ("eip155:1", MAINNET_USDC)], 100, window=DAY)
    assert budget.asset == frozenset(
        {OTHER_TOKEN, ("eip155:8453", BASE_USDC.lower()), ("eip155:1", MAINNET_USDC.lower())}
    )
    assert budget.covered == (
        (None, OTHER_TOKEN),
        ("eip155:1", MAINNET_USDC.lower()),
        ("eip155:8453", BASE_USDC.lower()),
    )
    assert budget.applies_to(OTHER_TOKEN, "eip155:137", ORIGIN)
    assert budget.applies_to(BASE_USDC, "eip155:8453", ORIGIN)
    assert not budget.applies_to(BASE_USDC, "eip155:1", ORIGIN)
    assert budget.describe() == "[{0x833589fc… on eip155:8453, 0xa0b86991… on eip155:1, 0xeeeeeeee…} per day]"


def test_a_network_narrows_what_a_budget_covers_to_that_chain() -> None:
    budget = Budget(ANY_USDC, 100, network="base")
    assert budget.network == "eip155:8453"
    assert budget.covered == (("eip155:8453", BASE_USDC.lower()),)
    assert budget.describe() == "[USDC on eip155:8453 in total]"
    assert not Budget(OTHER_TOKEN, 1, network="eip155:1").applies_to(OTHER_TOKEN, "eip155:8453", ORIGIN)
    assert Budget([("eip155:1", MAINNET_USDC), OTHER_TOKEN], 1, network="eip155:1").covered == (
        ("eip155:1", MAINNET_USDC.lower()),
        ("eip155:1", OTHER_TOKEN),
    )


def test_a_budget_is_an_immutable_hashable_value() -> None:
    one = Budget([BASE_USDC, ("eip155:1", MAINNET_USDC)], 100, origin=EACH_ORIGIN)
    same = Budget((("eip155:1", MAINNET_USDC.lower()), BASE_USDC.lower()), 100, origin="*")
    assert one == same
    assert hash(one) == hash(same)
    # Budgets travel to worker processes pickled (the ledger's process tests do it); these are our own bytes.
    assert pickle.loads(pickle.dumps(one)) == one  # noqa: S301
    assert pickle.loads(pickle.dumps(Budget(ANY_USDC, 1))).asset is ANY_USDC  # noqa: S301
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.limit = 1  # type: ignore[misc]
    assert dataclasses.replace(Budget(ANY_USDC, 1), network="eip155:1").covered == (("eip155:1", MAINNET_USDC.lower()),)
    assert repr(Budget(ANY_USDC, 1)).startswith("Budget(asset=ANY_USDC, limit=1,")


@pytest.mark.parametrize(
    ("asset", "fields", "error", "message"),
    [
        ([], {}, TypeError, "non-empty collection"),
        (8453, {}, TypeError, "a budget's asset is ANY_USDC, an address, or"),
        ([("eip155:1", MAINNET_USDC, "extra")], {}, TypeError, "an address or a .network, address. pair"),
        ([("solana:mainnet", MAINNET_USDC)], {}, ValueError, "not an EVM network"),
        (ANY_USDC, {"network": "eip155:10"}, ValueError, "covers nothing: x402pay knows no USDC on eip155:10"),
        (BASE_USDC, {"network": "mainnet-ish"}, ValueError, "not an EVM network"),
    ],
)
def test_a_budget_that_could_not_mean_what_it_says_is_refused_when_made(
    asset: object, fields: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Budget(asset, 1, **fields)  # type: ignore[arg-type]


def test_uncovered_names_the_payment_and_every_budget_that_exists() -> None:
    budgets = (Budget(ANY_USDC, 5, name="usdc"), Budget(OTHER_TOKEN, 1, origin="https://a.example"))
    assert uncovered((), OTHER_TOKEN, "eip155:1", ORIGIN) is None  # no budgets: no refusal
    assert uncovered(budgets, BASE_USDC, "eip155:8453", ORIGIN) is None
    reason = uncovered(budgets, OTHER_TOKEN, "eip155:1", ORIGIN)
    assert reason == (
        f"no budget covers asset {OTHER_TOKEN} on eip155:1 for {ORIGIN} "
        "(the budgets: 'usdc', [0xeeeeeeee… for https://a.example in total])"
    )
