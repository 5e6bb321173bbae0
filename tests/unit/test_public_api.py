"""Public names: each `__all__` is sorted, complete, and every name in it exists."""

from __future__ import annotations

import types

import pytest

import x402pay
import x402pay.testing


def public_names(module: types.ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType) and name != "annotations"
    }


@pytest.mark.parametrize("module", [x402pay, x402pay.testing], ids=lambda m: m.__name__)
def test_all_is_sorted(module: types.ModuleType) -> None:
    assert module.__all__ == sorted(module.__all__)


@pytest.mark.parametrize("module", [x402pay, x402pay.testing], ids=lambda m: m.__name__)
def test_all_is_complete_and_exists(module: types.ModuleType) -> None:
    exported = set(module.__all__) - {"__version__"}
    assert exported == public_names(module)
    for name in module.__all__:
        assert hasattr(module, name), name


def test_every_public_object_has_a_docstring() -> None:
    for module in (x402pay, x402pay.testing):
        for name in public_names(module):
            value = getattr(module, name)
            if callable(value):
                assert value.__doc__, f"{module.__name__}.{name} has no docstring"
