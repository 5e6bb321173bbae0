"""A real local EVM for tests: anvil, the x402 contracts at their canonical addresses, pytest fixtures.

    with Anvil() as anvil:
        devnet = deploy_devnet(anvil.rpc_url)

In pytest, the fixtures of `x402pay.testing.pytest_plugin` are registered automatically. The kit's errors
derive from `DevnetError`, an `x402pay.X402PayError`: `AnvilNotFound` (no anvil binary), `AnvilStartError` (anvil
did not come up).
"""

import typing

from x402pay import _lazy
from x402pay.testing._errors import AnvilNotFound, AnvilStartError, DevnetError

if typing.TYPE_CHECKING:
    from x402pay.testing._anvil import Anvil, find_anvil
    from x402pay.testing._artifacts import Artifact, load_artifact
    from x402pay.testing._devnet import ANVIL_MNEMONIC, Devnet, anvil_account, deploy_devnet

#: Public names imported on first use (web3 and eth-account load then): the pytest plugin lives in this package, and
#: a pytest session that uses no chain fixture should not pay for them.
_LAZY = {
    "ANVIL_MNEMONIC": "x402pay.testing._devnet",
    "Anvil": "x402pay.testing._anvil",
    "Artifact": "x402pay.testing._artifacts",
    "Devnet": "x402pay.testing._devnet",
    "anvil_account": "x402pay.testing._devnet",
    "deploy_devnet": "x402pay.testing._devnet",
    "find_anvil": "x402pay.testing._anvil",
    "load_artifact": "x402pay.testing._artifacts",
}

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


__getattr__ = _lazy.lazy_names(__name__, _LAZY)
