"""``x402pay channel``: the payer's batch-settlement channels, and the way out of one without its server.

``list`` shows each channel in the ledger: escrow deposited and not taken back, what the server charged (spent),
what our vouchers let it claim beyond that (committed), and the chain's state as last read. ``withdraw`` starts
the contract's timed exit (the wallet's own transaction, paying gas); ``finalize`` ends it once the channel's delay
has passed. A cooperative refund goes through the server: ``x402pay pay URL -H 'x-x402pay-channel-refund: all'``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from x402pay.cli.books_cmd import LEDGER_HELP, existing_ledger, ledger_flags
from x402pay.cli.chain import connect, talking_to_chain
from x402pay.cli.common import EXIT_OK, UsageError
from x402pay.cli.wallet_cmd import load_wallet, wallet_flags

_COLUMNS = ("channel", "origin", "state", "escrow", "spent", "committed", "balance", "claimed")


def register(commands: Any) -> None:
    """Add ``channel list|withdraw|finalize``."""
    channel = commands.add_parser("channel", help="batch-settlement channels: list, withdraw, finalize",
                                  description="The payer's payment channels (batch-settlement).")  # fmt: skip
    actions = channel.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="escrow, spent and committed per channel", description=__doc__)
    ledger_flags(listing)
    listing.set_defaults(run=run_list)
    for name, run, what in (
        ("withdraw", run_withdraw, "start withdrawing a channel's unclaimed escrow (a transaction; pays gas)"),
        ("finalize", run_finalize, "finish a withdrawal once the channel's delay has passed (pays gas)"),
    ):
        action = actions.add_parser(name, help=what, description=what[0].upper() + what[1:] + ".")
        action.add_argument("channel_id", help="the channel's id (0x + 64 hex), as `x402pay channel list` shows it")
        action.add_argument("--ledger", help=LEDGER_HELP)
        wallet_flags(action, chain=True)
        action.set_defaults(run=run)


def _row(record: Any) -> dict[str, Any]:
    from x402pay.ledger._report import channel_json

    return channel_json(record) | {"balance": record.chain_balance, "claimed": record.chain_claimed,
                                   "withdraw_after": record.withdraw_after}  # fmt: skip


def render(records: list[Any], *, as_json: bool) -> str:
    """The channels as a table (or JSON): atomic units of each channel's token."""
    rows = [_row(record) for record in records]
    if as_json:
        return json.dumps(rows, indent=2)
    if not rows:
        return "no channels recorded"
    cells = [[str(row[column]) for column in _COLUMNS] for row in rows]
    for line in cells:
        line[0] = line[0][:18] + "..."
    widths = [max(len(column), *(len(line[index]) for line in cells)) for index, column in enumerate(_COLUMNS)]
    lines = ["  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True))
             for line in [list(_COLUMNS), *cells]]  # fmt: skip
    return "\n".join(lines)


def run_list(args: argparse.Namespace) -> int:
    """Print the channels."""
    with existing_ledger(args) as (ledger, _):
        print(render(ledger.channels.all(), as_json=args.json))
    return EXIT_OK


def _channel_id(args: argparse.Namespace) -> str:
    value = str(args.channel_id).lower()
    if len(value) != 66 or not value.startswith("0x") or any(c not in "0123456789abcdef" for c in value[2:]):
        raise UsageError(f"channel id {value[:80]!r}: give 0x and 64 hex digits")
    return value


def run_withdraw(args: argparse.Namespace) -> int:
    """Start the withdrawal."""
    from x402pay._channel_admin import withdraw

    channel_id, wallet = _channel_id(args), load_wallet(args)
    web3, where = connect(args)
    with existing_ledger(args) as (ledger, _), talking_to_chain(args, where, "starting the withdrawal"):
        tx_hash, record = withdraw(ledger.channels, web3, wallet, channel_id)
    said = f"initiateWithdraw in {tx_hash}" if tx_hash else "nothing left to withdraw, or already withdrawing"
    print(f"{said}; finalize after {record.withdraw_after} (chain time)" if record.withdraw_after else said)
    return EXIT_OK


def run_finalize(args: argparse.Namespace) -> int:
    """Finish the withdrawal."""
    from x402pay._channel_admin import finalize

    channel_id, wallet = _channel_id(args), load_wallet(args)
    web3, where = connect(args)
    with existing_ledger(args) as (ledger, _), talking_to_chain(args, where, "finalizing the withdrawal"):
        tx_hash, record = finalize(ledger.channels, web3, wallet, channel_id)
    said = f"finalizeWithdraw in {tx_hash}" if tx_hash else "finalized before (now in the book)"
    print(f"{said}: {record.withdrawn} withdrawn in all, channel {record.state}")
    return EXIT_OK
