"""The ``x402pay`` command: one entry point, sub-commands, exit codes that mean something.

Exit codes: 0 done; 1 failed (an x402pay error: a rejected payment, a chain or wallet problem); 2 usage;
3 the server answered with an HTTP error; 4 the spend policy or a budget refused to pay; 130 interrupted (Ctrl-C).
Every failure is reported in one line on stderr; a traceback means a bug in x402pay.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import httpx

from x402pay import __version__
from x402pay.cli import books_cmd, channel_cmd, demo_cmd, devnet_cmd, pay_cmd, trust_cmd, wallet_cmd
from x402pay.cli.chain import timeout_of
from x402pay.cli.common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_REFUSED,
    EXIT_USAGE,
    CommandFailed,
    UsageError,
    one_line,
    refusal_text,
)
from x402pay.errors import BudgetExceeded, NoAcceptableRequirement, X402PayError

_EPILOG = (
    "exit codes: 0 ok, 1 failed, 2 usage, 3 HTTP error from the server, 4 refused by the spend policy, "
    "130 interrupted. Settings: flag, then X402PAY_* variable, then $XDG_CONFIG_HOME/x402pay/config.toml."
)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (a UsageError), with -v/-q on every command."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument(
            "-v", "--verbose", action="count", default=argparse.SUPPRESS,
            help="log what x402pay does to stderr (-vv: in detail)",
        )  # fmt: skip
        self.add_argument(
            "-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
            help="no progress notes; only errors on stderr",
        )  # fmt: skip

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    try:
        code = _main(argv)
        sys.stdout.flush()
    except KeyboardInterrupt:
        print("x402pay: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`x402pay ledger | head`): stop quietly, and keep the interpreter's final flush
        # of stdout from failing again on the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    return code


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"x402pay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not hasattr(args, "run"):
        print("x402pay: give a command (x402pay --help lists them)", file=sys.stderr)
        return EXIT_USAGE
    with _logging(getattr(args, "verbose", 0), getattr(args, "quiet", False)):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        code: int = args.run(args)
    except UsageError as exc:
        return _fail(EXIT_USAGE, f"x402pay {args.command}: {exc}")
    except BudgetExceeded as exc:
        return _fail(EXIT_REFUSED, f"x402pay: refused to pay: {refusal_text(exc)}")
    except NoAcceptableRequirement as exc:
        return _fail(EXIT_REFUSED, f"x402pay: refused to pay: {exc}")
    except (CommandFailed, X402PayError) as exc:
        return _fail(EXIT_ERROR, f"x402pay: {exc}")
    except httpx.TimeoutException as exc:
        waited = timeout_of(args, pay_cmd.PAY_TIMEOUT)
        return _fail(EXIT_ERROR, f"x402pay: {_where(exc)} did not answer within {waited:g} s")
    except httpx.ConnectError as exc:
        return _fail(EXIT_ERROR, f"x402pay: cannot connect to {_where(exc)} ({exc})")
    except httpx.HTTPError as exc:
        return _fail(EXIT_ERROR, f"x402pay: {_where(exc)}: {type(exc).__name__}: {exc}")
    except BrokenPipeError:
        raise  # the reader went away: main() ends quietly
    except OSError as exc:
        return _fail(EXIT_ERROR, f"x402pay: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
    return code


def _fail(code: int, message: str) -> int:
    print(one_line(message), file=sys.stderr)
    return code


def _where(exc: httpx.HTTPError) -> str:
    """The origin an httpx error is about (never its path or query: they may carry keys)."""
    try:
        url = exc.request.url
    except RuntimeError:
        return "the server"
    return f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"


@contextmanager
def _logging(verbose: int, quiet: bool) -> Iterator[None]:
    """x402pay's log records on stderr while the command runs: INFO with -v, DEBUG with -vv, errors only with -q."""
    logger = logging.getLogger("x402pay")
    if not verbose and not quiet:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("x402pay: %(levelname)s %(name)s: %(message)s"))
    previous = logger.level
    logger.setLevel(logging.ERROR if quiet else logging.INFO if verbose == 1 else logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="x402pay", description="Pay for HTTP calls over x402, safely.", epilog=_EPILOG)
    parser.add_argument("--version", action="version", version=f"x402pay {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")
    for module in (demo_cmd, devnet_cmd, wallet_cmd, pay_cmd, books_cmd, channel_cmd, trust_cmd):
        module.register(commands)
    return parser
