"""Text and JSON for the ``x402pay ledger``, ``budget`` and ``reconcile`` commands (the CLI only prints these).

Amounts of a known USDC deployment show as decimal USDC; others as atomic units. JSON keeps every amount as an
int of atomic units.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from x402pay._amounts import decimal_text
from x402pay._protocol.networks import KNOWN_ASSETS
from x402pay.ledger._channels import ChannelRecord
from x402pay.ledger._core import Ledger
from x402pay.ledger._model import EACH_ORIGIN, AnyUsdc, Budget, BudgetAssets, BudgetStatus, Entry, ReconcileReport

_ENTRY_COLUMNS = ("time", "origin", "scheme", "signed max", "settled", "tx", "verdict")
_BUDGET_COLUMNS = ("budget", "origin", "held", "limit", "remaining")
_DECIMALS = {address: known.decimals for (_, address), known in KNOWN_ASSETS.items()}


def render_ledger(ledger: Ledger, *, limit: int = 50, as_json: bool = False) -> str:
    """The latest `limit` entries (time, origin, scheme, signed max, settled, tx, verdict) and every budget's totals."""
    entries = ledger.entries(limit=limit)
    statuses = ledger.budget_status()
    channels = ledger.channels.all()
    if as_json:
        found = {"entries": [entry_json(entry) for entry in entries], "budgets": [*map(status_json, statuses)]}
        return _json(found | ({"channels": [*map(channel_json, channels)]} if channels else {}))
    rows = [_entry_row(entry) for entry in entries]
    text = f"{_table(_ENTRY_COLUMNS, rows) if rows else 'no payments recorded'}\n\n{budget_table(statuses)}"
    return text + (f"\n\n{channel_table(channels)}" if channels else "")


def render_budgets(ledger: Ledger, *, origin: str | None = None, as_json: bool = False) -> str:
    """What is held and left in each budget (per-origin budgets: for `origin`, or each origin holding money)."""
    statuses = ledger.budget_status(origin=origin)
    channels = [record for record in ledger.channels.all() if origin is None or record.origin == origin]
    if as_json:
        found = [status_json(status) for status in statuses]
        return _json(found if not channels else {"budgets": found, "channels": [*map(channel_json, channels)]})
    return budget_table(statuses) + (f"\n\n{channel_table(channels)}" if channels else "")


def render_reconcile(report: ReconcileReport, *, as_json: bool = False) -> str:
    """What reconcile() settled, released, found mismatched, and left open (with why)."""
    groups = {"settled": report.settled, "released": report.released, "mismatch": report.mismatched}
    if as_json:
        found: dict[str, Any] = {name: [entry_json(entry) for entry in group] for name, group in groups.items()}
        found["unresolved"] = [{**entry_json(entry), "why": why} for entry, why in report.unresolved]
        return _json(found)
    lines = [f"{name:<10} {entry.id}  {entry.origin}  {_settled(entry)}  {entry.detail or entry.tx_hash or ''}"
             for name, group in groups.items() for entry in group]  # fmt: skip
    lines += [f"{'open':<10} {entry.id}  {entry.origin}  {why}" for entry, why in report.unresolved]
    counts = ", ".join(f"{len(group)} {name}" for name, group in groups.items())
    return "\n".join([*lines, f"reconciled: {counts}, {len(report.unresolved)} still open"])


def budget_table(statuses: Sequence[BudgetStatus]) -> str:
    """A table of budgets: what each limits, the origin it is counted for, held, limit, remaining."""
    if not statuses:
        return "no budgets configured"
    rows = [
        (
            status.budget.describe(),
            status.origin or ("(each)" if status.budget.origin == EACH_ORIGIN else "(all)"),
            _money(status.held, *_addresses(status.budget)),
            _money(status.budget.limit, *_addresses(status.budget)),
            _money(status.remaining, *_addresses(status.budget)),
        )
        for status in statuses
    ]
    return _table(_BUDGET_COLUMNS, rows)


def channel_table(records: Sequence[ChannelRecord]) -> str:
    """Payment channels: the escrow each holds (deposited, not taken back), of which spent (charged) and committed
    (vouchers beyond the charges); the budgets hold a channel's deposits as payments until they are released."""
    rows = [
        (record.origin, record.state, *(_money(amount, record.token) for amount in
         (record.escrow, record.charged, record.committed, max(record.escrow - record.charged - record.committed, 0))))
        for record in records
    ]  # fmt: skip
    return _table(("channel of", "state", "escrow", "spent", "committed", "unspent"), rows)


def channel_json(record: ChannelRecord) -> dict[str, Any]:
    """One channel as JSON: amounts as ints of atomic units of its token."""
    return {
        "channel": record.channel_id, "origin": record.origin, "network": record.network, "token": record.token,
        "state": record.state, "escrow": record.escrow, "spent": record.charged, "committed": record.committed,
        "deposited": record.deposited, "refunded": record.refunded, "withdrawn": record.withdrawn,
        "chain_balance": record.chain_balance, "chain_claimed": record.chain_claimed,
    }  # fmt: skip


def entry_json(entry: Entry) -> dict[str, Any]:
    """An entry as JSON-able data (amounts as ints of atomic units; the signed payment itself left out)."""
    data = {name: getattr(entry, name) for name in Entry.__dataclass_fields__ if name != "payment"}
    data["state"] = str(entry.state)
    return data


def status_json(status: BudgetStatus) -> dict[str, Any]:
    """A budget status as JSON-able data."""
    budget = status.budget
    return {
        "budget": budget.describe(),
        "asset": _asset_json(budget.asset),
        "covers": [f"{network}/erc20:{asset}" if network else asset for network, asset in budget.covered],
        "network": budget.network,
        "origin": status.origin or budget.origin,
        "window": budget.window,
        "limit": budget.limit,
        "held": status.held,
        "remaining": status.remaining,
    }


def _entry_row(entry: Entry) -> tuple[str, ...]:
    when = datetime.fromtimestamp(entry.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
    tx = entry.tx_hash[:12] + "…" if entry.tx_hash else "-"
    return when, entry.origin, entry.scheme, _money(entry.amount, entry.asset), _settled(entry), tx, str(entry.state)


def _settled(entry: Entry) -> str:
    return "-" if entry.settled_amount is None else _money(entry.settled_amount, entry.asset)


def _asset_json(assets: BudgetAssets) -> str | list[str]:
    """`Budget.asset` as JSON: "USDC" for `ANY_USDC`, the address, or each address and CAIP-19 asset id (sorted)."""
    if isinstance(assets, AnyUsdc):
        return assets.value
    if isinstance(assets, str):
        return assets
    return sorted(item if isinstance(item, str) else f"{item[0]}/erc20:{item[1]}" for item in assets)


def _addresses(budget: Budget) -> list[str]:
    return [asset for _, asset in budget.covered]


def _money(amount: int, *assets: str) -> str:
    """`amount` in decimal USDC when every one of `assets` is a known USDC deployment, else in atomic units."""
    decimals = {_DECIMALS.get(asset.lower()) for asset in assets}
    if len(decimals) != 1 or None in decimals:
        return str(amount)
    digits = decimals.pop() or 0
    return f"{decimal_text(amount, digits)} USDC"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in (header, *rows)]  # fmt: skip
    return "\n".join(lines)


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True)
