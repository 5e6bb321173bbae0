"""Public names: each `__all__` (the root's and each public subpackage's) is sorted, complete, and exists."""

from __future__ import annotations

import types

import pytest

import x402pay
import x402pay.ledger
import x402pay.mcp
import x402pay.server
import x402pay.testing
import x402pay.verify

PUBLIC = [x402pay, x402pay.ledger, x402pay.mcp, x402pay.server, x402pay.testing, x402pay.verify]


def public_names(module: types.ModuleType) -> set[str]:
    defined = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType) and name != "annotations"
    }
    return defined | set(getattr(module, "_LAZY", {}))


def isort_key(name: str) -> tuple[int, str]:
    """Constants, then classes, then the rest (the order ruff's RUF022 keeps)."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2), name


@pytest.mark.parametrize("module", PUBLIC, ids=lambda m: m.__name__)
def test_all_is_sorted(module: types.ModuleType) -> None:
    assert module.__all__ == sorted(module.__all__, key=isort_key)


@pytest.mark.parametrize("module", PUBLIC, ids=lambda m: m.__name__)
def test_all_is_complete_and_exists(module: types.ModuleType) -> None:
    exported = set(module.__all__) - {"__version__"}
    assert exported == public_names(module)
    for name in module.__all__:
        assert hasattr(module, name), name


@pytest.mark.parametrize("module", PUBLIC, ids=lambda m: m.__name__)
def test_every_public_object_has_a_docstring(module: types.ModuleType) -> None:
    for name in public_names(module):
        value = getattr(module, name)
        if callable(value):
            assert value.__doc__, f"{module.__name__}.{name} has no docstring"


#: Besides the subpackages: the error tree, the command (`x402pay.cli`) and the pytest plugin (an entry point).
PUBLIC_MODULES = {"errors", "ledger", "mcp", "server", "testing", "verify", "cli", "pytest_plugin"}


@pytest.mark.parametrize("module", PUBLIC, ids=lambda m: m.__name__)
def test_implementation_modules_are_private(module: types.ModuleType) -> None:
    package = module.__name__ + "."
    inner = {name for name, value in vars(module).items() if getattr(value, "__name__", "").startswith(package)}
    inner = {name for name in inner if isinstance(vars(module)[name], types.ModuleType)}
    assert {name for name in inner if not name.startswith("_")} <= PUBLIC_MODULES
