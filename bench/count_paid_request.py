"""Count what one request costs inside x402pay: ledger transactions, function calls, module switches.

No network and no chain: the peer is an in-memory x402 server (httpx.MockTransport) that accepts any payment, and
the ledger is SQLite in memory. Counts, not times, so they are exact on any machine; `docs/how-it-works.md` keeps
the figures. Uses only the public API, so the same script measures an older checkout too:

    python -m bench.count_paid_request
"""

from __future__ import annotations

import argparse
import base64
import inspect
import json
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import httpx

import x402pay
from x402pay.ledger import Ledger

USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
REQUIREMENT = {
    "scheme": "exact", "network": "eip155:8453", "amount": "10000", "asset": USDC,
    "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "maxTimeoutSeconds": 60,
    "extra": {"name": "USD Coin", "version": "2"},
}  # fmt: skip
SETTLED = {"success": True, "transaction": "0x" + "ab" * 32, "network": "eip155:8453", "amount": "10000"}


def _b64(data: Any) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


def peer(request: httpx.Request) -> httpx.Response:
    """Free at /free; /paid asks for REQUIREMENT and takes any payment."""
    if request.url.path == "/free":
        return httpx.Response(200, content=b"free")
    if "PAYMENT-SIGNATURE" not in request.headers:
        required = {"x402Version": 2, "accepts": [REQUIREMENT], "resource": {"url": str(request.url)}}
        return httpx.Response(402, headers={"PAYMENT-REQUIRED": _b64(required)})
    return httpx.Response(200, headers={"PAYMENT-RESPONSE": _b64(SETTLED)}, content=b"paid")


#: Code flags of generators and coroutines, whose frames are entered again at each resumption.
_RESUMABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


class Counter:
    """Ledger transactions (calls of the database's `run`), x402pay function calls (a generator counts once, its
    resumptions apart) and the module switches between those calls."""

    def __init__(self, ledger: Ledger) -> None:
        self.transactions = 0
        self.calls = 0
        self.resumptions = 0
        self.switches = 0
        self._module = ""
        self._entered: set[int] = set()
        database = ledger._db
        run = database.run

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.transactions += 1
            return run(*args, **kwargs)

        database.run = counted  # type: ignore[method-assign]

    def profile(self, frame: FrameType, event: str, _: Any) -> None:
        """A `sys.setprofile` hook: count the calls of Python functions of x402pay."""
        if event != "call":
            return
        module = frame.f_globals.get("__name__", "")
        if not module.startswith("x402pay"):
            return
        if frame.f_code.co_flags & _RESUMABLE:
            if id(frame) in self._entered:
                self.resumptions += 1
                return
            self._entered.add(id(frame))
        self.calls += 1
        self.switches += module != self._module
        self._module = module


def measure(path: str, headers: dict[str, str]) -> Counter:
    """Counts for one request to `path` (after one warm-up request, so imports and caches do not count)."""
    ledger = Ledger.sqlite(":memory:")
    transport = x402pay.PaymentTransport(
        wallet=x402pay.Wallet.from_key("0x" + "11" * 32), policy=x402pay.SpendPolicy(max_per_request=50_000),
        inner=httpx.MockTransport(peer), ledger=ledger,
    )  # fmt: skip
    with httpx.Client(transport=transport, base_url="https://api.example") as client:
        client.get(path, headers={key: value + "-warm" for key, value in headers.items()})
        counter = Counter(ledger)
        sys.setprofile(counter.profile)
        try:
            client.get(path, headers=headers)
        finally:
            sys.setprofile(None)
    return counter


CASES: dict[str, tuple[str, dict[str, str]]] = {
    "unpaid, no key": ("/free", {}),
    "unpaid, caller's key": ("/free", {"Idempotency-Key": "free-1"}),
    "paid, no key": ("/paid", {}),
    "paid, caller's key": ("/paid", {"Idempotency-Key": "paid-1"}),
}


def main(argv: list[str] | None = None) -> None:
    """Print one line per case: ledger transactions, x402pay calls, module switches, generator resumptions."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.parse_args(argv)
    row: Callable[[str, Counter], str] = lambda name, c: (  # noqa: E731
        f"{name:<22} transactions {c.transactions:>2}  calls {c.calls:>4}  module switches {c.switches:>3}  "
        f"generator resumptions {c.resumptions:>3}"
    )
    for name, (path, headers) in CASES.items():
        print(row(name, measure(path, headers)))


if __name__ == "__main__":
    main()
