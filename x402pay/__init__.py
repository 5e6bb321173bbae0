"""x402pay: pay for HTTP calls over the x402 protocol, safely."""

from x402pay.errors import AnvilNotFound, AnvilStartError, DevnetError, X402PayError

__version__ = "0.1.0"

__all__ = [
    "AnvilNotFound",
    "AnvilStartError",
    "DevnetError",
    "X402PayError",
    "__version__",
]
