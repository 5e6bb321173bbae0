"""deploy_devnet and the pytest fixtures: contracts at canonical addresses, funded payers, isolation."""

from __future__ import annotations

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from x402pay._protocol.addresses import (
    BATCH_SETTLEMENT_ADDRESS,
    ERC3009_DEPOSIT_COLLECTOR_ADDRESS,
    EXACT_PERMIT2_PROXY_ADDRESS,
    MULTICALL3_ADDRESS,
    PERMIT2_ADDRESS,
    PERMIT2_DEPOSIT_COLLECTOR_ADDRESS,
    UPTO_PERMIT2_PROXY_ADDRESS,
)
from x402pay._protocol.networks import known_asset
from x402pay.testing import Devnet, anvil_account, load_artifact
from x402pay.testing._devnet import DEFAULT_PAYER_USDC, MAX_UINT256, STALE_SECONDS

pytestmark = pytest.mark.chain


def test_canonical_addresses_carry_the_shipped_runtime_code(x402pay_chain: Devnet) -> None:
    web3 = x402pay_chain.web3()
    expected = {
        PERMIT2_ADDRESS: "Permit2",
        EXACT_PERMIT2_PROXY_ADDRESS: "X402ExactPermit2Proxy",
        UPTO_PERMIT2_PROXY_ADDRESS: "X402UptoPermit2Proxy",
        MULTICALL3_ADDRESS: "Multicall3",
        ERC3009_DEPOSIT_COLLECTOR_ADDRESS: "ERC3009DepositCollector",
        PERMIT2_DEPOSIT_COLLECTOR_ADDRESS: "Permit2DepositCollector",
    }
    for address, name in expected.items():
        assert Web3.to_hex(web3.eth.get_code(address)) == load_artifact(name)["deployedBytecode"], name
    assert (x402pay_chain.permit2, x402pay_chain.exact_proxy, x402pay_chain.upto_proxy, x402pay_chain.multicall3) == (
        PERMIT2_ADDRESS,
        EXACT_PERMIT2_PROXY_ADDRESS,
        UPTO_PERMIT2_PROXY_ADDRESS,
        MULTICALL3_ADDRESS,
    )
    channels = (x402pay_chain.batch_settlement, x402pay_chain.erc3009_collector, x402pay_chain.permit2_collector)
    assert channels == (BATCH_SETTLEMENT_ADDRESS, ERC3009_DEPOSIT_COLLECTOR_ADDRESS, PERMIT2_DEPOSIT_COLLECTOR_ADDRESS)


def test_the_batch_settlement_copy_signs_under_its_canonical_address(x402pay_chain: Devnet) -> None:
    # Its EIP-712 name and version live in immutables, so the copy is the deployed code, not the compiler's.
    settlement = x402pay_chain.contract("X402BatchSettlement", BATCH_SETTLEMENT_ADDRESS)
    _, name, version, chain_id, verifying_contract, _, _ = settlement.functions.eip712Domain().call()
    assert (name, version, chain_id) == ("x402 Batch Settlement", "1", 31337)
    assert verifying_contract == BATCH_SETTLEMENT_ADDRESS
    for collector in (ERC3009_DEPOSIT_COLLECTOR_ADDRESS, PERMIT2_DEPOSIT_COLLECTOR_ADDRESS):
        abi = load_artifact("ERC3009DepositCollector")["abi"]
        bound = x402pay_chain.web3().eth.contract(address=collector, abi=abi)
        assert bound.functions.x402BatchSettlement().call() == BATCH_SETTLEMENT_ADDRESS


def test_accounts_and_funding(x402pay_chain: Devnet) -> None:
    usdc = x402pay_chain.contract("TestUSDC", x402pay_chain.usdc)
    assert x402pay_chain.chain_id == 31337
    assert x402pay_chain.network == "eip155:31337"
    assert x402pay_chain.deployer.address == anvil_account(0).address
    assert usdc.functions.minter().call() == x402pay_chain.deployer.address
    assert len(x402pay_chain.payers) == 3
    roles = {x402pay_chain.deployer.address, x402pay_chain.facilitator.address, x402pay_chain.payee.address}
    assert len(roles | {payer.address for payer in x402pay_chain.payers}) == 6
    for payer in x402pay_chain.payers:
        assert usdc.functions.balanceOf(payer.address).call() == DEFAULT_PAYER_USDC
        assert usdc.functions.allowance(payer.address, PERMIT2_ADDRESS).call() == MAX_UINT256
    assert usdc.functions.balanceOf(x402pay_chain.payee.address).call() == 0
    assert usdc.functions.decimals().call() == 6


