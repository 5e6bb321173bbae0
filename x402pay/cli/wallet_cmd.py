"""``x402pay wallet``: new (an encrypted keystore), address, balance, approve-permit2; and the paying wallet."""

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
from x402pay.cli.chain import add_timeout, connect, talking_to_chain
from x402pay.cli.common import EXIT_OK, UsageError, parse_usdc, usdc_text
from x402pay.cli.config import setting
from x402pay.errors import WalletError

_KEYSTORE_HELP = "a v3 keystore (X402PAY_KEYSTORE); else the key in X402PAY_PRIVATE_KEY"
_UNLOCK_HELP = (
    "a file whose first line is the keystore's password (X402PAY_PASSWORD_FILE); "
    "else X402PAY_KEYSTORE_PASSWORD, else a prompt"
)


def register(commands: Any) -> None:
    """Add ``wallet`` and its sub-commands."""
    wallet = commands.add_parser("wallet", help="keys and balances", description="Keys, balances and approvals.")
    actions = wallet.add_subparsers(title="actions", metavar="ACTION", dest="action", required=True)
    new = actions.add_parser("new", help="create a key in an encrypted v3 keystore", description="Create a key, "
                             "encrypt it into a keystore file (mode 0600) and print its address.")  # fmt: skip
    new.add_argument("--keystore", required=True, help="where to write the keystore (refuses to overwrite)")
    new.add_argument("--password-file", help=_UNLOCK_HELP)
    new.set_defaults(run=run_new)
    address = actions.add_parser("address", help="print the wallet's address", description="Print the address.")
    wallet_flags(address)
    address.set_defaults(run=run_address)
    balance = actions.add_parser("balance", help="ETH, token balance and Permit2 allowance on a chain",
                                 description="Print ETH, the token balance and the Permit2 allowance.")  # fmt: skip
    wallet_flags(balance, chain=True)
    balance.add_argument("--json", action="store_true", help="JSON (balances as ints of wei and atomic units)")
    balance.set_defaults(run=run_balance)
    approve = actions.add_parser(
        "approve-permit2", help="send the one-time approve(Permit2) (a real transaction)",
        description="Let Permit2 spend the token, so that Permit2 payments can be signed; prints the tx hash.",
    )  # fmt: skip
    wallet_flags(approve, chain=True)
    approve.add_argument("--amount", help="USDC to allow, e.g. 25 (default: unlimited)")
    approve.set_defaults(run=run_approve)


def wallet_flags(parser: argparse.ArgumentParser, *, chain: bool = False) -> None:
    """Add --keystore and --password-file (and the chain's --rpc-url, --asset, --timeout)."""
    parser.add_argument("--keystore", help=_KEYSTORE_HELP)
    parser.add_argument("--password-file", help=_UNLOCK_HELP)
    if chain:
        parser.add_argument("--rpc-url", help="the chain's JSON-RPC URL (X402PAY_RPC_URL)")
        parser.add_argument("--asset", help="the token (default: the chain's known USDC)")
        add_timeout(parser)


def load_wallet(args: argparse.Namespace) -> Wallet:
    """The paying wallet: the keystore setting (and its password), else the key in the environment."""
    keystore = setting(args, "keystore")
    if not keystore:
        return Wallet.from_env()
    return Wallet.from_keystore(Path(str(keystore)).expanduser(), _password(args, f"password for {keystore}: "))


def _password(args: argparse.Namespace, prompt: str) -> str:
    """The keystore password: --password-file's first line, X402PAY_KEYSTORE_PASSWORD, else a prompt on a tty."""
    named = setting(args, "password_file")
    if named:
        try:
            return Path(str(named)).expanduser().read_text(encoding="utf-8").splitlines()[0]
        except (OSError, UnicodeDecodeError, IndexError) as exc:
            why = getattr(exc, "strerror", None) or "no password in it"
            raise UsageError(f"cannot read a password from {named}: {why}") from None
    password = os.environ.get("X402PAY_KEYSTORE_PASSWORD")
    if password is not None:
        return password
    if not sys.stdin.isatty():
        raise WalletError("the keystore needs a password: give --password-file or set X402PAY_KEYSTORE_PASSWORD")
    return getpass.getpass(prompt)


