"""Contract addresses that are the same on every EVM chain (CREATE2 deployments)."""

from __future__ import annotations

from typing import Final

from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address

#: Uniswap Permit2 (its SignatureTransfer half is what x402 uses).
PERMIT2_ADDRESS: Final[ChecksumAddress] = to_checksum_address("0x000000000022D473030F116dDEE9F6B43aC78BA3")
#: x402ExactPermit2Proxy, the Permit2 spender for `exact` payments.
EXACT_PERMIT2_PROXY_ADDRESS: Final[ChecksumAddress] = to_checksum_address("0x402085c248EeA27D92E8b30b2C58ed07f9E20001")
#: x402UptoPermit2Proxy, the Permit2 spender for `upto` payments (sources disagree on its checksum spelling).
UPTO_PERMIT2_PROXY_ADDRESS: Final[ChecksumAddress] = to_checksum_address("0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002")
#: Multicall3, which facilitators use to batch reads and diagnose failed simulations.
MULTICALL3_ADDRESS: Final[ChecksumAddress] = to_checksum_address("0xcA11bde05977b3631167028862bE2a173976CA11")
#: x402BatchSettlement, the escrow of the `batch-settlement` scheme (channels, vouchers, claims, refunds).
BATCH_SETTLEMENT_ADDRESS: Final[ChecksumAddress] = to_checksum_address("0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003")
#: ERC3009DepositCollector: pulls a `batch-settlement` deposit with EIP-3009 `receiveWithAuthorization`.
ERC3009_DEPOSIT_COLLECTOR_ADDRESS: Final[ChecksumAddress] = to_checksum_address(
    "0x4020806089470a89826cB9fB1f4059150b550004"
)
#: Permit2DepositCollector: pulls a `batch-settlement` deposit with a Permit2 witness transfer.
PERMIT2_DEPOSIT_COLLECTOR_ADDRESS: Final[ChecksumAddress] = to_checksum_address(
    "0x4020425FAf3B746C082C2f942b4E5159887B0005"
)
