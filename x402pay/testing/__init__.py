"""A real local EVM for tests: anvil, the x402 contracts at their canonical addresses, pytest fixtures.

    with Anvil() as anvil:
        devnet = deploy_devnet(anvil.rpc_url)

In pytest, the fixtures of `x402pay.testing.pytest_plugin` are registered automatically. The kit's errors
derive from `DevnetError`, an `x402pay.X402PayError`: `AnvilNotFound` (no anvil binary), `AnvilStartError` (anvil
did not come up).
"""

from x402pay.testing._anvil import Anvil, find_anvil
from x402pay.testing._artifacts import Artifact, load_artifact
from x402pay.testing._devnet import ANVIL_MNEMONIC, Devnet, anvil_account, deploy_devnet
from x402pay.testing._errors import AnvilNotFound, AnvilStartError, DevnetError

__all__ = [
    "ANVIL_MNEMONIC",
    "Anvil",
    "AnvilNotFound",
    "AnvilStartError",
    "Artifact",
    "Devnet",
    "DevnetError",
    "anvil_account",
    "deploy_devnet",
    "find_anvil",
    "load_artifact",
]
