"""``x402pay pay URL``: a curl-like paid request; the body to stdout (streamed as it comes), the payment to stderr."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Final

import httpx

from x402pay._payment import Payment, payment_of
from x402pay._policy import SpendPolicy
from x402pay._protocol.networks import chain_id_of
from x402pay._transport import PaymentTransport
from x402pay._trust import TrustStore
from x402pay.cli.books_cmd import ledger_flags, open_ledger
from x402pay.cli.chain import add_timeout, timeout_of
from x402pay.cli.common import EXIT_HTTP, EXIT_OK, UsageError, parse_usdc, usdc_text
from x402pay.cli.config import lookup, setting, state_dir
from x402pay.cli.wallet_cmd import load_wallet, wallet_flags

DEFAULT_MAX: Final = "0.05"
#: Seconds between bytes of the answer before giving up: a paid model may think for a while before it speaks.
PAY_TIMEOUT: Final = 60.0


def register(commands: Any) -> None:
    """Add the ``pay`` sub-command."""
    pay = commands.add_parser(
        "pay",
        help="make a paid HTTP request (curl-like)",
        description="Send a request; if the server asks for an x402 payment within --max, pay it once. "
        "The body goes to stdout as it arrives; the payment summary goes to stderr. Every payment is recorded "
        "in the ledger (see x402pay ledger), and the budgets of the config file are enforced.",
    )
    pay.add_argument("url", help="the http:// or https:// URL to request")
    pay.add_argument("-X", "--request", dest="method", help="HTTP method (default GET, or POST with -d)")
    pay.add_argument("-d", "--data", help="request body: text, @FILE, or - for stdin")
    pay.add_argument("-H", "--header", action="append", default=[], help="a header, 'Name: value' (repeatable)")
    pay.add_argument("--max", help=f"most USDC to pay for this request (X402PAY_MAX; default {DEFAULT_MAX})")
    pay.add_argument("--network", action="append", help="allowed network, e.g. eip155:8453 (repeatable)")
    pay.add_argument(
        "--channels", action="store_true",
        help="also pay through batch-settlement payment channels (a deposit: at most ten times --max)",
    )  # fmt: skip
    ledger_flags(pay, for_pay=True)
    pay.add_argument("--json", action="store_true", help="the payment summary on stderr as JSON")
    wallet_flags(pay)
    pay.add_argument("--rpc-url", help="check the Permit2 allowance on this chain before signing (X402PAY_RPC_URL)")
    add_timeout(pay, PAY_TIMEOUT, "the server (between bytes) and the chain")
    pay.add_argument("--trust-file", help="the untrusted origins (X402PAY_TRUST_FILE)")
    pay.set_defaults(run=run_pay)


def run_pay(args: argparse.Namespace) -> int:
    """Send the request, paying if asked; stream the body out; report the payment."""
    url = _url(args.url)
    policy, headers, body = _policy(args), _headers(args.header), _body(args.data)
    timeout = timeout_of(args, PAY_TIMEOUT)
    wallet = load_wallet(args)
    trust = TrustStore(setting(args, "trust_file", str(state_dir() / "untrusted.json")))
    with open_ledger(args) as ledger:
        transport = PaymentTransport(
            wallet=wallet, policy=policy, rpc_url=setting(args, "rpc_url"), ledger=ledger, trust=trust
        )
        method = args.method or ("POST" if body is not None else "GET")
        with (
            httpx.Client(transport=transport, timeout=timeout) as client,
            client.stream(method, url, content=body, headers=headers) as response,
        ):
            for chunk in response.iter_bytes():
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
    payment = payment_of(response)
    print(summary_json(payment, response.status_code) if args.json else summary(payment, response.status_code),
          file=sys.stderr)  # fmt: skip
    return EXIT_HTTP if response.status_code >= 400 else EXIT_OK


def summary(payment: Payment | None, status: int) -> str:
    """One line about the payment (or its absence) for stderr."""
    if payment is None:
        return f"x402pay: HTTP {status}, no payment made"
    requirement = payment.requirement
    parts = [
        f"x402pay: HTTP {status}, {payment.scheme} payment {payment.status.value}",
        f"charged {usdc_text(payment.settled_amount)} of max {usdc_text(payment.signed_amount)} USDC",
        f"to {requirement.pay_to} on {requirement.network}",
        f"tx {payment.transaction or '-'}",
    ]
    if payment.mismatch or payment.settlement_error:
        parts.append(f"problem: {payment.mismatch or payment.settlement_error}")
    return "; ".join(parts)


def summary_json(payment: Payment | None, status: int) -> str:
    """The payment (or its absence) as one line of JSON; amounts as ints of atomic units."""
    record: dict[str, Any] = {"http_status": status, "paid": payment is not None}
    if payment is not None:
        record.update(
            scheme=payment.scheme, status=payment.status.value, network=payment.requirement.network,
            asset=payment.requirement.asset, pay_to=payment.requirement.pay_to,
            signed_amount_atomic=payment.signed_amount, settled_amount_atomic=payment.settled_amount,
            transaction=payment.transaction, problem=payment.mismatch or payment.settlement_error,
        )  # fmt: skip
    return json.dumps(record)


def _url(text: str) -> str:
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise UsageError(f"{text[:80]!r} is not a URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise UsageError(f"{text[:80]!r} is not an http:// or https:// URL")
    return text


def _policy(args: argparse.Namespace) -> SpendPolicy:
    found = lookup(args, "max")
    cap = parse_usdc(*found) if found is not None else parse_usdc(DEFAULT_MAX, "default max")
    for network in args.network or ():
        try:
            chain_id_of(network)
        except ValueError:
            raise UsageError(f"--network {network[:40]!r}: give an EVM network as CAIP-2, e.g. eip155:8453") from None
    for asset in args.asset or ():
        if not (asset.startswith("0x") and len(asset) == 42 and all(c in "0123456789abcdefABCDEF" for c in asset[2:])):
            raise UsageError(f"--asset {asset[:80]!r} is not a token address (0x and 40 hex digits)")
    try:
        return SpendPolicy(
            max_per_request=cap,
            networks=tuple(args.network) if args.network else None,
            assets=frozenset(args.asset) if args.asset else None,
            schemes=("exact", "upto", "batch-settlement") if args.channels else ("exact", "upto"),
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
