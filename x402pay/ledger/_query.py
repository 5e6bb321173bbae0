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
    """One SQL statement with ``?`` placeholders and its parameters.

    `reads` is False for a statement whose rows (and row count) the program ignores: a driver may then send it
    with whatever comes next, the commit included, instead of waiting for its answer. Its errors still roll the
    transaction back. `last` says the program yields nothing after it: a driver may send the commit with it and
    answer once the transaction is committed (a statement after it is an error).
    """

    sql: str
    params: tuple[Any, ...] = ()
    reads: bool = True
    last: bool = False
