"""``x402pay ledger``, ``budget`` and ``reconcile``: the books that ``pay`` keeps, shown and settled.

``pay`` records every payment in the ledger: ``$XDG_STATE_HOME/x402pay/ledger.db`` unless --ledger (or
X402PAY_LEDGER, or ``ledger`` in the config file) names another. The budgets are the config file's (``budget``,
``window``, ``asset``): ``pay`` enforces them and ``budget`` shows them; a --budget flag counts for that run only.
The reading commands never create a file or a directory: without a ledger there is nothing recorded yet.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from x402pay.cli.chain import add_timeout, connect, talking_to_chain
from x402pay.cli.common import EXIT_ERROR, EXIT_OK, UsageError, parse_usdc, positive_int
from x402pay.cli.config import lookup, setting, state_dir

if TYPE_CHECKING:
    from x402pay.ledger import Budget, Ledger
    from x402pay.ledger._model import BudgetAssets

_WINDOWS: Final = {"total": None, "hour": 3_600, "day": 86_400}
_KEPT: Final = (
    "pay records every payment in the ledger; the budgets are the config file's (budget, window, asset), which "
    "pay enforces and budget shows. Reading never creates a file."
)
LEDGER_HELP: Final = (
    "the ledger: an SQLite path or a postgresql:// URL (X402PAY_LEDGER, or ledger in the config file; "
    "default $XDG_STATE_HOME/x402pay/ledger.db)"
)


def register(commands: Any) -> None:
    """Add the bookkeeping sub-commands."""
    ledger = commands.add_parser(
        "ledger", help="the latest payments and the budgets' totals",
        description="Show the latest payments and what each budget holds. " + _KEPT,
    )  # fmt: skip
    ledger_flags(ledger)
    ledger.add_argument("--limit", type=positive_int, default=50, help="how many payments to show (default 50)")
    ledger.set_defaults(run=run_ledger)
    budget = commands.add_parser(
        "budget", help="what is held and left in each budget",
        description="Show the budgets `pay` enforces (budget, window and asset in the config file, "
        "$XDG_CONFIG_HOME/x402pay/config.toml): what each holds and what is left.",
    )  # fmt: skip
    ledger_flags(budget)
    budget.add_argument("--origin", help="for per-origin budgets: this origin")
    budget.set_defaults(run=run_budget)
    reconcile = commands.add_parser(
        "reconcile", help="resolve unsettled payments from chain state",
        description="Settle or release the ledger's open payments from what the chain shows; exit 1 if some stay open.",
    )  # fmt: skip
    ledger_flags(reconcile)
    reconcile.add_argument("--rpc-url", help="the chain's JSON-RPC URL (X402PAY_RPC_URL)")
    add_timeout(reconcile)
    reconcile.set_defaults(run=run_reconcile)


def ledger_flags(parser: argparse.ArgumentParser, *, for_pay: bool = False) -> None:
    """Add --ledger and the budget flags (and --json, but for `pay`, whose --asset also widens what it pays)."""
    parser.add_argument("--ledger", help=LEDGER_HELP)
    parser.add_argument(
        "--budget", help="a budget in USDC for this run only, instead of the config file's (X402PAY_BUDGET)"
    )
    parser.add_argument("--window", help="the budget's window: total, hour or day (default total)")
    if for_pay:
        parser.add_argument(
            "--asset", action="append",
            help="also pay in this token, and count it in the budget (repeatable; default: known USDC only)",
        )  # fmt: skip
        return
    parser.add_argument("--asset", help="the budget's token (X402PAY_ASSET; default: USDC on every chain)")
    parser.add_argument("--json", action="store_true", help="JSON (amounts as ints of atomic units)")


def ledger_target(args: argparse.Namespace) -> tuple[str, bool]:
    """The ledger's path or URL, and whether a person named it (else it is the default in the state dir)."""
    found = lookup(args, "ledger")
    if found is None:
        return str(state_dir() / "ledger.db"), False
    target = str(found[0])
    return (target if "://" in target else str(Path(target).expanduser())), True


