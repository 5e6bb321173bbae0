"""The ``x402pay`` command."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING

from x402pay import __version__
from x402pay.errors import X402PayError

if TYPE_CHECKING:
    from x402pay.testing import Devnet

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 failure, 2 usage)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code: int = args.run(args)
    except X402PayError as exc:
        print(f"x402pay: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="x402pay", description="Pay for HTTP calls over x402, safely.")
    parser.add_argument("--version", action="version", version=f"x402pay {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    devnet = commands.add_parser(
        "devnet",
        help="run a local chain with the x402 contracts deployed, until Ctrl-C",
        description="Start anvil on 127.0.0.1, deploy TestUSDC, Permit2, the x402 proxies and Multicall3 "
        "(at their canonical addresses), fund payer accounts, print everything, and run until Ctrl-C.",
    )
    devnet.add_argument("--payers", type=int, default=3, help="how many funded payer accounts (default 3, max 7)")
    devnet.set_defaults(run=_run_devnet)
    return parser


def _run_devnet(args: argparse.Namespace) -> int:
    from x402pay.testing import Anvil, deploy_devnet

    if not 0 <= args.payers <= 7:
        print("x402pay devnet: --payers must be between 0 and 7", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    with Anvil() as anvil:
        devnet = deploy_devnet(anvil.rpc_url, payers=args.payers)
        print(_describe(devnet), flush=True)
        print("devnet ready; Ctrl-C stops it", flush=True)
        while not stop.wait(0.5):
            if not anvil.running:
                print("x402pay devnet: anvil exited unexpectedly", file=sys.stderr)
                return EXIT_ERROR
    print("devnet stopped", flush=True)
    return EXIT_OK


def _describe(devnet: Devnet) -> str:
    rows = [
        ("RPC URL", devnet.rpc_url),
        ("chain id", f"{devnet.chain_id} ({devnet.network})"),
        ("USDC (TestUSDC)", devnet.usdc),
        ("Permit2", devnet.permit2),
        ("x402 exact proxy", devnet.exact_proxy),
        ("x402 upto proxy", devnet.upto_proxy),
        ("Multicall3", devnet.multicall3),
    ]
    accounts = [("deployer/minter", devnet.deployer), ("facilitator", devnet.facilitator), ("payee", devnet.payee)]
    accounts += [(f"payer {number}", payer) for number, payer in enumerate(devnet.payers, start=1)]
    lines = [f"{label:<18} {value}" for label, value in rows]
    lines.append("accounts (anvil's public test keys; never use them for real money):")
    lines += [f"  {label:<16} {account.address}  key 0x{account.key.hex()}" for label, account in accounts]
    return "\n".join(lines)
