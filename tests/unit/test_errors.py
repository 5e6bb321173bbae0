"""The error tree: one module, drawn in its docstring, every class reachable from the package root."""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest

import x402pay
import x402pay.ledger
import x402pay.server
import x402pay.testing
from x402pay import errors
from x402pay.ledger import DEFAULT_STALE_AFTER, Ledger

DEFINED = {
    name: value
    for name, value in vars(errors).items()
    if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == errors.__name__
}
TREE_LINE = re.compile(r"^ *(?P<name>X402PayError)$|^[│ ]*[├└]── (?P<child>\w+)(?:\s|$)")


def drawn_tree(docstring: str) -> dict[str, str | None]:
    """Each class drawn in `docstring`'s tree, with the class drawn as its parent (None for the root)."""
    parents: dict[str, str | None] = {}
    path: list[str] = []
    root_column = 0
    for line in docstring.splitlines():
        match = TREE_LINE.match(line)
        if match is None:
            continue
        if match["name"]:
            name, depth, root_column = match["name"], 0, match.start("name")
        else:
            name, depth = match["child"], (match.start("child") - root_column) // 4
        del path[depth:]
        parents[name] = path[-1] if path else None
        path.append(name)
    return parents


def test_the_docstring_draws_every_class_of_the_errors_module_under_its_real_parent() -> None:
    tree = drawn_tree(errors.__doc__ or "")
    assert set(tree) == set(DEFINED)
    for name, parent in tree.items():
        base = DEFINED[name].__bases__[0]
        assert base.__name__ == (parent or "Exception"), name


def test_the_testing_kit_draws_its_branch_too() -> None:
    from x402pay.testing import _errors as kit

    tree = drawn_tree(kit.__doc__ or "")
    assert tree == {"X402PayError": None, "DevnetError": "X402PayError", "AnvilNotFound": "DevnetError",
                    "AnvilStartError": "DevnetError"}  # fmt: skip
    for name in ("DevnetError", "AnvilNotFound", "AnvilStartError"):
        assert getattr(x402pay.testing, name) is getattr(kit, name)


@pytest.mark.parametrize("name", sorted(DEFINED))
def test_every_error_is_exported_from_the_root_and_is_an_x402pay_error(name: str) -> None:
    assert name in x402pay.__all__
    assert getattr(x402pay, name) is DEFINED[name]
    assert issubclass(DEFINED[name], x402pay.X402PayError)


def test_every_error_the_root_exports_is_defined_in_the_errors_module() -> None:
    exported = {name for name in x402pay.__all__ if inspect.isclass(getattr(x402pay, name))}
    assert {name for name in exported if issubclass(getattr(x402pay, name), BaseException)} == set(DEFINED)


def test_the_devnet_errors_are_the_testing_kits_not_the_roots() -> None:
    for name in ("DevnetError", "AnvilNotFound", "AnvilStartError"):
        assert name not in x402pay.__all__
        assert name in x402pay.testing.__all__
        assert issubclass(getattr(x402pay.testing, name), x402pay.X402PayError)


@pytest.mark.parametrize(
    "name", ["BudgetExceeded", "EntryNotFound", "InvalidTransition", "LedgerError", "PaymentInFlight", "SchemaError"]
)
def test_the_ledger_exports_the_same_error_objects(name: str) -> None:
    assert getattr(x402pay.ledger, name) is DEFINED[name]


@pytest.mark.parametrize("name", ["FacilitatorError", "MalformedPayment", "ServerStartError"])
def test_the_server_exports_the_same_error_objects(name: str) -> None:
    assert name in x402pay.server.__all__
    assert getattr(x402pay.server, name) is DEFINED[name]


def test_a_budget_refusal_is_a_spend_cap_refusal() -> None:
    assert issubclass(x402pay.BudgetExceeded, x402pay.SpendCapExceeded)


def test_already_paid_is_our_refusal_not_the_peers() -> None:
    # Raised before anything is signed for the new origin: no peer refused a payment.
    assert x402pay.AlreadyPaid.__bases__ == (x402pay.PaymentError,)
    assert not issubclass(x402pay.AlreadyPaid, x402pay.PaymentRejected)


def test_payment_in_flight_says_what_the_caller_can_do_and_nothing_about_re_sending() -> None:
    fields: dict[str, Any] = {
        "origin": "https://api.example.com",
        "asset": "0x" + "11" * 20,
        "network": "eip155:8453",
        "amount": 10,
        "pay_to": "0x" + "22" * 20,
    }
    with Ledger.sqlite(":memory:") as ledger:
        ledger.reserve("k", **fields)
        with pytest.raises(x402pay.PaymentInFlight) as caught:
            ledger.reserve("k", **fields)

    message = str(caught.value)
    assert not re.search(r"re-?send", message, re.IGNORECASE)  # a caller has no signed payment to re-send
    for advice in ("'k'", "signing", "died", "same key", "release_stale", "reconcile", f"{DEFAULT_STALE_AFTER} s"):
        assert advice in message
