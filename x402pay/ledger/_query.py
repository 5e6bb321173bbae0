"""What a ledger program is: a generator that yields `Query` values and is sent back each query's rows."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
Rows = list[tuple[Any, ...]]
Program = Generator["Query", Rows, T]


@dataclass(frozen=True)
class Query:
    """One SQL statement with ``?`` placeholders and its parameters."""

    sql: str
    params: tuple[Any, ...] = ()
