"""The local-chain kit's errors, a branch of the x402pay error tree (see `x402pay.errors`).

X402PayError
└── DevnetError           the local chain's or the host's: the kit could not do what was asked
    ├── AnvilNotFound     the host's: no anvil binary (env var, PATH, node_modules); the message says how to get one
    └── AnvilStartError   the host's: anvil started but did not come up, or exited early
"""

from x402pay.errors import X402PayError


class DevnetError(X402PayError):
    """The local-chain kit (anvil, the devnet deployer) failed."""


class AnvilNotFound(DevnetError):
    """No anvil binary was found; the message says how to install one."""


class AnvilStartError(DevnetError):
    """Anvil was found but did not start, did not answer RPC, or exited early."""
