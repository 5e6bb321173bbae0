"""What an EVM payment payload authorizes, and the checks that need no chain: terms, time window, signer.

Pure CPU. `read_authorization` turns a payload's ``payload`` object into an `Eip3009Authorization` or a
`Permit2Authorization`; `check_terms` and `check_signer` raise `Refusal` with the protocol's reason code.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Final, Literal

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_typing import ChecksumAddress
from eth_utils.address import is_address, to_checksum_address

from x402pay._protocol.addresses import EXACT_PERMIT2_PROXY_ADDRESS, PERMIT2_ADDRESS, UPTO_PERMIT2_PROXY_ADDRESS
from x402pay._protocol.models import PaymentRequirements, SettleResponse, parse_uint
from x402pay._protocol.networks import chain_id_of
from x402pay._schemes.eip712 import (
    EXACT_WITNESS_FIELDS,
    UPTO_WITNESS_FIELDS,
    TypedData,
    permit_witness_message,
    permit_witness_transfer_from,
    transfer_with_authorization,
)
from x402pay._schemes.fast712 import permit_witness_digest, recover_signer, transfer_with_authorization_digest

TransferMethod = Literal["eip3009", "permit2"]

#: Seconds of validity an authorization must have left to be accepted (the reference facilitators' buffer).
DEADLINE_BUFFER: Final = 6


class Refusal(Exception):
    """A payment that fails verification; `reason` is the protocol's errorReason code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Codes:
    """The reason codes one kind of authorization reports, check by check."""

    recipient: str
    amount: str
    expired: str
    not_yet_valid: str
    signature: str
    nonce_used: str
    balance: str
    simulation: str


EIP3009_CODES: Final = Codes(
    recipient="invalid_exact_evm_payload_recipient_mismatch",
    amount="invalid_exact_evm_payload_authorization_value_mismatch",
    expired="invalid_exact_evm_payload_authorization_valid_before",
    not_yet_valid="invalid_exact_evm_payload_authorization_valid_after",
    signature="invalid_exact_evm_payload_signature",
    nonce_used="invalid_exact_evm_nonce_already_used",
    balance="insufficient_funds",
    simulation="invalid_exact_evm_transaction_simulation_failed",
)
PERMIT2_CODES: Final = Codes(
    recipient="invalid_permit2_recipient_mismatch",
    amount="permit2_amount_mismatch",
    expired="permit2_deadline_expired",
    not_yet_valid="permit2_not_yet_valid",
    signature="invalid_permit2_signature",
    nonce_used="permit2_invalid_nonce",
    balance="permit2_insufficient_balance",
    simulation="invalid_exact_evm_transaction_simulation_failed",
)
UPTO_CODES: Final = Codes(**{**PERMIT2_CODES.__dict__, "simulation": "invalid_upto_evm_transaction_failed"})


@dataclass(frozen=True)
class Eip3009Authorization:
    """An EIP-3009 ``TransferWithAuthorization`` and its signature."""

    payer: ChecksumAddress
    to: ChecksumAddress
    amount: int
    valid_after: int
    deadline: int  # validBefore
    nonce: bytes
    signature: bytes
    codes: Codes = EIP3009_CODES

    def typed_data(self, requirements: PaymentRequirements) -> TypedData:
        """The EIP-712 message the payer signed, under the domain the requirement names."""
        extra = requirements.extra or {}
        return transfer_with_authorization(
            token_name=str(extra.get("name", "")),
            token_version=str(extra.get("version", "")),
            chain_id=requirements.chain_id,
            token=to_checksum_address(requirements.asset),
            authorization=self._message(),
        )

    def digest(self, requirements: PaymentRequirements) -> bytes | None:
        """The EIP-712 digest of `typed_data` (fast712's; None when it does not vouch for the values)."""
        extra = requirements.extra or {}
        return transfer_with_authorization_digest(
            token_name=str(extra.get("name", "")),
            token_version=str(extra.get("version", "")),
            chain_id=requirements.chain_id,
            token=requirements.asset,
            authorization=self._message(),
        )

    def _message(self) -> dict[str, Any]:
        """The ``TransferWithAuthorization`` message's fields."""
        return {
            "from": self.payer,
            "to": self.to,
            "value": self.amount,
            "validAfter": self.valid_after,
            "validBefore": self.deadline,
            "nonce": self.nonce,
        }


