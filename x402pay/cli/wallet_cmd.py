"""``x402pay wallet``: new (an encrypted keystore), address, balance, approve-permit2."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

from x402pay._protocol.abi import TOKEN_ABI
from x402pay._protocol.networks import KNOWN_ASSETS
from x402pay._wallet import Wallet
from x402pay.cli.common import EXIT_OK, UsageError, keystore_address, load_wallet, setting, usdc_text
from x402pay.errors import WalletError


def register(commands: Any) -> None:
    """Add ``wallet`` and its sub-commands."""
    wallet = commands.add_parser("wallet", help="keys and balances", description="Keys, balances and approvals.")
    actions = wallet.add_subparsers(title="actions", metavar="ACTION", dest="action", required=True)
    new = actions.add_parser("new", help="create a key in an encrypted v3 keystore")
    new.add_argument("--keystore", required=True, help="where to write the keystore (refuses to overwrite)")
    new.set_defaults(run=run_new)
    address = actions.add_parser("address", help="print the wallet's address")
    _wallet_flags(address)
    address.set_defaults(run=run_address)
    balance = actions.add_parser("balance", help="ETH, token balance and Permit2 allowance on a chain")
    _wallet_flags(balance, chain=True)
    balance.set_defaults(run=run_balance)
    approve = actions.add_parser("approve-permit2", help="send the one-time approve(Permit2) (a real transaction)")
    _wallet_flags(approve, chain=True)
    approve.add_argument("--amount", type=int, help="atomic units to allow (default: unlimited)")
    approve.set_defaults(run=run_approve)


def _wallet_flags(parser: argparse.ArgumentParser, *, chain: bool = False) -> None:
    parser.add_argument("--keystore", help="a v3 keystore (X402PAY_KEYSTORE); else X402PAY_PRIVATE_KEY")
    if chain:
        parser.add_argument("--rpc-url", help="the chain's JSON-RPC URL (X402PAY_RPC_URL)")
        parser.add_argument("--asset", help="the token (default: the chain's known USDC)")


def run_new(args: argparse.Namespace) -> int:
    """Create a key, encrypt it into a keystore file (mode 0600), print its address."""
    path = Path(args.keystore).expanduser()
    if path.exists():
        raise UsageError(f"{path} exists; refusing to overwrite a keystore")
    wallet, keystore = Wallet.new_keystore(_new_password())
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(keystore, file)
    print(wallet.address)
    print(f"keystore written to {path}", file=sys.stderr)
    return EXIT_OK


def _new_password() -> str:
    password = os.environ.get("X402PAY_KEYSTORE_PASSWORD")
    if password is not None:
        return password
    if not sys.stdin.isatty():
        raise WalletError("set X402PAY_KEYSTORE_PASSWORD, or run in a terminal to be asked for a password")
    first, second = getpass.getpass("new keystore password: "), getpass.getpass("repeat it: ")
    if first != second:
        raise UsageError("the two passwords differ")
    return first


def run_address(args: argparse.Namespace) -> int:
    """Print the address (read from the keystore in clear when it names one: no password needed)."""
    keystore = setting(args, "keystore")
    named = keystore_address(Path(keystore).expanduser()) if keystore else None
    if named is not None:
        from eth_utils.address import to_checksum_address

        print(to_checksum_address(named if named.startswith("0x") else "0x" + named))
        return EXIT_OK
    print(load_wallet(args).address)
    return EXIT_OK


def run_balance(args: argparse.Namespace) -> int:
    """Print ETH, the token balance and the Permit2 allowance."""
    web3, asset = _chain(args)
    wallet = load_wallet(args)
    token = web3.eth.contract(address=asset, abi=TOKEN_ABI)
    print(f"address     {wallet.address}")
    print(f"chain       eip155:{web3.eth.chain_id}")
    print(f"ETH         {web3.from_wei(web3.eth.get_balance(wallet.address), 'ether')}")
    print(f"token       {asset}")
    print(f"balance     {usdc_text(token.functions.balanceOf(wallet.address).call())}")
    print(f"Permit2     {usdc_text(wallet.permit2_allowance(web3, asset))} allowed")
    return EXIT_OK


def run_approve(args: argparse.Namespace) -> int:
    """Send approve(Permit2) and print the transaction hash."""
    web3, asset = _chain(args)
    print(load_wallet(args).approve_permit2(web3, asset, args.amount))
    return EXIT_OK


def _chain(args: argparse.Namespace) -> tuple[Any, Any]:
    from web3 import Web3

    from x402pay._rpc import web3_for

    rpc_url = setting(args, "rpc_url")
    if not rpc_url:
        raise UsageError("give --rpc-url (or X402PAY_RPC_URL)")
    web3 = web3_for(rpc_url)
    asset = args.asset or setting(args, "asset") or known_usdc(int(web3.eth.chain_id))
    return web3, Web3.to_checksum_address(asset)


def known_usdc(chain_id: int) -> str:
    """The known USDC deployment on `chain_id`; UsageError when there is none."""
    for (known_chain, _), asset in KNOWN_ASSETS.items():
        if known_chain == chain_id:
            return asset.address
    raise UsageError(f"no known USDC on chain {chain_id}: give --asset")
