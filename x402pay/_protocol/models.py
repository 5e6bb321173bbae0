"""x402 wire models (v1 and v2): camelCase JSON on the wire, decimal strings for amounts, ints in Python.

Decoding is strict about meaning and lenient about form: an amount must be a non-negative integer below 2**256,
given as a decimal string (or a JSON integer); hex, fractions, signs, booleans and floats are refused.
Unknown fields are kept (``extra="allow"``), because a v2 payload must echo the chosen requirement unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from x402pay._protocol.networks import chain_id_of

UINT256_MAX = 2**256 - 1
_MAX_DIGITS = 78  # len(str(2**256 - 1))


def parse_uint(value: object) -> int:
    """A uint256 from a decimal string (what the spec says) or a JSON integer; ValueError for anything else."""
    if isinstance(value, bool):
        raise ValueError("expected a decimal string of atomic units, got a boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        if not value.isascii() or not value.isdigit() or len(value) > _MAX_DIGITS:
            raise ValueError(f"expected a decimal string of atomic units, got {value[:80]!r}")
        number = int(value)
    else:
        raise ValueError(f"expected a decimal string of atomic units, got {type(value).__name__}")
    if not 0 <= number <= UINT256_MAX:
        raise ValueError("amount out of the uint256 range")
    return number


#: A uint256 that is an int in Python and a decimal string on the wire.
Uint = Annotated[int, BeforeValidator(parse_uint), PlainSerializer(str, return_type=str)]


class WireModel(BaseModel):
    """Base of the wire models: camelCase aliases, frozen, unknown fields kept."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="allow", serialize_by_alias=True
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict: camelCase keys, amounts as strings, no nulls."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ResourceInfo(WireModel):
    """What is being paid for (v2 top-level ``resource``)."""

    url: str
    description: str | None = None
    mime_type: str | None = None


class PaymentRequirements(WireModel):
    """One way to pay (an ``accepts`` entry), v1 or v2.

    v1's ``maxAmountRequired`` is read into `amount`. The server's original JSON is kept in `raw` so that the
    v2 payload can echo it unchanged.
    """

    scheme: str = Field(min_length=1, max_length=64)
    network: str = Field(min_length=1, max_length=128)
    amount: Uint = Field(validation_alias=AliasChoices("amount", "maxAmountRequired"))
    asset: str = Field(min_length=1, max_length=128)
    pay_to: str = Field(min_length=1, max_length=128)
    max_timeout_seconds: int
    extra: dict[str, Any] | None = None
    # v1 only: the resource travels inside each requirement.
    resource: str | None = None
    description: str | None = None
    mime_type: str | None = None
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_raw(cls, data: Any, handler: Any) -> Any:
        model = handler(data)
        if isinstance(data, dict):
            model._raw = dict(data)
        return model

    @property
    def raw(self) -> dict[str, Any]:
        """The requirement exactly as the server sent it (or as built, when made in Python)."""
        return dict(self._raw) if self._raw else self.to_wire()

    @property
    def chain_id(self) -> int:
        """The EVM chain id of `network` (CAIP-2 or a v1 name); ValueError for a non-EVM network."""
        return chain_id_of(self.network)

    def extra_str(self, key: str) -> str | None:
        """A string field of `extra`, or None when absent or not a string."""
        value = (self.extra or {}).get(key)
        return value if isinstance(value, str) else None


class PaymentRequired(WireModel):
    """A 402 challenge: v2 from the ``PAYMENT-REQUIRED`` header, v1 from the JSON body."""

    x402_version: Literal[1, 2]
    error: str | None = None
    resource: ResourceInfo | None = None
    accepts: list[dict[str, Any]] = Field(max_length=256)
    extensions: dict[str, Any] | None = None


class PaymentPayload(WireModel):
    """What the client sends in ``PAYMENT-SIGNATURE`` (v2: `accepted`) or ``X-PAYMENT`` (v1: scheme, network)."""

    x402_version: Literal[1, 2]
    payload: dict[str, Any]
    accepted: dict[str, Any] | None = None
    resource: ResourceInfo | None = None
    extensions: dict[str, Any] | None = None
    scheme: str | None = None
    network: str | None = None

    @model_validator(mode="after")
    def _version_shape(self) -> PaymentPayload:
        if self.x402_version == 2 and self.accepted is None:
            raise ValueError("a v2 payment payload needs 'accepted'")
        if self.x402_version == 1 and (self.scheme is None or self.network is None):
            raise ValueError("a v1 payment payload needs 'scheme' and 'network'")
        return self


class SettleResponse(WireModel):
    """The settlement result (``PAYMENT-RESPONSE`` / ``X-PAYMENT-RESPONSE``); `amount` is the charge for upto."""

    success: bool
    transaction: str = Field(default="", max_length=256)
    network: str = Field(default="", max_length=128)
    payer: str | None = None
    amount: Uint | None = None
    error_reason: str | None = None
    error_message: str | None = None
    extensions: dict[str, Any] | None = None

    @field_validator("amount", mode="before")
    @classmethod
    def _unsaid_amount(cls, value: object) -> object:
        """``amount: ""`` is how the official SDKs say there is none (a channel voucher, a sweep): None here."""
        return None if value == "" else value
