"""Amounts for people: decimal text to atomic units and back, never through floats."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Final

USDC_DECIMALS: Final = 6


def usdc(amount: str | Decimal | int) -> int:
    """Atomic units of USDC for a decimal amount: ``usdc("0.05") == 50_000``.

    Floats are refused (0.1 is not exactly 0.1), and so is anything finer than one atomic unit.
    """
    if isinstance(amount, bool | float) or not isinstance(amount, str | Decimal | int):
        raise TypeError("give USDC amounts as str, Decimal or int, never float")
    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise ValueError(f"not a decimal amount: {amount!r}") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"not a non-negative amount: {amount!r}")
    atomic = value.scaleb(USDC_DECIMALS)
    if atomic != atomic.to_integral_value():
        raise ValueError(f"{amount} USDC is finer than one atomic unit (10^-{USDC_DECIMALS})")
    return int(atomic)


def decimal_text(atomic: int, decimals: int = USDC_DECIMALS) -> str:
    """Atomic units as decimal text with all `decimals` digits (``10000`` -> ``"0.010000"``), never through floats."""
    return f"{Decimal(atomic).scaleb(-decimals):.{decimals}f}"
