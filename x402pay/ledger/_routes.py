# ruff: noqa: S608  -- the table name is a constant; every value is a bound parameter
"""The prices of routes, remembered for pre-payment by every process of the ledger (see `x402pay._prepay`).

A transport with ``prepay=True`` pays on the first send to a route whose challenge it saw accepted. In memory, that
knowledge dies with the process: a restarted bot would pay every route reactively (two round trips) once more. With a
ledger, the challenge a server accepted is kept here, per route (method, origin, path), with when it was last seen;
a transport reads the fresh ones once, when it first needs them. A remembered challenge is only a hint: every
pre-payment made from it passes the policy and the budgets again, and a server that refuses one makes every process
forget that origin's routes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from x402pay.ledger._sql import ROUTES, Program, Query

#: At most this many routes are read back (the most recently seen first); a transport keeps as many in memory.
MAX_ROUTES: Final = 1024


@dataclass(frozen=True)
class RememberedRoute:
    """A route's challenge (the decoded ``PAYMENT-REQUIRED`` object) that its server accepted payment for, last at
    `seen_at` (ledger seconds)."""

    method: str
    origin: str
    path: str
    challenge: dict[str, Any]
    seen_at: int


def remember(
    method: str, origin: str, path: str, challenge: Mapping[str, Any], now: int, max_age: int
) -> Program[None]:
    """Keep `challenge` as the price of the route, seen at `now`; forget routes not seen for `max_age` seconds."""
    text = json.dumps(challenge, sort_keys=True, separators=(",", ":"))
    yield Query(f"DELETE FROM {ROUTES} WHERE seen_at < ?", (now - max_age,))
    yield Query(
        f"INSERT INTO {ROUTES} (method, origin, path, challenge, seen_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (method, origin, path) DO UPDATE SET challenge = excluded.challenge, seen_at = excluded.seen_at",
        (method.upper(), origin.lower(), path, text, now),
    )


def recent(since: int) -> Program[list[RememberedRoute]]:
    """The routes seen at or after `since`, most recent first, at most `MAX_ROUTES`; unreadable ones left out."""
    rows = yield Query(
        f"SELECT method, origin, path, challenge, seen_at FROM {ROUTES} WHERE seen_at >= ? "
        "ORDER BY seen_at DESC LIMIT ?",
        (since, MAX_ROUTES),
    )
    found = []
    for method, origin, path, text, seen_at in rows:
        try:
            challenge = json.loads(text)
        except ValueError:
            continue
        if isinstance(challenge, dict):
            found.append(RememberedRoute(str(method), str(origin), str(path), challenge, int(seen_at)))
    return found


def forget_origin(origin: str, now: int, max_age: int) -> Program[None]:
    """Forget every route of `origin`, and every route not seen for `max_age` seconds."""
    yield Query(f"DELETE FROM {ROUTES} WHERE origin = ? OR seen_at < ?", (origin.lower(), now - max_age))
