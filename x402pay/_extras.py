"""The package's extras (pyproject.toml's optional dependencies): a command that needs one says which, in one line."""

from __future__ import annotations

import importlib.util
from typing import Final

from x402pay.errors import MissingExtra

#: The modules each extra installs, by the names they are imported under.
_MODULES: Final = {
    "server": ("starlette", "uvicorn"),
    "demo": ("starlette", "uvicorn", "httpx2", "openai", "mcp"),
    "mcp": ("mcp", "starlette"),
}


def require_extra(extra: str, user: str) -> None:
    """Raise `MissingExtra`, naming `user` (what needs it) and the pip command, if a module of `extra` is missing."""
    missing = [name for name in _MODULES[extra] if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtra(f"{user} needs {', '.join(missing)}: pip install 'x402pay[{extra}]'")
