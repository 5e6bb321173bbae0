"""The x402 `exact` scheme on EVM: sign an EIP-3009 ``TransferWithAuthorization`` or a Permit2 witness transfer.

Everything signed comes from the chosen requirement (amount, recipient, asset, chain) plus a fresh CSPRNG nonce and
a validity window whose length is capped by the caller (the spend policy's ``max_lifetime``), never by the server
alone. Addresses are EIP-55 checksummed inside the payload and every number is a decimal string, as facilitators
expect (see reference/x402-protocol.md sections 2, 4 and 13).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

from eth_typing import ChecksumAddress
from eth_utils.address import is_checksum_address, to_checksum_address

from x402pay._protocol.addresses import EXACT_PERMIT2_PROXY_ADDRESS
from x402pay._protocol.models import PaymentRequirements
from x402pay._protocol.networks import known_asset
from x402pay._schemes import eip712
from x402pay._wallet import Wallet
from x402pay.errors import SigningError

#: How far `validAfter` is backdated by default, for clock skew between us and the facilitator (the SDKs' value).
DEFAULT_CLOCK_SKEW: Final = 600
EIP3009: Final = "eip3009"
PERMIT2: Final = "permit2"
_ZERO_ADDRESS: Final = "0x" + "00" * 20
_HEX_ADDRESS: Final = re.compile(r"0x[0-9a-fA-F]{40}")


@dataclass(frozen=True)
class SignedPayment:
    """A signed payment for one requirement: the x402 ``payload`` object and what it commits to.

    `nonce` is as on the wire (``0x`` + 64 hex for EIP-3009, a decimal uint256 for Permit2); `valid_before` is the
    EIP-3009 ``validBefore`` or the Permit2 ``deadline``; `method` is ``"eip3009"`` or ``"permit2"``.
    """

    requirement: PaymentRequirements
    payload: dict[str, Any] = field(repr=False)  # holds the signature: never in a repr or a log
    payer: ChecksumAddress
    amount: int
    nonce: str
    valid_after: int
    valid_before: int
    method: str


@dataclass(frozen=True)
class Terms:
    """What every signature commits to, checked and normalized from a requirement and the caller's clock."""

    chain_id: int
    asset: ChecksumAddress
    pay_to: ChecksumAddress
    amount: int
    valid_after: int
    valid_before: int


def terms_of(requirement: PaymentRequirements, *, now: int, max_lifetime: int, clock_skew: int) -> Terms:
    """The checked `Terms` of `requirement`; SigningError for a non-EVM network, a bad address or window."""
    valid_after, valid_before = validity_window(
        now, requirement.max_timeout_seconds, max_lifetime=max_lifetime, clock_skew=clock_skew
    )
    return Terms(
        chain_id=evm_chain_id(requirement),
        asset=checksum_address(requirement.asset, "asset"),
        pay_to=checksum_address(requirement.pay_to, "payTo"),
        amount=requirement.amount,
        valid_after=valid_after,
        valid_before=valid_before,
    )


def sign_exact(
    wallet: Wallet,
    requirement: PaymentRequirements,
    *,
    now: int,
    max_lifetime: int,
    clock_skew: int = DEFAULT_CLOCK_SKEW,
) -> SignedPayment:
    """Sign `requirement` (scheme ``exact``, an EVM network) with `wallet`.

    The window is ``[now - clock_skew, now + min(requirement.max_timeout_seconds, max_lifetime)]``.
    ``extra.assetTransferMethod == "permit2"`` selects Permit2 (spender: the x402 exact proxy); otherwise EIP-3009
    under the token's domain from ``extra.name``/``extra.version`` or the known-asset table. Raises `SigningError`.
    """
    if requirement.scheme != "exact":
        raise SigningError(f"sign_exact signs the 'exact' scheme, not {requirement.scheme!r}")
    method = transfer_method(requirement)
    terms = terms_of(requirement, now=now, max_lifetime=max_lifetime, clock_skew=clock_skew)
    if method == PERMIT2:
        witness = {"to": terms.pay_to, "validAfter": terms.valid_after}
        return sign_permit2_witness(
            wallet, requirement, terms, spender=EXACT_PERMIT2_PROXY_ADDRESS, witness=witness,
            witness_fields=eip712.EXACT_WITNESS_FIELDS,
        )  # fmt: skip
    return _sign_eip3009(wallet, requirement, terms)


def transfer_method(requirement: PaymentRequirements) -> str:
    """``"eip3009"`` (the default) or ``"permit2"``, from ``extra.assetTransferMethod``; SigningError otherwise."""
    method = (requirement.extra or {}).get("assetTransferMethod")
    if method is None:
        return EIP3009
    if method not in (EIP3009, PERMIT2):
        raise SigningError(f"cannot sign assetTransferMethod {str(method)[:40]!r}; supported: eip3009, permit2")
    return str(method)


