"""The chain edge: a Web3 for an RPC URL, with one timeout, and the one mapping of RPC failures to ours.

Everything that reads the chain from a URL (the Permit2 allowance check, receipt verification, reconcile, the CLI,
the local facilitator) gets its ``Web3`` or ``AsyncWeb3`` here, so no read waits on web3's own 30 s default or
multiplies it by web3's retries. web3 is imported only when one is asked for: it takes a second to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from x402pay.errors import ChainUnavailable

if TYPE_CHECKING:
    from web3 import AsyncWeb3, Web3

#: Seconds one JSON-RPC request may take before it fails.
RPC_TIMEOUT: Final = 5.0


def web3_for(rpc_url: str, *, timeout: float = RPC_TIMEOUT) -> Web3:
    """A ``Web3`` on `rpc_url` whose every request fails after `timeout` seconds, and is not retried."""
    from web3 import HTTPProvider, Web3

    # web3 retries a failed read up to five times: a stalled endpoint would hold the caller five timeouts long.
    # It also asks for the chain id before every eth_call, gas estimate and transaction it validates (the local
    # facilitator made 6 of its 11 requests per verification for it): an endpoint's chain id is asked once.
    provider = HTTPProvider(
        rpc_url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None,
        cache_allowed_requests=True, cacheable_requests={"eth_chainId"},
    )  # fmt: skip
    return Web3(provider)


def async_web3_for(rpc_url: str, *, timeout: float = RPC_TIMEOUT) -> AsyncWeb3[Any]:
    """An ``AsyncWeb3`` on `rpc_url` whose every request fails after `timeout` seconds, and is not retried."""
    from aiohttp import ClientTimeout
    from web3 import AsyncHTTPProvider, AsyncWeb3

    provider = AsyncHTTPProvider(
        rpc_url, request_kwargs={"timeout": ClientTimeout(total=timeout)}, exception_retry_configuration=None
    )
    return AsyncWeb3(provider)


def chain_unavailable(exc: Exception, what: str) -> ChainUnavailable:
    """The error for an RPC library's failure (web3, requests, aiohttp) to read `what` before signing.

    The exception is named by its type only: its message may carry the endpoint's URL, and with it an API key.
    """
    return ChainUnavailable(f"{what} could not be read from rpc_url ({type(exc).__name__}); nothing was signed")
