"""``x402pay pay URL``: a curl-like paid request; the body to stdout (streamed as it comes), the payment to stderr."""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from x402pay._amounts import usdc
from x402pay._payment import Payment, payment_of
from x402pay._policy import SpendPolicy
from x402pay._transport import PaymentTransport
from x402pay._trust import DEFAULT_TRUST_FILE, TrustStore
from x402pay.cli.books_cmd import open_ledger
from x402pay.cli.common import EXIT_HTTP, EXIT_OK, UsageError, load_wallet, setting, usdc_text

DEFAULT_MAX = "0.05"


def register(commands: Any) -> None:
    """Add the ``pay`` sub-command."""
    pay = commands.add_parser(
        "pay",
        help="make a paid HTTP request (curl-like)",
        description="Send a request; if the server asks for an x402 payment within --max, pay it once. "
        "The body goes to stdout as it arrives; the payment summary goes to stderr.",
    )
    pay.add_argument("url")
    pay.add_argument("-X", "--request", dest="method", help="HTTP method (default GET, or POST with -d)")
    pay.add_argument("-d", "--data", help="request body: text, @FILE, or - for stdin")
    pay.add_argument("-H", "--header", action="append", default=[], help="a header, 'Name: value' (repeatable)")
    pay.add_argument("--max", help=f"most USDC to pay for this request (X402PAY_MAX; default {DEFAULT_MAX})")
    pay.add_argument("--network", action="append", help="allowed network, e.g. eip155:8453 (repeatable)")
    pay.add_argument("--asset", action="append", help="allow this token address too (default: known USDC only)")
    pay.add_argument("--keystore", help="a v3 keystore (X402PAY_KEYSTORE); else X402PAY_PRIVATE_KEY")
    pay.add_argument("--rpc-url", help="check the Permit2 allowance on this chain before signing (X402PAY_RPC_URL)")
    pay.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
    pay.add_argument(
        "--ledger", help="keep the payment in this ledger (X402PAY_LEDGER): budgets, one signature per key"
    )
    pay.add_argument("--budget", help="refuse once this much USDC is held in the ledger (X402PAY_BUDGET)")
    pay.add_argument("--window", choices=["total", "hour", "day"], help="the budget's window (default total)")
    pay.add_argument("--trust-file", help="the untrusted origins (X402PAY_TRUST_FILE)")
    pay.set_defaults(run=run_pay)


def run_pay(args: argparse.Namespace) -> int:
    """Send the request, paying if asked; stream the body out; report the payment."""
    policy, headers, body = _policy(args), _headers(args.header), _body(args.data)
    ledger = open_ledger(args) if setting(args, "ledger") or setting(args, "budget") else None
    transport = PaymentTransport(
        wallet=load_wallet(args), policy=policy, rpc_url=setting(args, "rpc_url"), ledger=ledger,
        trust=TrustStore(setting(args, "trust_file", str(DEFAULT_TRUST_FILE))),
    )  # fmt: skip
    method = args.method or ("POST" if body is not None else "GET")
    with (
        httpx.Client(transport=transport, timeout=args.timeout) as client,
        client.stream(method, args.url, content=body, headers=headers) as response,
    ):
        for chunk in response.iter_bytes():
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
    print(summary(payment_of(response), response.status_code), file=sys.stderr)
    return EXIT_HTTP if response.status_code >= 400 else EXIT_OK


def summary(payment: Payment | None, status: int) -> str:
    """One line about the payment (or its absence) for stderr."""
    if payment is None:
        return f"x402pay: HTTP {status}, no payment made"
    requirement = payment.requirement
    parts = [
        f"x402pay: HTTP {status}, {payment.scheme} payment {payment.status.value}",
        f"charged {usdc_text(payment.settled_amount)} of max {usdc_text(payment.signed_amount)}",
        f"to {requirement.pay_to} on {requirement.network}",
        f"tx {payment.transaction or '-'}",
    ]
    if payment.mismatch or payment.settlement_error:
        parts.append(f"problem: {payment.mismatch or payment.settlement_error}")
    return "; ".join(parts)


def _policy(args: argparse.Namespace) -> SpendPolicy:
    text = str(setting(args, "max", DEFAULT_MAX))
    try:
        cap = usdc(Decimal(text))
    except (ValueError, ArithmeticError) as exc:
        raise UsageError(f"--max {text!r}: {exc}") from exc
    try:
        return SpendPolicy(
            max_per_request=cap,
            networks=tuple(args.network) if args.network else None,
            assets=frozenset(args.asset) if args.asset else None,
        )
    except ValueError as exc:  # e.g. --network base instead of eip155:8453
        raise UsageError(str(exc)) from exc


def _body(data: str | None) -> bytes | None:
    if data is None:
        return None
    if data == "-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        try:
            return Path(data[1:]).expanduser().read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {data[1:]}: {exc.strerror}") from exc
    return data.encode()


def _headers(values: list[str]) -> list[tuple[str, str]]:
    headers = []
    for value in values:
        name, colon, text = value.partition(":")
        if not colon or not name.strip():
            raise UsageError(f"-H {value!r}: expected 'Name: value'")
        headers.append((name.strip(), text.strip()))
    return headers