def validity_window(now: int, max_timeout_seconds: int, *, max_lifetime: int, clock_skew: int) -> tuple[int, int]:
    """``(valid_after, valid_before)``: backdated by `clock_skew`; lives min(server timeout, `max_lifetime`) s."""
    if not all(type(value) is int for value in (now, max_timeout_seconds, max_lifetime, clock_skew)):
        raise SigningError("now, max_lifetime, clock_skew and maxTimeoutSeconds must be ints of seconds")
    if max_timeout_seconds <= 0:
        raise SigningError(f"the requirement's maxTimeoutSeconds must be positive, got {max_timeout_seconds}")
    if max_lifetime <= 0:
        raise SigningError(f"max_lifetime must be positive, got {max_lifetime}")
    if now < 0 or clock_skew < 0:
        raise SigningError(f"now and clock_skew must not be negative, got {now} and {clock_skew}")
    return max(0, now - clock_skew), now + min(max_timeout_seconds, max_lifetime)


def evm_chain_id(requirement: PaymentRequirements) -> int:
    """The requirement's EVM chain id; SigningError for a network that is not EVM."""
    try:
        return requirement.chain_id
    except ValueError as exc:
        raise SigningError(f"cannot sign for network {requirement.network!r}: {exc}") from exc


@lru_cache(maxsize=4096)  # payees and assets repeat, and EIP-55 hashing costs more than signing
def checksum_address(value: str, field: str) -> ChecksumAddress:
    """`value` as an EIP-55 address; SigningError for a malformed, mis-checksummed or zero address.

    All-lower and all-upper hex carry no checksum and are accepted; mixed case must be a valid EIP-55 checksum,
    since a broken one is how a mistyped address shows.
    """
    body = value[2:]
    mixed_case = body != body.lower() and body != body.upper()
    if not _HEX_ADDRESS.fullmatch(value) or (mixed_case and not is_checksum_address(value)):
        raise SigningError(f"the requirement's {field} is not a valid EVM address: {value[:64]!r}")
    if value.lower() == _ZERO_ADDRESS:
        raise SigningError(f"the requirement's {field} is the zero address")
    return to_checksum_address(value)


def _eip3009_domain(requirement: PaymentRequirements, terms: Terms) -> tuple[str, str]:
    known = known_asset(terms.chain_id, terms.asset)
    name = requirement.extra_str("name") or (known.name if known else None)
    version = requirement.extra_str("version") or (known.version if known else None)
    if not name or not version:
        raise SigningError(
            f"no EIP-712 domain for asset {terms.asset} on chain {terms.chain_id}: "
            "the requirement has no extra.name/extra.version and the asset is not a known deployment"
        )
    return name, version


def _sign_eip3009(wallet: Wallet, requirement: PaymentRequirements, terms: Terms) -> SignedPayment:
    name, version = _eip3009_domain(requirement, terms)
    nonce = "0x" + secrets.token_bytes(32).hex()
    authorization = {
        "from": wallet.address,
        "to": terms.pay_to,
        "value": terms.amount,
        "validAfter": terms.valid_after,
        "validBefore": terms.valid_before,
        "nonce": nonce,
    }
    typed_data = eip712.transfer_with_authorization(
        token_name=name, token_version=version, chain_id=terms.chain_id, token=terms.asset, authorization=authorization
    )
    signature = wallet.sign_typed_data(typed_data)
    payload = {"signature": "0x" + signature.hex(), "authorization": _wire(authorization)}
    return _signed(requirement, payload, wallet, terms, nonce, EIP3009)


def sign_permit2_witness(
    wallet: Wallet,
    requirement: PaymentRequirements,
    terms: Terms,
    *,
    spender: str,
    witness: dict[str, Any],
    witness_fields: list[dict[str, str]],
) -> SignedPayment:
    """Sign a Permit2 ``PermitWitnessTransferFrom`` of `terms` for an x402 proxy (`spender`) with its `witness`."""
    nonce = int.from_bytes(secrets.token_bytes(32), "big")
    typed_data = eip712.permit_witness_transfer_from(
        chain_id=terms.chain_id,
        token=terms.asset,
        amount=terms.amount,
        spender=spender,
        nonce=nonce,
        deadline=terms.valid_before,
        witness=witness,
        witness_fields=witness_fields,
    )
    signature = wallet.sign_typed_data(typed_data)
    authorization = {"from": wallet.address, **typed_data["message"]}
    payload = {"signature": "0x" + signature.hex(), "permit2Authorization": _wire(authorization)}
    return _signed(requirement, payload, wallet, terms, str(nonce), PERMIT2)


def _signed(
    requirement: PaymentRequirements, payload: dict[str, Any], wallet: Wallet, terms: Terms, nonce: str, method: str
) -> SignedPayment:
    return SignedPayment(
        requirement=requirement,
        payload=payload,
        payer=wallet.address,
        amount=terms.amount,
        nonce=nonce,
        valid_after=terms.valid_after,
        valid_before=terms.valid_before,
        method=method,
    )


def _wire(value: Any) -> Any:
    """`value` with every int turned into a decimal string, recursively (the wire form of uint256 fields)."""
    if isinstance(value, dict):
        return {key: _wire(item) for key, item in value.items()}
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value
