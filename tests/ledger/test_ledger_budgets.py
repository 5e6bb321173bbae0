"""Budgets over several assets ("USDC anywhere", a named set) and budgets that fail closed, on both backends."""

from __future__ import annotations

import json
import threading

import pytest
from ledger_support import ASSET, NETWORK, ORIGIN, Backend, Clock, areserve, reserve, run_threads

from x402pay.ledger import ANY_USDC, EACH_ORIGIN, HOUR, Budget, BudgetExceeded, Ledger, NotBudgeted
from x402pay.ledger._report import render_budgets

BASE_USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
MAINNET_USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
SECOND_DEVNET = "eip155:1337"
OTHER_TOKEN = "0x" + "ee" * 20


def test_usdc_anywhere_sums_every_chain_in_one_budget(backend: Backend) -> None:
    with backend.ledger((Budget(ANY_USDC, 100, name="usdc"),)) as ledger:
        reserve(ledger, "devnet", 30)
        reserve(ledger, "second devnet", 30, network=SECOND_DEVNET)
        reserve(ledger, "base", 20, asset=BASE_USDC, network="eip155:8453")
        reserve(ledger, "base, v1", 10, asset=BASE_USDC.lower(), network="base")
        with pytest.raises(BudgetExceeded, match="budget 'usdc' refuses 11: only 10 of 100 left") as caught:
            reserve(ledger, "mainnet", 11, asset=MAINNET_USDC, network="eip155:1")
        assert caught.value.remaining == 10
        assert ledger.remaining(MAINNET_USDC, network="eip155:1", origin=ORIGIN) == 10
        assert [status.held for status in ledger.budget_status()] == [90]
        reserve(ledger, "mainnet", 10, asset=MAINNET_USDC, network="eip155:1")
        assert ledger.budget_status()[0].remaining == 0


async def test_usdc_anywhere_sums_every_chain_in_one_budget_async(backend: Backend) -> None:
    ledger = await backend.aledger((Budget(ANY_USDC, 50),))
    try:
        await areserve(ledger, "devnet", 30)
        with pytest.raises(BudgetExceeded, match=r"\[USDC in total\] refuses 30: only 20 of 50 left"):
            await areserve(ledger, "second devnet", 30, network=SECOND_DEVNET)
        with pytest.raises(NotBudgeted, match=f"asset {OTHER_TOKEN} on {NETWORK} for {ORIGIN}"):
            await areserve(ledger, "other", 1, asset=OTHER_TOKEN)
        assert ledger.uncovered(OTHER_TOKEN, network=NETWORK, origin=ORIGIN) is not None
        assert [status.held for status in await ledger.budget_status()] == [30]
    finally:
        await ledger.aclose()


def test_a_named_set_counts_its_addresses_anywhere_and_its_pairs_on_their_chain(backend: Backend) -> None:
    budget = Budget([OTHER_TOKEN, ("eip155:8453", BASE_USDC)], 100, window=HOUR, origin=EACH_ORIGIN)
    with backend.ledger((budget,)) as ledger:
        reserve(ledger, "other on devnet", 40, asset=OTHER_TOKEN)
        reserve(ledger, "other on polygon", 40, asset=OTHER_TOKEN, network="eip155:137")
        with pytest.raises(BudgetExceeded, match="per origin per hour"):
            reserve(ledger, "base", 21, asset=BASE_USDC, network="base")
        reserve(ledger, "base elsewhere", 21, asset=BASE_USDC, network="base", origin="https://b.example")
        with pytest.raises(NotBudgeted, match=f"asset {BASE_USDC} on eip155:1 for {ORIGIN}"):
            reserve(ledger, "base's address on mainnet", 1, asset=BASE_USDC, network="eip155:1")
        with pytest.raises(NotBudgeted, match="on eip155:08453 for"):  # Base by a name the sums would not match
            reserve(ledger, "base, spelled otherwise", 1, asset=BASE_USDC, network="eip155:08453")
        assert [(status.origin, status.held) for status in ledger.budget_status()] == [
            (ORIGIN, 80),
            ("https://b.example", 21),
        ]


def test_what_a_budget_sums_is_exactly_what_it_applies_to(backend: Backend) -> None:
    """The sums in SQL and `applies_to` (which refuses or admits a payment) must agree on every spelling of an asset
    and a network, or a payment admitted by one budget could be missing from its sum."""
    big = 10**12
    budgets = (
        Budget(ANY_USDC, big),
        Budget([OTHER_TOKEN, ("base", BASE_USDC)], big),
        Budget(ANY_USDC, big, network=SECOND_DEVNET),
        Budget(ASSET, big, network=NETWORK),
    )
    assets = (ASSET, ASSET.lower(), BASE_USDC, OTHER_TOKEN, MAINNET_USDC)
    networks = (NETWORK, SECOND_DEVNET, "base", "eip155:8453", "eip155:08453", "eip155:1", "solana:mainnet")
    payments = [(asset, network) for asset in assets for network in networks]
    with backend.ledger() as books:  # without budgets, every payment is held
        for number, (asset, network) in enumerate(payments):
            reserve(books, str(number), number + 1, asset=asset, network=network)
    with backend.ledger(budgets) as ledger:
        held = [status.held for status in ledger.budget_status()]
    counted = [
        sum(number + 1 for number, (asset, network) in enumerate(payments) if budget.applies_to(asset, network, ORIGIN))
        for budget in budgets
    ]
    assert held == counted
    assert all(counted)


