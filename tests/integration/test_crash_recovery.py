"""Crash recovery: a paying bot killed (SIGKILL) at each point of a payment, then restarted, pays once, no more.

Each round, a child process pays the demo API (metered chat completions, upto; the exact fortune) through the
transport with one SQLite ledger, and kills itself at one point: before reserving, between reserving and signing,
between storing the signed payment and sending it, while the server settles (the paid request sent, its answer
never read), or while the receipt is booked. A fresh process then sends the same request again with the same
`Idempotency-Key`. Every interrupted payment still valid is accepted on its first re-send; no key is signed for
twice; after `reconcile` the books hold exactly what the chain moved.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from x402pay import PaymentRejected, PaymentTransport, SpendPolicy, Wallet
from x402pay.ledger import EntryState, Ledger, Web3Chain
from x402pay.server._demo.app import running_demo
from x402pay.testing import Devnet

pytestmark = pytest.mark.chain

#: Where the bot dies, and what its re-send meets: a payment that never reached the chain is accepted on its first
#: re-send; one the server already settled is refused as spent (and nothing is signed again).
KILL_POINTS = {
    "before reserve": "accepted", "before signing": "accepted", "before sending": "accepted",
    "while the server settles": "refused", "while booking": "refused",
}  # fmt: skip
ROUTES = {"upto": ("POST", "/v1/chat/completions"), "exact": ("GET", "/v1/fortune")}
ROUNDS = 2
#: The restarted bot's exit code when the server refused its re-sent payment.
REFUSED = 3
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hello"}]}


def _die() -> None:
    import os

    os.kill(os.getpid(), signal.SIGKILL)


def _kill_at(point: str) -> None:
    """Make this (child) process die at `point` of its next payment."""
    from x402pay import _wallet
    from x402pay.ledger import _core

    targets = {
        "before reserve": (_core.Ledger, "reserve"),
        "before signing": (_wallet.Wallet, "sign_typed_data"),
        "before sending": (_core.Ledger, "authorize"),
        "while booking": (_core.Ledger, "claim"),
    }
    if point == "before sending":  # store the signed payment, then die before it leaves
        stored = _core.Ledger.authorize
        _core.Ledger.authorize = lambda self, *a, **k: (stored(self, *a, **k), _die())[0]  # type: ignore[method-assign]
    elif point in targets:
        owner, name = targets[point]
        setattr(owner, name, lambda *args, **kwargs: _die())


class _DiesAfterThePaymentLeaves(httpx.HTTPTransport):
    """Sends the paid request, lets the server settle it, and dies before reading the answer."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if "PAYMENT-SIGNATURE" in request.headers:
            _die()
        return response


def _pay(rpc_url: str, payer: str, url: str, ledger_path: str, route: str, key: str, point: str | None) -> None:
    """One paid request of the bot (a child process when `point` names where it dies)."""
    if point is not None and point != "while the server settles":
        _kill_at(point)
    inner = _DiesAfterThePaymentLeaves() if point == "while the server settles" else httpx.HTTPTransport()
    method, path = ROUTES[route]
    with Ledger.sqlite(ledger_path) as ledger:
        transport = PaymentTransport(
            wallet=Wallet.from_key(payer), policy=SpendPolicy(max_per_request=200_000), inner=inner, ledger=ledger,
            rpc_url=rpc_url,
        )  # fmt: skip
        with httpx.Client(transport=transport, timeout=60) as client:
            response = client.request(method, url + path, headers={"Idempotency-Key": key},
                                      json=CHAT if method == "POST" else None)  # fmt: skip
            response.read()
            assert response.status_code == 200, response.text


def _pay_again(rpc_url: str, payer: str, url: str, ledger_path: str, route: str, key: str) -> None:
    """The restarted bot sends the request again: exit 0 when paid, `REFUSED` when the server refused the payment."""
    try:
        _pay(rpc_url, payer, url, ledger_path, route, key, None)
    except PaymentRejected:
        sys.exit(REFUSED)


@pytest.fixture
def demo(x402pay_chain: Devnet) -> Iterator[str]:
    with running_demo(x402pay_chain) as url:
        yield url


def payer_balance(devnet: Devnet) -> int:
    usdc = devnet.contract("TestUSDC", devnet.usdc)
    return int(usdc.functions.balanceOf(devnet.payers[2].address).call())


def test_a_bot_killed_anywhere_in_a_payment_pays_once_after_restarting(
    x402pay_chain: Devnet, demo: str, tmp_path: Path
) -> None:
    ledger_path = str(tmp_path / "spend.db")
    Ledger.sqlite(ledger_path).close()
    before = payer_balance(x402pay_chain)
    context = multiprocessing.get_context("spawn")
    bot = (x402pay_chain.rpc_url, "0x" + x402pay_chain.payers[2].key.hex(), demo, ledger_path)
    outcomes: dict[str, str] = {}
    for round_number, route, point in [(n, r, p) for n in range(ROUNDS) for r in ROUTES for p in KILL_POINTS]:
        key = f"round {round_number}, {route}: {point}"
        child = context.Process(target=_pay, args=(*bot, route, key, point))
        child.start()
        child.join(120)
        assert child.exitcode == -signal.SIGKILL, key
        with Ledger.sqlite(ledger_path) as ledger:
            interrupted = ledger.lookup(key)
            used_before = (
                interrupted is not None and interrupted.payment is not None and _used(x402pay_chain, interrupted)
            )
        restarted = context.Process(target=_pay_again, args=(*bot, route, key))  # a fresh process, the same key
        restarted.start()
        restarted.join(120)
        outcomes[key] = {0: "accepted", REFUSED: "refused"}.get(restarted.exitcode, f"exit {restarted.exitcode}")
        # still valid when re-sent (unused): accepted on the first re-send; already used: refused, never re-signed
        assert outcomes[key] == ("refused" if used_before else "accepted"), (key, outcomes[key])
    assert outcomes == {
        f"round {n}, {route}: {point}": seen
        for n in range(ROUNDS)
        for route in ROUTES
        for point, seen in KILL_POINTS.items()
    }

    with Ledger.sqlite(ledger_path) as ledger:
        ledger.reconcile(Web3Chain(x402pay_chain.web3()))
        entries = ledger.entries(limit=100)
        live = [entry for entry in entries if entry.state is not EntryState.RELEASED]
        assert sorted(entry.key for entry in live) == sorted(outcomes)  # one live entry per key: no second signature
        moved = before - payer_balance(x402pay_chain)
        assert all(entry.state is EntryState.SETTLED for entry in live), [(e.key, e.state) for e in live]
        assert sum(entry.held for entry in entries) == moved  # the books hold exactly what the chain moved


def _used(devnet: Devnet, entry: Any) -> bool:
    """Whether the entry's authorization was consumed on chain (the server settled before the bot died)."""
    from x402pay.ledger import Web3Chain

    return Web3Chain(devnet.web3()).nonce_used(entry)
