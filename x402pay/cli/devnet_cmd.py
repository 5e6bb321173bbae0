"""``x402pay devnet`` and ``x402pay serve-demo``: a local chain, and the paid demo API on it."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

from x402pay.cli import devnet_state
from x402pay.cli.common import EXIT_ERROR, EXIT_OK, CommandFailed, UsageError, parse_usdc, positive_int, usdc_text
from x402pay.cli.config import setting, state_dir

if TYPE_CHECKING:
    from x402pay.testing import Anvil, Devnet

#: The demo's metered maximum, in USDC: under the official clients' default per-payment cap (1 USDC).
DEMO_UPTO_MAX = "0.1"


def register(commands: Any) -> None:
    """Add the ``devnet`` and ``serve-demo`` sub-commands."""
    devnet = commands.add_parser(
        "devnet",
        help="run a local chain with the x402 contracts deployed, until Ctrl-C",
        description="Start anvil on 127.0.0.1, deploy TestUSDC, Permit2, the x402 proxies and Multicall3 "
        "(at their canonical addresses), fund payer accounts, print everything, and run until Ctrl-C.",
    )
    devnet.add_argument("--payers", type=int, default=3, help="how many funded payer accounts (default 3, max 7)")
    devnet.add_argument("--port", type=_port, default=0, help="the RPC port on 127.0.0.1 (default: any free one)")
    devnet.set_defaults(run=run_devnet)
    demo = commands.add_parser(
        "serve-demo",
        help="serve the paid, Compose-compatible demo API (on its own devnet unless --rpc-url is given)",
        description="Serve the demo API (chat completions, Responses, Anthropic Messages, an exact-priced fortune) "
        "behind the x402 payment middleware with a local on-chain facilitator, until Ctrl-C.",
    )
    demo.add_argument("--rpc-url", help="settle on this chain instead of a devnet of its own (X402PAY_RPC_URL)")
    demo.add_argument("--facilitator-key", help="key of the settling account, with --rpc-url (X402PAY_FACILITATOR_KEY)")
    demo.add_argument("--asset", help="the token to charge in, with --rpc-url")
    demo.add_argument("--pay-to", help="the address paid, with --rpc-url")
    demo.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    demo.add_argument("--port", type=_port, default=8402, help="the port to listen on (default 8402; 0: any free one)")
    demo.add_argument(
        "--upto-max", default=DEMO_UPTO_MAX,
        help=f"the most a metered (upto) call may charge, in USDC (default {DEMO_UPTO_MAX}: below the official "
        "clients' default cap of 1 USDC per payment)",
    )  # fmt: skip
    demo.add_argument(
        "--settle-wait", type=positive_int, default=30,
        help="seconds a settlement waits to be mined before the answer says settlement_pending (default 30)",
    )  # fmt: skip
    demo.add_argument(
        "--settlements", help="the SQLite file of the settlements sent (default: demo-settlements.sqlite3 in the "
        "state directory), so that a restart remembers those still pending",
    )  # fmt: skip
    demo.set_defaults(run=run_serve_demo)
    fund = commands.add_parser(
        "fund", help="give an address test USDC and ETH on the running devnet",
        description="Mint TestUSDC to ADDRESS and set its ETH balance (for gas) on the devnet that `x402pay devnet` "
        "is running (a local anvil chain only): e.g. the address of a keystore made with `x402pay wallet new`.",
    )  # fmt: skip
    fund.add_argument("address", help="the 0x address to fund")
    fund.add_argument("--usdc", default="100", help="how much TestUSDC to mint, in USDC (default 100)")
    fund.add_argument("--eth", type=positive_int, default=1, help="the ETH balance to set, in whole ETH (default 1)")
    fund.set_defaults(run=run_fund)


def _port(text: str) -> int:
    """An argparse type: a TCP port, 0 to 65535."""
    if not text.isascii() or not text.isdigit() or int(text) > 65_535:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a port (0 to 65535)")
    return int(text)


@contextmanager
def until_interrupted() -> Iterator[threading.Event]:
    """An event set by Ctrl-C or SIGTERM while the block runs (the default handlers come back after it)."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGINT, request_stop), signal.signal(signal.SIGTERM, request_stop)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


@contextmanager
def local_devnet(payers: int = 3, port: int = 0) -> Iterator[tuple[Anvil, Devnet]]:
    """Anvil (on `port`, 0 for any free one) with the devnet deployed, stopped by PID when the block exits."""
    from x402pay.testing import Anvil, deploy_devnet

    with Anvil(port=port) as anvil:
        yield anvil, deploy_devnet(anvil.rpc_url, payers=payers)


def run_devnet(args: argparse.Namespace) -> int:
    """Serve a devnet until Ctrl-C."""
    if not 0 <= args.payers <= 7:
        raise UsageError("--payers must be between 0 and 7")
    with until_interrupted() as stop, local_devnet(args.payers, args.port) as (anvil, devnet):
        kept = devnet_state.record(devnet)
        try:
            print(describe(devnet), flush=True)
            print("devnet ready; Ctrl-C stops it (serve-demo and fund find it by themselves)", flush=True)
            while not stop.wait(0.5):
                if not anvil.running:
                    print("x402pay devnet: anvil exited unexpectedly", file=sys.stderr)
                    return EXIT_ERROR
        finally:
            devnet_state.forget(kept)
    print("devnet stopped", flush=True)
    return EXIT_OK


