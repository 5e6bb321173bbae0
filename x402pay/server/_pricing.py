"""Prices and the route table: which requests cost what, and the x402 requirements that say so.

    routes = {
        "GET /report": Price.exact(10_000, asset=USDC),                  # 0.01 USDC, EIP-3009
        "GET /report/pdf": Price.exact(20_000, asset=USDC, transfer="permit2"),
        "POST /v1/chat/completions": Price.upto(50_000, asset=USDC),     # at most 0.05 USDC, metered
        "* /items/{item_id}": [Price.exact(...), Price.exact(...)],       # several ways to pay
        "GET /quote": Price.channel(1_000, asset=USDC, receiver_authorizer=AUTHORIZER),  # vouchers on a channel
    }

A key is ``"METHOD /path"``; ``*`` matches any method and ``{name}`` one path segment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from eth_utils.address import is_address, to_checksum_address

from x402pay._protocol.channel_extra import ChannelExtra
from x402pay._protocol.headers import MAX_AMOUNT
from x402pay._protocol.models import UINT256_MAX, PaymentRequirements
from x402pay._protocol.networks import known_asset
from x402pay._schemes.channel import MAX_WITHDRAW_DELAY, MIN_WITHDRAW_DELAY
from x402pay.server._channel_rules import CHANNEL_SCHEME
from x402pay.server._evm import TransferMethod

#: The request header in which a client caps an upto route's maximum (``x402pay._protocol.headers.MAX_AMOUNT``).
MAX_AMOUNT_HEADER: Final = MAX_AMOUNT
_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
#: The deposit a channel price suggests, in multiples of its amount, unless told otherwise (the SDKs' default).
MIN_DEPOSIT_MULTIPLIER: Final = 10


@dataclass(frozen=True)
class Price:
    """What one route costs, in atomic units of `asset` (USDC: 6 decimals).

    Build with `Price.exact`, `Price.upto` or `Price.channel`. `pay_to` defaults to the middleware's; for EIP-3009
    the token's EIP-712 `token_name` / `token_version` default to the known deployment's (USDC: "USD Coin", "2").
    """

    scheme: Literal["exact", "upto", "batch-settlement"]
    amount: int
    asset: str
    pay_to: str | None = None
    transfer: TransferMethod = "eip3009"
    max_timeout_seconds: int = 60
    token_name: str | None = None
    token_version: str | None = None
    description: str = ""
    mime_type: str | None = None
    receiver_authorizer: str | None = None
    withdraw_delay: int = MIN_WITHDRAW_DELAY
    min_deposit: int | None = None
    enforce_min_deposit: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int) or not 0 < self.amount <= UINT256_MAX:
            raise ValueError(f"a price is a positive int of atomic units, not {self.amount!r}")
        if not is_address(self.asset) or (self.pay_to is not None and not is_address(self.pay_to)):
            raise ValueError(f"asset and pay_to must be EVM addresses: {self.asset!r}, {self.pay_to!r}")
        if self.scheme == "upto" and self.transfer != "permit2":
            raise ValueError("upto is paid by Permit2 only")
        if self.scheme == CHANNEL_SCHEME:
            self._check_channel()

    def _check_channel(self) -> None:
        if self.receiver_authorizer is None or not is_address(self.receiver_authorizer):
            raise ValueError(f"a channel price needs a receiver_authorizer address, not {self.receiver_authorizer!r}")
        if not MIN_WITHDRAW_DELAY <= self.withdraw_delay <= MAX_WITHDRAW_DELAY:
            raise ValueError(
                f"withdraw_delay is {MIN_WITHDRAW_DELAY} to {MAX_WITHDRAW_DELAY} s, not {self.withdraw_delay}"
            )
        if self.min_deposit is not None and self.min_deposit < self.amount:
            raise ValueError(f"min_deposit {self.min_deposit} is below the price {self.amount}")

    @classmethod
    def exact(
        cls,
        amount: int,
        *,
        asset: str,
        pay_to: str | None = None,
        transfer: TransferMethod = "eip3009",
        max_timeout_seconds: int = 60,
        token_name: str | None = None,
        token_version: str | None = None,
        description: str = "",
        mime_type: str | None = None,
    ) -> Price:
        """A fixed price: the client signs exactly `amount`, paid by EIP-3009 or by Permit2."""
        return cls(
            "exact", amount, asset, pay_to, transfer, max_timeout_seconds, token_name, token_version, description,
            mime_type,
        )  # fmt: skip

    @classmethod
    def upto(
        cls,
        maximum: int,
        *,
        asset: str,
        pay_to: str | None = None,
        max_timeout_seconds: int = 300,
        description: str = "",
        mime_type: str | None = None,
    ) -> Price:
        """A metered price: the client signs `maximum` (or its own lower cap); the app reports what it used."""
        return cls("upto", maximum, asset, pay_to, "permit2", max_timeout_seconds, None, None, description, mime_type)

    @classmethod
    def channel(
        cls,
        amount: int,
        *,
        asset: str,
        receiver_authorizer: str,
        pay_to: str | None = None,
        withdraw_delay: int = MIN_WITHDRAW_DELAY,
        transfer: TransferMethod = "eip3009",
        min_deposit: int | None = None,
        enforce_min_deposit: bool = False,
        max_timeout_seconds: int = 300,
        token_name: str | None = None,
        token_version: str | None = None,
        description: str = "",
        mime_type: str | None = None,
    ) -> Price:
        """A price paid from a payment channel (x402 ``batch-settlement``): a deposit once, then one voucher a request.

        `amount` is the most one request costs; the app may charge less (``paid_request(scope).charge``).
        `receiver_authorizer` signs claims and refunds (the facilitator's key when it holds it). The requirement
        suggests a deposit of `min_deposit` (default 10 x `amount`, as the SDKs); `enforce_min_deposit` refuses
        smaller deposits. `withdraw_delay` is how long a payer waits to withdraw alone: claim well within it.
        """
        return cls(
            CHANNEL_SCHEME, amount, asset, pay_to, transfer, max_timeout_seconds, token_name, token_version,
            description, mime_type, receiver_authorizer, withdraw_delay, min_deposit, enforce_min_deposit,
        )  # fmt: skip

    @property
    def suggested_deposit(self) -> int:
        """The ``minDeposit`` a channel requirement carries."""
        return self.min_deposit if self.min_deposit is not None else MIN_DEPOSIT_MULTIPLIER * self.amount

    def requirement(
        self, *, network: str, chain_id: int, pay_to: str, ceiling: int | None, facilitator: str | None
    ) -> PaymentRequirements:
        """The ``accepts`` entry for one request (`ceiling`: the client's cap on an upto maximum)."""
        amount = min(self.amount, ceiling) if self.scheme == "upto" and ceiling else self.amount
        return PaymentRequirements(
            scheme=self.scheme,
            network=network,
            amount=amount,
            asset=to_checksum_address(self.asset),
            pay_to=to_checksum_address(self.pay_to or pay_to),
            max_timeout_seconds=self.max_timeout_seconds,
            extra=self._extra(chain_id, facilitator),
        )

    def _extra(self, chain_id: int, facilitator: str | None) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        name, version = self.token_name, self.token_version
        known = known_asset(chain_id, self.asset)
        if known is not None:
            name, version = name or known.name, version or known.version
        if name and version:
            extra.update(name=name, version=version)
        elif self.transfer == "eip3009":
            raise ValueError(f"EIP-3009 pricing of unknown token {self.asset}: pass token_name and token_version")
        if self.scheme == CHANNEL_SCHEME:
            return self._channel_extra(name, version)
        if self.transfer == "permit2":
            extra["assetTransferMethod"] = "permit2"
        if self.scheme == "upto":
            extra["facilitatorAddress"] = facilitator
        return extra

    def _channel_extra(self, name: str | None, version: str | None) -> dict[str, Any]:
        return ChannelExtra(
            receiver_authorizer=to_checksum_address(str(self.receiver_authorizer)),
            withdraw_delay=self.withdraw_delay,
            name=name,
            version=version,
            asset_transfer_method=self.transfer,
            min_deposit=self.suggested_deposit,
        ).as_wire()


@dataclass(frozen=True)
class Route:
    """A priced route: a method (or ``*``), a path pattern and its prices, in the order they are offered."""

    method: str
    pattern: re.Pattern[str]
    prices: tuple[Price, ...]
    key: str = field(compare=False)

    def matches(self, method: str, path: str) -> bool:
        """Whether a request with this method and path is paid through this route (a GET route covers HEAD)."""
        method = method.upper()
        wanted = self.method in ("*", method) or (self.method, method) == ("GET", "HEAD")
        return wanted and self.pattern.fullmatch(path) is not None


def compile_routes(routes: Mapping[str, Price | Sequence[Price]]) -> tuple[Route, ...]:
    """Parse ``{"METHOD /path": price or prices}`` into routes, checked once, in the mapping's order."""
    return tuple(_route(key, prices) for key, prices in routes.items())


def match_route(routes: Sequence[Route], method: str, path: str) -> Route | None:
    """The first route that matches the request, or None (the request is free)."""
    return next((route for route in routes if route.matches(method, path)), None)


def client_ceiling(value: str | None) -> int | None:
    """The client's ``x-x402-max-amount-wei``, when it is a positive integer (otherwise it is ignored)."""
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 78:
        return None
    number = int(value)
    return number if 0 < number <= UINT256_MAX else None


def _route(key: str, prices: Price | Sequence[Price]) -> Route:
    method, _, path = key.strip().partition(" ")
    if not path.startswith("/") or not method:
        raise ValueError(f"a route key is 'METHOD /path', not {key!r}")
    offered = (prices,) if isinstance(prices, Price) else tuple(prices)
    if not offered or not all(isinstance(price, Price) for price in offered):
        raise ValueError(f"route {key!r} needs one or more Price values")
    pieces = _PLACEHOLDER.split(path.strip())
    pattern = "[^/]+".join(re.escape(piece) for piece in pieces)
    return Route(method=method.upper(), pattern=re.compile(pattern), prices=offered, key=key)
