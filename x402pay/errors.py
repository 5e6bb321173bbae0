"""The x402pay error tree.

Every error the library raises on purpose derives from `X402PayError`; foreign exceptions (web3, eth-account,
pydantic, subprocess) are mapped to these at one choke point and chained with ``raise ... from exc``.

    X402PayError
    └── DevnetError                 the local-chain kit could not do what was asked
        ├── AnvilNotFound           no anvil binary (env var, PATH, node_modules): ours to install
        └── AnvilStartError         anvil started but did not come up, or exited early
"""

from __future__ import annotations


class X402PayError(Exception):
    """Base class of every error x402pay raises on purpose."""


class DevnetError(X402PayError):
    """The local-chain kit (anvil, the devnet deployer) failed."""


class AnvilNotFound(DevnetError):
    """No anvil binary was found; the message says how to install one."""


class AnvilStartError(DevnetError):
    """Anvil was found but did not start, did not answer RPC, or exited early."""
