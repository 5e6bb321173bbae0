"""What the sub-commands share: exit codes, settings (flag > env var > config file), the wallet, amounts."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from x402pay._amounts import USDC_DECIMALS
from x402pay._wallet import Wallet
from x402pay.errors import WalletError

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_HTTP: Final = 3
EXIT_REFUSED: Final = 4
CONFIG_ENV: Final = "X402PAY_CONFIG"
DEFAULT_CONFIG: Final = Path("~/.config/x402pay/config.toml")


class UsageError(Exception):
    """The command line (or its settings) cannot be carried out as given."""


def config_file() -> dict[str, Any]:
    """The optional TOML config file ($X402PAY_CONFIG, else ~/.config/x402pay/config.toml); {} when absent."""
    path = Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG).expanduser()
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read the config file {path}: {exc}") from exc


def setting(args: argparse.Namespace, name: str, default: Any = None) -> Any:
    """A setting by precedence: the ``--name`` flag, then ``X402PAY_NAME``, then the config file, then `default`."""
    flag = getattr(args, name, None)
    if flag is not None:
        return flag
    env = os.environ.get(f"X402PAY_{name.upper()}")
    if env:
        return env
    return config_file().get(name.replace("_", "-"), config_file().get(name, default))


def load_wallet(args: argparse.Namespace) -> Wallet:
    """The paying wallet: ``--keystore`` (password from X402PAY_KEYSTORE_PASSWORD or a prompt), else the env."""
    keystore = setting(args, "keystore")
    if keystore:
        password = os.environ.get("X402PAY_KEYSTORE_PASSWORD")
        if password is None:
            if not sys.stdin.isatty():
                raise WalletError("the keystore needs a password: set X402PAY_KEYSTORE_PASSWORD")
            password = getpass.getpass(f"password for {keystore}: ")
        return Wallet.from_keystore(Path(keystore).expanduser(), password)
    return Wallet.from_env()


def keystore_address(path: Path) -> str | None:
    """The address a v3 keystore names in clear (no password needed), if it names one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    address = data.get("address") if isinstance(data, dict) else None
    return address if isinstance(address, str) else None


def usdc_text(atomic: int | None, decimals: int = USDC_DECIMALS) -> str:
    """Atomic units as a decimal amount for people (``10000`` -> ``0.010000``)."""
    if atomic is None:
        return "-"
    return f"{Decimal(atomic).scaleb(-decimals):.{decimals}f}"