def keystore_address(path: Path) -> str | None:
    """The address a v3 keystore names in clear (no password needed), if it names one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    address = data.get("address") if isinstance(data, dict) else None
    return address if isinstance(address, str) else None


def run_new(args: argparse.Namespace) -> int:
    """Create a key, encrypt it into a keystore file (mode 0600), print its address."""
    path = Path(args.keystore).expanduser()
    if path.exists():
        raise UsageError(f"{path} exists; refusing to overwrite a keystore")
    wallet, keystore = Wallet.new_keystore(_new_password(args))
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(keystore, file)
    print(wallet.address)
    print(f"keystore written to {path}", file=sys.stderr)
    return EXIT_OK


def _new_password(args: argparse.Namespace) -> str:
    if setting(args, "password_file") or "X402PAY_KEYSTORE_PASSWORD" in os.environ or not sys.stdin.isatty():
        return _password(args, "")
    first, second = getpass.getpass("new keystore password: "), getpass.getpass("repeat it: ")
    if first != second:
        raise UsageError("the two passwords differ")
    return first


def run_address(args: argparse.Namespace) -> int:
    """Print the address (read from the keystore in clear when it names one: no password needed)."""
    keystore = setting(args, "keystore")
    named = keystore_address(Path(str(keystore)).expanduser()) if keystore else None
    if named is not None:
        from eth_utils.address import is_address, to_checksum_address

        named = named if named.startswith("0x") else "0x" + named
        if is_address(named):
            print(to_checksum_address(named))
            return EXIT_OK
    print(load_wallet(args).address)
    return EXIT_OK


def run_balance(args: argparse.Namespace) -> int:
    """Print ETH, the token balance and the Permit2 allowance."""
    wallet = load_wallet(args)
    web3, where = connect(args)
    with talking_to_chain(args, where, "reading the balances"):
        asset = _asset(args, web3)
        token = web3.eth.contract(address=asset, abi=TOKEN_ABI)
        found = {
            "address": wallet.address, "chain": f"eip155:{web3.eth.chain_id}", "token": asset,
            "eth_wei": int(web3.eth.get_balance(wallet.address)),
            "balance_atomic": int(token.functions.balanceOf(wallet.address).call()),
            "permit2_allowance_atomic": int(wallet.permit2_allowance(web3, asset)),
        }  # fmt: skip
    if args.json:
        print(json.dumps(found, indent=2))
        return EXIT_OK
    print(f"address     {found['address']}")
    print(f"chain       {found['chain']}")
    print(f"ETH         {web3.from_wei(found['eth_wei'], 'ether')}")
    print(f"token       {asset}")
    print(f"balance     {usdc_text(found['balance_atomic'])}")
    print(f"Permit2     {usdc_text(found['permit2_allowance_atomic'])} allowed")
    return EXIT_OK


def run_approve(args: argparse.Namespace) -> int:
    """Send approve(Permit2) and print the transaction hash."""
    amount = parse_usdc(args.amount, "--amount") if args.amount is not None else None
    wallet = load_wallet(args)
    web3, where = connect(args)
    with talking_to_chain(args, where, "sending approve(Permit2)"):
        print(wallet.approve_permit2(web3, _asset(args, web3), amount))
    return EXIT_OK


def _asset(args: argparse.Namespace, web3: Any) -> Any:
    from web3 import Web3

    asset = args.asset or setting(args, "asset") or known_usdc(int(web3.eth.chain_id))
    if not Web3.is_address(asset):
        raise UsageError(f"--asset {str(asset)[:80]!r} is not an address (0x and 40 hex digits)")
    return Web3.to_checksum_address(asset)


def known_usdc(chain_id: int) -> str:
    """The known USDC deployment on `chain_id`; UsageError when there is none."""
    for (known_chain, _), asset in KNOWN_ASSETS.items():
        if known_chain == chain_id:
            return asset.address
    raise UsageError(f"no known USDC on chain {chain_id}: give --asset")
