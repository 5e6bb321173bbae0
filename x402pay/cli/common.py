"""What the sub-commands share: exit codes, amounts of USDC as people type and read them, origins, progress notes."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Final

from x402pay._amounts import USDC_DECIMALS, decimal_text
from x402pay.errors import BudgetExceeded, SpendCapExceeded

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_HTTP: Final = 3
EXIT_REFUSED: Final = 4
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C

#: The most any amount may be, in atomic units: what the ledger can store (and far below uint256).
MAX_ATOMIC: Final = 2**63 - 1
#: Allowances at or above this are unlimited for Permit2 (it keeps uint160 amounts; approve() sends uint256 max).
UNLIMITED: Final = 2**160 - 1
_AMOUNT: Final = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")


class UsageError(Exception):
    """The command line (or its settings) cannot be carried out as given."""


def parse_usdc(text: object, where: str) -> int:
    """Atomic units for a positive amount of USDC typed by a person (``"0.05"`` -> ``50000``); UsageError if not.

    Plain decimal notation only: no exponent, sign, NaN or infinity; at most 6 decimals; at most `MAX_ATOMIC`.
    `where` names the setting in the message (``--max``, ``X402PAY_BUDGET``, ``budget in config.toml``).
    """
    value = str(text).strip()
    if not _AMOUNT.fullmatch(value):
        raise UsageError(f"{where} {value[:40]!r} is not an amount of USDC such as 0.05")
    whole, _, fraction = value.partition(".")
    if len(whole.lstrip("0")) > len(str(MAX_ATOMIC)):
        raise UsageError(f"{where} {value[:40]}: too large (at most {usdc_text(MAX_ATOMIC)} USDC)")
    fraction = fraction.rstrip("0")
    if len(fraction) > USDC_DECIMALS:
        raise UsageError(f"{where} {value[:40]}: USDC has {USDC_DECIMALS} decimals; finer amounts cannot be paid")
    atomic = int(whole.lstrip("0") or "0") * 10**USDC_DECIMALS + int(fraction.ljust(USDC_DECIMALS, "0"))
    if atomic <= 0:
        raise UsageError(f"{where} {value}: must be more than 0")
    if atomic > MAX_ATOMIC:
        raise UsageError(f"{where} {value[:40]}: too large (at most {usdc_text(MAX_ATOMIC)} USDC)")
    return atomic


def seconds(text: str) -> float:
    """An argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of seconds") from None
    if not 0 < value < 86_400:
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: give seconds between 0 and 86400")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a positive whole number."""
    if not text.isascii() or not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a positive whole number")
    return int(text)


def usdc_text(atomic: int | None, decimals: int = USDC_DECIMALS) -> str:
    """Atomic units as a decimal amount for people (``10000`` -> ``0.010000``; Permit2's maximum -> ``unlimited``)."""
    if atomic is None:
        return "-"
    if atomic >= UNLIMITED:
        return "unlimited"
    return decimal_text(atomic, decimals)


def refusal_text(refusal: SpendCapExceeded) -> str:
    """A spend refusal for people: a budget's in USDC, any other as the library words it."""
    if not isinstance(refusal, BudgetExceeded):
        return str(refusal)
    left, limit, asked = usdc_text(refusal.remaining), usdc_text(refusal.budget.limit), usdc_text(refusal.requested)
    return f"budget {refusal.budget.describe()} has {left} of {limit} USDC left, {asked} asked"


def origin_of(text: str) -> str:
    """An origin as the ledger and trust file keep it: ``scheme://host[:port]``, lower case, no path or slash."""
    import httpx

    try:
        url = httpx.URL(text.strip())
    except httpx.InvalidURL as exc:
        raise UsageError(f"{text[:80]!r} is not an origin such as https://api.example.com ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host or url.path not in ("", "/") or url.query:
        raise UsageError(f"{text[:80]!r} is not an origin such as https://api.example.com")
    return f"{url.scheme}://{url.netloc.decode('ascii').lower()}"


def progress(args: argparse.Namespace, text: str) -> None:
    """A one-line note on stderr while the user waits, when stderr is a terminal and --quiet was not given."""
    if not getattr(args, "quiet", False) and sys.stderr.isatty():
        print(f"x402pay: {text}", file=sys.stderr, flush=True)


class CommandFailed(Exception):
    """The command could not be carried out (exit 1); the message says what failed, in one line."""


def one_line(text: str) -> str:
    """`text` on one line (whitespace runs, newlines among them, become one space), at most 400 characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= 400 else flat[:399] + "…"
