"""Deploy the x402 contracts onto a local anvil chain: a USDC-like token, Permit2, the x402 proxies, Multicall3, and
the `batch-settlement` escrow with its two deposit collectors."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import Web3Exception

from x402pay._protocol.addresses import (
    BATCH_SETTLEMENT_ADDRESS,
    ERC3009_DEPOSIT_COLLECTOR_ADDRESS,
    EXACT_PERMIT2_PROXY_ADDRESS,
    MULTICALL3_ADDRESS,
    PERMIT2_ADDRESS,
    PERMIT2_DEPOSIT_COLLECTOR_ADDRESS,
    UPTO_PERMIT2_PROXY_ADDRESS,
)
from x402pay._rpc import web3_for
from x402pay.testing._artifacts import load_artifact
from x402pay.testing._errors import DevnetError

#: anvil's default mnemonic; its accounts are public test keys, never for real money.
ANVIL_MNEMONIC: Final = "test test test test test test test test test test test junk"
MAX_UINT256: Final = 2**256 - 1
#: 1,000 USDC in atomic units, minted to each payer.
DEFAULT_PAYER_USDC: Final = 1_000 * 10**6
_FIRST_PAYER_INDEX: Final = 3  # 0 deployer, 1 facilitator, 2 payee
#: How far behind the wall clock the latest block may fall before `Devnet.keep_time` mines a fresh one.
STALE_SECONDS: Final = 60

# Contracts whose runtime code is copied to their canonical address (they keep no constructor state).
_CANONICAL: Final = {
    "Permit2": PERMIT2_ADDRESS,
    "X402ExactPermit2Proxy": EXACT_PERMIT2_PROXY_ADDRESS,
    "X402UptoPermit2Proxy": UPTO_PERMIT2_PROXY_ADDRESS,
    "Multicall3": MULTICALL3_ADDRESS,
    "X402BatchSettlement": BATCH_SETTLEMENT_ADDRESS,
    "ERC3009DepositCollector": ERC3009_DEPOSIT_COLLECTOR_ADDRESS,
    "Permit2DepositCollector": PERMIT2_DEPOSIT_COLLECTOR_ADDRESS,
}


def anvil_account(index: int) -> LocalAccount:
    """Return anvil's dev account number `index` (derived from the default mnemonic)."""
    Account.enable_unaudited_hdwallet_features()
    account: LocalAccount = Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return account


@dataclass(frozen=True)
class Devnet:
    """A local chain with the x402 contracts deployed and accounts funded.

    `permit2`, `exact_proxy`, `upto_proxy`, `multicall3`, `batch_settlement`, `erc3009_collector` and
    `permit2_collector` are the canonical addresses, so code written for a real chain runs unchanged. The accounts
    are anvil's public test keys: `deployer` (also the USDC minter), `facilitator`, `payee` (holds no USDC), and
    `payers` (USDC minted, Permit2 approved when asked).
    """

    rpc_url: str
    chain_id: int
    usdc: ChecksumAddress
    permit2: ChecksumAddress
    exact_proxy: ChecksumAddress
    upto_proxy: ChecksumAddress
    multicall3: ChecksumAddress
    batch_settlement: ChecksumAddress
    erc3009_collector: ChecksumAddress
    permit2_collector: ChecksumAddress
    deployer: LocalAccount = field(repr=False)
    facilitator: LocalAccount = field(repr=False)
    payee: LocalAccount = field(repr=False)
    payers: tuple[LocalAccount, ...] = field(repr=False)

    @property
    def network(self) -> str:
        """The CAIP-2 network id, e.g. ``eip155:31337``."""
        return f"eip155:{self.chain_id}"

    def web3(self) -> Web3:
        """A Web3 connected to the devnet (one per Devnet value, reused)."""
        return self._web3

    @cached_property
    def _web3(self) -> Web3:
        return web3_for(self.rpc_url)

    def contract(self, name: str, address: str) -> Contract:
        """A web3 contract bound to `address` with the ABI of the shipped artifact `name`."""
        return self._web3.eth.contract(address=Web3.to_checksum_address(address), abi=load_artifact(name)["abi"])

    def snapshot(self) -> str:
        """Take an `evm_snapshot`; pass its id to `revert`."""
        return str(self._rpc("evm_snapshot"))

    def revert(self, snapshot_id: str) -> None:
        """Return the chain to a snapshot (`evm_revert`); a snapshot can be reverted to once."""
        if self._rpc("evm_revert", snapshot_id) is not True:
            raise DevnetError(f"evm_revert({snapshot_id}) failed: unknown or already used snapshot")

    def chain_time(self) -> int:
        """The latest block's timestamp: the clock that authorizations are checked against."""
        return int(self._web3.eth.get_block("latest")["timestamp"])

    def keep_time(self, now: float | None = None) -> None:
        """Mine an empty block when the latest one is more than `STALE_SECONDS` behind `now` (the wall clock).

        Calls at the latest block run at its timestamp: a test's own ``eth_call``, or a facilitator that simulates a
        settlement there (`LocalFacilitator` simulates in the pending block, timed by the node's clock). With
        automine, an idle chain makes no blocks, and a test reverted to its snapshot takes its blocks away, so after
        ten minutes (the default backdating of `validAfter`) every fresh authorization would look "not yet valid" to
        such a call. The `x402pay_chain` fixture calls this before each test's snapshot."""
        if self.chain_time() < (time.time() if now is None else now) - STALE_SECONDS:
            self._rpc("evm_mine")

    def increase_time(self, seconds: int) -> int:
        """Move the chain clock forward by `seconds`, mine a block, and return the new chain time."""
        self._rpc("evm_increaseTime", seconds)
        self._rpc("evm_mine")
        return self.chain_time()

    def _rpc(self, method: str, *params: Any) -> Any:
        response = self._web3.provider.make_request(method, list(params))  # type: ignore[arg-type]
        if "error" in response:
            raise DevnetError(f"{method} failed: {response['error']}")
        return response["result"]


