"""``x402pay ledger``, ``budget``, ``reconcile``, ``trust`` and ``verify``: the books, kept and checked."""

from __future__ import annotations

import argparse
import contextlib
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from x402pay._amounts import usdc
from x402pay._trust import DEFAULT_TRUST_FILE, TrustStore
from x402pay.cli.common import EXIT_ERROR, EXIT_OK, UsageError, setting

if TYPE_CHECKING:
    from x402pay.ledger._model import BudgetAssets

DEFAULT_LEDGER: Final = "~/.local/state/x402pay/ledger.db"
_WINDOWS: Final = {"total": None, "hour": 3_600, "day": 86_400}


def register(commands: Any) -> None:
    """Add the bookkeeping sub-commands."""
    ledger = commands.add_parser("ledger", help="the latest payments and the budgets' totals")
    _ledger_flags(ledger)
    ledger.add_argument("--limit", type=int, default=50)
    ledger.set_defaults(run=run_ledger)
    budget = commands.add_parser("budget", help="what is held and left in each budget")
    _ledger_flags(budget)
    budget.add_argument("--origin", help="for per-origin budgets: this origin")
    budget.set_defaults(run=run_budget)
    reconcile = commands.add_parser("reconcile", help="resolve unsettled payments from chain state")
    _ledger_flags(reconcile)
    reconcile.add_argument("--rpc-url", help="the chain's JSON-RPC URL (X402PAY_RPC_URL)")
    reconcile.set_defaults(run=run_reconcile)
    trust = commands.add_parser("trust", help="origins caught lying about a payment")
    trust.add_argument("--trust-file", help=f"where the marks are kept (X402PAY_TRUST_FILE; {DEFAULT_TRUST_FILE})")
    trust.add_argument("--ledger", help="also the marks a ledger keeps for its fleet (an SQLite path or a URL)")
    trust.add_argument("action", choices=["list", "reset"])
    trust.add_argument("origin", nargs="?", help="with reset: the origin to trust again")
    trust.set_defaults(run=run_trust)
    verify = commands.add_parser("verify", help="check one settlement transaction on chain")
    verify.add_argument("tx_hash")
    for flag in ("--payer", "--to", "--amount"):
        verify.add_argument(flag, required=True, help="the amount in USDC" if flag == "--amount" else None)
    verify.add_argument("--rpc-url", help="the chain's JSON-RPC URL (X402PAY_RPC_URL)")
    verify.add_argument("--asset", help="the token (default: the chain's known USDC)")
    verify.add_argument("--nonce", help="the signed nonce (default: read from the EIP-3009 AuthorizationUsed log)")
    verify.add_argument("--method", choices=["eip3009", "permit2"], default="eip3009")
    verify.add_argument("--scheme", choices=["exact", "upto"], default="exact")
    verify.set_defaults(run=run_verify)


def _ledger_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ledger", help=f"an SQLite path or a postgresql:// URL (X402PAY_LEDGER; {DEFAULT_LEDGER})")
    parser.add_argument(
        "--budget", help="a budget in USDC (X402PAY_BUDGET), counting the --asset token, else USDC on every chain"
    )
    parser.add_argument("--window", choices=sorted(_WINDOWS), help="the budget's window (default total)")
    parser.add_argument("--asset", help="the budget's token (X402PAY_ASSET; default: USDC on every chain)")
    parser.add_argument("--json", action="store_true", help="JSON instead of a table")


def open_ledger(args: argparse.Namespace) -> Any:
    """The ledger named by the settings, with the budget the settings describe."""
    from x402pay.ledger import Budget, Ledger

    target = str(setting(args, "ledger", DEFAULT_LEDGER))
    if "://" not in target:
        target = str(Path(target).expanduser())
        Path(target).parent.mkdir(parents=True, exist_ok=True)
    budget, asset = setting(args, "budget"), setting(args, "asset")
    window = _WINDOWS[setting(args, "window", "total")]
    budgets = [Budget(_counted(asset), usdc(Decimal(str(budget))), window=window)] if budget is not None else []
    return Ledger.open(target, budgets=budgets)


def _counted(asset: str | list[str] | None) -> BudgetAssets:
    """What a --budget counts: the tokens named (`pay --asset` may name several), else USDC on every chain, which
    is what `pay` pays when no --asset is named."""
    from x402pay.ledger import ANY_USDC

    if not asset:
        return ANY_USDC
    return asset if isinstance(asset, str) else frozenset(asset)


def run_ledger(args: argparse.Namespace) -> int:
    """Print the latest entries and the budgets."""
    from x402pay.ledger._report import render_ledger

    with open_ledger(args) as ledger:
        print(render_ledger(ledger, limit=args.limit, as_json=args.json))
    return EXIT_OK