def run_serve_demo(args: argparse.Namespace) -> int:
    """Serve the demo API on an existing chain, or on a devnet of its own."""
    from x402pay._extras import require_extra

    require_extra("server", "serve-demo")
    from x402pay.server._demo import serve_demo

    _check_port_free(args.host, args.port)
    rpc_url = setting(args, "rpc_url")
    if rpc_url:
        key, asset, pay_to = args.facilitator_key or setting(args, "facilitator_key"), args.asset, args.pay_to
        if not (key and asset and pay_to):
            raise UsageError("with --rpc-url, give --facilitator-key (or X402PAY_FACILITATOR_KEY), --asset, --pay-to")
        serve_demo(rpc_url=rpc_url, facilitator_key=key, asset=asset, pay_to=pay_to, **_demo_options(args))
        return EXIT_OK
    attached = devnet_state.running()
    if attached is not None:
        return _serve_on(attached, args)
    with local_devnet() as (_, devnet):
        print(describe(devnet), flush=True)
        where = f"http://{args.host}:{args.port}/v1" if args.port else "the port uvicorn prints below"
        print(f"demo API on {where}; Ctrl-C stops it", flush=True)
        serve_demo(
            rpc_url=devnet.rpc_url, facilitator_key="0x" + devnet.facilitator.key.hex(), asset=devnet.usdc,
            pay_to=devnet.payee.address, **_demo_options(args),
        )  # fmt: skip
    return EXIT_OK


def _serve_on(devnet: devnet_state.RunningDevnet, args: argparse.Namespace) -> int:
    """Serve the demo on the devnet `x402pay devnet` runs: its facilitator settles, its payee is paid."""
    from x402pay.server._demo import serve_demo
    from x402pay.testing import anvil_account

    print(f"serving on the running devnet at {devnet.rpc_url} (USDC {devnet.usdc}); Ctrl-C stops it", flush=True)
    facilitator, payee = anvil_account(1), anvil_account(2)  # as the devnet deployed them
    serve_demo(
        rpc_url=devnet.rpc_url, facilitator_key="0x" + facilitator.key.hex(), asset=devnet.usdc,
        pay_to=payee.address, **_demo_options(args),
    )  # fmt: skip
    return EXIT_OK


def _demo_options(args: argparse.Namespace) -> dict[str, Any]:
    """The demo server's options from the command line: where it listens, its upto maximum, its settlements."""
    from x402pay.server._demo import DemoConfig

    config = DemoConfig(upto_max=parse_usdc(args.upto_max, "--upto-max"))
    settlements = args.settlements or state_dir() / "demo-settlements.sqlite3"
    return {"host": args.host, "port": args.port, "config": config, "settlements": settlements,
            "receipt_timeout": float(args.settle_wait)}  # fmt: skip


def run_fund(args: argparse.Namespace) -> int:
    """Mint test USDC to an address and give it ETH, on the running devnet."""
    from x402pay.testing._devnet import fund_account

    if not re.fullmatch(r"0x[0-9a-fA-F]{40}", args.address):
        raise UsageError(f"{args.address[:60]!r} is not a 0x address of 40 hex digits")
    amount = parse_usdc(args.usdc, "--usdc")
    devnet = devnet_state.running()
    if devnet is None:
        raise CommandFailed("no devnet is running here: start one with `x402pay devnet` (in another terminal)")
    fund_account(devnet.rpc_url, devnet.usdc, args.address, usdc_amount=amount, eth_wei=args.eth * 10**18)
    print(f"funded {args.address} on {devnet.rpc_url}: {usdc_text(amount)} USDC, {args.eth} ETH")
    return EXIT_OK


def _check_port_free(host: str, port: int) -> None:
    """Fail in one line, before anything starts, when `port` is taken (uvicorn would log a traceback-like story)."""
    import socket

    if port == 0:
        return
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise CommandFailed(f"cannot listen on {host}:{port}: {why}; choose another --port") from None


def describe(devnet: Devnet) -> str:
    """What a person needs to use the devnet: the RPC URL, contract addresses, and the public test keys."""
    rows = [
        ("RPC URL", devnet.rpc_url),
        ("chain id", f"{devnet.chain_id} ({devnet.network})"),
        ("USDC (TestUSDC)", devnet.usdc),
        ("Permit2", devnet.permit2),
        ("x402 exact proxy", devnet.exact_proxy),
        ("x402 upto proxy", devnet.upto_proxy),
        ("Multicall3", devnet.multicall3),
    ]
    accounts = [
        ("deployer/minter", devnet.deployer),
        ("facilitator", devnet.facilitator),
        ("payee", devnet.payee),
    ]
    accounts += [(f"payer {number}", payer) for number, payer in enumerate(devnet.payers, start=1)]
    lines = [f"{label:<18} {value}" for label, value in rows]
    lines.append("accounts (anvil's public test keys; never use them for real money):")
    lines += [f"  {label:<16} {account.address}  key 0x{account.key.hex()}" for label, account in accounts]
    return "\n".join(lines)
