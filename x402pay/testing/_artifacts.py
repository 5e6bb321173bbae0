"""Compiled contract artifacts shipped with x402pay (built by contracts/build.mjs)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any, TypedDict


class Artifact(TypedDict):
    """One compiled contract: its ABI, creation bytecode and runtime bytecode (0x hex)."""

    contractName: str
    sourceName: str
    compiler: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployedBytecode: str


@cache
def load_artifact(name: str) -> Artifact:
    """Return the artifact of contract `name` (e.g. "TestUSDC"); KeyError names the ones that exist."""
    folder = resources.files("x402pay.testing") / "artifacts"
    source = folder / f"{name}.json"
    if not source.is_file():
        known = sorted(entry.name.removesuffix(".json") for entry in folder.iterdir() if entry.name.endswith(".json"))
        raise KeyError(f"no contract artifact named {name!r}; known: {', '.join(known)}")
    artifact: Artifact = json.loads(source.read_text())
    return artifact