def run_budget(args: argparse.Namespace) -> int:
    """Print the budgets: held, limit, remaining."""
    from x402pay.ledger._report import render_budgets

    with open_ledger(args) as ledger:
        print(render_budgets(ledger, origin=args.origin, as_json=args.json))
    return EXIT_OK


def run_reconcile(args: argparse.Namespace) -> int:
    """Resolve authorized and unknown entries from the chain; exit 1 if some stay open."""
    from x402pay._rpc import web3_for
    from x402pay.ledger import Web3Chain
    from x402pay.ledger._report import render_reconcile

    rpc_url = setting(args, "rpc_url")
    if not rpc_url:
        raise UsageError("give --rpc-url (or X402PAY_RPC_URL)")
    with open_ledger(args) as ledger:
        report = ledger.reconcile(Web3Chain(web3_for(rpc_url)))
    print(render_reconcile(report, as_json=args.json))
    return EXIT_ERROR if report.unresolved else EXIT_OK


def run_trust(args: argparse.Namespace) -> int:
    """List the untrusted origins (of the trust file, and of the ledger when one is named), or trust one again."""
    store = TrustStore(setting(args, "trust_file", str(DEFAULT_TRUST_FILE)))
    with contextlib.ExitStack() as stack:
        ledger = _named_ledger(args)
        if ledger is not None:
            stack.callback(ledger.close)
        if args.action == "reset":
            if not args.origin:
                raise UsageError("trust reset needs the ORIGIN (scheme://host[:port])")
            cleared = store.reset(args.origin)
            cleared = (ledger.clear_untrusted(args.origin) if ledger is not None else False) or cleared
            print(f"{args.origin}: {'trusted again' if cleared else 'was not marked'}")
            return EXIT_OK
        marks = {**store.marks(), **(ledger.untrusted() if ledger is not None else {})}
    print("\n".join(f"{origin}  {reason}" for origin, reason in sorted(marks.items())) or "no untrusted origins")
    return EXIT_OK


def _named_ledger(args: argparse.Namespace) -> Any:
    """The ledger given with --ledger (or X402PAY_LEDGER), or None."""
    target = setting(args, "ledger", None)
    if not target:
        return None
    from x402pay.ledger import Ledger

    return Ledger.open(str(Path(target).expanduser()) if "://" not in target else target)


def run_verify(args: argparse.Namespace) -> int:
    """Verify one settlement; print the verdict; exit 0 only when verified."""
    from web3 import Web3

    from x402pay._rpc import web3_for
    from x402pay.cli.wallet_cmd import known_usdc
    from x402pay.verify import Claim, verify_claim

    rpc_url = setting(args, "rpc_url")
    if not rpc_url:
        raise UsageError("give --rpc-url (or X402PAY_RPC_URL)")
    web3 = web3_for(rpc_url)
    chain_id = int(web3.eth.chain_id)
    asset = args.asset or known_usdc(chain_id)
    amount = usdc(Decimal(args.amount))
    nonce = args.nonce or _used_nonce(web3, args.tx_hash, asset, args.payer)
    claim = Claim(
        chain_id=chain_id, asset=Web3.to_checksum_address(asset), payer=Web3.to_checksum_address(args.payer),
        pay_to=Web3.to_checksum_address(args.to), scheme=args.scheme, method=args.method,
        signed_amount=amount, nonce=nonce, valid_before=2**63 - 1, claimed_amount=amount, tx_hash=args.tx_hash,
    )  # fmt: skip
    verification = verify_claim(web3, claim)
    detail = f" ({verification.check}: {verification.reason})" if verification.check else ""
    print(f"{verification.verdict}{detail}")
    return EXIT_OK if verification.verified else EXIT_ERROR


def _used_nonce(web3: Any, tx_hash: str, asset: str, payer: str) -> str:
    from x402pay._protocol.abi import AUTHORIZATION_USED_TOPIC, address_topic

    try:
        logs = web3.eth.get_transaction_receipt(tx_hash)["logs"]
    except Exception as exc:  # web3 raises its own errors for unknown or malformed hashes
        raise UsageError(f"cannot read transaction {tx_hash[:80]}: {exc}; give --nonce") from exc
    for log in logs:
        topics = [topic.to_0x_hex() for topic in log["topics"]]
        if log["address"].lower() == asset.lower() and topics[:2] == [AUTHORIZATION_USED_TOPIC, address_topic(payer)]:
            return str(topics[2])
    raise UsageError("no AuthorizationUsed log of the payer in that transaction; give --nonce (and --method)")