def test_with_budgets_a_payment_no_budget_covers_is_refused_and_nothing_is_held(backend: Backend) -> None:
    budgets = (Budget(ASSET, 1_000, network=NETWORK), Budget(ANY_USDC, 1_000, origin="https://usdc.example"))
    with backend.ledger(budgets) as ledger:
        refusals = {
            "another asset": {"asset": OTHER_TOKEN},
            "another network": {"network": SECOND_DEVNET},
            "another origin": {"network": SECOND_DEVNET, "origin": "https://elsewhere.example"},
        }
        for key, fields in refusals.items():
            with pytest.raises(NotBudgeted) as caught:
                reserve(ledger, key, 1, **fields)
            message = str(caught.value)
            assert fields.get("asset", ASSET) in message
            assert fields.get("network", NETWORK) in message
            assert fields.get("origin", ORIGIN) in message
            assert f"[0x5fbdb231… on {NETWORK} in total], [USDC for https://usdc.example in total]" in message
            assert ledger.lookup(key) is None
        reserve(ledger, "covered by the usdc budget", 1, network=SECOND_DEVNET, origin="https://usdc.example")
        assert ledger.entries(limit=10)[0].key == "covered by the usdc budget"


def test_a_retry_of_a_signed_payment_is_answered_even_if_no_budget_covers_it_any_more(backend: Backend) -> None:
    with backend.ledger() as before:
        entry = reserve(before, "k", 10, asset=OTHER_TOKEN)
        before.authorize(entry.id, payment={"header": "x"}, payer=ASSET, nonce="0x01", valid_before=2, method="eip3009")
    with backend.ledger((Budget(ANY_USDC, 100),)) as after:
        assert reserve(after, "k", 10, asset=OTHER_TOKEN).payment == {"header": "x"}  # re-sent, never signed again
        with pytest.raises(NotBudgeted):
            reserve(after, "k2", 10, asset=OTHER_TOKEN)


def test_a_ledger_without_budgets_holds_any_payment(backend: Backend) -> None:
    with backend.ledger() as ledger:
        reserve(ledger, "anything", 10**12, asset=OTHER_TOKEN, network="eip155:424242")
        assert ledger.uncovered(OTHER_TOKEN, network="eip155:424242", origin=ORIGIN) is None
        assert ledger.remaining(OTHER_TOKEN, network="eip155:424242", origin=ORIGIN) is None


def test_threads_paying_on_two_chains_never_overrun_one_usdc_budget(backend: Backend) -> None:
    budgets = (Budget(ANY_USDC, 7 * 13),)
    backend.ledger(budgets).close()  # create the schema before the race
    start = threading.Barrier(8)

    def pay(index: int) -> int:
        with backend.ledger(budgets) as ledger:
            start.wait(60)
            return sum(_reserved(ledger, f"{index}-{number}", NETWORK if number % 2 else SECOND_DEVNET)
                       for number in range(4))  # fmt: skip

    assert sum(run_threads(8, pay)) == 13
    with backend.ledger(budgets) as ledger:
        networks = {entry.network for entry in ledger.entries(limit=100)}
        assert networks == {NETWORK, SECOND_DEVNET}
        assert ledger.budget_status()[0].held == 7 * 13


def _reserved(ledger: Ledger, key: str, network: str) -> int:
    try:
        reserve(ledger, key, 7, network=network)
    except BudgetExceeded:
        return 0
    return 1


def test_reports_say_what_a_multi_asset_budget_covers_and_count_it_in_usdc(backend: Backend, clock: Clock) -> None:
    budgets = (Budget(ANY_USDC, 1_000_000), Budget([(NETWORK, ASSET), ("eip155:8453", BASE_USDC)], 500_000, name="two"))
    with backend.ledger(budgets, clock=clock) as ledger:
        reserve(ledger, "a", 250_000)
        reserve(ledger, "b", 100_000, asset=BASE_USDC, network="eip155:8453")
        reserve(ledger, "c", 5, network=SECOND_DEVNET)
        text = render_budgets(ledger)
        data = json.loads(render_budgets(ledger, as_json=True))
    assert text.splitlines()[1].split() == ["[USDC", "in", "total]", "(all)", "0.350005", "USDC", "1.000000", "USDC",
                                            "0.649995", "USDC"]  # fmt: skip
    assert text.splitlines()[2].split()[:3] == ["'two'", "(all)", "0.350000"]  # not the second devnet's 5
    assert (data[0]["asset"], data[0]["held"]) == ("USDC", 350_005)
    assert f"eip155:1337/erc20:{ASSET.lower()}" in data[0]["covers"]
    pairs = [f"{NETWORK}/erc20:{ASSET.lower()}", f"eip155:8453/erc20:{BASE_USDC.lower()}"]
    assert data[1]["asset"] == data[1]["covers"] == pairs