def test_snapshot_and_revert_undo_state_and_time(x402pay_chain: Devnet) -> None:
    usdc = x402pay_chain.contract("TestUSDC", x402pay_chain.usdc)
    payee = x402pay_chain.payee.address
    start = x402pay_chain.chain_time()
    snapshot = x402pay_chain.snapshot()
    usdc.functions.mint(payee, 5).transact({"from": x402pay_chain.deployer.address})
    assert x402pay_chain.increase_time(3600) >= start + 3600
    assert usdc.functions.balanceOf(payee).call() == 5
    x402pay_chain.revert(snapshot)
    assert usdc.functions.balanceOf(payee).call() == 0
    assert x402pay_chain.chain_time() < start + 3600


def test_the_payer_fixture_is_a_funded_payer(
    x402pay_payer: LocalAccount, x402pay_chain: Devnet, x402pay_web3: Web3
) -> None:
    usdc = x402pay_web3.eth.contract(address=x402pay_chain.usdc, abi=load_artifact("TestUSDC")["abi"])
    assert x402pay_payer in x402pay_chain.payers
    assert usdc.functions.balanceOf(x402pay_payer.address).call() == DEFAULT_PAYER_USDC


PLUGIN_ISOLATION_TESTS = """
import pytest

def test_first_mints(x402pay_chain):
    usdc = x402pay_chain.contract("TestUSDC", x402pay_chain.usdc)
    usdc.functions.mint(x402pay_chain.payee.address, 7).transact({"from": x402pay_chain.deployer.address})
    assert usdc.functions.balanceOf(x402pay_chain.payee.address).call() == 7

def test_second_sees_a_clean_chain(x402pay_chain):
    usdc = x402pay_chain.contract("TestUSDC", x402pay_chain.usdc)
    assert usdc.functions.balanceOf(x402pay_chain.payee.address).call() == 0
"""


def test_plugin_isolates_tests_from_each_other(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PLUGIN_ISOLATION_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


NEEDS_CHAIN = """
def test_needs_chain(x402pay_devnet):
    assert x402pay_devnet.chain_id
"""


def test_plugin_skips_without_anvil_on_a_users_machine(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("X402PAY_REQUIRE_CHAIN", raising=False)
    monkeypatch.setenv("X402PAY_ANVIL", "/nonexistent/anvil")
    pytester.makepyfile(NEEDS_CHAIN)
    result = pytester.runpytest_subprocess("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*needs anvil*npm ci*"])


def test_plugin_fails_without_anvil_in_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("X402PAY_ANVIL", "/nonexistent/anvil")
    pytester.makepyfile(NEEDS_CHAIN)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*a chain test needs anvil*"])


def test_the_devnet_token_is_the_known_devnet_usdc(x402pay_chain: Devnet) -> None:
    asset = known_asset(x402pay_chain.chain_id, x402pay_chain.usdc)
    assert asset is not None
    usdc = x402pay_chain.contract("TestUSDC", x402pay_chain.usdc)
    assert (asset.name, asset.decimals) == (usdc.functions.name().call(), usdc.functions.decimals().call())


def test_a_stale_latest_block_is_brought_to_the_present_and_a_fresh_one_is_left_alone(x402pay_chain: Devnet) -> None:
    latest = x402pay_chain.web3().eth.block_number
    x402pay_chain.keep_time(now=x402pay_chain.chain_time() + STALE_SECONDS - 1)
    assert x402pay_chain.web3().eth.block_number == latest
    x402pay_chain.keep_time(now=x402pay_chain.chain_time() + STALE_SECONDS + 120)
    assert x402pay_chain.web3().eth.block_number == latest + 1