def budgets(args: argparse.Namespace) -> list[Budget]:
    """The budgets the settings describe (none, or one)."""
    from x402pay.ledger import Budget

    found = lookup(args, "budget")
    if found is None:
        return []
    limit = parse_usdc(found[0], found[1])
    window = str(setting(args, "window", "total"))
    if window not in _WINDOWS:
        raise UsageError(f"window {window[:40]!r}: give total, hour or day")
    return [Budget(_counted(setting(args, "asset")), limit, window=_WINDOWS[window])]


def _counted(asset: str | list[str] | None) -> BudgetAssets:
    """What a budget counts: the tokens named (`pay --asset` may name several), else USDC on every chain, which
    is what `pay` pays when no --asset is named."""
    from x402pay.ledger import ANY_USDC

    if not asset:
        return ANY_USDC
    return asset if isinstance(asset, str) else frozenset(asset)


def open_ledger(args: argparse.Namespace) -> Ledger:
    """The ledger to write to, with the budgets; the default one's directory is created, a named one's must exist."""
    from x402pay.ledger import Ledger

    target, named = ledger_target(args)
    chosen = budgets(args)
    if "://" not in target:
        _check_directory(target, named, create=not named)
    return Ledger.open(target, budgets=chosen)


def _check_directory(target: str, named: bool, *, create: bool) -> None:
    path = Path(target)
    if path.is_dir():
        raise UsageError(f"the ledger {target} is a directory; name a file")
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif named and not path.parent.is_dir():
        raise UsageError(f"the ledger's directory {path.parent} does not exist")


@contextmanager
def existing_ledger(args: argparse.Namespace) -> Iterator[tuple[Ledger, str | None]]:
    """The ledger to read, and None; or, when it does not exist yet, an empty one in memory and the missing path."""
    from x402pay.ledger import Ledger

    target, named = ledger_target(args)
    chosen = budgets(args)
    missing = "://" not in target and not Path(target).exists()
    if missing:
        _check_directory(target, named, create=False)
    with Ledger.open(":memory:" if missing else target, budgets=chosen) as ledger:
        yield ledger, target if missing else None


def run_ledger(args: argparse.Namespace) -> int:
    """Print the latest entries and the budgets."""
    from x402pay.ledger._report import budget_table, render_ledger

    with existing_ledger(args) as (ledger, missing):
        if missing is not None and not args.json:
            print(f"no payments recorded yet at {missing}\n\n{budget_table(ledger.budget_status())}")
        else:
            print(render_ledger(ledger, limit=args.limit, as_json=args.json))
    return EXIT_OK


def run_budget(args: argparse.Namespace) -> int:
    """Print the budgets: held, limit, remaining."""
    from x402pay.cli.config import config_path
    from x402pay.ledger._report import render_budgets

    with existing_ledger(args) as (ledger, _):
        if not ledger.budgets and not args.json:
            print(f"no budgets configured: set budget (and window, asset) in {config_path()}")
        else:
            print(render_budgets(ledger, origin=args.origin, as_json=args.json))
    return EXIT_OK


def run_reconcile(args: argparse.Namespace) -> int:
    """Resolve authorized and unknown entries from the chain; exit 1 if some stay open."""
    from x402pay.ledger import Web3Chain
    from x402pay.ledger._report import render_reconcile

    web3, where = connect(args)
    with existing_ledger(args) as (ledger, missing):
        if missing is not None:
            print(f"no payments recorded yet at {missing}; nothing to reconcile")
            return EXIT_OK
        with talking_to_chain(args, where, "reconciling the open payments"):
            report = ledger.reconcile(Web3Chain(web3))
    print(render_reconcile(report, as_json=args.json))
    return EXIT_ERROR if report.unresolved else EXIT_OK
