"""Networks and assets: CAIP-2 ids, v1 network names, known USDC deployments and their EIP-712 domains."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address

#: anvil's default chain id, used by the local devnet.
DEVNET_CHAIN_ID: Final = 31337
#: The local chains whose test USDC x402pay knows: anvil's default, and the local chain id of geth and ganache (a
#: second devnet, for payments across two chains). Neither is a public network: no real USDC lives there.
DEVNET_CHAIN_IDS: Final = (DEVNET_CHAIN_ID, 1337)

#: x402 v1 network names and their chain ids.
V1_NETWORK_CHAIN_IDS: Final[dict[str, int]] = {
    "base": 8453,
    "base-sepolia": 84532,
    "ethereum": 1,
    "polygon": 137,
    "polygon-amoy": 80002,
    "avalanche": 43114,
    "avalanche-fuji": 43113,
    "abstract": 2741,
    "abstract-testnet": 11124,
    "iotex": 4689,
    "sei": 1329,
    "sei-testnet": 713715,
    "peaq": 3338,
    "story": 1513,
    "educhain": 656476,
    "skale-base-sepolia": 1444673419,
    "megaeth": 4326,
    "monad": 143,
    "stable": 988,
    "stable-testnet": 2201,
}

_MAX_CHAIN_ID: Final = 2**64 - 1

#: Seconds between blocks of the chains whose pace is known (others count as slow as Ethereum's).
BLOCK_SECONDS: Final[dict[int, float]] = {
    1: 12.0, 8453: 2.0, 84532: 2.0, 137: 2.0, 80002: 2.0, 43114: 2.0, 43113: 2.0,
    **dict.fromkeys(DEVNET_CHAIN_IDS, 1.0),
}  # fmt: skip
#: Blocks a just-reported settlement is given to show on chain before its absence counts against the server.
PATIENCE_BLOCKS: Final = 5
#: The least wait, whatever the chain: RPC nodes behind load balancers lag each other by a few seconds.
MIN_PATIENCE: Final = 10.0


def settlement_patience(chain_id: int) -> float:
    """How long to wait for a reported settlement to show on chain `chain_id` before calling its absence a lie."""
    return max(MIN_PATIENCE, PATIENCE_BLOCKS * BLOCK_SECONDS.get(chain_id, BLOCK_SECONDS[1]))


@dataclass(frozen=True)
class Asset:
    """A token deployment and the EIP-712 domain its EIP-3009 signatures use."""

    chain_id: int
    address: ChecksumAddress
    name: str
    version: str
    decimals: int = 6


def _usdc(chain_id: int, address: str, name: str = "USD Coin") -> Asset:
    return Asset(chain_id, to_checksum_address(address), name, "2")


#: USDC deployments (and the devnet's TestUSDC, deployed first by anvil's account 0 on each devnet chain), by
#: (chain id, address).
KNOWN_ASSETS: Final[dict[tuple[int, str], Asset]] = {
    (asset.chain_id, asset.address.lower()): asset
    for asset in (
        _usdc(8453, "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"),
        _usdc(84532, "0x036CbD53842c5426634e7929541eC2318f3dCF7e", name="USDC"),
        _usdc(1, "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"),
        _usdc(137, "0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359"),
        _usdc(43114, "0xB97EF9Ef8734C71904D8002F8b6Bc66Dd9c48a6E"),
        _usdc(43113, "0x5425890298aed601595a70AB815c96711a31Bc65"),
        *(_usdc(chain_id, "0x5FbDB2315678afecb367f032d93F642f64180aa3") for chain_id in DEVNET_CHAIN_IDS),
    )
}


@lru_cache(maxsize=256)  # every paid request asks it of the same few networks, several times
def chain_id_of(network: str) -> int:
    """The chain id of a CAIP-2 ``eip155:<id>`` network or a v1 network name; ValueError if not an EVM network."""
    if network in V1_NETWORK_CHAIN_IDS:
        return V1_NETWORK_CHAIN_IDS[network]
    namespace, _, reference = network.partition(":")
    if namespace != "eip155" or not reference.isascii() or not reference.isdigit() or len(reference) > 20:
        raise ValueError(f"not an EVM network: {network!r} (expected eip155:<chain id> or a v1 name)")
    chain_id = int(reference)
    if not 0 < chain_id <= _MAX_CHAIN_ID:
        raise ValueError(f"chain id out of range in {network!r}")
    return chain_id


def caip2(chain_id: int) -> str:
    """The CAIP-2 id of an EVM chain, e.g. ``eip155:8453``."""
    return f"eip155:{chain_id}"


def network_names(chain_id: int) -> tuple[str, ...]:
    """Every name a challenge may give chain `chain_id`: its CAIP-2 id, then its v1 names."""
    return (caip2(chain_id), *(name for name, known in V1_NETWORK_CHAIN_IDS.items() if known == chain_id))


def known_asset(chain_id: int, address: str) -> Asset | None:
    """The known deployment at `address` on `chain_id`, or None."""
    return KNOWN_ASSETS.get((chain_id, address.lower()))