@dataclass(frozen=True)
class Permit2Authorization:
    """A Permit2 ``PermitWitnessTransferFrom`` for an x402 proxy (exact witness, or upto with `facilitator`)."""

    payer: ChecksumAddress
    token: ChecksumAddress
    amount: int
    spender: ChecksumAddress
    nonce: int
    deadline: int
    to: ChecksumAddress
    valid_after: int
    facilitator: ChecksumAddress | None
    signature: bytes
    codes: Codes = PERMIT2_CODES

    @property
    def witness(self) -> dict[str, Any]:
        """The witness struct as signed (field order matters for the contract tuple)."""
        if self.facilitator is None:
            return {"to": self.to, "validAfter": self.valid_after}
        return {"to": self.to, "facilitator": self.facilitator, "validAfter": self.valid_after}

    @property
    def permit(self) -> tuple[tuple[str, int], int, int]:
        """The ``PermitTransferFrom`` tuple the proxies take."""
        return ((self.token, self.amount), self.nonce, self.deadline)

    def typed_data(self, requirements: PaymentRequirements) -> TypedData:
        """The EIP-712 message the payer signed (domain "Permit2" on the requirement's chain)."""
        return permit_witness_transfer_from(
            chain_id=requirements.chain_id,
            token=self.token,
            amount=self.amount,
            spender=self.spender,
            nonce=self.nonce,
            deadline=self.deadline,
            witness=self.witness,
            witness_fields=EXACT_WITNESS_FIELDS if self.facilitator is None else UPTO_WITNESS_FIELDS,
        )

    def digest(self, requirements: PaymentRequirements) -> bytes | None:
        """The EIP-712 digest of `typed_data` (fast712's; None when it does not vouch for the values)."""
        message = permit_witness_message(
            token=self.token, amount=self.amount, spender=self.spender, nonce=self.nonce, deadline=self.deadline,
            witness=self.witness,
        )  # fmt: skip
        upto = self.facilitator is not None
        return permit_witness_digest(
            chain_id=requirements.chain_id, message=message, upto=upto, permit2=PERMIT2_ADDRESS
        )


Authorization = Eip3009Authorization | Permit2Authorization


def required_method(requirements: PaymentRequirements) -> TransferMethod:
    """How a requirement is paid: ``upto`` is always Permit2; ``exact`` follows ``extra.assetTransferMethod``."""
    if requirements.scheme == "upto" or requirements.extra_str("assetTransferMethod") == "permit2":
        return "permit2"
    return "eip3009"


def payload_method(payload: dict[str, Any]) -> TransferMethod:
    """The transfer method a payload's shape says it uses."""
    return "permit2" if "permit2Authorization" in payload else "eip3009"


def read_authorization(payload: dict[str, Any], scheme: str) -> Authorization:
    """Parse a payload's ``payload`` object; `Refusal` ``invalid_payload`` naming the first bad field."""
    try:
        if payload_method(payload) == "permit2":
            return _read_permit2(payload, upto=scheme == "upto")
        return _read_eip3009(payload)
    except (KeyError, TypeError, ValueError) as exc:
        raise Refusal("invalid_payload", f"the payment payload is malformed: {exc!r}") from exc


def check_terms(auth: Authorization, requirements: PaymentRequirements, *, now: int) -> None:
    """Recipient, amount, token, spender and time window against the requirement, at chain time `now`."""
    codes = auth.codes
    if not same_address(auth.to, requirements.pay_to):
        raise Refusal(codes.recipient, f"pays {auth.to}, the requirement's payTo is {requirements.pay_to}")
    if auth.amount != requirements.amount:
        raise Refusal(codes.amount, f"authorizes {auth.amount}, the requirement is {requirements.amount}")
    if isinstance(auth, Permit2Authorization):
        _check_permit2_terms(auth, requirements)
    if auth.deadline < now + DEADLINE_BUFFER:
        raise Refusal(codes.expired, f"valid until {auth.deadline}, which is less than {DEADLINE_BUFFER}s after {now}")
    if auth.valid_after > now:
        raise Refusal(codes.not_yet_valid, f"valid only after {auth.valid_after}; it is {now}")


def signed_by_payer(auth: Authorization, requirements: PaymentRequirements) -> bool:
    """Whether x402pay's own digest and coincurve recover the payer (False: `check_signer` has the last word)."""
    digest = auth.digest(requirements)  # a tenth of eth-account's time
    return digest is not None and same_address(recover_signer(digest, auth.signature) or "", auth.payer)


def check_signer(auth: Authorization, requirements: PaymentRequirements) -> None:
    """The signature recovers to the payer (EOA signatures; contract wallets are left to the simulation)."""
    if signed_by_payer(auth, requirements):
        return
    typed = auth.typed_data(requirements)
    try:
        signer = Account.recover_message(encode_typed_data(full_message=typed), signature=auth.signature)
    except Exception as exc:  # eth-keys raises several types for a malformed signature
        raise Refusal(auth.codes.signature, f"the signature does not recover: {exc}") from exc
    if signer != auth.payer:
        raise Refusal(auth.codes.signature, f"signed by {signer}, not by the payer {auth.payer}")


