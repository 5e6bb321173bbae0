"""Our batch-settlement artifacts have every function and event of the official SDK's ABI, with the same shapes.

The SDK (a dev dependency) ships the ABI its client, server and facilitator call; a function or event of ours whose
inputs, outputs, indexing or mutability differ would break them, whatever our own tests say.
"""

from __future__ import annotations

from typing import Any

import pytest
from x402.mechanisms.evm.batch_settlement.abi import BATCH_SETTLEMENT_ABI

from x402pay.testing import load_artifact


def shape(entry: dict[str, Any]) -> tuple[Any, ...]:
    """What callers depend on: kind, name, ABI types (tuples spelled out), indexing, mutability."""

    def kinds(items: list[dict[str, Any]]) -> tuple[Any, ...]:
        return tuple((item["type"], kinds(item.get("components", [])), item.get("indexed", False)) for item in items)

    return (
        entry["type"],
        entry.get("name"),
        kinds(entry.get("inputs", [])),
        kinds(entry.get("outputs", [])),
        entry.get("stateMutability"),
    )


OURS = {(entry["type"], entry.get("name")): shape(entry) for entry in load_artifact("X402BatchSettlement")["abi"]}


@pytest.mark.parametrize("entry", BATCH_SETTLEMENT_ABI, ids=lambda entry: f"{entry['type']} {entry['name']}")
def test_every_official_entry_is_ours_with_the_same_shape(entry: dict[str, Any]) -> None:
    assert OURS.get((entry["type"], entry["name"])) == shape(entry)