def deploy_devnet(
    rpc_url: str,
    *,
    payers: int = 3,
    payer_usdc: int = DEFAULT_PAYER_USDC,
    approve_permit2: bool = True,
) -> Devnet:
    """Deploy the contracts on the anvil at `rpc_url` and fund `payers` accounts.

    Contracts that live at a canonical address are deployed normally, then their runtime code is copied there
    (`anvil_setCode`); they keep no constructor state, so the copy behaves like the original. Needs anvil's
    default dev accounts (they are unlocked, so the deployer sends plain `eth_sendTransaction`s).
    """
    web3 = web3_for(rpc_url)
    accounts = [anvil_account(index) for index in range(_FIRST_PAYER_INDEX + payers)]
    deployer = accounts[0]
    try:
        usdc = _deploy(web3, "TestUSDC", deployer.address, deployer.address)
        for name, canonical in _CANONICAL.items():
            _place_at(web3, canonical, _deploy(web3, name, deployer.address))
        token = web3.eth.contract(address=usdc, abi=load_artifact("TestUSDC")["abi"])
        for payer in accounts[_FIRST_PAYER_INDEX:]:
            _transact(web3, token.functions.mint(payer.address, payer_usdc), deployer.address)
            if approve_permit2:
                _transact(web3, token.functions.approve(PERMIT2_ADDRESS, MAX_UINT256), payer.address)
        chain_id = web3.eth.chain_id
    except (Web3Exception, OSError, ValueError) as exc:
        raise DevnetError(f"deploying the devnet on {rpc_url} failed: {exc}") from exc
    return Devnet(
        rpc_url=rpc_url,
        chain_id=chain_id,
        usdc=usdc,
        permit2=PERMIT2_ADDRESS,
        exact_proxy=EXACT_PERMIT2_PROXY_ADDRESS,
        upto_proxy=UPTO_PERMIT2_PROXY_ADDRESS,
        multicall3=MULTICALL3_ADDRESS,
        batch_settlement=BATCH_SETTLEMENT_ADDRESS,
        erc3009_collector=ERC3009_DEPOSIT_COLLECTOR_ADDRESS,
        permit2_collector=PERMIT2_DEPOSIT_COLLECTOR_ADDRESS,
        deployer=deployer,
        facilitator=accounts[1],
        payee=accounts[2],
        payers=tuple(accounts[_FIRST_PAYER_INDEX:]),
    )


def _deploy(web3: Web3, name: str, sender: ChecksumAddress, *constructor_args: Any) -> ChecksumAddress:
    artifact = load_artifact(name)
    factory = web3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    receipt = _transact(web3, factory.constructor(*constructor_args), sender)
    address: ChecksumAddress = receipt["contractAddress"]
    return address


def _transact(web3: Web3, call: Any, sender: ChecksumAddress) -> Any:
    receipt = web3.eth.wait_for_transaction_receipt(call.transact({"from": sender}))
    if receipt["status"] != 1:
        raise DevnetError(f"devnet transaction {receipt['transactionHash'].hex()} reverted")
    return receipt


def _place_at(web3: Web3, canonical: ChecksumAddress, deployed: ChecksumAddress) -> None:
    # Copy what the constructor produced, not the compiler's deployedBytecode: immutables would stay zeroed.
    runtime = web3.eth.get_code(deployed)
    response = web3.provider.make_request("anvil_setCode", [canonical, Web3.to_hex(runtime)])  # type: ignore[arg-type]
    if "error" in response:
        raise DevnetError(f"anvil_setCode at {canonical} failed (is this chain anvil?): {response['error']}")


def fund_account(rpc_url: str, usdc: str, address: str, *, usdc_amount: int, eth_wei: int) -> None:
    """Give `address` `usdc_amount` of the devnet's TestUSDC (minted by the deployer, an unlocked anvil account) and
    set its ETH balance to `eth_wei` (for gas)."""
    web3 = web3_for(rpc_url)
    try:
        target = Web3.to_checksum_address(address)
        token = web3.eth.contract(address=Web3.to_checksum_address(usdc), abi=load_artifact("TestUSDC")["abi"])
        _transact(web3, token.functions.mint(target, usdc_amount), anvil_account(0).address)
        response = web3.provider.make_request("anvil_setBalance", [target, hex(eth_wei)])  # type: ignore[arg-type]
    except (Web3Exception, OSError, ValueError) as exc:
        raise DevnetError(f"funding {address} on {rpc_url} failed: {exc}") from exc
    if "error" in response:
        raise DevnetError(f"anvil_setBalance on {rpc_url} failed (is this chain anvil?): {response['error']}")
