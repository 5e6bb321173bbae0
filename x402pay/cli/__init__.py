"""The ``x402pay`` command: one entry point, sub-commands, exit codes that mean something.

Exit codes: 0 done; 1 failed (an x402pay error: a rejected payment, a chain or wallet problem); 2 usage;
3 the server answered with an HTTP error; 4 the spend policy or a budget refused to pay.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import httpx

from x402pay import __version__
from x402pay.cli import books_cmd, demo_cmd, devnet_cmd, pay_cmd, wallet_cmd
from x402pay.cli.common import EXIT_ERROR, EXIT_REFUSED, EXIT_USAGE, UsageError
from x402pay.errors import NoAcceptableRequirement, X402PayError

_EPILOG = "exit codes: 0 ok, 1 failed, 2 usage, 3 HTTP error from the server, 4 refused by the spend policy"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code: int = args.run(args)
    except UsageError as exc:
        print(f"x402pay {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NoAcceptableRequirement as exc:
        print(f"x402pay: refused to pay: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except X402PayError as exc:
        print(f"x402pay: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR
    except Exception as exc:
        if not _is_io_failure(exc):
            raise
        print(f"x402pay: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return code


def _is_io_failure(exc: Exception) -> bool:
    """A network or chain failure (reported in one line), as opposed to a bug (shown with its traceback)."""
    web3_errors = sys.modules.get("web3.exceptions")
    chain_error = getattr(web3_errors, "Web3Exception", ()) if web3_errors else ()
    return isinstance(exc, OSError | httpx.HTTPError) or (bool(chain_error) and isinstance(exc, chain_error))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="x402pay", description="Pay for HTTP calls over x402, safely.", epilog=_EPILOG
    )
    parser.add_argument("--version", action="version", version=f"x402pay {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")
    for module in (demo_cmd, devnet_cmd, wallet_cmd, pay_cmd, books_cmd):
        module.register(commands)
    return parser