def payment_key(auth: Authorization, requirements: PaymentRequirements) -> str:
    """What identifies one payment on chain: chain, token, transfer method, payer and nonce (one settlement each)."""
    method: TransferMethod = "eip3009" if isinstance(auth, Eip3009Authorization) else "permit2"
    nonce = "0x" + auth.nonce.hex() if isinstance(auth.nonce, bytes) else str(auth.nonce)
    return f"{requirements.chain_id}:{requirements.asset.lower()}:{method}:{auth.payer.lower()}:{nonce}"


def same_address(left: str, right: str) -> bool:
    """Addresses compare case-insensitively (checksum spelling varies between sources)."""
    return left.lower() == right.lower()


def _check_permit2_terms(auth: Permit2Authorization, requirements: PaymentRequirements) -> None:
    if not same_address(auth.token, requirements.asset):
        raise Refusal(
            "permit2_token_mismatch", f"permits {auth.token}, the requirement's asset is {requirements.asset}"
        )
    upto = requirements.scheme == "upto"
    proxy = UPTO_PERMIT2_PROXY_ADDRESS if upto else EXACT_PERMIT2_PROXY_ADDRESS
    if not same_address(auth.spender, proxy):
        raise Refusal("invalid_permit2_spender", f"the spender is {auth.spender}, not the x402 proxy {proxy}")
    if upto and auth.facilitator is None:
        raise Refusal("invalid_payload", "an upto authorization needs witness.facilitator")


def _uint(value: Any) -> int:
    return parse_uint(value)  # what the wire models' Uint validates with


def parse_address(value: Any) -> ChecksumAddress:
    """A checksummed address from a wire string; ValueError for anything else."""
    if not isinstance(value, str) or len(value) != 42:
        raise ValueError(f"not an address: {str(value)[:80]!r}")
    return _checksummed(value)


@functools.lru_cache(maxsize=4096)
def _checksummed(value: str) -> ChecksumAddress:
    # Payers, tokens, spenders and payees repeat from payment to payment; each checksum is a keccak.
    if not is_address(value):
        raise ValueError(f"not an address: {value!r}")
    return to_checksum_address(value)


def parse_hex(value: Any, length: int | None = None) -> bytes:
    """Bytes from ``0x`` hex (of exactly `length` bytes when given); ValueError for anything else."""
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError(f"not 0x hex: {str(value)[:80]!r}")
    raw = bytes.fromhex(value[2:])
    if length is not None and len(raw) != length:
        raise ValueError(f"expected {length} bytes, got {len(raw)}")
    return raw


def _read_eip3009(payload: dict[str, Any]) -> Eip3009Authorization:
    auth = payload["authorization"]
    return Eip3009Authorization(
        payer=parse_address(auth["from"]),
        to=parse_address(auth["to"]),
        amount=_uint(auth["value"]),
        valid_after=_uint(auth["validAfter"]),
        deadline=_uint(auth["validBefore"]),
        nonce=parse_hex(auth["nonce"], 32),
        signature=parse_hex(payload["signature"]),
    )


def _read_permit2(payload: dict[str, Any], *, upto: bool) -> Permit2Authorization:
    auth = payload["permit2Authorization"]
    witness = auth["witness"]
    return Permit2Authorization(
        payer=parse_address(auth["from"]),
        token=parse_address(auth["permitted"]["token"]),
        amount=_uint(auth["permitted"]["amount"]),
        spender=parse_address(auth["spender"]),
        nonce=_uint(auth["nonce"]),
        deadline=_uint(auth["deadline"]),
        to=parse_address(witness["to"]),
        valid_after=_uint(witness["validAfter"]),
        facilitator=parse_address(witness["facilitator"]) if upto else None,
        signature=parse_hex(payload["signature"]),
        codes=UPTO_CODES if upto else PERMIT2_CODES,
    )


def chain_of(network: Any) -> int | None:
    """The chain id of a CAIP-2 `network`, or None when it is not one."""
    try:
        return chain_id_of(network) if isinstance(network, str) else None
    except ValueError:
        return None


def failed_settlement(
    requirements: PaymentRequirements, reason: str, message: str, payer: str | None = None
) -> SettleResponse:
    """A settlement answer that failed for `reason`."""
    return SettleResponse(
        success=False, network=requirements.network, payer=payer, error_reason=reason, error_message=message
    )
