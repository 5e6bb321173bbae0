"""A real local EVM for tests: anvil, the x402 contracts at their canonical addresses, pytest fixtures.

    with Anvil() as anvil:
        devnet = deploy_devnet(anvil.rpc_url)

In pytest, the fixtures of `x402pay.testing.pytest_plugin` are registered automatically.
"""

from x402pay.testing.anvil import Anvil, find_anvil
from x402pay.testing.artifacts import Artifact, load_artifact
from x402pay.testing.devnet import ANVIL_MNEMONIC, Devnet, anvil_account, deploy_devnet

__all__ = [
    "ANVIL_MNEMONIC",
    "Anvil",
    "Artifact",
    "Devnet",
    "anvil_account",
    "deploy_devnet",
    "find_anvil",
    "load_artifact",
]
