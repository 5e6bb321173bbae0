"""Where the command keeps things (the XDG base directories), and its settings: flag > env var > config file.

The config file is ``$X402PAY_CONFIG``, else ``$XDG_CONFIG_HOME/x402pay/config.toml`` (``~/.config`` when the
variable is unset). State (the ledger, the untrusted origins, the running devnet) is kept in
``$XDG_STATE_HOME/x402pay/`` (``~/.local/state``). A key the config file does not know is an error: a cap with a
typo in its name must never be silently ignored.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from pathlib import Path
from typing import Any, Final

from x402pay.cli.common import UsageError

CONFIG_ENV: Final = "X402PAY_CONFIG"

#: The keys of config.toml, each with the flag it stands for and what it holds.
CONFIG_KEYS: Final = {
    "max": 'most USDC one `pay` may sign, e.g. "0.05"',
    "budget": "a budget in USDC that `pay` enforces and `budget` shows",
    "window": "the budget's window: total, hour or day",
    "asset": "the token the budget counts (default: USDC on every chain)",
    "ledger": "the ledger: an SQLite path or a postgresql:// URL",
    "trust-file": "the untrusted origins' file",
    "keystore": "a v3 keystore file",
    "password-file": "a file whose first line is the keystore's password",
    "rpc-url": "the chain's JSON-RPC URL",
    "timeout": "seconds to wait for the chain or a server",
    "facilitator-key": "serve-demo: the settling account's key, with rpc-url",
}


def _base(variable: str, fallback: str) -> Path:
    """An XDG base directory: the variable when it holds an absolute path (the spec ignores relative ones)."""
    value = os.environ.get(variable, "")
    return Path(value) if os.path.isabs(value) else Path.home() / fallback


def config_path() -> Path:
    """The config file: ``$X402PAY_CONFIG``, else ``$XDG_CONFIG_HOME/x402pay/config.toml``."""
    named = os.environ.get(CONFIG_ENV)
    return Path(named).expanduser() if named else _base("XDG_CONFIG_HOME", ".config") / "x402pay" / "config.toml"


def state_dir() -> Path:
    """Where the command keeps its state: ``$XDG_STATE_HOME/x402pay`` (not created here)."""
    return _base("XDG_STATE_HOME", ".local/state") / "x402pay"


def config_file() -> dict[str, Any]:
    """The config file's settings, keys spelled with dashes; {} when there is none. UsageError when unreadable."""
    path = config_path()
    if not path.is_file():
        return {}
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read the config file {path}: {exc}") from exc
    settings = {key.replace("_", "-"): value for key, value in raw.items()}
    for key, value in settings.items():
        if key not in CONFIG_KEYS:
            known = ", ".join(sorted(CONFIG_KEYS))
            raise UsageError(f"unknown key {key!r} in {path}; known keys: {known}")
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise UsageError(f"{key} in {path} must be a string or a number, not {type(value).__name__}")
    return settings


def lookup(args: argparse.Namespace, name: str) -> tuple[Any, str] | None:
    """A setting and where it came from: the ``--name`` flag, ``X402PAY_NAME``, or the config file; None if unset."""
    flag = getattr(args, name, None)
    if flag is not None:
        return flag, f"--{name.replace('_', '-')}"
    env = os.environ.get(f"X402PAY_{name.upper()}")
    if env:
        return env, f"X402PAY_{name.upper()}"
    key = name.replace("_", "-")
    settings = config_file()
    if key in settings:
        return settings[key], f"{key} in {config_path()}"
    return None


def setting(args: argparse.Namespace, name: str, default: Any = None) -> Any:
    """A setting by precedence: the ``--name`` flag, then ``X402PAY_NAME``, then the config file, then `default`."""
    found = lookup(args, name)
    return default if found is None else found[0]
