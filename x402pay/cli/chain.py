"""The chain as the commands reach it: one JSON-RPC endpoint, a bounded wait, and failures said in our words."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

from x402pay.cli.common import CommandFailed, UsageError, progress, seconds
from x402pay.cli.config import setting

if TYPE_CHECKING:
    from web3 import Web3

#: Seconds the commands wait for the chain (or a server) unless --timeout says otherwise.
DEFAULT_TIMEOUT: Final = 10.0


def add_timeout(parser: argparse.ArgumentParser, default: float = DEFAULT_TIMEOUT, what: str = "the chain") -> None:
    """Add ``--timeout SECONDS``."""
    parser.add_argument(
        "--timeout", type=seconds, help=f"seconds to wait for {what} (X402PAY_TIMEOUT; default {default:g})"
    )


def timeout_of(args: argparse.Namespace, default: float = DEFAULT_TIMEOUT) -> float:
    """The --timeout setting, checked like the flag."""
    value = setting(args, "timeout")
    if value is None:
        return default
    try:
        return seconds(str(value))
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"timeout {exc}") from None


def endpoint(rpc_url: str) -> str:
    """The RPC URL without its path and query, which often carry an API key."""
    import httpx

    try:
        url = httpx.URL(rpc_url)
    except httpx.InvalidURL:
        return "the given rpc-url"
    return f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"


def connect(args: argparse.Namespace) -> tuple[Web3, str]:
    """A Web3 on the --rpc-url setting, with the --timeout, and the endpoint's name for messages."""
    from x402pay._rpc import web3_for

    rpc_url = setting(args, "rpc_url")
    if not rpc_url:
        raise UsageError("give --rpc-url (or X402PAY_RPC_URL, or rpc-url in the config file)")
    if not str(rpc_url).startswith(("http://", "https://")):
        raise UsageError(f"--rpc-url {str(rpc_url)[:80]!r}: give an http:// or https:// JSON-RPC URL")
    return web3_for(str(rpc_url), timeout=timeout_of(args)), endpoint(str(rpc_url))


@contextmanager
def talking_to_chain(args: argparse.Namespace, where: str, what: str) -> Iterator[None]:
    """Wrap chain reads: a progress note on a terminal, and any RPC failure as one line naming `where` and `what`."""
    progress(args, f"{what} from {where} ...")
    try:
        yield
    except Exception as exc:
        failure = chain_failure(exc, where, timeout_of(args))
        if failure is None:
            raise
        raise CommandFailed(f"{what}: {failure}") from exc


def chain_failure(exc: BaseException, where: str, timeout: float) -> str | None:
    """What went wrong with the chain at `where`, in our words; None when `exc` is not an RPC failure."""
    requests_errors = sys.modules.get("requests.exceptions")
    web3_errors = sys.modules.get("web3.exceptions")
    if requests_errors is not None:
        if isinstance(exc, requests_errors.Timeout):
            return f"the chain at {where} did not answer within {timeout:g} s"
        if isinstance(exc, requests_errors.ConnectionError):
            return f"cannot connect to the chain at {where}"
        if isinstance(exc, requests_errors.RequestException):
            return f"the chain at {where} failed the request ({type(exc).__name__})"
    if web3_errors is not None and isinstance(exc, web3_errors.Web3Exception):
        return f"the chain at {where} answered with an error: {exc}"
    return None
