"""The I/O edge of verification: JSON-RPC batches over a Web3 (sync) or AsyncWeb3 (async) provider.

Every round of every claim goes out as JSON-RPC batch POSTs of at most `batch_size` requests, so verifying many
receipts costs a few HTTP requests, not one per field. A failing endpoint never raises: the claims it could not
answer get the verdict ``pending`` (check ``rpc``) with the reason; the exceptions are mapped in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from web3 import AsyncWeb3, Web3
from web3.exceptions import Web3Exception
from web3.providers import AsyncBaseProvider, BaseProvider, JSONBaseProvider
from web3.types import RPCEndpoint

from x402pay.verify._chain import DEFAULT_LOOKBACK_BLOCKS, Rules
from x402pay.verify._claims import Claim, Verification
from x402pay.verify._steps import Batch, Request, RpcFailure, unpack

#: Requests per JSON-RPC batch POST (public endpoints commonly accept 100 to 1,000).
DEFAULT_BATCH_SIZE: Final = 500
# What a provider raises when the endpoint is down, slow, or answers garbage (requests' errors and
# TimeoutError are OSErrors; web3 reading a batch answer whose items are not objects, or whose ids cannot be
# compared, raises AttributeError, TypeError or KeyError).
_RPC_FAILURES: Final = (
    Web3Exception, OSError, ValueError, aiohttp.ClientError, AttributeError, TypeError, KeyError, IndexError,
)  # fmt: skip


def verify_claim(
    web3: Web3,
    claim: Claim,
    *,
    confirmations: int = 0,
    seen_transactions: Callable[[str], bool] | None = None,
    lookback_blocks: int = DEFAULT_LOOKBACK_BLOCKS,
) -> Verification:
    """Verify one settlement claim against the chain `web3` is connected to; see `verify_claims`."""
    rules = Rules(confirmations, seen_transactions, lookback_blocks)
    return _run(web3, [claim], rules, DEFAULT_BATCH_SIZE)[0]


def verify_claims(
    web3: Web3,
    claims: Iterable[Claim],
    *,
    confirmations: int = 0,
    seen_transactions: Callable[[str], bool] | None = None,
    lookback_blocks: int = DEFAULT_LOOKBACK_BLOCKS,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[Verification]:
    """Verify many claims together with batched JSON-RPC; the verifications come in the order of `claims`.

    `confirmations` is how many blocks (the transaction's included) must hold the settlement for ``verified``
    (0 and 1 both accept a mined transaction). `seen_transactions(tx_hash)` is the ledger's answer to "did a
    payment other than this claim's already claim this lower-case hash?"; True makes the verdict a ``replay``
    mismatch. Claims without tx hash are searched for in the last `lookback_blocks` blocks.
    """
    return _run(web3, list(claims), Rules(confirmations, seen_transactions, lookback_blocks), batch_size)


async def averify_claim(
    web3: AsyncWeb3[Any],
    claim: Claim,
    *,
    confirmations: int = 0,
    seen_transactions: Callable[[str], bool] | None = None,
    lookback_blocks: int = DEFAULT_LOOKBACK_BLOCKS,
) -> Verification:
    """`verify_claim` over an AsyncWeb3."""
    rules = Rules(confirmations, seen_transactions, lookback_blocks)
    return (await _arun(web3, [claim], rules, DEFAULT_BATCH_SIZE))[0]


async def averify_claims(
    web3: AsyncWeb3[Any],
    claims: Iterable[Claim],
    *,
    confirmations: int = 0,
    seen_transactions: Callable[[str], bool] | None = None,
    lookback_blocks: int = DEFAULT_LOOKBACK_BLOCKS,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[Verification]:
    """`verify_claims` over an AsyncWeb3; the batch POSTs of one round are sent concurrently."""
    return await _arun(web3, list(claims), Rules(confirmations, seen_transactions, lookback_blocks), batch_size)


def _run(web3: Web3, claims: Sequence[Claim], rules: Rules, batch_size: int) -> list[Verification]:
    batch = Batch(claims, rules)
    while requests := batch.requests():
        batch.feed([result for chunk in _chunks(requests, batch_size) for result in _exchange(web3, chunk)])
    return batch.verifications()


async def _arun(web3: AsyncWeb3[Any], claims: Sequence[Claim], rules: Rules, batch_size: int) -> list[Verification]:
    batch = Batch(claims, rules)
    while requests := batch.requests():
        answers = await asyncio.gather(*(_aexchange(web3, chunk) for chunk in _chunks(requests, batch_size)))
        batch.feed([result for chunk in answers for result in chunk])
    return batch.verifications()


def _chunks(requests: list[Request], size: int) -> list[list[Request]]:
    if size < 1:
        raise ValueError(f"batch_size must be at least 1, got {size}")
    return [requests[start : start + size] for start in range(0, len(requests), size)]


def _exchange(web3: Web3, chunk: list[Request]) -> list[Any]:
    calls = [(RPCEndpoint(method), params) for method, params in chunk]
    try:
        responses = _post(web3.provider, calls)
    except _RPC_FAILURES as exc:
        return [RpcFailure(_describe(exc, web3.provider))] * len(chunk)
    return unpack(responses, len(chunk))


async def _aexchange(web3: AsyncWeb3[Any], chunk: list[Request]) -> list[Any]:
    calls = [(RPCEndpoint(method), params) for method, params in chunk]
    try:
        responses = await _apost(web3.provider, calls)
    except _RPC_FAILURES as exc:
        return [RpcFailure(_describe(exc, web3.provider))] * len(chunk)
    return unpack(responses, len(chunk))


def _post(provider: BaseProvider, calls: list[tuple[RPCEndpoint, Any]]) -> object:
    if isinstance(provider, JSONBaseProvider):
        with contextlib.suppress(NotImplementedError):
            return provider.make_batch_request(calls)
    return [provider.make_request(method, params) for method, params in calls]  # no batches: one at a time


async def _apost(provider: AsyncBaseProvider, calls: list[tuple[RPCEndpoint, Any]]) -> object:
    with contextlib.suppress(NotImplementedError):
        return await provider.make_batch_request(calls)
    return [await provider.make_request(method, params) for method, params in calls]


def _describe(exc: BaseException, provider: object) -> str:
    """The failure, without the endpoint's URL (its path often carries an API key)."""
    text = f"{type(exc).__name__}: {exc}"
    uri = str(getattr(provider, "endpoint_uri", "") or "")
    for secret in (uri, urlsplit(uri).path):
        if len(secret) > 1:
            text = text.replace(secret, "<rpc>")
    return f"the RPC endpoint failed: {text[:300]}"
